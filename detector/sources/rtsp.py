"""RTSP cameras and encoders (`rtsp://`, `rtsps://`): TCP interleaved by default.

Over UDP a lossy network drops RTP packets and H.264 smears until the next keyframe; TCP
makes loss a stall the watchdog sees instead (`capture.rtsp_transport` to choose).
"""

from __future__ import annotations

from detector.sources.opencv import OpenCvSource


class RtspSource(OpenCvSource):
    kind = "rtsp"
    schemes = ("rtsp", "rtsps")

    def ffmpeg_options(self) -> list[str]:
        return [*super().ffmpeg_options(), f"rtsp_transport;{self.options.rtsp_transport}"]
