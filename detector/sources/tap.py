"""The raw-TS tap: the bytes libav reads, handed to the inline marker as they are read.

The marker re-emits the input packet for packet (detector.marker), so it needs the input's
own MPEG-TS bytes, not libav's demuxed packets: a remux would renumber PIDs, regenerate PCR
and rewrite SCTE-35's stream type. So for a channel with an `output`, libav reads through a
file-like object that passes every byte on to `tap` (which only queues: the capture thread
never waits for the marker):

- a file: `TeeFile`, seekable (libav probes and may look at the end for the duration); only
  bytes that extend what was already passed on go to the tap, so a probe at the end is not
  emitted ahead of the programme;
- SRT: the relay's pipe (detector.sources.relay passes the received TS through unchanged);
- UDP: `UdpReader`, a socket of our own instead of libav's `udp://` (which reads into its own
  FIFO, out of reach): a receiver thread and FIFO like libav's, multicast joined by the group
  address, the read timeout as libav's.
RTSP, RTMP, HLS and capture cards deliver no MPEG-TS to copy: check-config refuses an
`output` on them.
"""

from __future__ import annotations

import collections
import contextlib
import ipaddress
import select
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

Tap = Callable[[bytes], None]
TAPPABLE_KINDS = ("file", "udp", "srt")


class TeeFile:
    """A file opened for libav; every new byte read in order goes to `tap` too."""

    def __init__(self, path: str, tap: Tap):
        self._f = open(path, "rb", buffering=0)
        self._tap = tap
        self._passed = 0            # bytes [0, _passed) went to the tap

    def read(self, n: int = 65536) -> bytes:
        pos = self._f.tell()
        data = self._f.read(n)
        end = pos + len(data)
        if data and pos <= self._passed < end:
            self._tap(data[self._passed - pos:])
            self._passed = end
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def close(self) -> None:
        self._f.close()


class TeeReader:
    """Any reader (the SRT relay's pipe) whose bytes also go to `tap`."""

    def __init__(self, reader: Any, tap: Tap):
        self._reader, self._tap = reader, tap

    def read(self, n: int = 65536) -> bytes:
        data = self._reader.read(n)
        if data:
            self._tap(data)
        return data


def udp_bind(url: str) -> tuple[str, int, str | None]:
    """(bind host, port, multicast group or None) of a `udp://[@]HOST:PORT` source."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port
    if port is None:
        raise ValueError(f"expected udp://HOST:PORT, got {url!r}")
    try:
        group = host if host and ipaddress.ip_address(host).is_multicast else None
    except ValueError:
        group = None
    return ("" if group else host), port, group


class UdpReader:
    """A UDP MPEG-TS receiver as the file-like object libav reads.

    Like libav's own UDP input, a thread of its own drains the socket into a FIFO (bounded by
    `fifo_bytes`, `capture.udp_fifo_packets` x 188), so a decoding hiccup on the capture thread
    does not overflow the kernel buffer; an overflow drops the oldest datagrams (`overruns`,
    and libav then counts the continuity errors as corrupt packets). Every datagram goes to
    `tap` as it arrives, so the marker's output does not wait for the decoder either.
    """

    def __init__(self, url: str, open_timeout: float, read_timeout: float, tap: Tap, fifo_bytes: int = 100_000 * 188):
        self.url, self.open_timeout, self.read_timeout, self._tap = url, open_timeout, read_timeout, tap
        self.fifo_bytes = fifo_bytes
        host, port, group = udp_bind(url)
        family = socket.AF_INET6 if ":" in (group or host) else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
            sock.bind((group or host, port) if group and family == socket.AF_INET else (host, port))
            if group and family == socket.AF_INET:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                                struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton("0.0.0.0")))
            elif group:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP,
                                socket.inet_pton(socket.AF_INET6, group) + struct.pack("@I", 0))
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._first = True
        self._rest = b""
        self._fifo: collections.deque[bytes] = collections.deque()
        self._queued = 0
        self._cv = threading.Condition()
        self._closed = False
        self.overruns = 0
        self._thread = threading.Thread(target=self._receive, name=f"udp-rx-{port}", daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        from detector.util.threads import block_process_signals
        block_process_signals()
        while not self._closed:
            try:
                ready, _, _ = select.select([self._sock], [], [], 0.2)
                if not ready:
                    continue
                data = self._sock.recv(65536)
            except (OSError, ValueError):        # closed underneath us
                break
            self._tap(data)
            with self._cv:
                self._fifo.append(data)
                self._queued += len(data)
                while self._queued > self.fifo_bytes and len(self._fifo) > 1:
                    self._queued -= len(self._fifo.popleft())
                    self.overruns += 1
                self._cv.notify()
        with self._cv:
            self._cv.notify_all()

    def read(self, n: int = 65536) -> bytes:
        if self._rest:
            data, self._rest = self._rest[:n], self._rest[n:]
            return data
        timeout = self.open_timeout if self._first else self.read_timeout
        with self._cv:
            if not self._fifo and not self._cv.wait_for(lambda: self._fifo or self._closed, timeout):
                raise TimeoutError(f"no UDP datagram on {self.url} for {timeout:g} s")
            if not self._fifo:
                return b""
            data = self._fifo.popleft()
            self._queued -= len(data)
        self._first = False
        data, self._rest = data[:n], data[n:]
        return data

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._sock.close()
        self._thread.join(1.0)
