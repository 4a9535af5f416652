"""A supervised `ffmpeg` relay for protocols the PyAV wheel's libav lacks (srt://, rist://).

The system `ffmpeg` (Debian's has libsrt and librist) receives the stream and writes MPEG-TS
to a pipe; PyAV demuxes that pipe: `av.open(FfmpegRelay(url, 5, 3).start(), format="mpegts")`.

Two ways through ffmpeg:
- `passthrough=True` (default): `-f data -i URL -map 0 -c copy -f data pipe:1`, the received
  bytes unchanged. SRT and RIST carry MPEG-TS, so the reader sees the sender's TS exactly: its
  PIDs, PCR and PTS, and SCTE-35 as stream type 0x86 with its `CUEI` registration (libav names
  it `scte_35`). No probing in the relay, so nothing is held back.
- `passthrough=False`: a remux, `-copyts -i URL -map 0 -c copy -f mpegts pipe:1`, for payloads
  that are not MPEG-TS. PTS stay as sent (`-copyts`), audio and data streams are kept, but
  ffmpeg's MPEG-TS muxer (5.1, and still 8.0) writes SCTE-35 as private data (0x06, no `CUEI`),
  which libav then reads as `bin_data`: the sections survive, their name does not.

Never through a shell. ffmpeg's stderr is drained by a thread into the last few lines, so it
never blocks on a full pipe; `failure()` is the last of them (URLs redacted) once ffmpeg exited
non-zero on its own. `read` waits at most the open timeout for the first bytes and the read
timeout after that (select on the pipe), then raises TimeoutError; a relay whose reader is gone
dies of EPIPE, one whose source is silent of its own `-rw_timeout`.
"""

from __future__ import annotations

import collections
import contextlib
import os
import select
import subprocess
import threading

from detector.sources.urls import redact, redact_text

STDERR_LINES = 20


class RelayReader:
    """The relay's stdout as the file-like object `av.open` reads (only `read` is used)."""

    def __init__(self, relay: "FfmpegRelay", fd: int):
        self._relay, self._fd = relay, fd
        self._first = True
        self.bytes_read = 0

    def read(self, n: int = 65536) -> bytes:
        """Up to `n` bytes; b"" at EOF (ffmpeg ended: see `failure()`); TimeoutError on a stall."""
        if self._relay.closed:
            return b""
        timeout = self._relay.open_timeout if self._first else self._relay.read_timeout
        try:
            ready, _, _ = select.select([self._fd], [], [], timeout)
        except (OSError, ValueError):          # closed underneath us by close()
            return b""
        if not ready:
            raise TimeoutError(f"no data from the ffmpeg relay of {redact(self._relay.url)} for {timeout:g} s")
        try:
            data = os.read(self._fd, n)
        except OSError:
            return b""
        self._first = False
        self.bytes_read += len(data)
        return data


class FfmpegRelay:
    """One `ffmpeg` process relaying `url` as MPEG-TS on a pipe; `close()` always reaps it."""

    def __init__(self, url: str, open_timeout: float, read_timeout: float, ffmpeg: str = "ffmpeg",
                 passthrough: bool = True):
        self.url, self.open_timeout, self.read_timeout = url, float(open_timeout), float(read_timeout)
        self.ffmpeg, self.passthrough = ffmpeg, passthrough
        self.proc: subprocess.Popen | None = None
        self.closed = False
        self._stopping = False
        self._lines: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._drain: threading.Thread | None = None
        self._lock = threading.Lock()

    def command(self) -> list[str]:
        """The ffmpeg argv (for logs, redact it first)."""
        rw = str(max(1, int((self.open_timeout + self.read_timeout) * 1_000_000)))   # microseconds
        head = [self.ffmpeg, "-nostdin", "-hide_banner", "-nostats", "-loglevel", "error", "-rw_timeout", rw]
        if self.passthrough:
            return [*head, "-f", "data", "-i", self.url, "-map", "0", "-c", "copy", "-f", "data", "pipe:1"]
        return [*head, "-copyts", "-i", self.url, "-map", "0", "-c", "copy",
                "-max_interleave_delta", "200000", "-f", "mpegts", "pipe:1"]

    def start(self) -> RelayReader:
        """Start ffmpeg; the reader of its MPEG-TS. OSError if `ffmpeg` cannot be run."""
        with self._lock:
            if self.closed:
                raise RuntimeError("relay already closed")
            if self.proc is not None:
                raise RuntimeError("relay already started")
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, start_new_session=True, bufsize=0)
            self._drain = threading.Thread(target=self._drain_stderr, args=(self.proc,),
                                           name="ffmpeg-relay-stderr", daemon=True)
            self._drain.start()
            assert self.proc.stdout is not None
            return RelayReader(self, self.proc.stdout.fileno())

    def _drain_stderr(self, proc: subprocess.Popen) -> None:
        assert proc.stderr is not None
        with contextlib.suppress(OSError, ValueError):
            for raw in proc.stderr:
                line = raw.decode("utf-8", errors="replace").strip()
                if line:
                    self._lines.append(line[:500])

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def failure(self) -> str | None:
        """ffmpeg's last stderr line (URLs redacted) once it exited non-zero by itself, else None."""
        proc = self.proc
        if proc is None or self._stopping or proc.poll() is None or proc.returncode == 0:
            return None
        if self._drain is not None:
            self._drain.join(1.0)        # the last lines arrive just after the exit
        last = self._lines[-1] if self._lines else f"exit status {proc.returncode}"
        return redact_text(f"ffmpeg relay exited {proc.returncode}: {last}")

    def stderr_lines(self) -> list[str]:
        return [redact_text(line) for line in self._lines]

    def close(self, timeout: float = 2.0) -> None:
        """Terminate, wait (bounded), kill if needed, reap; close the pipes. Safe to call twice."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            proc = self.proc
            if proc is not None and proc.poll() is None:
                self._stopping = True
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout)
            if proc is not None:
                for f in (proc.stdout, proc.stderr):
                    if f:
                        with contextlib.suppress(OSError):
                            f.close()
        if self._drain is not None:
            self._drain.join(timeout)

    def __enter__(self) -> "FfmpegRelay":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
