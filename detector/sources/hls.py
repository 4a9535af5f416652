"""HLS playlists over HTTP(S) (`http://.../index.m3u8`, `https://`): the kind is named `http`.

Live HLS arrives a segment (6-10 s) at a time: libav's HLS demuxer waits for the next
segment between bursts, so its read timeout is `capture.hls_read_timeout_seconds` (longer
than a segment), and the capture paces each burst out at the media rate (`bursty`) so the
wall clock of a boundary stays right. A fresh connection starts at the newest segment
(`live_start_index` -1) rather than three back; after a reconnect the capture skips what it
has already analysed (same PTS), so a break is never announced twice.
"""

from __future__ import annotations

from detector.sources.libav import LibavSource


class HlsSource(LibavSource):
    kind = "http"
    schemes = ("http", "https")
    bursty = True

    def av_options(self) -> dict[str, str]:
        return {**super().av_options(), "live_start_index": "-1", "http_persistent": "1",
                "rw_timeout": str(int(self.options.hls_read_timeout * 1e6))}

    def av_timeouts(self) -> tuple[float, float]:
        return self.options.open_timeout, max(self.options.read_timeout, self.options.hls_read_timeout)
