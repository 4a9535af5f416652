"""`ad-detector subscribe`: print the daemon's events as JSON lines (a reference subscriber).

Output is for scripts: stdout carries only JSON lines (the snapshot first when asked for,
then one payload per event, flushed each); warnings go to stderr, one line each.

The late-joiner handshake is the ZeroMQ guide's Clone pattern:
1. connect and subscribe the SUB socket FIRST and wait until its connection is up, so every
   event published from now on is queued for us;
2. ask the snapshot endpoint for the current state (a REQ with a receive timeout; a REQ that
   timed out is closed and replaced, because a REQ stuck mid-request can never send again);
3. print the snapshot, then drop queued updates already contained in it (same run_id and
   seq <= the snapshot's seq).
Sequence numbers then reveal what the network lost: a jump in seq (only meaningful when
subscribed to every topic) or a new run_id (the daemon restarted) gets a warning.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import zmq

from detector import events
from detector.errors import RuntimeFailure, UsageError
from detector.security import CurveClient

PROG = "ad-detector subscribe"
SNAPSHOT_ATTEMPT_SECONDS = 2.0   # one REQ try; then a fresh socket
POLL_SLICE_MS = 200              # keeps Ctrl-C and --timeout responsive
WARN_BURST = 10                  # per kind of warning and window
WARN_WINDOW_SECONDS = 10.0


class _Warnings:
    """One stderr line per warning, at most WARN_BURST per kind per window, then a summary."""

    def __init__(self, err: TextIO) -> None:
        self.err = err
        self._windows: dict[str, tuple[float, int, int]] = {}  # kind -> (window start, shown, suppressed)

    def warn(self, kind: str, message: str) -> None:
        now = time.monotonic()
        start, shown, suppressed = self._windows.get(kind, (now, 0, 0))
        if now - start >= WARN_WINDOW_SECONDS:
            if suppressed:
                self._line(f"{suppressed} more '{kind}' warnings suppressed")
            start, shown, suppressed = now, 0, 0
        if shown < WARN_BURST:
            self._line(message)
            shown += 1
        else:
            suppressed += 1
        self._windows[kind] = (start, shown, suppressed)

    def flush(self) -> None:
        for kind, (start, shown, suppressed) in self._windows.items():
            if suppressed:
                self._line(f"{suppressed} more '{kind}' warnings suppressed")
            self._windows[kind] = (start, shown, 0)

    def _line(self, message: str) -> None:
        self.err.write(f"{PROG}: warning: {' '.join(message.split())}\n")
        self.err.flush()


class _SeqTracker:
    """Decides which events to print and what deserves a warning."""

    def __init__(self, warn: Callable[[str, str], None], check_gaps: bool, snapshot: dict[str, Any] | None) -> None:
        self.warn = warn
        self.check_gaps = check_gaps
        self.snapshot_run = snapshot["run_id"] if snapshot else None
        self.snapshot_seq = snapshot["seq"] if snapshot else 0
        self.run_id: str | None = self.snapshot_run
        self.last = self.snapshot_seq

    def accept(self, event: dict[str, Any]) -> bool:
        run_id, seq = event["run_id"], event["seq"]
        if run_id == self.snapshot_run and seq <= self.snapshot_seq:
            return False  # already contained in the snapshot
        if self.run_id is None:
            self.run_id, self.last = run_id, seq
            return True
        if run_id != self.run_id:
            self.warn("run", f"publisher restarted (run_id {self.run_id} -> {run_id}); events in between may be lost")
            self.run_id, self.last = run_id, seq
            return True
        if seq <= self.last:
            self.warn("order", f"duplicate or out-of-order event dropped: seq {seq} after {self.last}")
            return False
        if self.check_gaps and seq > self.last + 1:
            missed = seq - self.last - 1
            self.warn("gap", f"gap in seq: expected {self.last + 1}, got {seq} ({missed} event{'s' if missed != 1 else ''} missed)")
        self.last = seq
        return True


def _write_line(out: TextIO, obj: dict[str, Any]) -> None:
    try:
        text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
        text.encode(out.encoding or "utf-8")
    except (UnicodeEncodeError, LookupError):
        # lone surrogates from \\ud800 escapes, or a non-UTF-8 terminal: stay valid JSON
        text = json.dumps(obj, ensure_ascii=True, separators=(",", ":"))
    out.write(text + "\n")
    out.flush()


def _connect(sock: zmq.Socket[Any], endpoint: str, option: str) -> None:
    try:
        sock.connect(endpoint)
    except zmq.ZMQError as exc:
        raise UsageError(f"{option} {endpoint!r}: {exc.strerror}") from None


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.monotonic()


def _watch_handshake(sub: zmq.Socket[Any], endpoint: str) -> zmq.Socket[Any] | None:
    """Start watching the SUB's connection; must run BEFORE connect() or the event is missed."""
    event_id = getattr(zmq, "EVENT_HANDSHAKE_SUCCEEDED", None)
    if event_id is None or not endpoint.startswith(("tcp://", "ipc://")):
        return None  # inproc has no handshake events; old libzmq lacks this one
    # handshake failures too: with CURVE they are how a refused key shows (see _wait_connected)
    failures = sum(getattr(zmq, name, 0) for name in ("EVENT_HANDSHAKE_FAILED_AUTH", "EVENT_HANDSHAKE_FAILED_PROTOCOL"))
    return sub.get_monitor_socket(event_id | failures)


def _wait_connected(sub: zmq.Socket[Any], monitor: zmq.Socket[Any] | None, endpoint: str, deadline: float | None,
                    warnings: _Warnings) -> None:
    """Block until the SUB's connection handshake is done, so our subscription is on its way
    to the publisher before the snapshot is taken (else events in between would be missed)."""
    if monitor is None:
        return
    from zmq.utils.monitor import recv_monitor_message

    try:
        noted = False
        started = time.monotonic()
        while True:
            left = _remaining(deadline)
            if left is not None and left <= 0:
                raise RuntimeFailure(f"no connection to {endpoint} within the timeout")
            slice_ms = POLL_SLICE_MS if left is None else max(1, min(POLL_SLICE_MS, int(left * 1000)))
            if monitor.poll(slice_ms, zmq.POLLIN):
                event = recv_monitor_message(monitor)["event"]
                if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    return
                if event in (getattr(zmq, "EVENT_HANDSHAKE_FAILED_AUTH", None),
                             getattr(zmq, "EVENT_HANDSHAKE_FAILED_PROTOCOL", None)):
                    warnings.warn("refused", f"the publisher at {endpoint} refused the handshake: is this client's NAME.key "
                                             "in its allowed_clients_dir, --server-key its public key, and does it use "
                                             "CURVE exactly when you do? (retrying)")
            if not noted and time.monotonic() - started > SNAPSHOT_ATTEMPT_SECONDS:
                warnings.warn("wait", f"waiting for the publisher at {endpoint}")
                noted = True
    finally:
        sub.disable_monitor()
        monitor.close(linger=0)


def _parse_snapshot(frames: list[bytes], endpoint: str) -> dict[str, Any]:
    try:
        if len(frames) != 1:
            raise ValueError(f"{len(frames)} frames")
        snap = json.loads(frames[0].decode("utf-8"))
        if not isinstance(snap, dict):
            raise ValueError("not a JSON object")
        seq = snap.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise ValueError(f"bad seq {seq!r}")
        if not isinstance(snap.get("run_id"), str) or not isinstance(snap.get("channels"), dict):
            raise ValueError("run_id or channels missing")
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError included
        reason = " ".join(str(exc).split())[:120]
        raise RuntimeFailure(f"the reply from {endpoint} is not a snapshot ({reason})") from None
    return snap


def _request_snapshot(ctx: zmq.Context[Any], endpoint: str, deadline: float | None, warnings: _Warnings,
                      curve: CurveClient | None = None) -> dict[str, Any]:
    """Lazy Pirate REQ: try, time out, replace the socket, try again until the deadline."""
    noted = False
    while True:
        left = _remaining(deadline)
        if left is not None and left <= 0:
            raise RuntimeFailure(f"no snapshot from {endpoint} within the timeout")
        attempt = SNAPSHOT_ATTEMPT_SECONDS if left is None else min(SNAPSHOT_ATTEMPT_SECONDS, left)
        req = ctx.socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        req.setsockopt(zmq.RCVTIMEO, max(1, int(attempt * 1000)))
        if curve is not None:
            curve.secure(req)
        try:
            _connect(req, endpoint, "--snapshot-endpoint")
            req.send(b"snapshot")
            reply = req.recv_multipart()
        except zmq.Again:
            if not noted:
                warnings.warn("wait", f"no snapshot from {endpoint} yet, retrying")
                noted = True
            continue
        finally:
            req.close(linger=0)
        return _parse_snapshot(reply, endpoint)


def _run(ctx: zmq.Context[Any], args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    warnings = _Warnings(err)
    topics: list[str] = args.topic or [""]
    timeout: float | None = args.timeout
    count: int | None = args.count
    deadline = None if timeout is None else time.monotonic() + timeout
    curve = CurveClient.from_files(getattr(args, "server_key", None), getattr(args, "client_key", None))

    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    if curve is not None:
        curve.secure(sub)
    for prefix in topics:
        sub.setsockopt(zmq.SUBSCRIBE, prefix.encode("utf-8"))
    # with CURVE, wait for the handshake even without a snapshot: a refused key is then reported
    monitor = _watch_handshake(sub, args.endpoint) if args.snapshot_endpoint or curve is not None else None
    _connect(sub, args.endpoint, "--endpoint")

    snapshot = None
    if monitor is not None:
        _wait_connected(sub, monitor, args.endpoint, deadline, warnings)
    if args.snapshot_endpoint:
        snapshot = _request_snapshot(ctx, args.snapshot_endpoint, deadline, warnings, curve)
        _write_line(out, {"type": "snapshot", **{k: v for k, v in snapshot.items() if k != "type"}})
    tracker = _SeqTracker(warnings.warn, check_gaps=topics == [""], snapshot=snapshot)

    if count == 0:
        return 0  # `--snapshot-endpoint S --count 0`: print the current state and exit
    try:
        return _receive(sub, args.endpoint, tracker, warnings, out, count, timeout)
    finally:
        warnings.flush()


def _receive(sub: zmq.Socket[Any], endpoint: str, tracker: _SeqTracker, warnings: _Warnings, out: TextIO,
             count: int | None, timeout: float | None) -> int:
    """Print events until --count is reached; raise RuntimeFailure after --timeout of silence."""
    printed = 0
    last_arrival = time.monotonic()
    while True:
        slice_ms = POLL_SLICE_MS
        if timeout is not None:
            left = timeout - (time.monotonic() - last_arrival)
            if left <= 0:
                raise RuntimeFailure(f"no event from {endpoint} within {timeout:g} s")
            slice_ms = max(1, min(POLL_SLICE_MS, int(left * 1000)))
        if not sub.poll(slice_ms, zmq.POLLIN):
            continue
        frames = sub.recv_multipart(zmq.NOBLOCK)
        last_arrival = time.monotonic()
        try:
            event = events.decode(frames)
        except events.EventError as exc:
            warnings.warn("undecodable", f"undecodable message skipped: {exc}")
            continue
        if not tracker.accept(event):
            continue
        _write_line(out, event)
        printed += 1
        if count is not None and printed >= count:
            return 0


def subscribe_command(args: argparse.Namespace) -> int:
    """Entry point of `ad-detector subscribe`; Ctrl-C and a closed stdout pipe exit 0 quietly."""
    if args.timeout is not None and not args.timeout > 0:
        raise UsageError(f"--timeout must be > 0 seconds, got {args.timeout:g}")
    if args.count is not None and args.count < 0:
        raise UsageError(f"--count must be >= 0, got {args.count}")
    ctx = zmq.Context()
    try:
        return _run(ctx, args, sys.stdout, sys.stderr)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        # `ad-detector subscribe | head`: the reader left; point stdout at devnull so the
        # interpreter's final flush does not print a traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 0
    finally:
        ctx.destroy(linger=0)
