"""A small threaded TCP proxy on 127.0.0.1 that the fault tests (and bench/soak.py) control.

It sits between the daemon and a real RTSP server so a test can break the stream the way
networks and encoders break it, then heal it, without touching either end:

- ``pass``: bytes flow unchanged.
- ``cut``: every open connection is closed now, and new ones are closed on accept (a
  source that goes away).
- ``stall``: connections are accepted and held, but nothing is forwarded in either
  direction (a source that accepts the connection and then sends nothing; an existing
  stream freezes without a FIN).
- ``corrupt``: server -> client, garbage inside the payloads of interleaved RTP packets
  (``$`` framing after the RTSP handshake): random byte flips past the RTP header, keeping
  the framing so the RTSP session survives and only the video is damaged.
- ``throttle``: server -> client limited to ``rate`` bytes/s (a starved link: frames arrive
  far slower than the nominal rate).

Switching mode affects connections that are already open (except ``cut``, which closes
them once). Only the standard library: it runs in the test process.

It also notes when each video frame went over the wire: ``frames_on_wire`` holds
(wall-clock time, RTP timestamp, connection number) of the first RTP packet of every new RTP
timestamp it forwards (90 kHz for video; each connection has its own random base), so a test
can tell when a point of the programme was really on air, independently of the daemon's clock.
"""

from __future__ import annotations

import random
import select
import socket
import threading
import time

MODES = ("pass", "cut", "stall", "corrupt", "throttle")


class FaultProxy:
    """Listen on 127.0.0.1:`port` (0 = any free port) and forward to `target` (host, port)."""

    def __init__(self, target: tuple[str, int], port: int = 0, seed: int = 1):
        self.target = target
        self.mode = "pass"
        self.rate = 20_000.0                 # bytes/s in throttle mode
        self.corrupt_probability = 0.2       # per RTP packet in corrupt mode
        self.bytes_corrupted = 0
        self.connections = 0                 # accepted so far
        self.frames_on_wire: list[tuple[float, int, int]] = []   # (time.time(), RTP timestamp, connection), server -> client
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._stop = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(16)
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, name="faultproxy", daemon=True)

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def set_mode(self, mode: str, rate: float | None = None) -> None:
        """Switch fault mode; `cut` also closes every connection open now."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {MODES}")
        if rate is not None:
            self.rate = rate
        self.mode = mode
        if mode == "cut":
            with self._lock:
                socks, self._open = list(self._open), set()
            for s in socks:
                _close(s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        _close(self._listener)
        with self._lock:
            socks, self._open = list(self._open), set()
        for s in socks:
            _close(s)

    # ------------------------------------------------------------------ internals
    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                return
            self.connections += 1
            if self.mode == "cut":
                _close(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._open.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True, self.connections), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, downstream: bool, connection: int = 0) -> None:
        """Copy src -> dst applying the current mode; `downstream` is server -> client."""
        framer = _RtpFramer() if downstream else None

        def on_rtp(packet: bytes | bytearray) -> None:
            self._on_rtp(packet, connection)

        budget, last = 0.0, time.monotonic()
        try:
            while not self._stop.is_set():
                if self.mode == "stall":
                    time.sleep(0.05)          # hold: read nothing, send nothing (TCP backs up)
                    continue
                ready, _, _ = select.select([src], [], [], 0.2)
                if not ready:
                    continue
                want = 65536
                if downstream and self.mode == "throttle":
                    now = time.monotonic()
                    budget = min(self.rate, budget + (now - last) * self.rate)   # at most 1 s of burst
                    last = now
                    if budget < 512:
                        time.sleep(0.02)
                        continue
                    want = int(min(want, budget))
                data = src.recv(want)
                if not data:
                    break
                if downstream and self.mode == "throttle":
                    budget -= len(data)
                if framer is not None:
                    data = framer.feed(data, self._corrupter if self.mode == "corrupt" else None, on_rtp)
                if data:
                    dst.sendall(data)
        except (OSError, ValueError):   # ValueError: `cut` closed the socket under select()
            pass
        finally:
            with self._lock:
                self._open.discard(src)
                self._open.discard(dst)
            _close(src)
            _close(dst)

    def _on_rtp(self, packet: bytes | bytearray, connection: int) -> None:
        """An RTP packet about to be forwarded to the client: note its wall time per new timestamp."""
        if len(packet) < 12:
            return
        ts = int.from_bytes(packet[4:8], "big")
        if not self.frames_on_wire or self.frames_on_wire[-1][1:] != (ts, connection):
            self.frames_on_wire.append((time.time(), ts, connection))

    def _corrupter(self, payload: bytearray) -> None:
        """Flip a few bytes of an RTP packet's payload (never the 12-byte RTP header)."""
        if len(payload) <= 16 or self._rng.random() >= self.corrupt_probability:
            return
        for _ in range(self._rng.randint(1, 8)):
            i = self._rng.randrange(12, len(payload))
            payload[i] ^= self._rng.randrange(1, 256)
            self.bytes_corrupted += 1


class _RtpFramer:
    """Splits the server -> client byte stream into RTSP text messages and `$` interleaved
    frames, so corruption lands inside RTP payloads and the framing stays intact."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes, corrupt, observe=None) -> bytes:
        self.buf += data
        out = bytearray()
        while self.buf:
            if self.buf[0] == 0x24:          # '$' channel len16 payload
                if len(self.buf) < 4:
                    break
                n = int.from_bytes(self.buf[2:4], "big")
                if len(self.buf) < 4 + n:
                    break
                frame = bytearray(self.buf[:4 + n])
                del self.buf[:4 + n]
                if corrupt is not None and frame[1] % 2 == 0:   # even channels carry RTP, odd RTCP
                    payload = frame[4:]
                    corrupt(payload)
                    frame[4:] = payload
                if observe is not None and frame[1] % 2 == 0:
                    observe(frame[4:])
                out += frame
            else:                             # an RTSP message: headers, then Content-Length body
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(self.buf) > 65536:     # not RTSP after all: give up parsing, pass it on
                        out += self.buf
                        self.buf.clear()
                    break
                head = bytes(self.buf[:end]).lower()
                length = 0
                for line in head.split(b"\r\n"):
                    if line.startswith(b"content-length:"):
                        try:
                            length = int(line.split(b":", 1)[1])
                        except ValueError:
                            length = 0
                total = end + 4 + length
                if len(self.buf) < total:
                    break
                out += self.buf[:total]
                del self.buf[:total]
        return bytes(out)


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass
