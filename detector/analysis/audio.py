"""A channel's decoded audio on its media timeline, so each analysis step can ask for its own.

Audio and video travel separately: in an MPEG-TS the audio of a moment may arrive half a
second before or after its pictures, and it is decoded in chunks (an AAC frame is 64 ms).
So audio is not glued to video frames as it arrives; it is written here at its place on
the channel timeline, and the analysis, which runs a little behind capture, reads the span
of each step (from the previous analysed frame to this one). Fixed capacity (memory stays
flat for months); a gap or a jump in the audio's time starts the buffer afresh rather than
splicing unrelated sound together. Thread-safe: the capture writes, the analysis reads.
"""

from __future__ import annotations

import math
import threading

import numpy as np

SILENCE_DBFS = -120.0
_JOIN_TOLERANCE = 0.1       # seconds: audio chunks this close to the end continue it


class AudioBuffer:
    def __init__(self, rate: int = 16_000, seconds: float = 60.0):
        self.rate = rate
        self.capacity = max(1, int(rate * seconds))
        self._buf = np.zeros(self.capacity, np.float32)
        self._end: float | None = None     # timeline time just after the newest sample
        self._n = 0                        # valid samples (<= capacity), newest at _pos - 1
        self._pos = 0
        self._lock = threading.Lock()
        self.restarts = 0                  # gaps/jumps that started the buffer afresh

    def write(self, t: float, samples: np.ndarray) -> None:
        """Samples starting at timeline time `t`."""
        samples = np.asarray(samples, np.float32).reshape(-1)
        if not len(samples) or not math.isfinite(t):
            return
        with self._lock:
            if self._end is None or abs(t - self._end) > _JOIN_TOLERANCE:
                if self._end is not None:
                    self.restarts += 1
                self._n, self._pos, self._end = 0, 0, t
            if len(samples) >= self.capacity:
                samples = samples[-self.capacity:]
            k = len(samples)
            first = min(k, self.capacity - self._pos)
            self._buf[self._pos:self._pos + first] = samples[:first]
            if k > first:
                self._buf[:k - first] = samples[first:]
            self._pos = (self._pos + k) % self.capacity
            self._n = min(self.capacity, self._n + k)
            self._end += k / self.rate

    def read(self, t0: float, t1: float) -> np.ndarray | None:
        """The samples between `t0` and `t1` that are held (a copy), None when none are."""
        with self._lock:
            if self._end is None or not self._n or t1 <= t0:
                return None
            start = self._end - self._n / self.rate
            a, b = max(t0, start), min(t1, self._end)
            if b <= a:
                return None
            first = (self._pos - self._n) % self.capacity
            i0 = int(round((a - start) * self.rate))
            i1 = min(self._n, int(round((b - start) * self.rate)))
            idx = (first + np.arange(i0, i1)) % self.capacity
            return self._buf[idx].copy()

    def clear(self) -> None:
        with self._lock:
            self._n, self._pos, self._end = 0, 0, None


def level_dbfs(samples: np.ndarray | None) -> float:
    """RMS level in dBFS (full-scale sine = -3 dBFS); SILENCE_DBFS for nothing or digital silence."""
    if samples is None or not len(samples):
        return SILENCE_DBFS
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return max(SILENCE_DBFS, 20.0 * math.log10(rms)) if rms > 0 else SILENCE_DBFS
