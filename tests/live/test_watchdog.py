"""Thread watchdogs (issue 5): a thread of the real daemon dies, the daemon says so and exits 1.

Correct code has no input that kills a thread, so the fault is injected from outside the
daemon's code: the test writes a `sitecustomize.py` into a directory it puts first on the
subprocess's PYTHONPATH, which Python imports at start-up; it wraps one function the
thread runs so that it raises after N calls once the daemon has decided its first segment.
Nothing in `detector/` knows about it.

The daemon runs as users run it (`python -m detector run -c CONFIG`, a file source paced
in real time, real ZeroMQ, real metrics HTTP, a NOTIFY_SOCKET with WATCHDOG_USEC as systemd
gives it), and the test checks what users see: exit code 1 soon after the fault, one log
line naming the thread with the exception and its traceback, /healthz 503 naming the thread
while it dies (at least one answer seen, unless the dead thread is the HTTP server itself),
the systemd watchdog no longer fed, and every event decided before the end in the journal.
The ThreadWatch logic itself is tested at the bottom, in-process.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from livekit import REPO, Daemon, Listener, write_config

EXIT_BOUND_SECONDS = 15.0
DYING_SECONDS = 0.5     # from the fault to /healthz 503: the exception unwinding, one poll
HOLD_HTTP_STOP_SECONDS = 0.3   # the metrics server's stop is held this long after a fault (see SITECUSTOMIZE)

SITECUSTOMIZE = '''\
"""Fault injection written by tests/live/test_watchdog.py; never part of the daemon."""
import importlib
import socket
import time

MODULE, ATTR, AFTER, AFTER_SECONDS, NOTIFY = {module!r}, {attr!r}, {after!r}, {after_seconds!r}, {notify!r}
GATE_MODULE, GATE_ATTR = {gate_module!r}, {gate_attr!r}
HOLD_HTTP_STOP = {hold_http_stop!r}


def _marker(text):
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(text.encode(), NOTIFY)


def _resolve(module, attr):
    owner = importlib.import_module(module)
    *path, name = attr.split(".")
    for part in path:
        owner = getattr(owner, part)
    return owner, name


def _install():
    # the gate: armed once the daemon has decided its first segment (it wraps the function
    # that announces a decision and only records that it ran)
    gate = []
    if GATE_ATTR:
        g_owner, g_name = _resolve(GATE_MODULE, GATE_ATTR)
        g_original = getattr(g_owner, g_name)

        def gated(*args, **kwargs):
            result = g_original(*args, **kwargs)
            gate[:] = gate or [time.monotonic()]
            return result

        setattr(g_owner, g_name, gated)
    else:
        gate.append(0.0)

    owner, name = _resolve(MODULE, ATTR)
    original = getattr(owner, name)
    calls = [0]
    fired = []

    def faulty(*args, **kwargs):
        if gate:
            calls[0] += 1
            if calls[0] >= AFTER and time.monotonic() - gate[0] >= AFTER_SECONDS:
                if not fired:
                    fired.append(1)
                    _marker("X_INJECTED=" + ATTR)
                raise RuntimeError("injected fault in " + ATTR + " call " + str(calls[0]))
        return original(*args, **kwargs)

    setattr(owner, name, faulty)

    if HOLD_HTTP_STOP:
        # once the fault fired, the metrics server's stop waits a moment: the daemon's whole
        # shutdown takes ~20 ms here, too short for a poller to be sure to see what /healthz
        # answers while the daemon dies; holding it makes that window wide enough to check
        server_cls = importlib.import_module("detector.live.server").MetricsServer
        stop = server_cls.stop

        def held_stop(self):
            if fired:
                time.sleep(HOLD_HTTP_STOP)
            return stop(self)

        server_cls.stop = held_stop


_install()
'''

# what announces a decided segment: the faults wait for it (detector.live.inference_loop)
GATE = ("detector.live.inference_loop", "InferenceLoop._transition")


class NotifySocket:
    """What systemd sees: every sd_notify datagram, in order, with the time it arrived."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            self.messages.append((time.monotonic(), data.decode("utf-8", "replace")))

    def first(self, prefix: str) -> float | None:
        return next((t for t, m in list(self.messages) if m.startswith(prefix)), None)

    def close(self) -> None:
        self._stop.set()
        self.thread.join(2)
        self.sock.close()


class HealthPoller:
    """/healthz every 20 ms: (asked, answered: monotonic times; status or None when nobody answers; body)."""

    def __init__(self, url: str) -> None:
        self.url = url + "/healthz"
        self.seen: list[tuple[float, float, int | None, dict]] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=1) as r:
                    status, body = r.status, json.loads(r.read())
            except urllib.error.HTTPError as exc:
                status, body = exc.code, json.loads(exc.read() or b"{}")
            except (OSError, ValueError):
                status, body = None, {}
            self.seen.append((t, time.monotonic(), status, body))
            time.sleep(0.02)

    def close(self) -> None:
        self._stop.set()
        self.thread.join(3)


def decided(log: str, what: str) -> int:
    """How many times the daemon logged that it decided `what` (its own words, one line each)."""
    return len(re.findall(rf" {what} channel=", log))


def journal_events(path: str) -> list[dict]:
    from detector.events.journal import read_journal

    return list(read_journal(Path(path)))


def run_with_fault(tmp_path: Path, bundle_dir: Path, source: Path, module: str, attr: str, after: int,
                   after_seconds: float = 0.0, gate: tuple[str, str] | None = GATE) -> dict:
    """Start the daemon with the fault armed, wait for it to exit, collect what everyone saw."""
    inject = tmp_path / "inject"
    inject.mkdir()
    notify = NotifySocket(tmp_path / "notify.sock")
    gate_module, gate_attr = gate or ("", "")
    (inject / "sitecustomize.py").write_text(SITECUSTOMIZE.format(module=module, attr=attr, after=after, after_seconds=after_seconds,
                                                                  notify=notify.path, gate_module=gate_module, gate_attr=gate_attr,
                                                                  hold_http_stop=HOLD_HTTP_STOP_SECONDS))
    cfg = tmp_path / "config.yaml"
    ep = write_config(cfg, bundle_dir, [{"name": "tv", "source": str(source), "realtime": True}])
    listener = Listener(ep["events"])
    env = {"PYTHONPATH": os.pathsep.join([str(inject), str(REPO)]), "NOTIFY_SOCKET": notify.path,
           "WATCHDOG_USEC": "2000000"}       # systemd's WatchdogSec=2: pinged every second
    daemon = Daemon(cfg, env=env)
    health = None
    try:
        assert daemon.wait_log("daemon ready", 120), daemon.log()[-3000:]
        health = HealthPoller(ep["metrics"])
        deadline = time.monotonic() + 120
        while daemon.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        exited = time.monotonic() if daemon.proc.poll() is not None else None
        time.sleep(0.3)                       # the last datagrams and events
    finally:
        if health is not None:
            health.close()
        code = daemon.stop()
        listener.close()
        notify.close()
    return {"code": code, "exited": exited, "log": daemon.log(), "notify": notify, "health": health.seen if health else [],
            "received": [e for _, _, e in listener.events], "journal": journal_events(ep["journal"]),
            "injected": notify.first("X_INJECTED=")}


@pytest.fixture(scope="module")
def broadcast(demo_set) -> Path:
    return demo_set.broadcast


# what each fault wraps, and after how many of its calls (or seconds) once the daemon has
# decided its first segment (GATE: about 8 s into the run, a window's worth of frames) it
# starts raising, and the watched thread it kills. Waiting for the decision, not for a fixed
# time, keeps "a segment was decided and journaled before the death" true on a slow machine
# while not idling through seconds of stream on a fast one.
FAULTS = {
    "capture": ("detector.live.capture", "frame_stats", 3, 0.0, "capture-tv"),              # per sampled frame
    "inference": ("detector.model.models", "Models.features", 2, 0.0, "inference"),        # per live backbone batch
    # one loop turn: since a bad message costs only that message, only the loop itself can kill the thread
    "publisher": ("detector.events.outputs.zeromq", "Publisher._turn", 1, 0.5, "publisher"),
    # per serve_forever turn: every 0.2 s and after every request (the health poller's too), so by time, not count
    "metrics-http": ("socketserver", "BaseServer.service_actions", 1, 0.5, "metrics-http"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_dead_thread_makes_the_daemon_exit_1(tmp_path, bundle_dir: Path, broadcast: Path, fault: str):
    module, attr, after, after_seconds, watched = FAULTS[fault]
    r = run_with_fault(tmp_path, bundle_dir, broadcast, module, attr, after, after_seconds)
    log = r["log"]
    tail = log[-5000:]
    assert r["injected"] is not None, f"the fault never fired\n{tail}"

    # exit 1, soon
    assert r["code"] == 1, tail
    assert r["exited"] is not None and r["exited"] - r["injected"] <= EXIT_BOUND_SECONDS, (r["exited"], r["injected"], tail)

    # the thread's death logged once, naming it and the exception, with the traceback
    died = [l for l in log.splitlines() if "thread died thread=" in l]
    assert len(died) == 1, died
    assert re.search(rf"ERROR \S+ thread died thread={watched}(-\d+)? error=RuntimeError\('injected fault in {re.escape(attr)} call",
                     died[0]), died
    assert f'raise RuntimeError("injected fault in " + ATTR' in log and "Traceback (most recent call last)" in log, tail
    assert re.search(rf"^ad-detector: failed: thread {watched} died error=RuntimeError\('injected fault", log, re.M), tail

    # systemd: READY, fed while healthy, not fed once the thread died (at most the one ping the
    # supervisor was already sending while the exception was being raised), then STOPPING
    msgs = r["notify"].messages
    t_ready, t_stop = r["notify"].first("READY=1"), r["notify"].first("STOPPING=1")
    assert t_ready is not None and t_stop is not None and t_stop > r["injected"], msgs
    pings = [t for t, m in msgs if m == "WATCHDOG=1"]
    assert any(t < r["injected"] for t in pings), msgs
    assert len([t for t in pings if t > r["injected"]]) <= 1, msgs
    assert any(m.startswith(f"STATUS=thread {watched} died") for _, m in msgs), msgs

    # /healthz: 200 before; 503 naming the thread from the moment the thread is gone, never 200
    # after that, for as long as the server still answers (the shutdown, its last step held
    # HOLD_HTTP_STOP_SECONDS so a 20 ms poll sees it; the metrics server cannot answer at all
    # once its own thread is gone). The marker is sent just before the raise, and the thread is only gone once its
    # exception has unwound (capture releases its source in a `finally`), so a request in those
    # few milliseconds may still see 200; DYING_SECONDS bounds that.
    inj = r["injected"]
    before = [s for _, answered, s, _ in r["health"] if answered < inj and s is not None]
    assert before and before[-1] == 200, r["health"][-20:]
    after_marker = [(asked, s, b) for asked, _, s, b in r["health"] if asked > inj and s is not None]
    assert all(s != 200 for asked, s, _ in after_marker if asked > inj + DYING_SECONDS), after_marker[:5]
    first_503 = next((asked for asked, s, _ in after_marker if s == 503), inj + DYING_SECONDS)
    after_fault = [(s, b) for asked, s, b in after_marker if asked >= first_503]
    assert all(s == 503 for s, _ in after_fault), after_fault[:5]
    if fault == "metrics-http":
        assert all(s is None for asked, _, s, _ in r["health"] if asked > inj + 1.0), r["health"][-10:]
    else:
        # what a liveness probe relies on: while the daemon dies, /healthz says 503 and names the thread
        # (not merely "never 200": a server that stopped answering at once would pass that)
        answered_503 = [(answered, b) for asked, answered, s, b in r["health"]
                        if asked > inj and s == 503 and answered <= r["exited"]]
        assert answered_503, f"/healthz never answered 503 between the fault and the exit: {after_marker[:10]}"
        assert all(watched in b.get("dead_threads", {}) or watched in (b.get("failure") or "") for _, b in after_fault), \
            after_fault[:5]
        assert all(watched in b.get("dead_threads", {}) or f"thread {watched} died" in (b.get("failure") or "")
                   for _, b in answered_503), answered_503[:5]

    # no decided event lost: every decision the daemon logged is in the journal, and every
    # event a subscriber received is too
    journal = r["journal"]
    types = [e["type"] for e in journal]
    assert types.count("segment.start") == decided(log, "segment start") >= 1, (types, tail)
    assert types.count("stream.up") == decided(log, "stream up") >= 1, types
    assert "stream.down" in types, types        # the shutdown still says the stream is gone
    seqs = [e["seq"] for e in journal]
    assert seqs == sorted(set(seqs)), seqs
    journaled = {(e["run_id"], e["seq"]) for e in journal}
    received = [e for e in r["received"] if e["type"] != "heartbeat"]
    assert received and all((e["run_id"], e["seq"]) in journaled for e in received), (received, journal)
    if fault == "publisher":
        # events decided after the publisher died were never sent, but they are journaled
        assert "journaled queued events without publishing them" in log, tail
        assert len(journal) > len(received)


# ---------------------------------------------------------------------- ThreadWatch, in-process

def test_threadwatch_logs_a_thread_exception_once_with_its_traceback(caplog):
    from detector.live.threadwatch import ThreadWatch

    watch = ThreadWatch()
    box: dict[str, threading.Thread] = {}

    def boom() -> None:
        raise ValueError("bad frame")

    previous = threading.excepthook          # pytest's own, during a test
    watch.install()
    try:
        caplog.set_level(logging.ERROR, logger="detector.live.threadwatch")
        box["t"] = threading.Thread(target=boom, name="worker-1")
        watch.watch("worker", lambda: box.get("t"))
        watch.watch("idle", lambda: None)          # never started counts as dead too
        box["t"].start()
        box["t"].join()
    finally:
        watch.uninstall()
    assert threading.excepthook is previous
    recs = [r for r in caplog.records if r.name == "detector.live.threadwatch"]
    assert len(recs) == 1 and recs[0].getMessage() == "thread died thread=worker-1 error=ValueError('bad frame')"
    assert recs[0].exc_info and recs[0].exc_info[0] is ValueError
    dead = watch.dead()
    assert [(d.name, d.error) for d in dead] == [("worker", "ValueError('bad frame')"), ("idle", "exited without an exception")]


def test_threadwatch_alive_and_error_callables_win():
    """The publisher catches its own exception (to close its sockets): it reports through callables."""
    from detector.live.threadwatch import ThreadWatch

    watch = ThreadWatch()
    state = {"alive": True, "error": None}
    t = threading.Thread(target=lambda: None)
    t.start()
    t.join()
    watch.watch("publisher", lambda: t, alive=lambda: state["alive"], error=lambda: state["error"])
    assert watch.dead() == []                      # the thread object is gone but it says it is alive
    state.update(alive=False, error=OSError(5, "gone"))
    assert [(d.name, d.error) for d in watch.dead()] == [("publisher", "OSError(5, 'gone')")]
