"""RTMP ingest (`rtmp://`, `rtmps://`), as pulled from a media server."""

from __future__ import annotations

from detector.sources.opencv import OpenCvSource


class RtmpSource(OpenCvSource):
    kind = "rtmp"
    schemes = ("rtmp", "rtmps")
