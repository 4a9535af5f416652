"""Where a decided boundary really was: inside the window, snapped to a black frame or cut.

The decision comes seconds after the boundary (the window has to fill with new content),
but subscribers and media centres want the time of the boundary itself, on the real cut
(Comskip's users complain about cuts inside scenes). Three steps:

1. fine crossing: the sequence model is run on the windows ending at every frame of the
   search range, and the crossing is the first frame from which p(ad) stays on the new
   side of 0.5; that is the boundary plus the model's own lag;
2. cues: black runs and shot cuts in the frames before the crossing (cheap statistics,
   `framestats.py`);
3. choice: a black run beats a cut (broadcasters put black at break edges); among cues of
   the same kind, the one closest to crossing - expected lag wins; with no cue, crossing -
   expected lag.

All of it is pure; `History` only keeps the recent frames of one channel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from detector.analysis.framestats import FrameStats, cut_strength, is_black

# What placed a segment's boundary: the contract's `boundary` field of segment events, in
# one place. `stream_start`: the first segment of a stream (or after a gap) starts at its first
# frame; `cut` / `black` / `silence`: snapped to that cue; `model`: no cue near, the model's
# own crossing minus its measured lag. `silence` is not produced yet (no audio cues).
# `stream_end` (an extension of the contract's list) marks the end of the last segment when
# the stream or the daemon stops: no boundary was detected there. The wire schema
# (detector.events.schema) takes this tuple as the values it accepts.
STREAM_START, CUT, BLACK, SILENCE, MODEL, STREAM_END = "stream_start", "cut", "black", "silence", "model", "stream_end"
BOUNDARY_KINDS: tuple[str, ...] = (STREAM_START, CUT, BLACK, SILENCE, MODEL, STREAM_END)


@dataclass(frozen=True)
class BoundarySettings:
    search_back_seconds: float = 4.0     # how far before the crossing a cue may lie
    max_search_seconds: float = 12.0     # cap on the decision's search range
    cut_threshold: float = 0.3
    black_threshold: float = 24.0
    expected_lag_seconds: float = 0.6    # the bundle's measured switch latency replaces this


@dataclass(frozen=True)
class Cue:
    time: float        # estimated boundary time for this cue
    kind: str          # BLACK | CUT (SILENCE once audio cues exist)
    strength: float


class History:
    """The last `capacity` frames of a channel: times, stats and features (preallocated)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.times = np.zeros(capacity, np.float64)
        self.stats: list[FrameStats | None] = [None] * capacity
        self.features: np.ndarray | None = None
        self.count = 0

    def reset(self) -> None:
        self.count = 0

    def push(self, t: float, stats: FrameStats, feature: np.ndarray) -> None:
        if self.features is None:
            self.features = np.zeros((self.capacity, feature.shape[-1]), np.float32)
        slot = self.count % self.capacity
        self.times[slot] = t
        self.stats[slot] = stats
        self.features[slot] = feature
        self.count += 1

    def ordered(self) -> tuple[np.ndarray, list[FrameStats], np.ndarray]:
        """Times, stats and features held, oldest first."""
        n = min(self.count, self.capacity)
        idx = [(self.count - n + i) % self.capacity for i in range(n)]
        assert self.features is not None or n == 0
        feats = self.features[idx] if n else np.zeros((0, 0), np.float32)
        return self.times[idx], [self.stats[i] for i in idx], feats  # type: ignore[misc]


def fine_crossing(times: np.ndarray, p_ad: np.ndarray, to_ad: bool) -> float:
    """First time from which p(ad) stays on the new side of 0.5 (times ascending).

    Non-finite probabilities (a window the model could not score) say nothing: they are left out.
    """
    finite = np.isfinite(p_ad)
    if not finite.all():
        if not finite.any():
            return float(times[-1])
        times, p_ad = times[finite], p_ad[finite]
    new_side = p_ad >= 0.5 if to_ad else p_ad < 0.5
    old = np.flatnonzero(~new_side)
    if len(old) == 0:
        return float(times[0])
    last_old = int(old[-1])
    return float(times[min(last_old + 1, len(times) - 1)])


def find_cues(times: np.ndarray, stats: list[FrameStats], lo: float, hi: float, to_ad: bool, fps: float,
              settings: BoundarySettings) -> list[Cue]:
    """Black runs and cuts whose boundary estimate lies in [lo, hi].

    A cue between two samples is placed half a sample before the later one: the real
    change happened somewhere in between.
    """
    half = 0.5 / fps
    cues: list[Cue] = []
    black = np.array([is_black(s, settings.black_threshold) for s in stats], bool)
    i = 0
    n = len(times)
    while i < n:
        if not black[i]:
            i += 1
            continue
        j = i
        while j + 1 < n and black[j + 1]:
            j += 1
        if to_ad:
            t = times[i] - half if i > 0 else times[i]
        else:
            t = times[j + 1] - half if j + 1 < n else times[j] + half
        if lo <= t <= hi:
            cues.append(Cue(float(t), BLACK, 1.0))
        i = j + 1
    for k in range(1, n):
        if black[k] or black[k - 1]:
            continue
        s = cut_strength(stats[k - 1], stats[k])
        t = times[k] - half
        if s >= settings.cut_threshold and lo <= t <= hi:
            cues.append(Cue(float(t), CUT, s))
    return cues


def choose_boundary(cues: list[Cue], crossing: float, lag: float, floor: float) -> tuple[float, str]:
    """The boundary time and what placed it (BLACK, CUT or MODEL, see BOUNDARY_KINDS)."""
    target = crossing - lag
    for kind in (BLACK, CUT):
        same = [c for c in cues if c.kind == kind]
        if same:
            best = min(same, key=lambda c: abs(c.time - target))
            return max(best.time, floor), kind
    return max(target, floor), MODEL


def locate(history: History, decided_at: float, search_from: float, to_ad: bool, window_frames: int, fps: float,
           ad_probability: Callable[[np.ndarray], np.ndarray], settings: BoundarySettings, floor: float) -> tuple[float, str]:
    """Estimate the boundary of a change decided at `decided_at` (see the module docstring)."""
    times, stats, feats = history.ordered()
    if len(times) == 0:
        return decided_at, MODEL
    lo = max(search_from - 1.0 / fps, decided_at - settings.max_search_seconds)
    ends = np.flatnonzero((times >= lo) & (times <= decided_at + 1e-9))
    ends = ends[ends >= window_frames - 1]
    crossing = decided_at
    if len(ends):
        windows = np.stack([feats[e - window_frames + 1:e + 1] for e in ends])
        crossing = fine_crossing(times[ends], ad_probability(windows), to_ad)
    cue_lo = max(crossing - settings.search_back_seconds, floor)
    cues = find_cues(times, stats, cue_lo, crossing, to_ad, fps, settings)
    return choose_boundary(cues, crossing, settings.expected_lag_seconds, floor)
