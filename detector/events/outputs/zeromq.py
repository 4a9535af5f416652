"""The ZeroMQ output: the publisher thread, its PUB socket, heartbeats and the snapshot endpoint.

CONTRACT.md "Events" and DESIGN.md (publisher thread, ZeroMQ guide lessons). Why it is
built this way:

- ZeroMQ sockets are not thread-safe, so ONE thread owns every socket. Other threads call
  `publish()`, which only validates the fields and queues them; a wakeup (`wakeup.Wakeup`)
  makes the thread take them within a poll cycle (well under the ~50 ms budget) without the
  thread spinning on a timer.
- The thread, not the caller, assigns `seq` and `emitted`: one writer makes `seq` strictly
  increasing for the whole process without a lock around the send.
- Every event except heartbeats is journaled before it is sent (`journaling.JournalKeeper`).
- The PUB side never blocks and counts what a slow subscriber misses (`pubsocket`: an XPUB
  with XPUB_NODROP and a lossy resend). Its subscription messages are read and discarded so
  they cannot pile up over months of reconnects.
- Heartbeats (`heartbeats`, one per channel every `heartbeat_seconds`) carry `seq` like every
  event but are not journaled: they are liveness, not history.
- The snapshot endpoint (`serving`) answers snapshots at once and REPLAY requests through a
  worker thread (`serving.ReplayWorker`): a replay reads journal files, and live events must
  not wait behind it.
- `publish()` never blocks: beyond `queue_size` waiting events it drops the new one (counted
  "queue_full"), because a pipeline that waits for its publisher misses frames on every channel.
- One bad message costs one message: whatever fails while building or sending an event, a
  heartbeat or a reply is counted ("error"), logged (rate-limited, with the traceback) and
  the thread goes on. `stuck()` notices a thread that stopped making progress with work
  waiting (a hung fsync), which `alive` cannot; `health()` reports it as not ok.
- If the thread dies (a bug), it closes its sockets, logs `thread died thread=publisher`
  with the traceback and keeps the exception in `error`; `alive` goes False and the daemon
  exits 1. `stop()` then journals whatever was still queued (without sending it), so the
  record keeps every event decided before the exit and a subscriber can replay them.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import zmq

from detector.errors import RuntimeFailure, UsageError
from detector.events import schema as events
from detector.events.curve import CurveServer
from detector.events.journal import DEFAULT_KEEP, DEFAULT_MAX_BYTES
from detector.events.outputs import pubsocket, serving
from detector.events.outputs.base import EventCounters, Output, OutputHealth, SafeCounters
from detector.events.outputs.channel_state import ChannelStates
from detector.events.outputs.heartbeats import HeartbeatSource, live_view, make_heartbeat
from detector.events.outputs.journaling import JournalKeeper, no_journal_status
from detector.events.outputs.logfmt import kv
from detector.events.outputs.wakeup import Wakeup
from detector.util.ratelog import RateLimitedLog
from detector.util.threads import WatchedThread

log = logging.getLogger(__name__)

BATCH = 1000                 # queue items per loop turn, so snapshots and heartbeats never starve
LOG_EVERY_SECONDS = 10.0     # rate limit for repeated warnings (drops, journal errors)
START_TIMEOUT_SECONDS = 10.0
MAX_WAIT_SECONDS = 1.0       # longest poll: a lost wakeup (a bug) costs at most this, never a heartbeat period
DEFAULT_QUEUE_SIZE = 10_000  # events waiting for the thread; beyond it publish() drops ("queue_full")
DEFAULT_STUCK_SECONDS = 10.0  # health(): no progress this long with work waiting is "stuck"


class Publisher(Output):
    """Owns the journal and every ZeroMQ socket of the daemon; see the module docstring.

    `counters` (an `EventCounters`) hears, on the publisher thread: event_sent(channel, type)
    for each event sent (heartbeats included); event_dropped(reason) with "hwm" (a subscriber's
    queue overflowed: it misses this message and, uncounted, the following ones until it
    catches up), "stopped" (publish() after stop()), "queue_full" (queue_size events already
    wait for the thread: the new one is dropped, the caller never blocks) or "error" (a bug or
    a send failure lost this one message: logged rate-limited with its traceback);
    journal_error() per failed append (the event was still sent) and journal_state(ok) when
    the journal starts failing or accepts events again. A failing counter is logged and
    changes nothing else.

    `heartbeat_source()`: channel -> {state, p_ad, stream_up, fps_in, fps_analyzed}, called on
    the publisher thread once per heartbeat round; missing keys or channels fall back to what
    the published events say.
    """

    name = "zeromq"

    def __init__(self, bind: str, snapshot_bind: str, heartbeat_seconds: float, journal_path: Path | str | None,
                 run_id: str, channels: list[str], *, counters: EventCounters | None = None,
                 heartbeat_source: HeartbeatSource | None = None, curve: CurveServer | None = None,
                 send_hwm: int = 1000, journal_fsync: bool = True, journal_max_bytes: int | None = DEFAULT_MAX_BYTES,
                 journal_keep: int = DEFAULT_KEEP, queue_size: int = DEFAULT_QUEUE_SIZE,
                 stuck_seconds: float = DEFAULT_STUCK_SECONDS, context: zmq.Context[Any] | None = None) -> None:
        if not heartbeat_seconds > 0:
            raise ValueError(f"heartbeat_seconds must be > 0, got {heartbeat_seconds!r}")
        if send_hwm < 1:
            raise ValueError(f"send_hwm must be >= 1, got {send_hwm!r}")
        if not isinstance(run_id, str) or not run_id:
            raise ValueError("run_id must be a non-empty string")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size!r}")
        if not stuck_seconds > 0:
            raise ValueError(f"stuck_seconds must be > 0, got {stuck_seconds!r}")
        for name in channels:  # a bad name would fail every heartbeat round, far from its cause
            events.make_event("stream.up", name, 1, run_id, 0.0)
        self.bind = bind
        self.snapshot_bind = snapshot_bind
        self.heartbeat_seconds = float(heartbeat_seconds)
        self.run_id = run_id
        self.send_hwm = int(send_hwm)
        self.curve = curve  # CURVE + client authentication for both sockets (detector/events/curve.py)
        self._counters = SafeCounters(counters)
        self._journal = (JournalKeeper(journal_path, self._counters, fsync=journal_fsync, max_bytes=journal_max_bytes,
                                       keep=journal_keep) if journal_path is not None else None)
        self._heartbeat_source = heartbeat_source
        self._given_context = context

        # (type, channel, fields) for the thread; bounded by queue_size under _queue_lock (the only
        # appender), popped by the thread alone: deque append/popleft/len are atomic
        self._queue: deque[tuple[str, str, dict[str, Any]]] = deque()
        self.queue_size = int(queue_size)
        self.stuck_seconds = float(stuck_seconds)
        self._queue_lock = threading.Lock()      # orders publish() against stop() and the size check
        self._progress = time.monotonic()        # last time the thread turned or finished an event
        self._states = ChannelStates(channels)
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._bound = threading.Event()
        self._bind_error: BaseException | None = None
        self._failed = False
        self.error: BaseException | None = None    # what killed the thread (for the daemon's supervisor)
        self.endpoint: str | None = None           # actual endpoints once bound (resolves "*" ports)
        self.snapshot_endpoint: str | None = None
        self._wakeup = Wakeup()
        self._next_heartbeat = 0.0                 # monotonic time of the next heartbeat round (thread only)
        self._polling = False                      # the thread waits in poll (the replay worker's cue)
        self._replayer = (serving.ReplayWorker(self._journal.path, run_id, lambda: self._states.seq,
                                               self._journal.unjournaled, self._wakeup.wake, self._lost,
                                               owner_idle=lambda: self._polling and not self._queue)
                          if self._journal is not None else None)
        self._drop_log = RateLimitedLog(LOG_EVERY_SECONDS)
        self._error_log = RateLimitedLog(LOG_EVERY_SECONDS)
        self._full_log = RateLimitedLog(LOG_EVERY_SECONDS)

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
            self._wakeup.close()
            raise self._bind_error

    def publish(self, type: str, channel: str, **fields: Any) -> None:
        """Queue an event; never blocks on the network. Thread-safe.

        The fields are validated here (ValueError on a contract violation), so a bug shows
        up in the caller's traceback rather than as a log line from another thread.
        """
        events.make_event(type, channel, 1, self.run_id, time.time(), **dict(fields))
        with self._queue_lock:
            if self._stopping:
                reason = "stopped"
            elif len(self._queue) >= self.queue_size:
                reason = "queue_full"
            else:
                self._queue.append((type, channel, fields))
                reason = None
        if reason is None:
            self._wakeup.wake()
            return
        self._counters.event_dropped(reason)
        if reason == "stopped":
            log.warning("event after stop dropped type=%s channel=%s", type, channel)
            return
        count = self._full_log.hit()
        if count is not None:
            log.warning("publisher queue full, event dropped type=%s channel=%s queued=%d dropped_since_last_log=%d; "
                        "the publisher thread is not keeping up (see /healthz)", type, channel, len(self._queue), count)

    def stop(self, timeout: float = 3.0) -> None:
        """Send everything already queued, close the sockets (linger <= 0.5 s), join the thread."""
        with self._queue_lock:
            if self._stopping:
                return
            self._stopping = True  # from here on nothing is queued: the thread drains what there is and ends
        thread = self._thread
        if thread is None or not thread.is_alive():
            self._wakeup.close()
            if self._journal is not None:
                if self._failed:
                    self._salvage()
                self._journal.close()
            return
        self._wakeup.wake(force=True)  # whatever the flag says: stop must not wait for a heartbeat tick
        thread.join(timeout)
        if thread.is_alive():
            log.warning("publisher thread still draining after stop timeout_s=%.1f queued=%d", timeout, len(self._queue))
        else:
            self._wakeup.close()
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
        while self._queue:
            type_, channel, fields = self._queue.popleft()
            event = events.make_event(type_, channel, self._states.seq + 1, self.run_id, time.time(), **dict(fields))
            if self._journal.append(event):
                saved += 1
            self._states.record(event)
        if saved:
            log.warning("publisher thread dead: journaled queued events without publishing them events=%d last_seq=%d",
                        saved, self._states.seq)

    @property
    def thread(self) -> threading.Thread | None:
        """The publisher thread (for the daemon's supervision)."""
        return self._thread

    @property
    def last_seq(self) -> int:
        """`seq` of the last event sent (0 before the first)."""
        return self._states.seq

    @property
    def alive(self) -> bool:
        """True while the thread runs normally (for the daemon's supervision and /healthz)."""
        return self._thread is not None and self._thread.is_alive() and not self._failed

    @property
    def journal_ok(self) -> bool:
        """False from a failed journal append until an append succeeds again (or no journal)."""
        return self._journal is None or not self._journal.failing

    def journal_status(self) -> dict[str, Any]:
        """For /healthz: {"ok", "path", "error", "since", "unjournaled"}."""
        return self._journal.status() if self._journal is not None else no_journal_status()

    def snapshot(self) -> dict[str, Any]:
        """Current state for late joiners: {"seq", "run_id", "channels": {name: {...}}}."""
        seq, channels = self._states.snapshot()
        return {"seq": seq, "run_id": self.run_id, "channels": channels}

    def stuck(self, now: float, limit: float) -> str | None:
        """Why the thread counts as stuck at monotonic time `now`, or None: it has made no progress
        (no loop turn, no event finished) for `limit` seconds while events are waiting.

        A hung fsync or any other blocking call on the thread shows here, while `alive` still
        says True; an idle thread (nothing queued) is never stuck. A dead thread is reported
        by `alive` and `error`, not here.
        """
        thread = self._thread
        if thread is None or not thread.is_alive() or self._failed:
            return None
        queued = len(self._queue) + (self._replayer.waiting() if self._replayer is not None else 0)
        idle = now - self._progress
        if queued and idle >= limit:
            return f"publisher thread has made no progress for {idle:.1f} s with {queued} event(s) queued"
        return None

    def watched_threads(self) -> list[WatchedThread]:
        """The publisher thread, the replay worker (with a journal), and with CURVE the authenticator
        and the socket monitor."""
        out = [WatchedThread("publisher", lambda: self._thread, alive=lambda: self.alive, error=lambda: self.error)]
        replayer = self._replayer
        if replayer is not None:
            out.append(WatchedThread("publisher-replay", lambda: replayer.thread,
                                     alive=lambda: replayer.thread is not None and replayer.thread.is_alive()
                                     and replayer.error is None, error=lambda: replayer.error))
        curve = self.curve
        if curve is not None:
            out.append(WatchedThread("curve-auth", lambda: curve.auth_thread))
            out.append(WatchedThread("curve-monitor", lambda: curve.monitor_thread, error=lambda: curve.monitor_error))
        return out

    def health(self) -> OutputHealth:
        """A failing journal is "degraded": events are still published, a restart frees no disk.
        A stuck thread (`stuck` with `stuck_seconds`) is not ok: nothing leaves, a restart helps."""
        journal = self.journal_status()
        degraded = [] if journal["ok"] else [f"journal {journal['path']}: {journal['error']} (events are published but not "
                                             "journaled, so they cannot be replayed)"]
        stuck = self.stuck(time.monotonic(), self.stuck_seconds)
        if stuck is not None:
            degraded.append(f"publisher stuck: {stuck}")
        return OutputHealth(ok=stuck is None, degraded=degraded,
                            details={"journal": journal, "publisher": {"queued": len(self._queue), "stuck": stuck}})

    def __enter__(self) -> Publisher:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        ctx = self._given_context or zmq.Context()
        pub = rep = None
        try:
            try:
                if self.curve is not None:
                    self.curve.start(ctx)  # the authenticator must share the sockets' context
                pub, rep, self.endpoint, self.snapshot_endpoint = pubsocket.bind_sockets(
                    ctx, self.bind, self.snapshot_bind, self.send_hwm, self.curve)
                if self._replayer is not None:
                    self._replayer.start()  # before start() returns, so its thread can be watched at once
            except BaseException as exc:
                self._bind_error = exc if isinstance(exc, UsageError) else RuntimeFailure(f"publisher start failed: {exc}")
                return
            finally:
                self._bound.set()
            log.info("publisher bound pub=%s snapshot=%s run_id=%s heartbeat_s=%g journal=%s", self.endpoint,
                     self.snapshot_endpoint, self.run_id, self.heartbeat_seconds,
                     self._journal.path if self._journal else "off")
            if self._journal is not None:
                self._journal.open()
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
            if self.curve is not None:
                self.curve.stop()
            if self._replayer is not None:
                self._replayer.stop()
            if self._given_context is None:
                ctx.term()
            if self._journal is not None:
                self._journal.close()
            if self._bind_error is None:
                log.info("publisher stopped last_seq=%d", self._states.seq)

    def _loop(self, pub: zmq.Socket[Any], rep: zmq.Socket[Any]) -> None:
        poller = zmq.Poller()
        poller.register(pub, zmq.POLLIN)       # subscription messages
        poller.register(rep, zmq.POLLIN)       # snapshot requests
        poller.register(self._wakeup.fileno(), zmq.POLLIN)
        self._next_heartbeat = time.monotonic() + self.heartbeat_seconds
        while self._turn(poller, pub, rep):
            pass

    def _turn(self, poller: zmq.Poller, pub: zmq.Socket[Any], rep: zmq.Socket[Any]) -> bool:
        """One turn of the thread: wait for work, do it; False once the stop marker was reached.

        Each message is guarded where it is handled (one bad message costs one message); an
        exception escaping a turn is a bug in the loop itself and ends the thread (supervised).
        """
        replies = self._replayer is not None and self._replayer.waiting()
        wait = 0.0 if self._queue or self._stopping or replies else \
            min(MAX_WAIT_SECONDS, max(0.0, self._next_heartbeat - time.monotonic()))
        self._progress = time.monotonic()  # waiting in poll is not being stuck
        self._polling = True
        ready = dict(poller.poll(math.ceil(wait * 1000)))
        self._polling = False
        self._progress = time.monotonic()
        if pub in ready:
            pubsocket.drain_subscriptions(pub, BATCH)
        if self._wakeup.fileno() in ready:
            self._wakeup.taken()
        stopping = self._drain_queue(pub)
        if rep in ready:
            self._answer_requests(rep)
        if self._replayer is not None:
            self._send_replies(rep)
        now = time.monotonic()
        if now >= self._next_heartbeat and not stopping:
            try:
                self._send_heartbeats(pub)
            except Exception as exc:  # a bug in the round: this round is lost, the next one is tried
                self._lost("heartbeat round", f"channels={len(self._states.names())}", exc)
            self._next_heartbeat += self.heartbeat_seconds
            if self._next_heartbeat <= now:  # fell behind (a long burst): no catch-up storm
                self._next_heartbeat = now + self.heartbeat_seconds
        return not stopping

    def _drain_queue(self, pub: zmq.Socket[Any]) -> bool:
        """Publish up to BATCH queued events, or all of them once stopping; True when stopped."""
        stopping = self._stopping  # read first: once it is set nothing more is queued
        done = 0
        while stopping or done < BATCH:
            try:
                type_, channel, fields = self._queue.popleft()
            except IndexError:
                return stopping
            try:
                self._publish_now(pub, type_, channel, fields)
            except Exception as exc:  # a bug: this event is lost, the next ones are not
                self._lost("event", f"type={type_} channel={channel}", exc)
            done += 1
            self._progress = time.monotonic()
        return False

    def _publish_now(self, pub: zmq.Socket[Any], type_: str, channel: str, fields: dict[str, Any]) -> None:
        event = events.make_event(type_, channel, self._states.seq + 1, self.run_id, time.time(), **dict(fields))
        if self._journal is not None:
            self._journal.append(event)
        # its seq is spent from here on, whatever happens to the send: never two events with one seq
        self._states.record(event)
        sent = self._send(pub, event)
        if log.isEnabledFor(logging.INFO):
            extras = " ".join(f"{k}={kv(v)}" for k, v in event.items() if k not in events.ENVELOPE)
            log.info("event published type=%s channel=%s seq=%d sent=%s %s", type_, channel, event["seq"],
                     "yes" if sent else "no", extras)

    def _send(self, pub: zmq.Socket[Any], event: dict[str, Any]) -> bool:
        """Send without ever blocking or raising; count a drop when some subscriber's queue is full."""
        def overflowed() -> None:
            self._counters.event_dropped("hwm")
            count = self._drop_log.hit()
            if count is not None:
                log.warning("slow subscriber: its queue overflowed, it misses messages until it catches up "
                            "overflows=%d seq=%d", count, event["seq"])

        try:
            pubsocket.send(pub, events.encode(event), overflowed)
        except Exception as exc:  # a send error, or a bug: this message is lost, the next ones are not
            self._lost(event["type"], f"seq={event['seq']} channel={event['channel']}", exc)
            return False
        self._counters.event_sent(event["channel"], event["type"])
        return True

    def _lost(self, what: str, details: str, exc: BaseException) -> None:
        """One message (event, heartbeat or reply) could not be delivered: count it, log it rate-limited."""
        self._counters.event_dropped("error")
        count = self._error_log.hit()
        if count is not None:
            log.error("%s dropped %s error=%s dropped_since_last_log=%d", what, details,
                      kv(f"{type(exc).__name__}: {exc}"), count, exc_info=exc)

    def _answer_requests(self, rep: zmq.Socket[Any]) -> None:
        """Answer every pending request: a replay request with events from the journal,
        anything else with the snapshot, whatever it said."""
        for _ in range(BATCH):
            try:
                request = rep.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            envelope, body = serving.split_envelope(request)
            try:
                answer = self._reply_to(envelope, body)
            except Exception as exc:  # a bug, not the client's fault: log it, answer, keep serving
                self._lost("reply", "to a snapshot endpoint request", exc)
                answer = serving.encode_reply(serving.replay.error_reply(
                    "internal error serving the request; see the daemon's log")), "error"
            if answer is None:
                continue  # a replay: the worker builds the reply, _send_replies sends it
            self._send_reply(rep, envelope, *answer)

    def _send_replies(self, rep: zmq.Socket[Any]) -> None:
        assert self._replayer is not None
        for envelope, reply, what in self._replayer.take():
            self._send_reply(rep, envelope, reply, what)

    def _send_reply(self, rep: zmq.Socket[Any], envelope: list[bytes], reply: bytes, what: str) -> None:
        try:
            rep.send_multipart([*envelope, reply], flags=zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # the client went away, or its pipe is full: it asks again
            log.debug("snapshot reply not sent error=%s", exc)
            return
        log.debug("served %s", what)

    def _reply_to(self, envelope: list[bytes], body: list[bytes]) -> tuple[bytes, str] | None:
        """The reply to a snapshot-endpoint request, or None when a replay went to the worker."""
        parsed = serving.parse(body)
        if parsed is None:
            seq, channels = self._states.snapshot()
            return (serving.encode_reply(serving.snapshot_body(self.run_id, seq, channels)),
                    f"snapshot seq={seq} channels={len(channels)}")
        if isinstance(parsed, dict):
            reply = parsed  # a malformed replay request: the error, at once
        elif self._replayer is None:
            reply = serving.replay_body(parsed, None, self.run_id, self._states.seq, [])
        elif self._replayer.submit(envelope, parsed):
            return None
        else:
            log.info("replay request refused: %d already waiting", self._replayer.max_waiting)
            reply = serving.replay.error_reply(f"busy: {self._replayer.max_waiting} replay requests are already "
                                               "waiting; ask again in a moment")
        return serving.encode_reply(reply), f"replay type={reply['type']}"

    def _send_heartbeats(self, pub: zmq.Socket[Any]) -> None:
        live: Mapping[str, Mapping[str, Any]] = live_view(self._heartbeat_source)
        for name in self._states.names():
            try:
                event = make_heartbeat(name, self._states.seq + 1, self.run_id, time.time(), self._states.tracked(name),
                                       live)
            except Exception as exc:  # a bug: no heartbeat for this channel this round, the others go
                self._lost("heartbeat", f"channel={name}", exc)
                continue
            self._states.record(event)
            self._send(pub, event)
            log.debug("heartbeat sent channel=%s seq=%d state=%s p_ad=%s stream_up=%s", name, event["seq"], event["state"],
                      event["p_ad"], event["stream_up"])

