"""Real parts for the live tests: a GStreamer RTSP server (system Python), an H.264 broadcast
with known ad breaks, the daemon as a subprocess with its own config, and ZeroMQ listeners.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from detector.demo.command import to_h264  # noqa: F401  (one conversion for the demo, tests and bench)

REPO = Path(__file__).resolve().parents[1]
RTSP_SERVER = REPO / "detector" / "demo" / "rtsp_server.py"
SYSTEM_PYTHON = "/usr/bin/python3"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]



class RtspServer:
    """`/usr/bin/python3 rtsp_server.py` serving one file; start/stop at will (same port)."""

    def __init__(self, file: Path, port: int | None = None, mount: str = "/live"):
        self.file, self.port, self.mount = file, port or free_port(), mount
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}{self.mount}"

    def start(self, timeout: float = 20) -> None:
        self.proc = subprocess.Popen([SYSTEM_PYTHON, str(RTSP_SERVER), str(self.file), "--port", str(self.port), "--mount", self.mount],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith("READY"):
                threading.Thread(target=self.proc.stdout.read, daemon=True).start()  # drain
                return
            if not line and self.proc.poll() is not None:
                break
        raise RuntimeError(f"RTSP server did not start (exit {self.proc.poll()})")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def write_config(path: Path, model: Path, channels: list[dict], **sections: dict) -> dict[str, str]:
    """A daemon config on free ports; returns the endpoints."""
    ev, snap, met = free_port(), free_port(), free_port()
    cfg = {
        "model": str(model),
        "channels": channels,
        "capture": {"open_timeout_seconds": 5, "read_timeout_seconds": 3, "stall_seconds": 4,
                    "reconnect_initial_seconds": 0.5, "reconnect_max_seconds": 2},
        "inference": {"providers": ["CPUExecutionProvider"], "batch_size": 8, "max_batch_delay_ms": 100},
        "events": {"bind": f"tcp://127.0.0.1:{ev}", "snapshot_bind": f"tcp://127.0.0.1:{snap}", "heartbeat_seconds": 1,
                   "journal": str(path.parent / "events.jsonl")},
        "metrics": {"bind": f"127.0.0.1:{met}"},
    }
    for key, value in sections.items():
        cfg.setdefault(key, {}).update(value)
    path.write_text(yaml.safe_dump(cfg))
    return {"events": cfg["events"]["bind"], "snapshot": cfg["events"]["snapshot_bind"],
            "metrics": f"http://{cfg['metrics']['bind']}", "journal": cfg["events"]["journal"]}


class Daemon:
    """`ad-detector run -c CONFIG` as a subprocess with its stderr collected."""

    def __init__(self, config: Path, env: dict[str, str] | None = None):
        e = dict(os.environ)
        e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
        e.update(env or {})
        self.log_path = config.parent / "daemon.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "detector", "run", "-c", str(config)], stdout=self._log,
                                     stderr=subprocess.STDOUT, env=e, text=True)

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def wait_log(self, needle: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log():
                return True
            if self.proc.poll() is not None:
                return needle in self.log()
            time.sleep(0.2)
        return False

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self._log.closed:
            self._log.close()
        return self.proc.returncode


class Listener:
    """A real ZeroMQ SUB on a thread, collecting (received_monotonic, topic, payload)."""

    def __init__(self, endpoint: str, rcvhwm: int = 100000):
        import zmq

        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.RCVHWM, rcvhwm)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.setsockopt(zmq.RCVTIMEO, 200)
        self.sock.connect(endpoint)
        self.events: list[tuple[float, str, dict]] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import zmq

        while not self._stop.is_set():
            try:
                topic, body = self.sock.recv_multipart()
            except zmq.Again:
                continue
            self.events.append((time.monotonic(), topic.decode(), json.loads(body)))
        self.sock.close(0)

    def of_type(self, *types: str) -> list[dict]:
        return [e for _, _, e in list(self.events) if e["type"] in types]

    def wait_for(self, pred, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return True
            time.sleep(0.1)
        return pred()

    def close(self) -> None:
        self._stop.set()
        self.thread.join(2)


def snapshot(endpoint: str, timeout_ms: int = 3000) -> dict:
    import zmq

    s = zmq.Context.instance().socket(zmq.REQ)
    s.setsockopt(zmq.RCVTIMEO, timeout_ms)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)
    try:
        s.send(b"snapshot")
        return json.loads(s.recv())
    finally:
        s.close(0)


class Subscriber:
    """`ad-detector subscribe ARGS` running in the background, its stdout collected line by line."""

    def __init__(self, *args: object) -> None:
        e = dict(os.environ)
        e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
        self.proc = subprocess.Popen([sys.executable, "-m", "detector", "subscribe", *map(str, args)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)
        self.lines: list[dict] = []
        self.err = ""
        self._threads = [threading.Thread(target=self._read, daemon=True),
                         threading.Thread(target=self._read_err, daemon=True)]
        for t in self._threads:
            t.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.err += line

    def events(self) -> list[dict]:
        """Printed events without the snapshot line and heartbeats (what the journal holds)."""
        return [e for e in list(self.lines) if e.get("type") not in ("snapshot", "heartbeat")]

    def wait_for(self, predicate, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"subscriber output never matched; lines={self.lines[-20:]} stderr={self.err!r} "
                                     f"exit={self.proc.poll()}")
            time.sleep(0.02)

    def _join(self) -> None:
        for t in self._threads:
            t.join(5)

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as in a crash or an OOM kill."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._join()

    def stop(self) -> tuple[int, str]:
        """Ctrl-C; returns (exit code, stderr)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        rc = self.proc.wait(10)
        self._join()
        return rc, self.err


def mount_small_tmpfs(directory: Path, size: str = "64k") -> str | None:
    """Mount a tmpfs of `size` on `directory` (root only): a disk that really fills up and really
    goes read-only. Returns None when mounted, else why not (for pytest.skip)."""
    import shutil

    if os.geteuid() != 0 or shutil.which("mount") is None:
        return "needs root and mount(8) to mount a small tmpfs as the journal's disk"
    directory.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)], capture_output=True,
                          text=True, timeout=30)
    return None if proc.returncode == 0 else f"cannot mount a tmpfs here (no CAP_SYS_ADMIN?): {proc.stderr.strip()}"


def remount(directory: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(directory)], check=True, capture_output=True, text=True,
                   timeout=30)


def unmount(directory: Path) -> None:
    subprocess.run(["umount", "-l", str(directory)], capture_output=True, timeout=30)


def fill(directory: Path) -> Path:
    """Fill the file system completely; return the filler file (delete it to free the space)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for size in (4096, 1):  # blocks, then the last bytes
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)
    try:
        (directory / "probe").write_bytes(b"x" * 4096)
    except OSError:
        return filler
    raise AssertionError(f"{directory} is not full after filling it")


def scrape(url: str) -> str:
    """The daemon's /metrics text (url: http://host:port)."""
    import urllib.request

    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        return r.read().decode()


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 when none)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name)] in " {" and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total
