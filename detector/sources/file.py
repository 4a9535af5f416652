"""A recording on disk, as a channel: read as fast as it decodes, or paced like live
(`realtime: true`, replayed when it ends; the capture thread does the pacing)."""

from __future__ import annotations

from detector.sources.libav import LibavSource


class FileSource(LibavSource):
    kind = "file"
    live = False

    @classmethod
    def matches(cls, url: str, scheme: str | None) -> bool:
        return scheme is None          # any path that is not a capture device (tried after it)
