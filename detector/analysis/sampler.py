"""Which decoded frames the analysis keeps: pure logic shared by training and inference.

The original tutorial sampled by frame count in training and by something else at
inference; here both use this one rule on media time, so a 29.97 fps recording, a 25 fps
stream and a variable-frame-rate file all give the model frames spaced 1/analysis_fps
apart, exactly as in training.
"""

from __future__ import annotations

import math


class Sampler:
    """Keep the first frame at or after each tick k / fps of media time.

    Robust to variable frame rate and to frames faster than the analysis rate. A time that
    goes backwards (an encoder restart) starts a new sequence of ticks; the caller decides
    what else a discontinuity means (the live capture resets its window).
    """

    def __init__(self, fps: float):
        if fps <= 0:
            raise ValueError("analysis fps must be positive")
        self.fps = fps
        self._last_slot: int | None = None
        self._last_time: float | None = None

    def reset(self) -> None:
        self._last_slot = None
        self._last_time = None

    def keep(self, media_time: float) -> bool:
        # a tiny epsilon so t = k/fps computed in floating point lands in slot k, not k-1
        slot = math.floor(media_time * self.fps + 1e-6)
        if self._last_time is not None and media_time < self._last_time:
            self._last_slot = None
        self._last_time = media_time
        if self._last_slot is None or slot > self._last_slot:
            self._last_slot = slot
            return True
        return False
