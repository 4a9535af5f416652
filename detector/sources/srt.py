"""MPEG-TS over SRT (`srt://`), the contribution link over the internet.

The PyAV wheel's libav has no libsrt, so SRT is read through a supervised `ffmpeg -c copy`
relay (detector.sources.relay) to MPEG-TS on a pipe: packets are copied, so the PTS, the
audio and the SCTE-35 data stream arrive as the sender sent them. check-config refuses
`srt://` when no ffmpeg with libsrt is on PATH (detector.sources.support).
"""

from __future__ import annotations

from typing import Any

from detector.sources.libav import LibavSource


class SrtSource(LibavSource):
    kind = "srt"
    schemes = ("srt",)
    format_name = "mpegts"

    def __init__(self, url, options):
        super().__init__(url, options)
        self._relay: Any = None

    def av_input(self) -> Any:
        from detector.sources.relay import FfmpegRelay
        self._relay = FfmpegRelay(self.url, self.options.open_timeout, self.options.read_timeout)
        reader = self._relay.start()
        if self.options.tap is not None:          # the inline marker copies the relayed TS as it is
            from detector.sources.tap import TeeReader
            return TeeReader(reader, self.options.tap)
        return reader

    def open(self) -> bool:
        ok = super().open()
        if not ok and self._relay is not None:
            self.open_error = self._relay.failure() or self.open_error
            self._relay.close()
        return ok

    def close(self) -> None:
        super().close()
        if self._relay is not None:
            self._relay.close()
            self._relay = None
