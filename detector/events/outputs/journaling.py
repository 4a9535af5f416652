"""The publisher's journal keeping: append before send, and a failing disk as one episode.

`detector.events.journal` writes and reads the file; this module decides what a failure means
for the publisher and who hears about it:

- Every event except heartbeats is appended (flushed, fsync'ed) BEFORE it is sent, so no
  subscriber can have seen an event the journal lacks. If the append fails (disk full,
  read-only file system), the event is still published, because an ad-replacement subscriber
  missing a break is worse than a gap in the record; the journal reopens by itself on the next
  event.
- A failing journal is one episode, not one log line per event: an ERROR when it starts, an
  INFO with the number of unjournaled events when the journal accepts an event again. Each
  failed append is counted (`journal_error`), each change of state reported (`journal_state`),
  and `status()` feeds /healthz ("degraded").
- The seq ranges published while the journal failed are remembered (bounded), so a replay
  reply can say which events can never be replayed.

Runs on the publisher thread; `status()` and `unjournaled()` may be called from any thread.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from detector.events import schema as events
from detector.events.journal import DEFAULT_KEEP, DEFAULT_MAX_BYTES, Journal, JournalError
from detector.events.outputs.base import EventCounters
from detector.events.outputs.logfmt import kv

log = logging.getLogger(__name__)

MAX_UNJOURNALED_RANGES = 100   # seq ranges remembered per run for replay replies


class JournalKeeper:
    """Owns the `Journal` of one publisher and the state of its failure episodes."""

    def __init__(self, path: Path | str, counters: EventCounters, fsync: bool = True,
                 max_bytes: int | None = DEFAULT_MAX_BYTES, keep: int = DEFAULT_KEEP) -> None:
        self.journal = Journal(Path(path), fsync=fsync, max_bytes=max_bytes, keep=keep)
        self.path = self.journal.path
        self._counters = counters
        self._lock = threading.Lock()     # guards the ranges, read by the replay worker
        self.failing = False
        self._error: str | None = None
        self._since: float | None = None
        self._missed = 0
        self._unjournaled: list[list[int]] = []   # [first_seq, last_seq] of this run

    def open(self) -> None:
        """Open now, so a problem shows at start; a failure starts an episode (not an exception)."""
        try:
            self.journal.open()
        except JournalError as exc:
            self._failed(exc, None)

    def append(self, event: dict[str, Any]) -> bool:
        """Append one event; False (counted, logged once per episode) when the journal failed."""
        try:
            self.journal.append(event)
        except JournalError as exc:
            self._failed(exc, event["seq"])
            self._counters.journal_error()
            return False
        if self.failing:
            log.info("journal writable again, journaling resumed path=%s seq=%d unjournaled=%d "
                     "(those events were published but cannot be replayed)", self.path, event["seq"], self._missed)
            self.failing = False
            self._error = None
            self._missed = 0
            self._counters.journal_state(True)
        return True

    def close(self) -> None:
        self.journal.close()

    def _failed(self, exc: JournalError, seq: int | None) -> None:
        """Record one failure; log and report only the first of an episode."""
        if seq is not None:
            self._missed += 1
            with self._lock:
                # one range per episode (heartbeats in between are never journaled anyway); once the
                # list is full the last range widens, so the reply stays bounded but never understates
                if (self.failing and self._unjournaled and self._missed > 1) or \
                        len(self._unjournaled) >= MAX_UNJOURNALED_RANGES:
                    self._unjournaled[-1][1] = seq
                else:
                    self._unjournaled.append([seq, seq])
        if self.failing:
            self._error = str(exc)
            log.debug("journal append failed again error=%s seq=%s", exc, seq)
            return
        self.failing = True
        self._error = str(exc)
        self._since = time.time()
        log.error("journal failing, events are still published but NOT journaled and cannot be replayed "
                  "until it recovers error=%s seq=%s; free space or fix the file system, journaling resumes by itself",
                  kv(str(exc)), seq if seq is not None else "-")
        self._counters.journal_state(False)

    def unjournaled(self) -> list[list[int]]:
        """A copy of this run's seq ranges that were published but never journaled."""
        with self._lock:
            return [list(r) for r in self._unjournaled]

    def status(self) -> dict[str, Any]:
        """{"ok", "path", "error", "since", "unjournaled"} (plain reads of values replaced whole)."""
        failing, since = self.failing, self._since
        return {"ok": not failing, "path": str(self.path),
                "error": self._error if failing else None,
                "since": events.rfc3339(since) if since is not None and failing else None,
                "unjournaled": self._missed if failing else 0}


def no_journal_status() -> dict[str, Any]:
    """`status()` of a publisher that keeps no journal (events.journal off)."""
    return {"ok": True, "path": None, "error": None, "since": None, "unjournaled": 0}
