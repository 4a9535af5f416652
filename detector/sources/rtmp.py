"""RTMP (`rtmp://`, `rtmps://`), as pulled from a media server: FLV with H.264 and AAC, no data streams."""

from __future__ import annotations

from detector.sources.libav import LibavSource


class RtmpSource(LibavSource):
    kind = "rtmp"
    schemes = ("rtmp", "rtmps")

    def av_options(self) -> dict[str, str]:
        return {**super().av_options(), "rw_timeout": str(int(self.options.read_timeout * 1e6))}
