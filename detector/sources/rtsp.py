"""RTSP cameras and encoders (`rtsp://`, `rtsps://`): TCP interleaved by default.

Over UDP a lossy network drops RTP packets and H.264 smears until the next keyframe; TCP
makes loss a stall the watchdog sees instead (`capture.rtsp_transport` to choose).
"""

from __future__ import annotations

from detector.sources.libav import LibavSource


class RtspSource(LibavSource):
    kind = "rtsp"
    schemes = ("rtsp", "rtsps")

    def av_options(self) -> dict[str, str]:
        return {**super().av_options(), "rtsp_transport": self.options.rtsp_transport,
                "timeout": str(int(self.options.read_timeout * 1e6))}     # socket I/O, microseconds
