"""The offline output files of `classify` (see docs/CONTRACT.md, "Offline outputs").

Each format is produced by a pure function returning the file's text, so tests and other
tools can check the exact bytes users get; `write_outputs` is the only part that touches
the file system, and it writes every file atomically (a reader never sees half a file).

The formats are other programs' formats (Kodi/MPlayer EDL, Comskip, FFmpeg metadata), so
they follow what those programs write and read rather than what would be tidiest here.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from detector.analysis.loudness import LoudnessTrack, SegmentLoudness
from detector.errors import RuntimeFailure, UsageError
from detector.util.fsutil import atomic_write_text
from detector.analysis.clock import PTS_HZ, PTS_MODULUS
from detector.analysis.segments import Segment, edl_text
from detector.offline.cues import CuePlan

log = logging.getLogger(__name__)

#: Names accepted by `classify --formats`, in the order files are written.
FORMATS: tuple[str, ...] = ("json", "edl", "txt", "ffmeta", "csv", "png", "scte35", "dash", "hls", "loudness")

#: What `classify` writes without `--formats`: the media-centre files. The broadcast formats
#: (SCTE-35 sidecar, DASH EventStream, HLS playlist) and the loudness report are asked for by name (CONTRACT.md "Offline outputs").
DEFAULT_FORMATS: tuple[str, ...] = ("json", "edl", "txt", "ffmeta", "csv", "png")

#: Formats that speak the recording's own PTS clock: skipped (with one log line) without it.
CUE_FORMATS: frozenset[str] = frozenset({"scte35", "dash", "hls"})

#: File name suffix (after NAME) of each format.
SUFFIXES: dict[str, str] = {
    "json": ".segments.json",
    "edl": ".edl",
    "txt": ".txt",
    "ffmeta": ".ffmeta",
    "csv": ".probabilities.csv",
    "png": ".timeline.png",
    "scte35": ".scte35.txt",
    "dash": ".eventstream.xml",
    "hls": ".m3u8",
    "loudness": ".loudness.csv",
}

#: Header of `NAME.loudness.csv` (docs/CONTRACT.md "Offline outputs").
LOUDNESS_HEADER = ("start", "end", "label", "integrated_lufs", "loudness_range_lu")

#: Comskip writes exactly this separator line (19 dashes) after its header.
COMSKIP_DASHES = "-------------------"


def _seconds(value: float) -> float:
    """Seconds rounded to milliseconds: finer is noise, coarser loses frames."""
    return round(float(value), 3)


def _lu(value: float | None) -> float | None:
    """Loudness figures to 0.1 LU, as meters show them and loudness rules state limits."""
    return round(float(value), 1) if value is not None and math.isfinite(value) else None


def segment_loudness(segments: Sequence[Segment], track: LoudnessTrack | None) -> list[SegmentLoudness]:
    """Integrated loudness and loudness range of each segment (all None without a track)."""
    if track is None:
        return [SegmentLoudness(None, None) for _ in segments]
    return [track.segment(seg.start, seg.end) for seg in segments]


def segments_json(segments: list[Segment], loudness: Sequence[SegmentLoudness] | None = None) -> str:
    """`NAME.segments.json`: a JSON array of `{start, end, label, is_ad, confidence}`.

    Times in seconds with 3 decimals. A non-finite confidence becomes `null`, because
    `NaN` is not JSON and would break strict parsers (browsers, `jq`). With `loudness`
    (one per segment, what `classify` passes), each entry adds `integrated_lufs` and
    `loudness_range_lu` (0.1 LU; `null` where the segment has no or too little audio).
    """
    if loudness is not None and len(loudness) != len(segments):
        raise ValueError(f"{len(loudness)} loudness figures for {len(segments)} segments")
    items = []
    for i, seg in enumerate(segments):
        raw = float(seg.confidence)
        confidence: float | None = round(raw, 3) if math.isfinite(raw) else None
        item: dict[str, object] = {
            "start": _seconds(seg.start),
            "end": _seconds(seg.end),
            "label": seg.label,
            "is_ad": bool(seg.is_ad),
            "confidence": confidence,
        }
        if loudness is not None:
            item["integrated_lufs"] = _lu(loudness[i].integrated_lufs)
            item["loudness_range_lu"] = _lu(loudness[i].loudness_range_lu)
        if seg.flags:   # what the break rules noticed (long_break, long_spot): only when there is any
            item["flags"] = list(seg.flags)
        items.append(item)
    return json.dumps(items, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def loudness_csv(segments: Sequence[Segment], loudness: Sequence[SegmentLoudness]) -> str:
    """`NAME.loudness.csv`: `start,end,label,integrated_lufs,loudness_range_lu` per segment.

    What a station needs to answer a complaint that the ads are louder: ITU-R BS.1770
    integrated loudness (LUFS) and EBU Tech 3342 loudness range (LU) of every ad and
    programme segment, to 0.1 LU. An empty field where the segment has no audio above
    the gates (no audio track, digital silence) or is too short (integrated loudness needs
    400 ms, the range 3 s).
    """
    if len(loudness) != len(segments):
        raise ValueError(f"{len(loudness)} loudness figures for {len(segments)} segments")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(LOUDNESS_HEADER)
    for seg, loud in zip(segments, loudness):
        cells = [_lu(loud.integrated_lufs), _lu(loud.loudness_range_lu)]
        writer.writerow([f"{seg.start:.3f}", f"{seg.end:.3f}", seg.label, *("" if c is None else f"{c:.1f}" for c in cells)])
    return buf.getvalue()


def edl(segments: list[Segment]) -> str:
    """`NAME.edl`: Kodi/MPlayer EDL, one `start<TAB>end<TAB>3` line per ad segment.

    Action 3 is Kodi's "commercial break" (skipped automatically, shown on the seek bar);
    the text comes from `detector.analysis.segments.edl_text` so ground truth files written by the
    demo and the files `classify` writes can never drift apart.
    """
    return edl_text(segments)


def _frame(seconds: float, fps: float) -> int:
    """Nearest frame number, rounding halves up (Python's `round` rounds them to even)."""
    return max(0, int(math.floor(seconds * fps + 0.5)))


def comskip_fps_field(fps: float) -> int:
    """The `FRAMES AT` number: frames per second times 100 (25 -> 2500, 29.97 -> 2997).

    Rounded rather than truncated as Comskip's `(int)(fps*100)` does: the two agree for
    every common broadcast rate (25, 50, 30000/1001, 60000/1001, 30, 60), floating-point
    noise such as 29.97*100 = 2996.9999... cannot lose a unit, and for 24000/1001 readers
    that convert frames back with `value / 100` get 23.98, the closer rate.
    """
    return int(math.floor(fps * 100 + 0.5))


def comskip_txt(segments: list[Segment], fps: float, total_frames: int) -> str:
    """`NAME.txt`: Comskip's default output, for tools that read Comskip's cut lists.

    Byte for byte Comskip's layout: the header written with
    `"FILE PROCESSING COMPLETE %6li FRAMES AT %5i\\n"` (frame count, fps x 100), the
    19-dash line Comskip prints, then `start<TAB>end` frame numbers per ad segment
    (frame = round(seconds x fps)). End frames are clipped to `total_frames` when it is
    known (> 0), so rounding never points past the recording.
    """
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    total = max(0, int(total_frames))
    lines = ["FILE PROCESSING COMPLETE %6li FRAMES AT %5i" % (total, comskip_fps_field(fps)), COMSKIP_DASHES]
    for seg in segments:
        if not seg.is_ad:
            continue
        start, end = _frame(seg.start, fps), _frame(seg.end, fps)
        if total:
            start, end = min(start, total), min(end, total)
        lines.append(f"{start}\t{end}")
    return "\n".join(lines) + "\n"


def ffmeta_escape(value: str) -> str:
    """Escape a key or value as FFmpeg's ffmetadata format requires.

    '=', ';', '#', '\\' and newline get a backslash in front (what `ffmetaenc.c` writes
    and `ffmetadec.c` undoes); otherwise a label such as "a=b;c#d" would be cut short
    or read as a comment.
    """
    out = []
    for ch in value.replace("\r\n", "\n").replace("\r", "\n"):
        if ch in "=;#\\\n":
            out.append("\\")
        out.append(ch)
    return "".join(out)


def ffmetadata(segments: list[Segment], title: str | None = None) -> str:
    """`NAME.ffmeta`: one chapter per segment, titled by its label, times in milliseconds.

    Mux it with `ffmpeg -i VIDEO -i NAME.ffmeta -map_metadata 1 -map_chapters 1 -c copy OUT`
    and players show programme and ad chapters. Times are rounded to the millisecond and
    END is never before START, since FFmpeg rejects such chapters.
    """
    parts = [";FFMETADATA1\n"]
    if title:
        parts.append(f"title={ffmeta_escape(title)}\n")
    for seg in segments:
        start_ms = max(0, int(math.floor(seg.start * 1000 + 0.5)))
        end_ms = max(start_ms, int(math.floor(seg.end * 1000 + 0.5)))
        parts.append(
            "[CHAPTER]\nTIMEBASE=1/1000\n"
            f"START={start_ms}\nEND={end_ms}\ntitle={ffmeta_escape(seg.label)}\n"
        )
    return "".join(parts)


def probabilities_csv(times: Sequence[float], probs: np.ndarray, classes: Sequence[str]) -> str:
    """`NAME.probabilities.csv`: header `time,<class...>`, one row per analysed window.

    Time (seconds, 3 decimals) is the media time the row's probabilities belong to;
    probabilities have 4 decimals, which is finer than any threshold anyone sets.
    Written with the csv module so a class name containing a comma stays one column.
    """
    arr = np.asarray(probs, dtype=np.float64)
    if arr.size == 0:
        arr = arr.reshape(len(times), len(classes))
    if arr.ndim != 2 or arr.shape != (len(times), len(classes)):
        raise ValueError(
            f"probabilities have shape {arr.shape}, expected ({len(times)} times, {len(classes)} classes)"
        )
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["time", *classes])
    for t, row in zip(times, arr):
        writer.writerow([f"{float(t):.3f}", *(f"{p:.4f}" for p in row)])
    return buf.getvalue()


def scte35_sidecar(plan: CuePlan) -> str:
    """`NAME.scte35.txt`: the sidecar threefive's injector (`scte35inject`) and x9k3 read.

    One `INSERT_PTS_SECONDS,BASE64` line per cue, in stream order: a splice_insert cue-out at
    each ad start and a cue-in with the same splice_event_id at its end. The cue's pts_time
    is the boundary frame's PTS; the line's PTS (seconds on the same 90 kHz clock, mod 2**33,
    6 decimals: exact to the tick) is where to insert it, the preroll earlier where the
    recording allows. No comments or header: both tools take every non-blank line as a cue.
    """
    return "".join(f"{c.insert_pts / PTS_HZ:.6f},{c.cue.base64}\n" for c in plan.cues)


#: The SCTE 214-1 / DASH-IF scheme for a SCTE-35 cue carried as base64 in an Event.
SCTE35_SCHEME = "urn:scte:scte35:2014:xml+bin"
SCTE35_XML_NS = "http://www.scte.org/schemas/35/2016"
DASH_NS = "urn:mpeg:dash:schema:mpd:2011"


def dash_eventstream(plan: CuePlan) -> str:
    """`NAME.eventstream.xml`: a DASH `EventStream` to paste into the MPD's `Period`.

    `timescale="90000"` and `presentationTime` on the recording's own PTS clock, unwrapped
    (first frame's PTS + elapsed ticks, so times keep increasing across a 33-bit wrap, as a
    packager that keeps source timestamps writes them); `presentationTimeOffset` is the first
    frame's PTS, so a Period starting at the recording's first frame places every Event right
    (Period time = presentationTime - presentationTimeOffset). Each Event carries the cue as
    `<scte35:Signal><scte35:Binary>` (SCTE 214-1 xml+bin); a cue-out also carries the break's
    `duration`. Event ids number the cues from 1 (DASH needs them unique; the cue-out and its
    cue-in share the splice_event_id inside the Binary, not the Event id).
    """
    first = plan.first_pts or 0
    unwrapped = [first + (c.splice_pts - first) % PTS_MODULUS for c in plan.cues]
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             f'<EventStream xmlns="{DASH_NS}" xmlns:scte35="{SCTE35_XML_NS}" schemeIdUri="{SCTE35_SCHEME}" '
             f'timescale="{PTS_HZ}" presentationTimeOffset="{first}">']
    for i, (cue, at) in enumerate(zip(plan.cues, unwrapped)):
        duration = ""
        if cue.out_of_network:
            ends = [t for c, t in zip(plan.cues[i + 1:], unwrapped[i + 1:])
                    if not c.out_of_network and c.cue.event_id == cue.cue.event_id]
            if ends:
                duration = f' duration="{ends[0] - at}"'
        lines += [f"  <Event presentationTime=\"{at}\"{duration} id=\"{i + 1}\">",
                  "    <scte35:Signal>",
                  f"      <scte35:Binary>{cue.cue.base64}</scte35:Binary>",
                  "    </scte35:Signal>",
                  "  </Event>"]
    lines.append("</EventStream>")
    return "\n".join(lines) + "\n"


def hls_text(video: Path, out_dir: Path, plan: CuePlan, duration: float) -> str:
    """`NAME.m3u8`: byte ranges of the MPEG-TS recording with the breaks as HLS cue tags
    (detector.offline.hls); the recording is referred to relative to the playlist."""
    from datetime import datetime, timedelta, timezone
    from urllib.parse import quote

    from detector.offline.hls import hls_playlist, plan_segments, scan_ts

    video = Path(video)
    keyframes = scan_ts(video, plan.first_pts or 0)
    size = video.stat().st_size
    segments = plan_segments(keyframes, plan, duration, size)
    uri = quote(os.path.relpath(video.resolve(), Path(out_dir).resolve()).replace(os.sep, "/"))
    start = datetime.fromtimestamp(video.stat().st_mtime, timezone.utc) - timedelta(seconds=duration)
    return hls_playlist(segments, plan, uri, start)


def ad_probability(probs: np.ndarray, classes: Sequence[str], ad_classes: Iterable[str]) -> np.ndarray:
    """p(ad) per row: the sum of the ad classes' probabilities (what the decision uses)."""
    arr = np.asarray(probs, dtype=np.float64)
    wanted = set(ad_classes)
    idx = [i for i, c in enumerate(classes) if c in wanted]
    if arr.size == 0 or not idx:
        return np.zeros(arr.shape[0] if arr.ndim == 2 else 0, dtype=np.float64)
    return np.clip(arr[:, idx].sum(axis=1), 0.0, 1.0)


def check_formats(formats: Iterable[str]) -> list[str]:
    """Validate `--formats` names; return them in canonical order without repeats."""
    wanted = [f.strip().lower() for f in formats]
    unknown = sorted({f for f in wanted if f not in FORMATS})
    if unknown:
        raise UsageError(
            f"unknown output format(s) {', '.join(repr(u) for u in unknown)}; valid formats: {', '.join(FORMATS)}"
        )
    return [f for f in FORMATS if f in wanted]


def ensure_writable_dir(out_dir: Path) -> None:
    """Create `out_dir` if needed and prove a file can be created in it.

    Done before any output is written so a bad `-o` fails with one line and leaves nothing
    half-written. A real probe file rather than `os.access`, which says yes to root even
    on read-only mounts.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"output directory {out_dir} exists and is not a directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create output directory {out_dir}: {exc.strerror or exc}") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=out_dir)
    except OSError as exc:
        raise UsageError(f"cannot write to output directory {out_dir}: {exc.strerror or exc}") from None
    os.close(fd)
    os.unlink(probe)


def write_outputs(
    out_dir: Path,
    name: str,
    segments: list[Segment],
    times: Sequence[float],
    probs: np.ndarray,
    classes: Sequence[str],
    ad_classes: Iterable[str],
    fps: float,
    total_frames: int,
    duration: float,
    formats: Iterable[str] = DEFAULT_FORMATS,
    truth: list[Segment] | None = None,
    cue_plan: CuePlan | None = None,
    video: Path | None = None,
    loudness: LoudnessTrack | None = None,
) -> list[Path]:
    """Write `classify`'s files for one recording into `out_dir`; return the paths written.

    `name` is the video's base name (`show.ts` -> `show`), giving `show.segments.json`,
    `show.edl`, ... Formats and the directory are checked before anything is written:
    an unknown format or an unusable directory is a `UsageError` (exit 2) and no file
    appears. A failure after that (disk full) is a `RuntimeFailure`; files written
    before it are complete, never truncated. `truth`, if given, is drawn on the timeline.
    `cue_plan` feeds the SCTE-35 formats; a recording without a PTS clock (the plan says
    why) gets no such file, and one log line says so: a cue on an invented clock would
    splice at the wrong place. `video` (an MPEG-TS recording) is what the hls playlist's
    byte ranges point into, by a path relative to `out_dir`.
    `loudness` is the recording's measured loudness track (what `classify` passes; empty for a
    file without audio): segments.json entries then carry the loudness keys.
    """
    chosen = check_formats(formats)
    if not name or "/" in name or os.sep in name or name in (".", ".."):
        raise ValueError(f"output base name must be a plain file name, got {name!r}")
    out_dir = Path(out_dir)
    ensure_writable_dir(out_dir)

    ad_set = set(ad_classes)
    measured = loudness is not None
    per_segment = segment_loudness(segments, loudness) if measured or "loudness" in chosen else None
    written: list[Path] = []
    for fmt in chosen:
        path = out_dir / f"{name}{SUFFIXES[fmt]}"
        if fmt in CUE_FORMATS and (cue_plan is None or cue_plan.missing):
            reason = cue_plan.missing if cue_plan is not None else "no cue plan was made"
            log.warning("format skipped format=%s file=%s reason=%s", fmt, path, json.dumps(reason))
            continue
        try:
            if fmt == "json":
                atomic_write_text(path, segments_json(segments, per_segment if measured else None))
            elif fmt == "edl":
                atomic_write_text(path, edl(segments))
            elif fmt == "txt":
                atomic_write_text(path, comskip_txt(segments, fps, total_frames))
            elif fmt == "ffmeta":
                atomic_write_text(path, ffmetadata(segments, title=name))
            elif fmt == "csv":
                atomic_write_text(path, probabilities_csv(times, probs, classes))
            elif fmt == "scte35":
                assert cue_plan is not None
                atomic_write_text(path, scte35_sidecar(cue_plan))
            elif fmt == "dash":
                assert cue_plan is not None
                atomic_write_text(path, dash_eventstream(cue_plan))
            elif fmt == "hls":
                assert cue_plan is not None
                if video is None:
                    log.warning("format skipped format=hls file=%s reason=%s", path, json.dumps("no recording given"))
                    continue
                atomic_write_text(path, hls_text(video, out_dir, cue_plan, duration))
            elif fmt == "png":
                from detector.offline.timeline import render_timeline  # matplotlib only when asked for

                render_timeline(path, times, ad_probability(probs, classes, ad_set), segments, duration, name, truth)
            elif fmt == "loudness":
                atomic_write_text(path, loudness_csv(segments, per_segment or []))
        except OSError as exc:
            raise RuntimeFailure(f"cannot write {path}: {exc.strerror or exc}") from None
        written.append(path)
    return written
