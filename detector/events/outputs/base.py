"""The one interface every output of the daemon implements.

An output takes the events the pipeline decides (`segment.start`, `stream.down`, ...) and
delivers them somewhere: the ZeroMQ publisher with its journal today; a SCTE-35 inserter, a
file or a webhook tomorrow. The orchestrator builds the outputs named in the config
(`detector.events.outputs.build_outputs`), starts them before the pipeline and stops them
after it, and hands every event to each of them. Adding an output is one new module in this
folder and one line in the registry.

Why so small: the pipeline must never wait for an output (a slow subscriber, a full disk),
so `publish` only queues; everything slow happens on the output's own thread, which the
daemon's thread watchdog supervises through `watched_threads`.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Protocol

from detector.util.threads import WatchedThread

log = logging.getLogger(__name__)


#: Every reason an output passes to `EventCounters.event_dropped` (metrics create these series up front).
DROP_REASONS = ("hwm", "queue_full", "stopped", "error")
#: Every reason passed to `EventCounters.auth_failure`.
AUTH_FAILURE_REASONS = ("unknown_key", "handshake")


class EventCounters(Protocol):
    """What outputs report to the metrics (implemented by `detector.live.metrics.Metrics`).

    A protocol rather than callbacks: one object to pass, and each method names what it counts.
    Called on the outputs' own threads, so implementations must be thread-safe and quick.

    - event_sent(channel, type): one event (heartbeats included) left.
    - event_dropped(reason): one event did not leave (or not to everyone): "hwm" (a subscriber's
      queue overflowed), "queue_full" (the output's queue was full: publish() dropped it),
      "stopped" (published after stop()), "error" (a bug or a send failure lost this one).
    - journal_error(): one append to the journal failed (the event was still sent).
    - journal_state(ok): the journal started failing (False) or accepts events again (True).
    - auth_failure(reason): a client was refused by CURVE ("unknown_key" or "handshake").
    """

    def event_sent(self, channel: str, type: str) -> None: ...
    def event_dropped(self, reason: str) -> None: ...
    def journal_error(self) -> None: ...
    def journal_state(self, ok: bool) -> None: ...
    def auth_failure(self, reason: str) -> None: ...


class NoCounters:
    """Counters that count nothing (tests, tools)."""

    def event_sent(self, channel: str, type: str) -> None: ...
    def event_dropped(self, reason: str) -> None: ...
    def journal_error(self) -> None: ...
    def journal_state(self, ok: bool) -> None: ...
    def auth_failure(self, reason: str) -> None: ...


class SafeCounters:
    """Wraps the counters an output was given so that a failing counter costs one count, not a thread.

    Outputs call their counters on their own threads, in the middle of delivering an event; an
    exception there (a bug in a metric, a label refused) must neither stop the thread nor lose
    the event. It is logged with its traceback and otherwise ignored.
    """

    def __init__(self, counters: EventCounters | None) -> None:
        self._counters: EventCounters = counters if counters is not None else NoCounters()

    def _call(self, name: str, *args: Any) -> None:
        try:
            getattr(self._counters, name)(*args)
        except Exception:
            log.exception("event counter failed counter=%s", name)

    def event_sent(self, channel: str, type: str) -> None:
        self._call("event_sent", channel, type)

    def event_dropped(self, reason: str) -> None:
        self._call("event_dropped", reason)

    def journal_error(self) -> None:
        self._call("journal_error")

    def journal_state(self, ok: bool) -> None:
        self._call("journal_state", ok)

    def auth_failure(self, reason: str) -> None:
        self._call("auth_failure", reason)


@dataclass
class OutputHealth:
    """An output's part of /healthz: `ok` False makes the daemon unhealthy (503); `degraded`
    reasons keep it 200 with status "degraded"; `details` go into the body under the output's name."""

    ok: bool = True
    degraded: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


class Output(ABC):
    """Delivers events. `publish` may be called from any thread and never blocks."""

    name: str = "output"

    @abstractmethod
    def start(self) -> None:
        """Open sockets/files. A bad endpoint or path raises UsageError naming it (exit 2)."""

    @abstractmethod
    def publish(self, type: str, channel: str, **fields: Any) -> None:
        """Queue one event (fields as in CONTRACT.md, without the envelope). Thread-safe."""

    @abstractmethod
    def stop(self) -> None:
        """Deliver what is already queued (bounded in time), then close."""

    def watched_threads(self) -> list[WatchedThread]:
        """Long-lived threads of this output, for the daemon's thread watchdog."""
        return []

    def health(self) -> OutputHealth:
        return OutputHealth()
