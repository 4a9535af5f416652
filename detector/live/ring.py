"""A per-channel ring buffer of analysis frames between capture and inference.

Preallocated and fixed in size, so memory does not grow with uptime; `push` never blocks
the capture thread. When inference falls behind, the oldest frame is overwritten and the
caller counts the drop (reason `ring_overflow`): a live detector must stay live, and the
newest frames matter most.

The capture thread resizes straight into the slot `reserve()` hands out, so a frame is
written once and copied once more, into the inference batch.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from detector.analysis.framestats import FrameStats


@dataclass
class FrameMeta:
    index: int               # decoded frame number on this connection
    media_time: float        # channel timeline seconds (continuous across reconnects)
    wall_time: float         # time.time() at capture
    mono_time: float         # time.monotonic() at capture
    stats: FrameStats
    generation: int          # connection number: a new one means "start a fresh window"
    pts: int | None = None   # the source's 90 kHz PTS (mod 2**33); None for a source without a clock


class Ring:
    def __init__(self, capacity: int, shape: tuple[int, int, int]):
        if capacity < 1:
            raise ValueError("ring capacity must be >= 1")
        self.capacity = capacity
        self.images = np.zeros((capacity, *shape), np.uint8)
        self.meta: list[FrameMeta | None] = [None] * capacity
        self._head = 0            # next slot to read
        self._size = 0
        self._lock = threading.Lock()
        self.dropped = 0

    def __len__(self) -> int:
        with self._lock:
            return self._size

    def push(self, image: np.ndarray, meta: FrameMeta) -> bool:
        """Store a frame; returns True when the oldest frame was dropped to make room."""
        with self._lock:
            dropped = self._size == self.capacity
            if dropped:
                self._head = (self._head + 1) % self.capacity
                self._size -= 1
                self.dropped += 1
            slot = (self._head + self._size) % self.capacity
            self.images[slot] = image
            self.meta[slot] = meta
            self._size += 1
            return dropped

    def oldest_mono(self) -> float | None:
        with self._lock:
            if not self._size:
                return None
            meta = self.meta[self._head]
            return meta.mono_time if meta else None

    def pop_into(self, out: np.ndarray, start: int, count: int) -> list[FrameMeta]:
        """Move up to `count` oldest frames into out[start:], oldest first."""
        metas: list[FrameMeta] = []
        with self._lock:
            n = min(count, self._size)
            for i in range(n):
                slot = (self._head + i) % self.capacity
                out[start + i] = self.images[slot]
                metas.append(self.meta[slot])  # type: ignore[arg-type]
                self.meta[slot] = None
            self._head = (self._head + n) % self.capacity
            self._size -= n
        return metas

    def clear(self) -> int:
        with self._lock:
            n = self._size
            self._size = 0
            self.meta = [None] * self.capacity
            return n
