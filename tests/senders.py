"""Real senders for the protocol tests: each plays a media file the way a broadcast link would.

Every sender is a context manager yielding a `Sender` with the `url` a reader opens; leaving
the block stops and reaps every process it started (SIGCONT first, so a paused sender dies
too). Traffic stays on 127.0.0.1, except `in_netns`, which runs a reader and a multicast
sender inside one fresh network namespace.

By default the senders are `ffmpeg -re -stream_loop -1 -i FILE -map 0 -c copy`: paced like
live and looping with timestamps that keep increasing. Debian's ffmpeg 5.1 MPEG-TS muxer
rewrites a SCTE-35 stream (type 0x86 with a `CUEI` registration) as private data 0x06, which
libav then reads as `bin_data`, not `scte_35`. `exact=True` sends the file's own TS bytes
instead (paced by its PCR, looping with PCR/PTS/DTS and the cues' pts_adjustment shifted),
through `ffmpeg -f data ... -c copy -f data URL`: PIDs, stream types and cues arrive as written.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from tests.livekit import free_port
from tests.tsmedia import TsPacer

FFMPEG = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error"]
# A sparse stream (a SCTE-35 cue every few seconds) holds back libavformat's interleaving for up
# to 10 s by default: the HLS muxer then stalls for seconds and UDP goes out in bursts.
INTERLEAVE = ["-max_interleave_delta", "200000"]


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the test process dies, so no sender outlives a
    killed test run (PR_SET_PDEATHSIG; Linux)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


def free_udp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen | None, timeout: float = 3.0) -> None:
    """SIGCONT (a paused process cannot act on SIGTERM), SIGTERM, bounded wait, SIGKILL, reap."""
    if proc is None:
        return
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    for f in (proc.stdin, proc.stdout, proc.stderr):
        if f:
            with contextlib.suppress(OSError):
                f.close()


class Sender:
    """One ffmpeg sender; `restart=True` starts it again whenever it exits (an SRT caller
    retrying until its listener is up, an RTMP server accepting the next client)."""

    def __init__(self, args: list[str], url: str, file: Path | None = None, exact: bool = False,
                 realtime: bool = True, loop: bool = True, restart: bool = False):
        self.args, self.url, self.file = args, url, file
        self.exact, self.realtime, self.loop, self.restart = exact, realtime, loop, restart
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._errors: list[str] = []

    def _spawn(self) -> subprocess.Popen:
        proc = subprocess.Popen(self.args, stdin=subprocess.PIPE if self.exact else subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=_die_with_parent)
        self.starts += 1
        drain = threading.Thread(target=self._drain, args=(proc,), daemon=True)
        drain.start()
        self._threads.append(drain)
        if self.exact:
            feed = threading.Thread(target=self._feed, args=(proc,), daemon=True)
            feed.start()
            self._threads.append(feed)
        return proc

    def _drain(self, proc: subprocess.Popen) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self._errors = (self._errors + [line.decode(errors="replace").rstrip()])[-20:]

    def _feed(self, proc: subprocess.Popen) -> None:
        assert proc.stdin is not None and self.file is not None
        pacer = TsPacer(self.file, realtime=self.realtime, loop=self.loop)
        with contextlib.suppress(OSError, ValueError):
            for chunk in pacer.chunks(self._stop):
                proc.stdin.write(chunk)
                proc.stdin.flush()
            proc.stdin.close()

    def _supervise(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                proc = self.proc
            if proc is not None and proc.poll() is not None and not self._stop.is_set():
                time.sleep(0.2)
                with self._lock:
                    if not self._stop.is_set():
                        self.proc = self._spawn()
            self._stop.wait(0.1)

    @property
    def errors(self) -> list[str]:
        return list(self._errors)

    def start(self) -> "Sender":
        with self._lock:
            self.proc = self._spawn()
        if self.restart:
            t = threading.Thread(target=self._supervise, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def pause(self) -> None:
        """SIGSTOP: a stall (the link is up, nothing arrives)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            proc = self.proc
        stop_process(proc)
        for t in self._threads:
            t.join(3)

    def __enter__(self) -> "Sender":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _input(file: Path, realtime: bool, loop: bool, exact: bool) -> list[str]:
    if exact:
        return ["-f", "data", "-i", "pipe:0", "-map", "0", "-c", "copy", "-f", "data"]
    return [*(["-re"] if realtime else []), *(["-stream_loop", "-1"] if loop else []),
            "-i", str(file), "-map", "0", "-c", "copy", *INTERLEAVE, "-f", "mpegts"]


def udp_sender(file: Path, port: int | None = None, realtime: bool = True, loop: bool = True,
               exact: bool = False) -> Sender:
    """MPEG-TS over unicast UDP to 127.0.0.1:PORT (7 TS packets a datagram)."""
    port = port or free_udp_port()
    url = f"udp://127.0.0.1:{port}"
    return Sender([*FFMPEG, *_input(file, realtime, loop, exact), f"{url}?pkt_size=1316"], url,
                  file, exact, realtime, loop)


def srt_sender(file: Path, port: int | None = None, mode: str = "listener", latency_ms: int = 120,
               exact: bool = False, realtime: bool = True, loop: bool = True) -> Sender:
    """MPEG-TS over SRT. `mode="listener"` (default): the sender listens, the reader calls
    `srt://127.0.0.1:PORT` (how a contribution encoder or SRT gateway offers a feed to be
    pulled). `mode="caller"`: the reader listens on `srt://127.0.0.1:PORT?mode=listener` and
    the sender calls it, retrying until it is up (an encoder pushing to a receiver)."""
    port = port or free_udp_port()
    lat = latency_ms * 1000                               # libsrt options in ffmpeg: microseconds
    if mode == "listener":
        out, url, restart = f"srt://127.0.0.1:{port}?mode=listener&pkt_size=1316&latency={lat}", \
            f"srt://127.0.0.1:{port}", True
    elif mode == "caller":
        out, url, restart = f"srt://127.0.0.1:{port}?mode=caller&pkt_size=1316&latency={lat}", \
            f"srt://127.0.0.1:{port}?mode=listener", True
    else:
        raise ValueError(f"mode must be listener or caller, not {mode!r}")
    return Sender([*FFMPEG, *_input(file, realtime, loop, exact), out], url, file, exact, realtime, loop,
                  restart=restart)


def rtmp_sender(file: Path, port: int | None = None, realtime: bool = True, loop: bool = True) -> Sender:
    """ffmpeg as a one-client RTMP server: the reader plays `rtmp://127.0.0.1:PORT/live/stream`.
    FLV carries H.264 + AAC only (`-dn`: no data streams). It serves one client, then exits;
    `restart` brings it back for the next one."""
    port = port or free_port()
    url = f"rtmp://127.0.0.1:{port}/live/stream"
    args = [*FFMPEG, *(["-re"] if realtime else []), *(["-stream_loop", "-1"] if loop else []), "-i", str(file),
            "-map", "0:v", "-map", "0:a?", "-dn", "-c", "copy", "-f", "flv", "-listen", "1", url]
    return Sender(args, url, restart=True)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


class HlsServer(Sender):
    """ffmpeg's HLS muxer writing a live playlist into a temp dir, served over HTTP."""

    def __init__(self, file: Path, segment_seconds: float = 6, list_size: int = 6, realtime: bool = True,
                 loop: bool = True):
        self.dir = Path(tempfile.mkdtemp(prefix="hls-"))
        self.http: http.server.ThreadingHTTPServer | None = None
        args = [*FFMPEG, *(["-re"] if realtime else []), *(["-stream_loop", "-1"] if loop else []), "-i", str(file),
                "-map", "0", "-c", "copy", *INTERLEAVE, "-f", "hls", "-hls_time", str(segment_seconds),
                "-hls_list_size", str(list_size), "-hls_flags", "delete_segments+omit_endlist",
                "-hls_segment_filename", str(self.dir / "seg%05d.ts"), str(self.dir / "live.m3u8")]
        super().__init__(args, "", file)

    def start(self) -> "HlsServer":
        directory = str(self.dir)
        handler = lambda *a, **k: _QuietHandler(*a, directory=directory, **k)  # noqa: E731
        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/live.m3u8"
        t = threading.Thread(target=self.http.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        t.start()
        self._threads.append(t)
        super().start()
        return self

    def wait_ready(self, segments: int = 1, timeout: float = 20) -> None:
        """Until the playlist lists `segments` segments (the first takes one segment's length)."""
        playlist = self.dir / "live.m3u8"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if playlist.exists() and playlist.read_text().count("#EXTINF") >= segments:
                return
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"HLS muxer exited {self.proc.returncode}: {self.errors[-3:]}")
            time.sleep(0.05)
        raise TimeoutError(f"no HLS playlist with {segments} segment(s) within {timeout} s")

    def stop(self) -> None:
        super().stop()
        if self.http:
            self.http.shutdown()
            self.http.server_close()
        shutil.rmtree(self.dir, ignore_errors=True)


def hls_server(file: Path, segment_seconds: float = 6, list_size: int = 6, realtime: bool = True,
               loop: bool = True) -> HlsServer:
    """A live HLS channel at `http://127.0.0.1:PORT/live.m3u8` (call `wait_ready()` before opening)."""
    return HlsServer(file, segment_seconds, list_size, realtime, loop)


# -- multicast, inside a network namespace of our own ------------------------------------------

MCAST_GROUP = "239.255.0.1"


def netns_available() -> bool:
    """`unshare -n` works here (root or user namespaces) and `ip` exists."""
    if not shutil.which("unshare") or not shutil.which("ip"):
        return False
    try:
        return subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def in_netns(reader: list[str], file: Path, port: int = 5000, group: str = MCAST_GROUP, timeout: float = 20,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `reader` (argv) and an ffmpeg multicast sender of `file` to `udp://GROUP:PORT` inside ONE
    fresh network namespace (`unshare -n`; lo up; 224.0.0.0/4 routed via lo, TTL 1).

    The reader gets the URL in `$MCAST_URL` and the namespace's inode in `$NETNS_INODE` (to
    prove where it ran). The sender is killed when the reader exits (and the whole session on a
    timeout); the namespace dies with its last process. Returns the reader's result (text), with
    the sender's stderr appended to `stderr`."""
    url = f"udp://{group}:{port}"
    sender = [*FFMPEG, "-re", "-stream_loop", "-1", "-i", str(file), "-map", "0", "-c", "copy", *INTERLEAVE,
              "-f", "mpegts", f"{url}?pkt_size=1316&ttl=1&localaddr=127.0.0.1"]
    script = (
        "set -e\n"
        "ip link set lo up\n"
        "ip route add 224.0.0.0/4 dev lo\n"
        "export NETNS_INODE=$(stat -L -c %i /proc/self/ns/net)\n"
        f"{' '.join(shlex.quote(a) for a in sender)} </dev/null 2>\"$MCAST_LOG\" &\n"
        "SENDER=$!\n"
        "trap 'kill -CONT $SENDER 2>/dev/null; kill $SENDER 2>/dev/null; wait $SENDER 2>/dev/null' EXIT\n"
        "set +e\n"
        "\"$@\"\n"
    )
    with tempfile.NamedTemporaryFile(prefix="mcast-", suffix=".log") as log:
        full_env = {**os.environ, **(env or {}), "MCAST_URL": url, "MCAST_LOG": log.name}
        proc = subprocess.Popen(["unshare", "-n", "--", "sh", "-c", script, "netns", *reader],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env,
                                start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate(5)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        sender_log = Path(log.name).read_text(errors="replace")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err + sender_log)


# -- reading what a sender sends (PyAV, as the capture will) -------------------------------------

class Seen:
    """What a reader got: stream (type, name) pairs, video frame PTS, audio frame and data packet counts."""

    def __init__(self) -> None:
        self.streams: list[tuple[str, str]] = []
        self.video_pts: list[int] = []
        self.audio_frames = 0
        self.data_packets = 0
        self.open_seconds = 0.0
        self.seconds = 0.0

    def __repr__(self) -> str:
        return (f"Seen(streams={self.streams}, video={len(self.video_pts)} pts {self.video_pts[:1]}..{self.video_pts[-1:]}, "
                f"audio={self.audio_frames}, data={self.data_packets}, open={self.open_seconds:.2f}s, "
                f"total={self.seconds:.2f}s)")


def read_av(src, options: dict[str, str] | None = None, timeout: tuple[float, float] = (5, 3),
            video_frames: int = 50, format: str | None = None, budget: float = 15) -> Seen:
    """Open `src` (URL or file-like) with PyAV and decode until `video_frames` video frames
    (2 s at 25 fps) or `budget` seconds; every frame's PTS in the stream's time base."""
    import av

    seen = Seen()
    t0 = time.monotonic()
    container = av.open(src, mode="r", format=format, options=options or {}, timeout=timeout)
    try:
        seen.open_seconds = time.monotonic() - t0
        seen.streams = [(s.type, s.name) for s in container.streams]
        for packet in container.demux():
            kind = packet.stream.type
            if kind == "video":
                seen.video_pts += [f.pts for f in packet.decode()]
            elif kind == "audio":
                seen.audio_frames += len(packet.decode())
            elif kind == "data" and packet.size:
                seen.data_packets += 1
            if len(seen.video_pts) >= video_frames or time.monotonic() - t0 > budget:
                break
    finally:
        container.close()
        seen.seconds = time.monotonic() - t0
    return seen


def advancing(pts: list[int]) -> bool:
    """Strictly increasing PTS (the order frames leave the decoder: no B-frames in our media)."""
    return len(pts) > 1 and all(b > a for a, b in zip(pts, pts[1:]))
