"""Ground truth for `evaluate`: a labels file (CSV or EDL), or a JSON truth that also marks spans to score apart.

Why a JSON form: an aggregate score hides the cases that matter most for a cue block, the
few seconds where the picture misleads (an advert shot on a pitch) or the sound does. The
demo generator knows exactly where it drew those (`NAME.truth.json`, detector.demo.write),
and anyone with such a list for real recordings can write the same file:

    {"segments": [{"start": 0, "end": 36.04, "label": "football"}, ...],
     "traps": [[36.48, 41.92, "ad_on_pitch"], ...]}

`segments` are what the CSV holds (a label in the ad classes is an ad; `is_ad` is ignored,
so the bundle's own ad classes decide, as for a CSV); `traps` are [start, end, kind] spans,
possibly overlapping, that `scoring.span_scores` reports per kind.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from detector.analysis.segments import Segment, check_sorted, read_labels
from detector.errors import UsageError


@dataclass(frozen=True)
class Truth:
    """The true segments of a recording, and the spans to score apart (empty for CSV/EDL)."""

    segments: list[Segment]
    spans: list[tuple[float, float, str]] = field(default_factory=list)


def _seconds(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise UsageError(f"{where}: {value!r} is not a number of seconds >= 0")
    return float(value)


def parse_truth_json(text: str, where: str, ad_classes: set[str]) -> Truth:
    """The JSON truth form (see the module docstring); every error names the file and the entry."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("segments"), list):
        raise UsageError(f"{where}: expected an object with a 'segments' list (and optionally a 'traps' list)")
    segments = []
    for i, item in enumerate(data["segments"]):
        at = f"{where}: segments[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("label"), str) or not item["label"].strip():
            raise UsageError(f"{at}: expected {{\"start\": S, \"end\": S, \"label\": NAME}}")
        label = item["label"].strip()
        segments.append(Segment(_seconds(item.get("start"), at), _seconds(item.get("end"), at), label, label in ad_classes))
    if not segments:
        raise UsageError(f"{where}: 'segments' is empty; the truth needs at least one segment")
    check_sorted(segments, where)
    spans: list[tuple[float, float, str]] = []
    raw = data.get("traps", [])
    if not isinstance(raw, list):
        raise UsageError(f"{where}: 'traps' must be a list of [start, end, kind]")
    for i, item in enumerate(raw):
        at = f"{where}: traps[{i}]"
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[2], str) and item[2]):
            raise UsageError(f"{at}: expected [start, end, kind], found {json.dumps(item)[:80]}")
        start, end = _seconds(item[0], at), _seconds(item[1], at)
        if end <= start:
            raise UsageError(f"{at}: ends ({end}) at or before it starts ({start})")
        spans.append((start, end, item[2]))
    return Truth(segments, spans)


def read_truth(path: Path, ad_classes: set[str], ad_label: str = "commercial") -> Truth:
    """`--truth`: a `.json` truth (segments and spans), else a CSV or EDL (segments only)."""
    path = Path(path)
    if path.suffix.lower() != ".json":
        return Truth(read_labels(path, ad_classes, ad_label=ad_label))
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UsageError(f"{path}: truth file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read truth file ({exc})") from None
    return parse_truth_json(text, str(path), ad_classes)
