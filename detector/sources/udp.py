"""MPEG-TS over UDP (`udp://HOST:PORT`, multicast included), the usual feed inside a plant."""

from __future__ import annotations

from detector.sources.opencv import OpenCvSource


class UdpSource(OpenCvSource):
    kind = "udp"
    schemes = ("udp",)
