"""The sliding window of the last T feature vectors of one channel (pure, no threads).

Preallocated ring of [T, D] floats: pushing a frame never allocates, and a window is
ready every `hop` frames once it holds enough frames. A reconnect or a timestamp jump
calls `reset()`, so no window ever spans a gap in the stream.

Stream start. By default a window is first due when T frames have arrived. A bundle
trained on clips shorter than T (`train` pads them) may decide earlier: with
`min_frames` < T a window is due from `min_frames` frames on, filled by `pad_front`, the
oldest frame repeated in front. Training pads its short clips with the very same function,
so the model sees exactly what the live window gives it at the start of a stream.
"""

from __future__ import annotations

import numpy as np


def pad_front(frames: np.ndarray, t: int) -> np.ndarray:
    """[n, D] frames in time order (1 <= n <= t) -> a fresh [t, D] window: the oldest frame repeated in front.

    The one rule for a window that has fewer than t frames, shared by the live window at stream
    start and by training's windows of short clips (no train/serve skew).
    """
    n = len(frames)
    if not 1 <= n <= t:
        raise ValueError(f"pad_front needs 1..{t} frames, got {n}")
    out = np.empty((t, frames.shape[-1]), np.float32)
    out[: t - n] = frames[0]
    out[t - n:] = frames
    return out


def min_frames_for(t: int) -> int:
    """The fewest real frames a padded window may hold: half the window (rounded up)."""
    return max(1, (t + 1) // 2)


class Window:
    def __init__(self, frames: int, hop: int, min_frames: int | None = None):
        if frames < 1 or hop < 1:
            raise ValueError("window frames and hop must be >= 1")
        min_frames = frames if min_frames is None else int(min_frames)
        if not 1 <= min_frames <= frames:
            raise ValueError(f"min_frames must be in 1..{frames}, got {min_frames}")
        self.frames = frames
        self.hop = hop
        self.min_frames = min_frames
        self._buf: np.ndarray | None = None
        self._times = np.zeros(frames, np.float64)
        self._count = 0          # frames pushed since the last reset

    def reset(self) -> None:
        self._count = 0

    @property
    def count(self) -> int:
        return self._count

    def push(self, feature: np.ndarray, media_time: float) -> bool:
        """Add one frame; True when a new window is due (enough frames, and on the hop)."""
        if self._buf is None or self._buf.shape[1] != feature.shape[-1]:
            self._buf = np.zeros((self.frames, feature.shape[-1]), np.float32)
        slot = self._count % self.frames
        self._buf[slot] = feature
        self._times[slot] = media_time
        self._count += 1
        return self._count >= self.min_frames and (self._count - self.min_frames) % self.hop == 0

    def current(self) -> np.ndarray:
        """The window in time order, oldest first: a fresh [T, D] array (padded by `pad_front` before T frames)."""
        if self._buf is None or self._count < self.min_frames:
            raise ValueError("window not full yet")
        if self._count < self.frames:
            return pad_front(self._buf[: self._count], self.frames)
        start = self._count % self.frames
        return np.roll(self._buf, -start, axis=0)

    @property
    def newest_time(self) -> float:
        return float(self._times[(self._count - 1) % self.frames])
