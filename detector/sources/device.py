"""A V4L2 capture card (`/dev/videoN`): raw frames, no timestamps worth using.

Its frames carry no stream clock, so arrival time is the timeline (`clock = "arrival"`: the
capture thread does not ask for a position).
"""

from __future__ import annotations

import re

import cv2

from detector.sources.opencv import OpenCvSource

_DEVICE_RE = re.compile(r"^/dev/video([0-9]+)$")


class DeviceSource(OpenCvSource):
    kind = "device"
    clock = "arrival"

    @classmethod
    def matches(cls, url: str, scheme: str | None) -> bool:
        return scheme is None and _DEVICE_RE.match(url) is not None

    def _capture(self) -> cv2.VideoCapture:
        m = _DEVICE_RE.match(self.url)
        return cv2.VideoCapture(int(m.group(1)) if m else self.url, cv2.CAP_V4L2)
