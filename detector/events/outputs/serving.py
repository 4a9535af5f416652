"""The snapshot endpoint: late-joiner snapshots and REPLAY requests, answered on a ROUTER.

Why a ROUTER answering like a REP (a REQ client cannot tell the difference): a REP socket has
a strict recv/send state machine that a garbled or abandoned request can wedge; a ROUTER
answers anything, including a malformed request, and a reply to a client that went away is
simply dropped.

A snapshot is a copy of the channel state: answered at once on the socket-owning thread. A
REPLAY (`detector.events.replay`) reads journal files, which can take seconds: its reply is
built by `ReplayWorker` on a thread of its own and handed back to the socket's owner.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from detector.events import replay
from detector.events import schema as events
from detector.events.journal import replay as journal_replay
from detector.events.outputs.logfmt import kv

log = logging.getLogger(__name__)

MAX_PAUSE_SECONDS = 0.05   # longest a replay steps aside at once for the publisher thread


def split_envelope(request: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """ROUTER frames -> (envelope to echo, body): [identity, (REQ envelope ..., b""), body...]."""
    envelope = request[:1]
    for i in range(1, len(request)):
        if request[i] == b"":
            envelope = request[: i + 1]
            break
    return envelope, request[len(envelope):]


def snapshot_body(run_id: str, seq: int, channels: dict[str, Any]) -> dict[str, Any]:
    return {"schema": events.SCHEMA, "seq": seq, "run_id": run_id, "channels": channels}


def replay_body(request: replay.ReplayRequest, journal_path: Path | None, run_id: str, seq: int,
                unjournaled: list[list[int]], pause: Callable[[], None] | None = None) -> dict[str, Any]:
    """The reply to one replay request (reads the journal files: may take a while)."""
    if journal_path is None:
        return replay.error_reply("this publisher keeps no journal (events.journal is off): nothing to replay")
    found = journal_replay(journal_path, request.run_id, request.after_seq, request.limit, pause)
    if not found.found and request.run_id == run_id:
        found.found, found.oldest = True, None  # our own run, nothing journaled yet: known, just empty
    last = found.events[-1] if found.events else None
    nxt = {"run_id": last["run_id"], "after_seq": last["seq"]} if last is not None and not found.complete else None
    log.info("replay served run_id=%s after_seq=%d found=%s events=%d complete=%s", kv(request.run_id),
             request.after_seq, "yes" if found.found else "no", len(found.events), "yes" if found.complete else "no")
    return {"schema": events.SCHEMA, "type": "replay", "run_id": run_id, "seq": seq,
            "request": request.as_json(), "found": found.found, "events": found.events,
            "complete": found.complete, "next": nxt, "oldest": found.oldest, "unjournaled": unjournaled}


def parse(body: list[bytes]) -> replay.ReplayRequest | dict[str, Any] | None:
    """A replay request, an error reply for a malformed one, or None for a snapshot request."""
    try:
        return replay.parse_request(body)
    except replay.RequestError as exc:
        log.info("replay request refused error=%s", kv(str(exc)))
        return replay.error_reply(str(exc))


def encode_reply(body: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON; text that is not UTF-8 (a lone surrogate from a damaged journal line)
    falls back to \\u escapes, which are still valid JSON. Raises ValueError for NaN/Infinity."""
    try:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(body, ensure_ascii=True, separators=(",", ":"), allow_nan=False).encode("ascii")


class ReplayWorker:
    """Builds replay replies on a thread of its own, off the publisher's hot path.

    A replay reads journal files (up to `journal_keep` x `journal_max_bytes`, parsing every
    line of the run asked for); done on the socket-owning thread it held every live event
    back for as long. ZeroMQ sockets are single-thread, so the worker never touches one:
    the owner `submit`s the parsed request with its envelope, the worker builds the reply
    bytes, queues them and calls `wake`, and the owner sends what `take` hands back.

    At most `max_waiting` requests wait; beyond that `submit` refuses (the owner answers
    "busy" at once), so a flood of replay requests cannot pile up without bound.

    A thread of its own is not enough: parsing is pure Python, and under the GIL a busy
    parser makes every blocking call of the publisher thread (poll, write, send) wait up to
    the switch interval (5 ms) to get the interpreter back, many times per event. So the
    parser steps aside (`owner_idle`, checked every few hundred lines) while the owner has
    work, for at most MAX_PAUSE_SECONDS at a time, so a replay still finishes under load.
    """

    def __init__(self, journal_path: Path, run_id: str, seq: Callable[[], int],
                 unjournaled: Callable[[], list[list[int]]], wake: Callable[[], None],
                 lost: Callable[[str, str, BaseException], None], owner_idle: Callable[[], bool] = lambda: True,
                 max_waiting: int = 16) -> None:
        self.journal_path = journal_path
        self.run_id = run_id
        self._seq = seq
        self._unjournaled = unjournaled
        self._wake = wake
        self._lost = lost
        self._owner_idle = owner_idle
        self.max_waiting = max_waiting
        self._requests: queue.Queue[tuple[list[bytes], replay.ReplayRequest] | None] = queue.Queue()
        self._done: deque[tuple[list[bytes], bytes, str]] = deque()
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="publisher-replay", daemon=True)
        self.thread.start()

    def submit(self, envelope: list[bytes], request: replay.ReplayRequest) -> bool:
        """Queue a request (owner thread); False when `max_waiting` already wait."""
        if self._requests.qsize() >= self.max_waiting:
            return False
        self._requests.put((envelope, request))
        return True

    def take(self) -> list[tuple[list[bytes], bytes, str]]:
        """The finished replies (envelope, reply bytes, what), for the owner to send."""
        out = []
        while self._done:
            out.append(self._done.popleft())
        return out

    def waiting(self) -> int:
        """Replies finished but not yet taken: work for the owner thread."""
        return len(self._done)

    def stop(self, timeout: float = 0.5) -> None:
        """Ask the thread to end; a replay in progress is not waited for beyond `timeout` (daemon thread)."""
        self._requests.put(None)
        if self.thread is not None:
            self.thread.join(timeout)

    def _run(self) -> None:
        try:
            while True:
                item = self._requests.get()
                if item is None:
                    return
                envelope, request = item
                self._done.append((envelope, *self._serve(request)))
                self._wake()
        except Exception as exc:  # a bug in the loop itself (each request is guarded): supervised
            self.error = exc
            log.exception("thread died thread=publisher-replay error=%r; replay requests are no longer answered", exc)

    def _pause(self) -> None:
        """While the owner thread works, sleep (which releases the GIL) in short steps."""
        if self._owner_idle():
            return
        deadline = time.monotonic() + MAX_PAUSE_SECONDS
        while not self._owner_idle() and time.monotonic() < deadline:
            time.sleep(0.001)

    def _serve(self, request: replay.ReplayRequest) -> tuple[bytes, str]:
        try:
            body = replay_body(request, self.journal_path, self.run_id, self._seq(), self._unjournaled(), self._pause)
            return encode_reply(body), f"replay events={len(body.get('events', ()))}"
        except Exception as exc:  # a bug or a journal we cannot read: this reply is lost, not the thread
            self._lost("replay reply", f"run_id={kv(request.run_id)} after_seq={request.after_seq}", exc)
            return encode_reply(replay.error_reply("internal error serving the replay; see the daemon's log")), "error"
