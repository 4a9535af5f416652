"""The publisher thread: journal, ZeroMQ PUB, heartbeats and the late-joiner snapshot.

CONTRACT.md "Events" and DESIGN.md (publisher thread, ZeroMQ guide lessons). Why it is
built this way:

- ZeroMQ sockets are not thread-safe, so ONE thread owns every socket. Other threads call
  `publish()`, which only validates the fields and puts them on a `queue.SimpleQueue`; a byte
  on a socketpair wakes the thread, so an event leaves within a poll cycle (well under the
  ~50 ms budget) without the thread spinning on a timer.
- The thread, not the caller, assigns `seq` and `emitted`: one writer makes `seq` strictly
  increasing for the whole process without a lock around the send.
- Every event except heartbeats is appended to the journal (flushed, fsync'ed) BEFORE it is
  sent, so no subscriber can have seen an event the journal lacks. If the journal fails (disk
  full), the event is still published, because an ad-replacement subscriber missing a break
  is worse than a gap in the record; `on_journal_error` lets the caller count it, and the
  journal reopens by itself on the next event.
- The PUB side is an XPUB with `XPUB_NODROP`, sent with `NOBLOCK`. A plain PUB drops silently
  at the high-water mark, so an overflow could never be counted. With `XPUB_NODROP`, a send
  that would overflow a subscriber's queue fails with `zmq.Again` and nothing is sent; we
  count it ("hwm") and resend the same message in lossy mode, so it still reaches every
  subscriber with room. A slow subscriber thus loses messages itself, never blocks the
  pipeline, and never makes a fast subscriber miss anything.
  Limit (libzmq, measured): after that lossy send, libzmq parks the full subscriber's queue
  and skips it silently until the subscriber has read half of it, so "hwm" counts overflow
  EPISODES (one per time a subscriber falls behind), not every message it missed. Counting
  every message would need the strict NODROP mode, where one stuck dashboard makes every
  subscriber miss everything; subscribers see exactly what they missed from the gaps in `seq`.
  The XPUB's subscription messages are read and discarded so they cannot pile up over
  months of reconnects.
- The snapshot endpoint is a ROUTER answering like a REP (a REQ client cannot tell the
  difference). A REP socket has a strict recv/send state machine that a garbled or
  abandoned request can wedge; a ROUTER answers anything, including a malformed request,
  and a reply to a client that went away is simply dropped.
- Heartbeats (one per channel every `heartbeat_seconds`) carry `seq` like every event but are
  not journaled: they are liveness, not history.
- The snapshot endpoint also answers REPLAY requests (`detector.events.replay`): journaled events
  after a (run_id, seq), read back from the journal files, so a subscriber that lost events
  gets them back. Served on this thread (it owns the socket), with a bounded page per reply;
  the journal lookup jumps to the run with a byte search, so a request costs milliseconds.
- If the thread dies (a bug), it closes its sockets, logs `thread died thread=publisher`
  with the traceback and keeps the exception in `error`; `alive` goes False and the daemon
  exits 1. `stop()` then journals whatever was still queued (without sending it), so the
  record keeps every event decided before the exit and a subscriber can replay them.
- A failing journal is one episode, not one log line per event: an ERROR when it starts,
  an INFO with the number of unjournaled events when the journal accepts an event again.
  `journal_status()` feeds /healthz ("degraded") and `on_journal_state` the metrics.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import queue
import socket
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import zmq

from detector.events import schema as events

from detector.events import replay
from detector.errors import RuntimeFailure, UsageError
from detector.events.journal import DEFAULT_KEEP, DEFAULT_MAX_BYTES, Journal, JournalError
from detector.events.journal import replay as journal_replay
from detector.util.ratelog import RateLimitedLog
from detector.events.curve import CurveServer

log = logging.getLogger(__name__)

PUB_LINGER_MS = 500          # at stop, queued messages get this long to reach subscribers
MAX_REQUEST_BYTES = 64 * 1024  # snapshot requests and subscriptions are tiny; refuse floods
BATCH = 1000                 # queue items per loop turn, so snapshots and heartbeats never starve
LOG_EVERY_SECONDS = 10.0     # rate limit for repeated warnings (drops, journal errors)
START_TIMEOUT_SECONDS = 10.0
MAX_UNJOURNALED_RANGES = 100   # seq ranges remembered per run for replay replies

_STOP = object()


def _new_channel_state() -> dict[str, Any]:
    return {"state": "unknown", "segment_id": None, "since": None, "stream_up": False, "p_ad": None}


class Publisher:
    """Owns the journal and every ZeroMQ socket of the daemon; see the module docstring.

    Callbacks run on the publisher thread and must be quick and thread-safe (metrics
    counters are); an exception in a callback is logged and does not stop the thread.

    - on_sent(channel, type): an event (heartbeats included) went out on the PUB socket.
    - on_drop(reason): "hwm" (a subscriber's queue overflowed: it misses this message and,
      uncounted, the following ones until it catches up; see the module docstring),
      "stopped" (publish() after stop()), "error" (unexpected send failure).
    - on_journal_error(exc): the journal append failed (a JournalError); the event was still sent.
    - on_journal_state(ok): the journal started failing (False) or accepts events again (True).
    - heartbeat_source(): channel -> {state, p_ad, stream_up, fps_in, fps_analyzed}, called on
      the publisher thread once per heartbeat round; missing keys or channels fall back to
      what the published events say.
    """

    def __init__(self, bind: str, snapshot_bind: str, heartbeat_seconds: float, journal_path: Path | None, run_id: str,
                 channels: list[str], send_hwm: int = 1000, on_sent: Callable[[str, str], None] | None = None,
                 on_drop: Callable[[str], None] | None = None,
                 on_journal_error: Callable[[Exception], None] | None = None,
                 heartbeat_source: Callable[[], Mapping[str, Mapping[str, Any]]] | None = None, curve: CurveServer | None = None,
                 context: zmq.Context[Any] | None = None, journal_fsync: bool = True,
                 journal_max_bytes: int | None = DEFAULT_MAX_BYTES, journal_keep: int = DEFAULT_KEEP,
                 on_journal_state: Callable[[bool], None] | None = None) -> None:
        if not heartbeat_seconds > 0:
            raise ValueError(f"heartbeat_seconds must be > 0, got {heartbeat_seconds!r}")
        if send_hwm < 1:
            raise ValueError(f"send_hwm must be >= 1, got {send_hwm!r}")
        if not isinstance(run_id, str) or not run_id:
            raise ValueError("run_id must be a non-empty string")
        self.bind = bind
        self.snapshot_bind = snapshot_bind
        self.heartbeat_seconds = float(heartbeat_seconds)
        self.run_id = run_id
        self.send_hwm = int(send_hwm)
        self._journal = (Journal(Path(journal_path), fsync=journal_fsync, max_bytes=journal_max_bytes, keep=journal_keep)
                         if journal_path is not None else None)
        self._on_sent = on_sent
        self._on_drop = on_drop
        self._on_journal_error = on_journal_error
        self._on_journal_state = on_journal_state
        self._heartbeat_source = heartbeat_source
        self._given_context = context
        self._curve = curve  # CURVE + client authentication for both sockets (detector/events/curve.py)

        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._queue_lock = threading.Lock()      # orders publish() against stop()
        self._state_lock = threading.Lock()      # seq + channel state, read by snapshot()
        self._seq = 0
        self._channels: dict[str, dict[str, Any]] = {name: _new_channel_state() for name in channels}
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._bound = threading.Event()
        self._bind_error: BaseException | None = None
        self._failed = False
        self.error: BaseException | None = None    # what killed the thread (for the daemon's supervisor)
        self.endpoint: str | None = None           # actual endpoints once bound (resolves "*" ports)
        self.snapshot_endpoint: str | None = None
        # wakeup: publish() writes a byte, the thread polls the other end next to its sockets
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._wake_pending = False
        self._drop_log = RateLimitedLog(LOG_EVERY_SECONDS)
        # journal episode state; written on the publisher thread, read by journal_status()
        self._journal_failing = False
        self._journal_error: str | None = None
        self._journal_since: float | None = None
        self._journal_missed = 0
        self._unjournaled: list[list[int]] = []   # [first_seq, last_seq] of this run, for replay replies

    # -- public API (any thread) ------------------------------------------------------------

    def start(self) -> None:
        """Start the thread and wait until both sockets are bound.

        Raises UsageError naming the endpoint if a bind fails (address in use, bad endpoint):
        the bind happens on the thread that will own the socket, and its result comes back
        through a threading.Event.
        """
        if self._thread is not None:
            raise RuntimeError("publisher already started")
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)
        self._thread.start()
        if not self._bound.wait(START_TIMEOUT_SECONDS):
            raise RuntimeFailure(f"publisher thread did not bind {self.bind} within {START_TIMEOUT_SECONDS:g} s")
        if self._bind_error is not None:
            with self._queue_lock:
                self._stopping = True  # a publisher that never ran drops (and counts) late events
            self._thread.join(timeout=2.0)
            self._close_wakeup()
            raise self._bind_error

    def publish(self, type: str, channel: str, **fields: Any) -> None:
        """Queue an event; never blocks on the network. Thread-safe.

        The fields are validated here (ValueError on a contract violation), so a bug shows
        up in the caller's traceback rather than as a log line from another thread.
        """
        events.make_event(type, channel, 1, self.run_id, time.time(), **dict(fields))
        with self._queue_lock:
            if self._stopping:
                log.warning("event after stop dropped type=%s channel=%s", type, channel)
                self._call(self._on_drop, "stopped")
                return
            self._queue.put((type, channel, fields))
        self._wake()

    def stop(self, timeout: float = 3.0) -> None:
        """Send everything already queued, close the sockets (linger <= 0.5 s), join the thread."""
        with self._queue_lock:
            if self._stopping:
                return
            self._stopping = True
            self._queue.put(_STOP)
        thread = self._thread
        if thread is None or not thread.is_alive():
            self._close_wakeup()
            if self._journal is not None:
                if self._failed:
                    self._salvage()
                self._journal.close()
            return
        self._wake()
        thread.join(timeout)
        if thread.is_alive():
            log.warning("publisher thread still draining after stop timeout_s=%.1f queued=%s", timeout,
                        "yes" if not self._queue.empty() else "no")
        else:
            self._close_wakeup()
            # `alive` goes False as the thread fails, before it has closed its sockets, so the
            # daemon can get here while a dead thread was still cleaning up
            if self._failed and self._journal is not None:
                self._salvage()
                self._journal.close()

    def _salvage(self) -> None:
        """The thread died: journal what was still queued, so no decided event is lost from the record.

        Runs on the caller's thread, which is safe because the publisher thread is gone. The
        events get the next `seq` numbers as usual; they were never sent (the sockets died with
        the thread), so a subscriber learns of them by replay after the restart.
        """
        assert self._journal is not None
        saved = 0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                continue
            type_, channel, fields = item
            seq = self._seq + 1
            event = events.make_event(type_, channel, seq, self.run_id, time.time(), **dict(fields))
            try:
                self._journal.append(event)
            except JournalError as exc:
                self._journal_failed(exc, seq)
                self._call(self._on_journal_error, exc)
            else:
                saved += 1
            with self._state_lock:
                self._seq = seq
                self._apply(event)
        if saved:
            log.warning("publisher thread dead: journaled queued events without publishing them events=%d last_seq=%d",
                        saved, self._seq)

    @property
    def thread(self) -> threading.Thread | None:
        """The publisher thread (for the daemon's supervision)."""
        return self._thread

    @property
    def last_seq(self) -> int:
        """`seq` of the last event sent (0 before the first)."""
        with self._state_lock:
            return self._seq

    @property
    def alive(self) -> bool:
        """True while the thread runs normally (for the daemon's supervision and /healthz)."""
        return self._thread is not None and self._thread.is_alive() and not self._failed

    @property
    def journal_ok(self) -> bool:
        """False from a failed journal append until an append succeeds again (or no journal)."""
        return not self._journal_failing

    def journal_status(self) -> dict[str, Any]:
        """For /healthz: {"ok", "path", "error", "since", "unjournaled"} (thread-safe enough:
        plain attribute reads of values the publisher thread replaces whole)."""
        since = self._journal_since
        return {"ok": not self._journal_failing, "path": str(self._journal.path) if self._journal else None,
                "error": self._journal_error if self._journal_failing else None,
                "since": events.rfc3339(since) if since is not None and self._journal_failing else None,
                "unjournaled": self._journal_missed if self._journal_failing else 0}

    def snapshot(self) -> dict[str, Any]:
        """Current state for late joiners: {"seq", "run_id", "channels": {name: {...}}}.

        `seq` and `channels` are read together under one lock, so the state reflects exactly
        the events up to `seq`: a subscriber that drops updates with seq <= snapshot seq
        misses nothing and applies nothing twice.
        """
        with self._state_lock:
            return {"seq": self._seq, "run_id": self.run_id, "channels": copy.deepcopy(self._channels)}

    def __enter__(self) -> Publisher:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- helpers ------------------------------------------------------------------------------

    def _wake(self) -> None:
        # one pending wakeup is enough: skipping the syscall while the thread has not yet
        # drained keeps a burst of publish() calls from ping-ponging the GIL per event. The
        # thread clears the flag BEFORE draining the queue, so no item is ever left unseen.
        if self._wake_pending:
            return
        self._wake_pending = True
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, InterruptedError):
            pass  # the buffer is full of wakeups already: the thread will wake
        except OSError:
            pass  # closed after stop: nothing to wake

    def _close_wakeup(self) -> None:
        for sock in (self._wake_r, self._wake_w):
            try:
                sock.close()
            except OSError:
                pass

    def _call(self, callback: Callable[..., Any] | None, *args: Any) -> None:
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:
            log.exception("publisher callback failed callback=%s", getattr(callback, "__name__", callback))

    # -- the thread ---------------------------------------------------------------------------

    def _bind_sockets(self, ctx: zmq.Context[Any]) -> tuple[zmq.Socket[Any], zmq.Socket[Any]]:
        pub = ctx.socket(zmq.XPUB)
        rep = ctx.socket(zmq.ROUTER)
        try:
            if self._curve is not None:
                self._curve.secure(pub, rep)
            pub.setsockopt(zmq.SNDHWM, self.send_hwm)
            pub.setsockopt(zmq.LINGER, PUB_LINGER_MS)
            pub.setsockopt(zmq.XPUB_NODROP, 1)
            pub.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
            # a subscriber host that vanished (cable, power) is noticed in minutes, not hours
            pub.setsockopt(zmq.TCP_KEEPALIVE, 1)
            pub.setsockopt(zmq.TCP_KEEPALIVE_IDLE, 60)
            pub.setsockopt(zmq.TCP_KEEPALIVE_INTVL, 10)
            rep.setsockopt(zmq.LINGER, 0)
            rep.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
            for sock, endpoint, what in ((pub, self.bind, "events PUB"), (rep, self.snapshot_bind, "snapshot REP")):
                try:
                    sock.bind(endpoint)
                except zmq.ZMQError as exc:
                    raise UsageError(f"cannot bind {what} socket to {endpoint}: {exc.strerror}") from None
            self.endpoint = _last_endpoint(pub, self.bind)
            self.snapshot_endpoint = _last_endpoint(rep, self.snapshot_bind)
        except BaseException:
            pub.close(linger=0)
            rep.close(linger=0)
            raise
        return pub, rep

    def _run(self) -> None:
        ctx = self._given_context or zmq.Context()
        pub = rep = None
        try:
            try:
                if self._curve is not None:
                    self._curve.start(ctx)  # the authenticator must share the sockets' context
                pub, rep = self._bind_sockets(ctx)
            except BaseException as exc:
                self._bind_error = exc if isinstance(exc, UsageError) else RuntimeFailure(f"publisher start failed: {exc}")
                return
            finally:
                self._bound.set()
            log.info("publisher bound pub=%s snapshot=%s run_id=%s heartbeat_s=%g journal=%s", self.endpoint,
                     self.snapshot_endpoint, self.run_id, self.heartbeat_seconds,
                     self._journal.path if self._journal else "off")
            if self._journal is not None:
                try:
                    self._journal.open()
                except JournalError as exc:
                    self._journal_failed(exc, None)
            self._loop(pub, rep)
        except Exception as exc:
            # caught here, not left to threading.excepthook, so the sockets are closed below;
            # the daemon's supervisor sees `alive` go False and exits 1 naming `error`
            self.error = exc
            self._failed = True
            log.exception("thread died thread=publisher error=%r; events are no longer published", exc)
        finally:
            for sock in (pub, rep):
                if sock is not None:
                    sock.close()  # PUB keeps its linger so queued messages can still leave
            if self._curve is not None:
                self._curve.stop()
            if self._given_context is None:
                ctx.term()
            if self._journal is not None:
                self._journal.close()
            if self._bind_error is None:
                log.info("publisher stopped last_seq=%d", self._seq)

    def _loop(self, pub: zmq.Socket[Any], rep: zmq.Socket[Any]) -> None:
        poller = zmq.Poller()
        poller.register(pub, zmq.POLLIN)       # subscription messages
        poller.register(rep, zmq.POLLIN)       # snapshot requests
        poller.register(self._wake_r.fileno(), zmq.POLLIN)
        next_heartbeat = time.monotonic() + self.heartbeat_seconds
        stopping = False
        while not stopping:
            wait = 0.0 if not self._queue.empty() else max(0.0, next_heartbeat - time.monotonic())
            ready = dict(poller.poll(math.ceil(wait * 1000)))
            if pub in ready:
                self._drain_subscriptions(pub)
            if self._wake_r.fileno() in ready:
                self._wake_pending = False
                self._drain_wakeups()
            stopping = self._drain_queue(pub)
            if rep in ready:
                self._answer_snapshots(rep)
            now = time.monotonic()
            if now >= next_heartbeat and not stopping:
                self._send_heartbeats(pub)
                next_heartbeat += self.heartbeat_seconds
                if next_heartbeat <= now:  # fell behind (a long burst): no catch-up storm
                    next_heartbeat = now + self.heartbeat_seconds

    def _drain_wakeups(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _drain_subscriptions(self, pub: zmq.Socket[Any]) -> None:
        for _ in range(BATCH):
            try:
                msg = pub.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if msg[:1] in (b"\x01", b"\x00"):
                log.debug("subscriber %s topic=%r", "subscribed" if msg[:1] == b"\x01" else "unsubscribed",
                          msg[1:80].decode("utf-8", "replace"))

    def _drain_queue(self, pub: zmq.Socket[Any]) -> bool:
        """Publish up to BATCH queued events; True once the stop marker is reached."""
        for _ in range(BATCH):
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return False
            if item is _STOP:
                return True
            type_, channel, fields = item
            try:
                self._publish_now(pub, type_, channel, fields)
            except Exception:
                log.exception("event could not be published type=%s channel=%s", type_, channel)
        return False

    def _publish_now(self, pub: zmq.Socket[Any], type_: str, channel: str, fields: dict[str, Any]) -> None:
        seq = self._seq + 1
        event = events.make_event(type_, channel, seq, self.run_id, time.time(), **dict(fields))
        if self._journal is not None:
            self._append_journal(event)
        sent = self._send(pub, event)
        with self._state_lock:
            self._seq = seq
            self._apply(event)
        if log.isEnabledFor(logging.INFO):
            extras = " ".join(f"{k}={_kv(v)}" for k, v in event.items() if k not in events.ENVELOPE)
            log.info("event published type=%s channel=%s seq=%d sent=%s %s", type_, channel, seq,
                     "yes" if sent else "no", extras)

    def _append_journal(self, event: dict[str, Any]) -> None:
        assert self._journal is not None
        try:
            self._journal.append(event)
        except JournalError as exc:
            self._journal_failed(exc, event["seq"])
            self._call(self._on_journal_error, exc)
            return
        if self._journal_failing:
            log.info("journal writable again, journaling resumed path=%s seq=%d unjournaled=%d "
                     "(those events were published but cannot be replayed)", self._journal.path, event["seq"],
                     self._journal_missed)
            self._journal_failing = False
            self._journal_error = None
            self._journal_missed = 0
            self._call(self._on_journal_state, True)

    def _journal_failed(self, exc: JournalError, seq: int | None) -> None:
        """Record one failure; log and report only the first of an episode."""
        if seq is not None:
            self._journal_missed += 1
            # one range per episode (heartbeats in between are never journaled anyway); once the
            # list is full the last range widens, so the reply stays bounded but never understates
            if (self._journal_failing and self._unjournaled and self._journal_missed > 1) or \
                    len(self._unjournaled) >= MAX_UNJOURNALED_RANGES:
                self._unjournaled[-1][1] = seq
            else:
                self._unjournaled.append([seq, seq])
        if self._journal_failing:
            self._journal_error = str(exc)
            log.debug("journal append failed again error=%s seq=%s", exc, seq)
            return
        self._journal_failing = True
        self._journal_error = str(exc)
        self._journal_since = time.time()
        log.error("journal failing, events are still published but NOT journaled and cannot be replayed "
                  "until it recovers error=%s seq=%s; free space or fix the file system, journaling resumes by itself",
                  _kv(str(exc)), seq if seq is not None else "-")
        self._call(self._on_journal_state, False)

    def _send(self, pub: zmq.Socket[Any], event: dict[str, Any]) -> bool:
        """Send without ever blocking; count a drop when some subscriber's queue is full."""
        frames = events.encode(event)
        try:
            pub.send_multipart(frames, flags=zmq.NOBLOCK)
        except zmq.Again:
            self._call(self._on_drop, "hwm")
            count = self._drop_log.hit()
            if count is not None:
                log.warning("slow subscriber: its queue overflowed, it misses messages until it catches up "
                            "overflows=%d seq=%d", count, event["seq"])
            # lossy resend: every subscriber with room still gets it, the full ones miss it
            pub.setsockopt(zmq.XPUB_NODROP, 0)
            try:
                pub.send_multipart(frames, flags=zmq.NOBLOCK)
            except zmq.ZMQError as exc:
                log.error("event send failed seq=%d error=%s", event["seq"], exc)
                self._call(self._on_drop, "error")
                return False
            finally:
                pub.setsockopt(zmq.XPUB_NODROP, 1)
        except zmq.ZMQError as exc:
            log.error("event send failed seq=%d error=%s", event["seq"], exc)
            self._call(self._on_drop, "error")
            return False
        self._call(self._on_sent, event["channel"], event["type"])
        return True

    def _apply(self, event: dict[str, Any]) -> None:
        """Update the per-channel state the snapshot reports (caller holds _state_lock)."""
        type_ = event["type"]
        if type_ == "heartbeat":
            return
        state = self._channels.get(event["channel"])
        if state is None:
            log.info("publishing for a channel not configured at start channel=%s", event["channel"])
            state = self._channels[event["channel"]] = _new_channel_state()
        if type_ == "segment.start":
            state.update(state=event["label"], segment_id=event["segment_id"], since=event["time"])
        elif type_ == "stream.down":
            state.update(stream_up=False, state="unknown", segment_id=None, since=event["emitted"])
        elif type_ == "stream.up":
            state["stream_up"] = True
        # segment.end alone changes nothing: the next segment.start follows it

    def _answer_snapshots(self, rep: zmq.Socket[Any]) -> None:
        """Answer every pending request: a replay request (`detector.events.replay`) with events from
        the journal, anything else with the snapshot, whatever it said."""
        for _ in range(BATCH):
            try:
                request = rep.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            # ROUTER frames: [identity, (REQ envelope ..., b""), body...]; echo the envelope
            envelope = request[:1]
            for i in range(1, len(request)):
                if request[i] == b"":
                    envelope = request[: i + 1]
                    break
            try:
                body = self._replay_reply(request[len(envelope):])
            except Exception:  # a bug, not the client's fault: log it, answer, keep serving
                log.exception("replay request failed")
                body = replay.error_reply("internal error serving the replay; see the daemon's log")
            if body is None:
                snap = self.snapshot()
                body = {"schema": events.SCHEMA, **snap}
                what = f"snapshot seq={snap['seq']} channels={len(snap['channels'])}"
            else:
                what = f"replay type={body['type']} events={len(body.get('events', ()))}"
            reply = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
            try:
                rep.send_multipart([*envelope, reply], flags=zmq.NOBLOCK)
            except zmq.ZMQError as exc:
                log.debug("snapshot reply not sent error=%s", exc)
                continue
            log.debug("served %s", what)

    def _replay_reply(self, body: list[bytes]) -> dict[str, Any] | None:
        """The reply to a replay request, or None when `body` asks for the snapshot."""
        try:
            request = replay.parse_request(body)
        except replay.RequestError as exc:
            log.info("replay request refused error=%s", _kv(str(exc)))
            return replay.error_reply(str(exc))
        if request is None:
            return None
        if self._journal is None:
            return replay.error_reply("this publisher keeps no journal (events.journal is off): nothing to replay")
        found = journal_replay(self._journal.path, request.run_id, request.after_seq, request.limit)
        if not found.found and request.run_id == self.run_id:
            found.found, found.oldest = True, None  # our own run, nothing journaled yet: known, just empty
        last = found.events[-1] if found.events else None
        nxt = {"run_id": last["run_id"], "after_seq": last["seq"]} if last is not None and not found.complete else None
        log.info("replay served run_id=%s after_seq=%d found=%s events=%d complete=%s", _kv(request.run_id),
                 request.after_seq, "yes" if found.found else "no", len(found.events), "yes" if found.complete else "no")
        with self._state_lock:
            seq = self._seq
        return {"schema": events.SCHEMA, "type": "replay", "run_id": self.run_id, "seq": seq,
                "request": request.as_json(), "found": found.found, "events": found.events,
                "complete": found.complete, "next": nxt, "oldest": found.oldest,
                "unjournaled": [list(r) for r in self._unjournaled]}

    def _send_heartbeats(self, pub: zmq.Socket[Any]) -> None:
        live: Mapping[str, Mapping[str, Any]] = {}
        if self._heartbeat_source is not None:
            try:
                live = self._heartbeat_source() or {}
            except Exception:
                log.exception("heartbeat source failed; heartbeats carry the published state only")
        with self._state_lock:
            names = list(self._channels)
        for name in names:
            with self._state_lock:
                tracked = dict(self._channels[name])
            fields: dict[str, Any] = {"state": tracked["state"], "p_ad": tracked["p_ad"],
                                      "stream_up": tracked["stream_up"], "fps_in": 0.0, "fps_analyzed": 0.0}
            source = live.get(name) if isinstance(live, Mapping) else None
            if isinstance(source, Mapping):
                fields.update({k: source[k] for k in events.HEARTBEAT_FIELDS if k in source})
            seq = self._seq + 1
            try:
                event = events.make_event("heartbeat", name, seq, self.run_id, time.time(), **fields)
            except ValueError as exc:
                log.warning("heartbeat source gave invalid values, using published state channel=%s error=%s", name, exc)
                fields = {"state": tracked["state"], "p_ad": tracked["p_ad"], "stream_up": tracked["stream_up"],
                          "fps_in": 0.0, "fps_analyzed": 0.0}
                event = events.make_event("heartbeat", name, seq, self.run_id, time.time(), **fields)
            self._send(pub, event)
            with self._state_lock:
                self._seq = seq
                self._channels[name]["p_ad"] = event["p_ad"]
            log.debug("heartbeat sent channel=%s seq=%d state=%s p_ad=%s stream_up=%s", name, seq, event["state"],
                      event["p_ad"], event["stream_up"])


def _kv(value: Any) -> str:
    """A log value that keeps `key=value` lines parseable: bare when safe, else JSON-quoted."""
    if isinstance(value, str) and value and not any(c.isspace() or c in "\"=" for c in value):
        return value
    return json.dumps(value, ensure_ascii=False)


def _last_endpoint(sock: zmq.Socket[Any], fallback: str) -> str:
    try:
        value = sock.getsockopt(zmq.LAST_ENDPOINT)
    except zmq.ZMQError:
        return fallback
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return text or fallback
