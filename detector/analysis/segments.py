"""Labelled time segments and the label files people already have (CSV and Kodi EDL).

Used for ground truth (`evaluate`), for labelled long recordings (`train`) and by the
demo generator, so all three read and write exactly the same formats.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

from detector.errors import UsageError


@dataclass(frozen=True)
class Segment:
    """A half-open stretch of media time [start, end) in seconds with one label."""

    start: float
    end: float
    label: str
    is_ad: bool
    confidence: float = 1.0
    # An ad segment taken back after its start was published: the break-structure rules
    # (a break shorter than the configured minimum) decided it was no break. Its end is a
    # withdrawal, so the events cancel its SCTE-35 event instead of sending a cue-in.
    withdrawn: bool = False
    # What the break-structure rules noticed but did not change (detector.analysis.breakrules:
    # `long_break`, `long_spot`); written to segments.json as `flags` when not empty.
    flags: tuple[str, ...] = ()

    @property
    def duration(self) -> float:
        return self.end - self.start


def _shown(text: str, limit: int = 60) -> str:
    """User text quoted into an error: one line (control characters escaped), truncated."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[: limit + 1])
    return text if len(text) <= limit else text[:limit] + "..."


def _number(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{where}: '{_shown(text)}' is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise UsageError(f"{where}: '{_shown(text)}' must be a finite number of seconds >= 0")
    return value


def check_sorted(segments: list[Segment], where: str) -> None:
    """Refuse segments that are empty, unsorted or overlapping (a truth file people typed)."""
    for i, seg in enumerate(segments):
        if seg.end <= seg.start:
            raise UsageError(f"{where}: segment {i + 1} ends ({seg.end}) at or before it starts ({seg.start})")
        if i and seg.start < segments[i - 1].end - 1e-6:
            prev = segments[i - 1]
            if seg.start < prev.start:
                raise UsageError(f"{where}: segments are not sorted (segment {i + 1} starts at {seg.start}, before {prev.start}); sort them by start time")
            raise UsageError(f"{where}: segment {i + 1} ({seg.start}-{seg.end}) overlaps the one before ({prev.start}-{prev.end})")


def parse_csv_labels(text: str, where: str, ad_classes: set[str]) -> list[Segment]:
    """CSV with header `start,end,label`; labels in `ad_classes` are ads."""
    reader = csv.reader(io.StringIO(text))
    rows: list[tuple[int, list[str]]] = []   # (line the row ends on, fields): quoted fields may span lines
    try:
        for row in reader:
            if any(c.strip() for c in row):
                rows.append((reader.line_num, row))
    except csv.Error as exc:  # a field over csv's size limit, a NUL byte, a stray quote
        raise UsageError(f"{where}:{reader.line_num}: not a valid CSV row ({_shown(str(exc))})") from None
    if not rows:
        raise UsageError(f"{where}: empty labels file; expected a header 'start,end,label' and one row per segment")
    header = [c.strip().lower() for c in rows[0][1]]
    if header[:3] != ["start", "end", "label"]:
        raise UsageError(f"{where}: first line must be the header 'start,end,label' (found '{_shown(','.join(rows[0][1]))}')")
    segments = []
    for n, row in rows[1:]:
        if len(row) < 3:
            raise UsageError(f"{where}:{n}: expected 'start,end,label', found '{_shown(','.join(row))}'")
        label = row[2].strip()
        if not label:
            raise UsageError(f"{where}:{n}: empty label")
        segments.append(Segment(_number(row[0].strip(), f"{where}:{n}"), _number(row[1].strip(), f"{where}:{n}"), label, label in ad_classes))
    check_sorted(segments, where)
    return segments


def parse_edl(text: str, where: str, ad_label: str) -> list[Segment]:
    """Kodi/MPlayer EDL: `start end action` per line; every line is an ad segment.

    Kodi accepts any whitespace between fields; comment lines start with '#'.
    """
    segments = []
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) < 2:
            raise UsageError(f"{where}:{n}: expected 'start end action', found '{_shown(line)}'")
        start = _number(parts[0], f"{where}:{n}")
        end = _number(parts[1], f"{where}:{n}")
        segments.append(Segment(start, end, ad_label, True))
    check_sorted(segments, where)
    return segments


def read_labels(path: Path, ad_classes: set[str], ad_label: str = "commercial") -> list[Segment]:
    """Read a CSV (`start,end,label`) or an EDL (ad segments only) by its suffix."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")   # -sig: a CSV saved by a spreadsheet starts with a BOM
    except FileNotFoundError:
        raise UsageError(f"{path}: labels file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read labels file ({exc})") from None
    if path.suffix.lower() == ".edl":
        return parse_edl(text, str(path), ad_label)
    return parse_csv_labels(text, str(path), ad_classes)


def fill_gaps(segments: list[Segment], duration: float, filler_label: str) -> list[Segment]:
    """Cover [0, duration) completely: gaps become `filler_label` (not an ad).

    An EDL lists only the ads; everything between them is programme.
    """
    out: list[Segment] = []
    t = 0.0
    for seg in segments:
        if seg.start >= duration:
            break
        if seg.start > t + 1e-6:
            out.append(Segment(t, seg.start, filler_label, False))
        out.append(Segment(seg.start, min(seg.end, duration), seg.label, seg.is_ad, seg.confidence))
        t = min(seg.end, duration)
    if t < duration - 1e-6:
        out.append(Segment(t, duration, filler_label, False))
    return out


def label_at(segments: list[Segment], t: float) -> Segment | None:
    """The segment covering time t, or None (segments sorted, non-overlapping)."""
    lo, hi = 0, len(segments)
    while lo < hi:
        mid = (lo + hi) // 2
        if segments[mid].end <= t:
            lo = mid + 1
        else:
            hi = mid
    if lo < len(segments) and segments[lo].start <= t < segments[lo].end:
        return segments[lo]
    return None


def labels_csv_text(segments: list[Segment]) -> str:
    """The `start,end,label` CSV, 3 decimals."""
    lines = ["start,end,label"] + [f"{s.start:.3f},{s.end:.3f},{s.label}" for s in segments]
    return "\n".join(lines) + "\n"


def edl_text(segments: list[Segment]) -> str:
    """Kodi EDL: one `start<TAB>end<TAB>3` line per ad segment, seconds with 2 decimals."""
    return "".join(f"{s.start:.2f}\t{s.end:.2f}\t3\n" for s in segments if s.is_ad)
