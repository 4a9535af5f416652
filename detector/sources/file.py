"""A recording on disk, as a channel: read as fast as it decodes, or paced like live
(`realtime: true`, replayed when it ends; the capture thread does the pacing)."""

from __future__ import annotations

from typing import Any

from detector.sources.libav import LibavSource


class FileSource(LibavSource):
    kind = "file"
    live = False

    @classmethod
    def matches(cls, url: str, scheme: str | None) -> bool:
        return scheme is None          # any path that is not a capture device (tried after it)

    def av_input(self) -> Any:
        """The path, or with the inline marker's tap a `TeeFile` (read as MPEG-TS)."""
        if self.options.tap is None:
            return self.url
        from detector.sources.tap import TeeFile
        self.format_name = "mpegts"
        self._tee = TeeFile(self.url, self.options.tap)
        return self._tee

    def close(self) -> None:
        super().close()
        tee = getattr(self, "_tee", None)
        if tee is not None:
            tee.close()
            self._tee = None
