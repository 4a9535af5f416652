"""Reading a source through OpenCV's FFmpeg backend: what every network and file kind shares.

Options reach OpenCV's FFmpeg only through the process-wide environment variable
OPENCV_FFMPEG_CAPTURE_OPTIONS, read at open; a lock keeps two channels opening at once from
seeing each other's options. `+genpts+discardcorrupt` as Frigate passes to ffmpeg: frames
without a timestamp get one, corrupt packets are dropped rather than decoded into garbage.
Each kind adds its own options (`ffmpeg_options`).
"""

from __future__ import annotations

import os
import threading

import cv2
import numpy as np

from detector.sources.base import Source

_OPEN_LOCK = threading.Lock()     # OPENCV_FFMPEG_CAPTURE_OPTIONS is process-wide, read at open


class OpenCvSource(Source):
    """A source read with cv2.VideoCapture(url, CAP_FFMPEG) and open/read timeouts."""

    def __init__(self, url, options):
        super().__init__(url, options)
        self._cap: cv2.VideoCapture | None = None

    def ffmpeg_options(self) -> list[str]:
        """`key;value` FFmpeg options for this kind (OpenCV's syntax)."""
        return ["fflags;+genpts+discardcorrupt"]

    def _capture(self) -> cv2.VideoCapture:
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.options.open_timeout * 1000),
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.options.read_timeout * 1000)]
        with _OPEN_LOCK:
            old = os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS")
            os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = "|".join(self.ffmpeg_options())
            try:
                return cv2.VideoCapture(self.url, cv2.CAP_FFMPEG, params)
            finally:
                if old is None:
                    os.environ.pop("OPENCV_FFMPEG_CAPTURE_OPTIONS", None)
                else:
                    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = old

    def open(self) -> bool:
        self._cap = self._capture()
        return bool(self._cap.isOpened())

    @property
    def fps(self) -> float | None:
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0) if self._cap is not None else 0.0
        return fps if 0 < fps < 1000 else None

    def grab(self) -> bool:
        return self._cap is not None and bool(self._cap.grab())

    def position(self) -> float | None:
        ms = self._cap.get(cv2.CAP_PROP_POS_MSEC) if self._cap is not None else None
        if ms is None or not np.isfinite(ms) or ms < 0:
            return None
        return ms / 1000.0

    def retrieve(self) -> np.ndarray | None:
        ok, frame = self._cap.retrieve() if self._cap is not None else (False, None)
        if not ok or frame is None:
            return None
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR) if frame.ndim == 2 else frame

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
