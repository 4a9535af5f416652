"""MPEG-TS over SRT (`srt://`), the contribution link over the internet.

Needs an FFmpeg built with libsrt; the one inside the opencv-python wheel is not, so an SRT
channel fails to open here and is reported `unreachable` (the libav capture issue fixes that).
"""

from __future__ import annotations

from detector.sources.opencv import OpenCvSource


class SrtSource(OpenCvSource):
    kind = "srt"
    schemes = ("srt",)
