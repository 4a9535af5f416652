"""Where the marked programme goes: a file, UDP (unicast or multicast) or SRT.

One small class per kind behind `open / write / close`; `write` raises OSError when the
destination is gone and the marker (detector.marker.marker) retries with backoff. None of
them may block the marker thread for long: UDP datagrams never block, a file is local, and
the SRT pipe into ffmpeg is written with a deadline.

- UDP: 7 TS packets (1316 bytes) per datagram, the size every receiver expects, sent as the
  delay line releases them (so paced by the input's own arrival, `delay` later). `?ttl=N`
  sets the multicast TTL (default 1: the local segment).
- SRT: the PyAV wheel's libav has no libsrt, Debian's ffmpeg does: the TS bytes go through
  `ffmpeg -f data -i pipe:0 -map 0 -c copy -f data srt://...`, a byte relay, not a remux, so
  the PMT, PIDs and the cue PID's stream_type 0x86 reach the far end exactly as written (an
  `-f mpegts` remux would rewrite SCTE-35 to 0x06 and drop CUEI).
"""

from __future__ import annotations

import collections
import contextlib
import ipaddress
import os
import select
import socket
import subprocess
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from detector.sources.urls import redact, redact_text, scheme_of

DATAGRAM = 7 * 188
SRT_WRITE_TIMEOUT = 1.0        # seconds a write into ffmpeg may wait before the destination counts as stuck
OUTPUT_SCHEMES = ("udp", "srt")


class Destination:
    """One output; `describe` is what logs show (credentials redacted)."""

    def __init__(self, url: str):
        self.url = url

    @property
    def describe(self) -> str:
        return redact(self.url)

    def open(self) -> None:
        raise NotImplementedError

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class FileDestination(Destination):
    """A TS file, truncated when the daemon starts and appended to after a failure (a recording
    of the marked programme, or a FIFO)."""

    def __init__(self, url: str):
        super().__init__(url)
        self._f = None
        self._started = False

    def open(self) -> None:
        self._f = open(self.url, "ab" if self._started else "wb", buffering=1024 * 1024)
        self._started = True

    def write(self, data: bytes) -> None:
        if self._f is None:
            raise OSError("not open")
        self._f.write(data)

    def close(self) -> None:
        f, self._f = self._f, None
        if f is not None:
            with contextlib.suppress(OSError):
                f.close()


def udp_address(url: str) -> tuple[str, int, int]:
    """(host, port, ttl) of `udp://HOST:PORT[?ttl=N]`; ValueError naming what is wrong."""
    parts = urlsplit(url)
    if not parts.hostname or parts.port is None:
        raise ValueError(f"expected udp://HOST:PORT, got {url!r}")
    query = parse_qs(parts.query)
    unknown = set(query) - {"ttl"}
    if unknown:
        raise ValueError(f"unsupported udp output option(s) {', '.join(sorted(unknown))} (only ttl)")
    ttl = int(query.get("ttl", ["1"])[0])
    if not 1 <= ttl <= 255:
        raise ValueError(f"ttl must be 1-255, got {ttl}")
    return parts.hostname, parts.port, ttl


class UdpDestination(Destination):
    def __init__(self, url: str):
        super().__init__(url)
        self.host, self.port, self.ttl = udp_address(url)
        self._sock: socket.socket | None = None
        self.datagrams = 0

    def open(self) -> None:
        info = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)[0]
        sock = socket.socket(info[0], socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
            addr = ipaddress.ip_address(info[4][0])
            if addr.is_multicast:
                if addr.version == 4:
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, self.ttl)
                else:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, self.ttl)
            sock.connect(info[4])
        except OSError:
            sock.close()
            raise
        self._sock = sock

    def write(self, data: bytes) -> None:
        sock = self._sock
        if sock is None:
            raise OSError("not open")
        view = memoryview(data)
        for i in range(0, len(view), DATAGRAM):
            try:
                sock.send(view[i:i + DATAGRAM])
            except ConnectionRefusedError:      # nobody listening right now (ICMP port unreachable): UDP goes on
                continue
            self.datagrams += 1

    def close(self) -> None:
        s, self._sock = self._sock, None
        if s is not None:
            s.close()


class SrtDestination(Destination):
    """A supervised `ffmpeg` relaying the bytes to SRT (the reverse of detector.sources.relay)."""

    def __init__(self, url: str, ffmpeg: str = "ffmpeg"):
        super().__init__(url)
        self.ffmpeg = ffmpeg
        self.proc: subprocess.Popen | None = None
        self._lines: collections.deque[str] = collections.deque(maxlen=10)

    def command(self) -> list[str]:
        return [self.ffmpeg, "-nostdin", "-hide_banner", "-nostats", "-loglevel", "error", "-f", "data", "-i", "pipe:0",
                "-map", "0", "-c", "copy", "-f", "data", self.url]

    def open(self) -> None:
        proc = subprocess.Popen(self.command(), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True, bufsize=0)
        assert proc.stdin is not None and proc.stderr is not None
        os.set_blocking(proc.stdin.fileno(), False)
        threading.Thread(target=self._drain, args=(proc,), name="marker-srt-stderr", daemon=True).start()
        self.proc = proc

    def _drain(self, proc: subprocess.Popen) -> None:
        with contextlib.suppress(OSError, ValueError):
            for raw in proc.stderr:  # type: ignore[union-attr]
                line = raw.decode("utf-8", errors="replace").strip()
                if line:
                    self._lines.append(redact_text(line[:300]))

    def write(self, data: bytes) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            last = self._lines[-1] if self._lines else "exited"
            raise OSError(f"ffmpeg srt relay is not running ({last})")
        fd = proc.stdin.fileno()  # type: ignore[union-attr]
        view = memoryview(data)
        while view:
            _, ready, _ = select.select([], [fd], [], SRT_WRITE_TIMEOUT)
            if not ready:
                raise OSError(f"ffmpeg srt relay took no data for {SRT_WRITE_TIMEOUT:g} s")
            try:
                n = os.write(fd, view)
            except BlockingIOError:
                continue
            view = view[n:]

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            proc.stdin.close()  # type: ignore[union-attr]
        try:
            proc.wait(2.0)          # ffmpeg sends what it has and ends on EOF
        except subprocess.TimeoutExpired:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(2.0)


def destination_for(url: str) -> Destination:
    """The destination of an `output.url` (already validated by the config)."""
    scheme = scheme_of(url)
    if scheme == "udp":
        return UdpDestination(url)
    if scheme == "srt":
        return SrtDestination(url)
    if scheme is None:
        return FileDestination(url)
    raise ValueError(f"unsupported output scheme {scheme}:// (expected udp://, srt:// or a file path)")


def output_problem(url: str) -> str | None:
    """Why `url` cannot be an output here (None: fine). For check-config; one line."""
    scheme = scheme_of(url)
    if scheme == "udp":
        try:
            udp_address(url)
        except ValueError as exc:
            return str(exc)
        return None
    if scheme == "srt":
        from detector.sources.support import ffmpeg_output_protocols
        found = ffmpeg_output_protocols()
        if found is None or "srt" not in found:
            return "srt:// output needs an ffmpeg with libsrt on PATH (Debian/Ubuntu: apt-get install ffmpeg)"
        return None
    if scheme is not None:
        return f"unsupported output scheme {scheme}:// (expected udp://, srt:// or a file path)"
    parent = Path(url).parent
    if not parent.is_dir():
        return f"directory {parent} does not exist"
    if not os.access(parent, os.W_OK):
        return f"directory {parent} is not writable"
    return None
