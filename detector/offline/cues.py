"""The SCTE-35 cues of a classified recording: one splice_insert per ad boundary, on its own PTS.

The offline sidecar (`NAME.scte35.txt`), the DASH EventStream (`NAME.eventstream.xml`) and the
HLS playlist (`NAME.m3u8`) all speak the recording's own 90 kHz clock, because the tools that
consume them (threefive's injector, x9k3, packagers) splice on that clock, not on seconds from
the first frame. So each boundary's media time goes back to the PTS of the frame there (the
analysed frames' (media time, PTS) marks, wrap-aware: a recording crossing the 33-bit wrap
keeps working), and each cue is the very splice_insert the live events carry
(detector.events.scte35), so live and offline cannot disagree.

Pure: segments and marks in, a `CuePlan` out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from detector.analysis.clock import PTS_HZ, PTS_MODULUS, signed_delta, wrap
from detector.analysis.segments import Segment
from detector.events.scte35 import Scte35Cue, splice_event_id, splice_insert

__all__ = ["OfflineCue", "CuePlan", "plan_cues", "DEFAULT_PREROLL_SECONDS"]

#: How early the sidecar asks an injector to insert a cue; injectors default to 2-10 s ahead.
DEFAULT_PREROLL_SECONDS = 4.0


@dataclass(frozen=True)
class OfflineCue:
    """One cue of a recording: what it says (`cue`), where it splices and where to insert it."""

    number: int           # the ad segment's number in the recording, from 1
    time: float           # the boundary, seconds from the first frame (as segments.json)
    insert_pts: int       # 90 kHz, mod 2**33: where an injector should put the cue
    cue: Scte35Cue        # splice_insert; cue.pts is the splice point (the boundary frame's PTS)

    @property
    def splice_pts(self) -> int:
        assert self.cue.pts is not None
        return self.cue.pts

    @property
    def out_of_network(self) -> bool:
        return bool(self.cue.out_of_network)


@dataclass(frozen=True)
class CuePlan:
    """The cues of one recording, or why there are none that can be trusted (`missing`)."""

    cues: tuple[OfflineCue, ...]
    first_pts: int | None
    preroll_seconds: float
    missing: str | None = None     # one line for the user when the recording gives no clock


def insert_point(splice_pts: int, first_pts: int, preroll_seconds: float) -> int:
    """`preroll_seconds` before the splice point, but never before the recording's first frame
    (an injector cannot put a cue where there is no stream yet). Wrap-aware on the 33-bit clock."""
    ahead = int(round(max(0.0, preroll_seconds) * PTS_HZ))
    into = signed_delta(splice_pts, first_pts)       # ticks from the first frame to the splice
    return wrap(splice_pts - min(ahead, max(0, into)))


def plan_cues(segments: Sequence[Segment], pts_at: Callable[[float], int | None], first_pts: int | None, name: str,
              preroll_seconds: float = DEFAULT_PREROLL_SECONDS) -> CuePlan:
    """A cue-out at each ad segment's start (with the break's duration) and a cue-in with the
    same event id at its end.

    The event id is `splice_event_id(f"{name}-{n}")` (n = the ad segment's number), stable for
    a recording classified twice. A recording without PTS (rare: some raw or broken files) has
    no clock for a splicer to act on; the plan then says so instead of inventing one.
    """
    if preroll_seconds < 0:
        raise ValueError(f"preroll must be >= 0 seconds, got {preroll_seconds}")
    if first_pts is None:
        return CuePlan((), None, preroll_seconds, "the recording has no presentation timestamps (PTS)")
    cues: list[OfflineCue] = []
    ads = [s for s in segments if s.is_ad and not s.withdrawn]
    for n, seg in enumerate(ads, start=1):
        event_id = splice_event_id(f"{name}-{n}")
        start, end = pts_at(seg.start), pts_at(seg.end)
        for time, pts in ((seg.start, start), (seg.end, end)):
            if pts is None:
                return CuePlan((), first_pts, preroll_seconds,
                               f"no presentation timestamp (PTS) at {time:.2f} s of the recording")
        assert start is not None and end is not None
        # offline the break's length is known: the cue-out says so (x9k3 and HLS packagers
        # need it for #EXT-X-CUE-OUT:DURATION); auto_return stays off, the cue-in ends it
        length = (end - start) % PTS_MODULUS
        cues.append(OfflineCue(n, float(seg.start), insert_point(start, first_pts, preroll_seconds),
                               splice_insert(event_id, True, start, break_duration=length or None)))
        cues.append(OfflineCue(n, float(seg.end), insert_point(end, first_pts, preroll_seconds),
                               splice_insert(event_id, False, end)))
    return CuePlan(tuple(cues), first_pts, preroll_seconds)
