"""MPEG-TS over UDP (`udp://HOST:PORT`, multicast included), the usual feed inside a plant.

A UDP receiver that falls behind for a moment (a slow disk, a busy core) loses datagrams
the kernel could not queue. libav's receiver thread reads the socket into its own FIFO
(`fifo_size`, in 188-byte TS packets), behind a large kernel buffer (`buffer_size`), and an
overrun of that FIFO is survived (`overrun_nonfatal`) and shows up as corrupt packets
instead of a reconnect. Multicast needs no option: the group address joins it.
"""

from __future__ import annotations

from detector.sources.libav import LibavSource


class UdpSource(LibavSource):
    kind = "udp"
    schemes = ("udp",)

    def av_options(self) -> dict[str, str]:
        return {**super().av_options(), "fifo_size": str(self.options.udp_fifo_packets), "overrun_nonfatal": "1",
                "buffer_size": str(8 * 1024 * 1024), "timeout": str(int(self.options.read_timeout * 1e6))}
