"""MPEG-TS over UDP (`udp://HOST:PORT`, multicast included), the usual feed inside a plant.

A UDP receiver that falls behind for a moment (a slow disk, a busy core) loses datagrams
the kernel could not queue. libav's receiver thread reads the socket into its own FIFO
(`fifo_size`, in 188-byte TS packets), behind a large kernel buffer (`buffer_size`), and an
overrun of that FIFO is survived (`overrun_nonfatal`) and shows up as corrupt packets
instead of a reconnect. Multicast needs no option: the group address joins it.

With the inline marker's tap (a channel with an `output`), the datagrams are received by a
socket of ours (detector.sources.tap.UdpReader, with the same FIFO size), which passes every
datagram to the marker as it arrives and to libav's MPEG-TS demuxer; libav's own UDP URL
options then do not apply.
"""

from __future__ import annotations

from typing import Any

from detector.sources.libav import LibavSource


class UdpSource(LibavSource):
    kind = "udp"
    schemes = ("udp",)

    def av_options(self) -> dict[str, str]:
        if self.options.tap is not None:
            return super().av_options()
        return {**super().av_options(), "fifo_size": str(self.options.udp_fifo_packets), "overrun_nonfatal": "1",
                "buffer_size": str(8 * 1024 * 1024), "timeout": str(int(self.options.read_timeout * 1e6))}

    def av_input(self) -> Any:
        if self.options.tap is None:
            return self.url
        from detector.sources.tap import UdpReader
        self.format_name = "mpegts"
        self._reader = UdpReader(self.url, self.options.open_timeout, self.options.read_timeout, self.options.tap,
                                 fifo_bytes=self.options.udp_fifo_packets * 188)
        return self._reader

    def close(self) -> None:
        super().close()
        reader = getattr(self, "_reader", None)
        if reader is not None:
            reader.close()
            self._reader = None
