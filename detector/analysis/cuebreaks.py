"""Ad breaks from cue-outs and cue-ins on a recording's timeline (labels from SCTE-35).

A recording that carries its broadcaster's SCTE-35 cues is already labelled: ad from each
cue-out to its cue-in, programme elsewhere. Real feeds are untidy, so the pairing is
forgiving and says what it forgave: an `out` pairs with the `in` of the same event id (in
order when either has none), a break whose `in` never came ends at out + break_duration or
at the recording's end, an `in` with no open break is ignored, and overlapping breaks
(nested placement opportunities inside a break) merge into one.

Pure: marks in, Segments out (no SCTE-35 parsing here; `detector.sources.cues` makes marks).
"""

from __future__ import annotations

from dataclasses import dataclass

from detector.analysis.segments import Segment


@dataclass(frozen=True)
class CueMark:
    """One break boundary: seconds on the recording's timeline, out (True) or in (False)."""

    time: float
    out: bool
    event_id: int | None = None
    duration: float | None = None     # the break's announced length (out only)


def _close(open_: list[CueMark], mark: CueMark) -> CueMark | None:
    """The open break this `in` ends: the same event id, else the oldest one without an id;
    an `in` without an id ends the oldest open break (None: nothing to end)."""
    if mark.event_id is not None:
        same = [m for m in open_ if m.event_id == mark.event_id]
        if same:
            return same[0]
        anonymous = [m for m in open_ if m.event_id is None]
        return anonymous[0] if anonymous else None
    return open_[0] if open_ else None


def breaks_from_marks(marks: list[CueMark], end: float, ad_label: str = "commercial") -> tuple[list[Segment], list[str]]:
    """Ad segments [out, in) clipped to [0, end), sorted and merged, and notes on what was odd."""
    notes: list[str] = []
    open_: list[CueMark] = []
    spans: list[tuple[float, float]] = []
    def expire(now: float) -> None:
        """Breaks whose announced break_duration ran out before `now` end there."""
        for m in [m for m in open_ if m.duration is not None and m.duration > 0 and m.time + m.duration <= now]:
            open_.remove(m)
            spans.append((m.time, m.time + m.duration))
            notes.append(f"cue-out at {m.time:.3f} s (event {m.event_id}) has no cue-in: closed after its break_duration {m.duration:.3f} s")

    for mark in sorted(marks, key=lambda m: m.time):
        expire(mark.time)
        if mark.out:
            if any(m.event_id is not None and m.event_id == mark.event_id for m in open_):
                notes.append(f"cue-out at {mark.time:.3f} s repeats the open break {mark.event_id}: kept the first")
                continue
            open_.append(mark)
            continue
        start = _close(open_, mark)
        if start is None:
            notes.append(f"cue-in at {mark.time:.3f} s (event {mark.event_id}) without a cue-out: ignored")
            continue
        open_.remove(start)
        spans.append((start.time, mark.time))
    expire(float("inf"))
    for m in open_:
        spans.append((m.time, end))
        notes.append(f"cue-out at {m.time:.3f} s (event {m.event_id}) has no cue-in: closed at the recording's end {end:.3f} s")
    merged: list[list[float]] = []
    for a, b in sorted((max(0.0, a), min(b, end)) for a, b in spans):
        if b <= a:
            continue
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [Segment(a, b, ad_label, True) for a, b in merged], notes
