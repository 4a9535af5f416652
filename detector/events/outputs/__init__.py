"""Outputs: one module per way events leave the daemon, behind `base.Output`.

(Interim: the ZeroMQ publisher is adapted here until it implements `Output` itself.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from detector.events.outputs.base import EventCounters, Output, OutputHealth
from detector.util.threads import WatchedThread


class _ZeroMq(Output):
    name = "zeromq"

    def __init__(self, events_cfg: Any, run_id: str, channels: list[str], counters: EventCounters,
                 heartbeat_source: Callable[[], dict[str, dict[str, Any]]]):
        from detector.events.curve import CurveServer
        from detector.events.outputs.zeromq import Publisher

        self.curve = None
        if events_cfg.curve is not None:
            self.curve = CurveServer(events_cfg.curve.server_secret_key, events_cfg.curve.allowed_clients_dir,
                                     on_failure=counters.auth_failure)
        self.publisher = Publisher(events_cfg.bind, events_cfg.snapshot_bind, events_cfg.heartbeat_seconds, events_cfg.journal,
                                   run_id, channels, send_hwm=events_cfg.send_hwm, curve=self.curve,
                                   on_sent=counters.event_sent, on_drop=counters.event_dropped,
                                   on_journal_error=lambda exc: counters.journal_error(), heartbeat_source=heartbeat_source,
                                   journal_max_bytes=events_cfg.journal_max_bytes, journal_keep=events_cfg.journal_keep,
                                   on_journal_state=counters.journal_state)

    def start(self) -> None:
        self.publisher.start()

    def publish(self, type: str, channel: str, **fields: Any) -> None:
        self.publisher.publish(type, channel, **fields)

    def stop(self) -> None:
        self.publisher.stop()

    def watched_threads(self) -> list[WatchedThread]:
        pub = self.publisher
        out = [WatchedThread("publisher", lambda: pub.thread, alive=lambda: pub.alive, error=lambda: pub.error)]
        curve = self.curve
        if curve is not None:
            out.append(WatchedThread("curve-auth", lambda: curve.auth_thread))
        return out

    def health(self) -> OutputHealth:
        journal = self.publisher.journal_status()
        degraded = [] if journal["ok"] else [f"journal {journal['path']}: {journal['error']} (events are published but not "
                                             "journaled, so they cannot be replayed)"]
        return OutputHealth(ok=True, degraded=degraded, details={"journal": journal})


def build_outputs(events_cfg: Any, run_id: str, channels: list[str], counters: EventCounters,
                  heartbeat_source: Callable[[], dict[str, dict[str, Any]]]) -> list[Output]:
    """The outputs the `events` config section asks for, not yet started."""
    return [_ZeroMq(events_cfg, run_id, channels, counters, heartbeat_source)]


__all__ = ["EventCounters", "Output", "OutputHealth", "build_outputs"]
