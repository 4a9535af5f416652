"""The sliding window of the last T feature vectors of one channel (pure, no threads).

Preallocated ring of [T, D] floats: pushing a frame never allocates, and a window is
ready every `hop` frames once T frames have arrived. A reconnect or a timestamp jump
calls `reset()`, so no window ever spans a gap in the stream.
"""

from __future__ import annotations

import numpy as np


class Window:
    def __init__(self, frames: int, hop: int):
        if frames < 1 or hop < 1:
            raise ValueError("window frames and hop must be >= 1")
        self.frames = frames
        self.hop = hop
        self._buf: np.ndarray | None = None
        self._times = np.zeros(frames, np.float64)
        self._count = 0          # frames pushed since the last reset

    def reset(self) -> None:
        self._count = 0

    @property
    def count(self) -> int:
        return self._count

    def push(self, feature: np.ndarray, media_time: float) -> bool:
        """Add one frame; True when a new window is due (full, and on the hop)."""
        if self._buf is None or self._buf.shape[1] != feature.shape[-1]:
            self._buf = np.zeros((self.frames, feature.shape[-1]), np.float32)
        slot = self._count % self.frames
        self._buf[slot] = feature
        self._times[slot] = media_time
        self._count += 1
        return self._count >= self.frames and (self._count - self.frames) % self.hop == 0

    def current(self) -> np.ndarray:
        """The window in time order, oldest first: a fresh [T, D] array."""
        if self._buf is None or self._count < self.frames:
            raise ValueError("window not full yet")
        start = self._count % self.frames
        return np.roll(self._buf, -start, axis=0)

    @property
    def newest_time(self) -> float:
        return float(self._times[(self._count - 1) % self.frames])
