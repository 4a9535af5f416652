"""A V4L2 capture card (`/dev/videoN`): raw frames, no timestamps worth using.

The one kind not read through libav: the PyAV wheel's libav has no v4l2 demuxer, OpenCV's
V4L2 backend reads the card directly. Its frames carry no stream clock, so arrival time is
the timeline (`clock = "arrival"`: the capture thread does not ask for a position) and
events carry no `pts`. No audio: a card's sound is a separate ALSA device. Untested here
(this machine has no capture card); the README says so.
"""

from __future__ import annotations

import re

import cv2
import numpy as np

from detector.sources.base import Source

_DEVICE_RE = re.compile(r"^/dev/video([0-9]+)$")


class DeviceSource(Source):
    kind = "device"
    clock = "arrival"

    def __init__(self, url, options):
        super().__init__(url, options)
        self._cap: cv2.VideoCapture | None = None

    @classmethod
    def matches(cls, url: str, scheme: str | None) -> bool:
        return scheme is None and _DEVICE_RE.match(url) is not None

    def open(self) -> bool:
        m = _DEVICE_RE.match(self.url)
        self._cap = cv2.VideoCapture(int(m.group(1)) if m else self.url, cv2.CAP_V4L2)
        if not self._cap.isOpened():
            self.open_error = "cannot open the capture device (missing, busy, or no permission)"
            return False
        self.has_audio = False
        return True

    @property
    def fps(self) -> float | None:
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0) if self._cap is not None else 0.0
        return fps if 0 < fps < 1000 else None

    def grab(self) -> bool:
        ok = self._cap is not None and bool(self._cap.grab())
        if ok:
            w, h = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
            self.frame_size = (w, h)
        return ok

    def position(self) -> float | None:
        return None

    def retrieve(self, size: tuple[int, int] | None = None) -> np.ndarray | None:
        ok, frame = self._cap.retrieve() if self._cap is not None else (False, None)
        if not ok or frame is None:
            return None
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        if size is not None and frame.shape[:2] != tuple(size):
            frame = cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        return frame

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
