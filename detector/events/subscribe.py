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
subscribed to every topic) or a new run_id (the daemon restarted).

With a snapshot endpoint, a loss is repaired instead of only warned about: the subscriber
sends a REPLAY request (`detector.events.replay`) for the events after the last one it printed,
prints the journaled ones it missed (the rest of the old run, then the new run's), and
drops the live events the replay already contained, so the output has every segment and
stream event once, in order. Heartbeats are not journaled, so a lost heartbeat stays lost
(silently: it is liveness, not history). What cannot be repaired is still warned about:
events published while the daemon's journal was failing, and runs rotated out of the journal.

`--resume FILE` extends this to the subscriber's own restarts: the position (run_id, seq)
of the last printed line is kept in FILE (rewritten atomically after each line), and a
restarted subscriber replays from there instead of printing a snapshot. The one window left:
killed between printing a line and saving its position, that line is printed again on restart
(a consumer that must never see one twice can drop repeated (run_id, seq) pairs).
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

from detector.events import schema as events

from detector.events import replay
from detector.errors import RuntimeFailure, UsageError
from detector.events.curve import CurveClient

PROG = "ad-detector subscribe"
SNAPSHOT_ATTEMPT_SECONDS = 2.0   # one REQ try; then a fresh socket
POLL_SLICE_MS = 200              # keeps Ctrl-C and --timeout responsive
WARN_BURST = 10                  # per kind of warning and window
WARN_WINDOW_SECONDS = 10.0
REPLAY_SECONDS = 10.0            # total budget of one replay exchange before giving up on it


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


class ReplayUnavailable(Exception):
    """The replay could not be had (no answer, an old publisher, a refused request)."""


Replayer = Callable[[str, int], dict[str, Any]]


class _CountReached(Exception):
    """--count events printed: stop, even in the middle of a replay."""


class _ResumeFile:
    """The position of the last printed line, for `--resume`: {"run_id", "seq"} in a small
    JSON file, replaced atomically (write a temporary file, rename) so a kill leaves the old
    position or the new one, never half of one."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._tmp = f"{path}.tmp"

    def load(self) -> tuple[str, int] | None:
        try:
            with open(self.path, "rb") as fh:
                raw = fh.read(4096)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise UsageError(f"--resume {self.path}: cannot read it ({exc.strerror or exc})") from None
        try:
            obj = json.loads(raw.decode("utf-8"))
            run_id, seq = obj["run_id"], obj["seq"]
            if not isinstance(run_id, str) or not run_id or not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
                raise ValueError
        except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError):
            raise UsageError(f"--resume {self.path}: not a position written by {PROG}; delete it to start "
                             "from the current state") from None
        return run_id, seq

    def save(self, run_id: str, seq: int) -> None:
        data = json.dumps({"run_id": run_id, "seq": seq}, ensure_ascii=False).encode("utf-8")
        try:
            with open(self._tmp, "wb") as fh:
                fh.write(data)
            os.replace(self._tmp, self.path)
        except OSError as exc:
            raise RuntimeFailure(f"--resume {self.path}: cannot save the position ({exc.strerror or exc})") from None


class _Stream:
    """Decides which events to print, repairs losses by replay, warns about what it cannot repair.

    `pos` is the (run_id, seq) of the last event printed (or the snapshot's), `done_runs` the
    runs already passed (their late stragglers are duplicates), `quiet` the position up to
    which events are known from a snapshot or a replay and are dropped without a warning.
    """

    def __init__(self, out: TextIO, warn: Callable[[str, str], None], check_gaps: bool, topics: list[str],
                 replayer: Replayer | None, resume: _ResumeFile | None, count: int | None) -> None:
        self.out = out
        self.warn = warn
        self.check_gaps = check_gaps
        self.topics = topics
        self.replayer = replayer
        self.resume = resume
        self.count = count
        self.printed = 0
        self.pos: tuple[str, int] | None = None
        self.quiet: tuple[str, int] | None = None
        self.done_runs: set[str] = set()
        self._warned_unjournaled: set[tuple[str, int, int]] = set()

    # -- positions ---------------------------------------------------------------------------

    def start_at(self, run_id: str, seq: int) -> None:
        """Known state up to here (a snapshot or a saved position): later events only."""
        self.pos = self.quiet = (run_id, seq)
        if self.resume is not None:
            self.resume.save(run_id, seq)

    def _advance(self, event: dict[str, Any]) -> None:
        run_id, seq = event["run_id"], event["seq"]
        if self.pos is not None and self.pos[0] != run_id:
            self.done_runs.add(self.pos[0])
        self.pos = (run_id, seq)

    def _deliver(self, event: dict[str, Any]) -> None:
        self._advance(event)
        _write_line(self.out, event)
        if self.resume is not None:
            self.resume.save(event["run_id"], event["seq"])
        self.printed += 1
        if self.count is not None and self.printed >= self.count:
            raise _CountReached

    def _known(self, run_id: str, seq: int) -> bool:
        return self.quiet is not None and self.quiet[0] == run_id and seq <= self.quiet[1]

    # -- live events -------------------------------------------------------------------------

    def handle(self, event: dict[str, Any]) -> None:
        """One event from the SUB socket. Raises _CountReached when --count is reached."""
        run_id, seq = event["run_id"], event["seq"]
        if self.pos is None:
            self._deliver(event)
            return
        if run_id in self.done_runs:
            return  # a straggler of a run we have already replayed past
        if run_id == self.pos[0]:
            last = self.pos[1]
            if seq <= last:
                if not self._known(run_id, seq):
                    self.warn("order", f"duplicate or out-of-order event dropped: seq {seq} after {last}")
                return
            if seq == last + 1 or not self.check_gaps:
                self._deliver(event)
                return
            if self.replayer is not None and self.replay(reason="gap"):
                if self._covered(run_id, seq):
                    return
                self._deliver(event)  # what is still missing were heartbeats (never journaled)
                return
            missed = seq - last - 1
            self.warn("gap", f"gap in seq: expected {last + 1}, got {seq} ({missed} event{'s' if missed != 1 else ''} missed)")
            self._deliver(event)
            return
        # a run we have not seen: the publisher restarted
        old = self.pos[0]
        if self.replayer is not None and self.replay(reason="restart"):
            if self._covered(run_id, seq) or run_id in self.done_runs:
                return
            self.warn("run", f"publisher restarted (run_id {old} -> {run_id}); the replay did not reach the new run, "
                             "events in between may be lost")
        else:
            self.warn("run", f"publisher restarted (run_id {old} -> {run_id}); events in between may be lost")
        self._deliver(event)

    def _covered(self, run_id: str, seq: int) -> bool:
        return self.pos is not None and self.pos[0] == run_id and seq <= self.pos[1]

    # -- replay ------------------------------------------------------------------------------

    def replay(self, reason: str) -> bool:
        """Print the journaled events after `pos` (all pages). False when no replay could be had
        (warned; the caller falls back to warning about the loss)."""
        assert self.pos is not None and self.replayer is not None
        run_id, after = self.pos
        pages = 0
        while True:
            try:
                reply = self.replayer(run_id, after)
            except ReplayUnavailable as exc:
                self.warn("replay", f"cannot replay missed events ({reason}): {exc}")
                return False
            pages += 1
            if not reply["found"]:
                oldest = reply.get("oldest")
                if not isinstance(oldest, dict) or not isinstance(oldest.get("run_id"), str) \
                        or not isinstance(oldest.get("seq"), int):
                    self.warn("replay", f"run {run_id} is not in the publisher's journal and the journal is empty; "
                                        "events after seq {after} are lost")
                    return True
                self.warn("replay", f"run {run_id} is no longer in the publisher's journal (rotated away?); "
                                    f"replaying from the oldest journaled event (run {oldest['run_id']} seq "
                                    f"{oldest['seq']}); events in between are lost")
                self.done_runs.add(run_id)
                run_id, after = oldest["run_id"], oldest["seq"] - 1
                self.pos = (run_id, after)
                continue
            for ev in reply["events"]:
                if self.pos is not None and ev["run_id"] == self.pos[0] and ev["seq"] <= self.pos[1]:
                    continue
                if ev["run_id"] in self.done_runs:
                    continue
                if self._wanted(ev):
                    self._deliver(ev)
                else:
                    self._advance(ev)
            self._warn_unjournaled(reply)
            self.quiet = self.pos
            nxt = reply.get("next")
            if reply["complete"] or not isinstance(nxt, dict):
                return True
            run_id, after = nxt["run_id"], nxt["after_seq"]

    def _wanted(self, event: dict[str, Any]) -> bool:
        name = events.topic(event["type"], event["channel"])
        return any(name.startswith(prefix) for prefix in self.topics)

    def _warn_unjournaled(self, reply: dict[str, Any]) -> None:
        ranges = reply.get("unjournaled")
        run = reply.get("run_id")
        if not isinstance(ranges, list) or not isinstance(run, str):
            return
        for r in ranges:
            if not (isinstance(r, list) and len(r) == 2 and all(isinstance(x, int) for x in r)):
                continue
            key = (run, r[0], r[1])
            if key in self._warned_unjournaled:
                continue
            self._warned_unjournaled.add(key)
            self.warn("unjournaled", f"events seq {r[0]}..{r[1]} of run {run} were published while the publisher's "
                                     "journal was failing and cannot be replayed; any of them missed is lost")


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


def _make_replayer(ctx: zmq.Context[Any], endpoint: str, curve: CurveClient | None = None) -> Replayer:
    """A function asking `endpoint` for one replay page (Lazy Pirate, REPLAY_SECONDS in all)."""

    def ask(run_id: str, after_seq: int) -> dict[str, Any]:
        payload = replay.encode_request(replay.ReplayRequest(run_id=run_id, after_seq=after_seq,
                                                             limit=replay.DEFAULT_LIMIT))
        deadline = time.monotonic() + REPLAY_SECONDS
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ReplayUnavailable(f"no replay reply from {endpoint} within {REPLAY_SECONDS:g} s")
            req = ctx.socket(zmq.REQ)
            req.setsockopt(zmq.LINGER, 0)
            req.setsockopt(zmq.RCVTIMEO, max(1, int(min(SNAPSHOT_ATTEMPT_SECONDS, left) * 1000)))
            if curve is not None:
                curve.secure(req)
            try:
                _connect(req, endpoint, "--snapshot-endpoint")
                req.send(payload)
                frames = req.recv_multipart()
            except zmq.Again:
                continue
            finally:
                req.close(linger=0)
            try:
                return replay.parse_reply(frames)
            except ValueError as exc:
                raise ReplayUnavailable(f"{endpoint}: {exc}") from None

    return ask


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

    resume = _ResumeFile(args.resume) if getattr(args, "resume", None) else None
    position = resume.load() if resume is not None else None
    replayer = _make_replayer(ctx, args.snapshot_endpoint, curve) if args.snapshot_endpoint else None
    stream = _Stream(out, warnings.warn, check_gaps=topics == [""], topics=topics, replayer=replayer, resume=resume,
                     count=count or None)
    try:
        if monitor is not None:
            _wait_connected(sub, monitor, args.endpoint, deadline, warnings)
        if args.snapshot_endpoint:
            if position is not None:
                # a restarted subscriber: everything after its last printed line, no snapshot
                stream.start_at(*position)
                stream.replay(reason="resume")
            else:
                snapshot = _request_snapshot(ctx, args.snapshot_endpoint, deadline, warnings, curve)
                _write_line(out, {"type": "snapshot", **{k: v for k, v in snapshot.items() if k != "type"}})
                stream.start_at(snapshot["run_id"], snapshot["seq"])
        if count == 0:
            return 0  # `--snapshot-endpoint S --count 0`: print the current state and exit
        return _receive(sub, args.endpoint, stream, warnings, timeout)
    except _CountReached:
        return 0
    finally:
        warnings.flush()


def _receive(sub: zmq.Socket[Any], endpoint: str, stream: _Stream, warnings: _Warnings,
             timeout: float | None) -> int:
    """Print events until --count is reached (_CountReached); RuntimeFailure after --timeout of silence."""
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
        stream.handle(event)


def subscribe_command(args: argparse.Namespace) -> int:
    """Entry point of `ad-detector subscribe`; Ctrl-C and a closed stdout pipe exit 0 quietly."""
    if args.timeout is not None and not args.timeout > 0:
        raise UsageError(f"--timeout must be > 0 seconds, got {args.timeout:g}")
    if args.count is not None and args.count < 0:
        raise UsageError(f"--count must be >= 0, got {args.count}")
    if getattr(args, "resume", None) and not args.snapshot_endpoint:
        raise UsageError("--resume needs --snapshot-endpoint (the replay is served there)")
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
