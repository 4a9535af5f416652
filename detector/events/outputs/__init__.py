"""Outputs: one module per way events leave the daemon, behind `base.Output`.

`build_outputs` is what the daemon calls: it asks each builder in `REGISTRY` for its output
from the `events` config section; a builder returns None when the config does not ask for
it. Adding an output is one module in this folder and one entry in `REGISTRY`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from detector.events.outputs.base import EventCounters, NoCounters, Output, OutputHealth
from detector.events.outputs.heartbeats import HeartbeatSource

Builder = Callable[[Any, str, list[str], EventCounters, HeartbeatSource], "Output | None"]


def _zeromq(events_cfg: Any, run_id: str, channels: list[str], counters: EventCounters,
            heartbeat_source: HeartbeatSource) -> Output:
    """The ZeroMQ publisher (PUB, snapshot/replay, journal) with CURVE when `events.curve` is set."""
    from detector.events.curve import CurveServer
    from detector.events.outputs.zeromq import Publisher

    curve = None
    if events_cfg.curve is not None:
        curve = CurveServer(events_cfg.curve.server_secret_key, events_cfg.curve.allowed_clients_dir, counters=counters)
    return Publisher(events_cfg.bind, events_cfg.snapshot_bind, events_cfg.heartbeat_seconds, events_cfg.journal,
                     run_id, channels, counters=counters, heartbeat_source=heartbeat_source, curve=curve,
                     send_hwm=events_cfg.send_hwm, journal_max_bytes=events_cfg.journal_max_bytes,
                     journal_keep=events_cfg.journal_keep)


REGISTRY: dict[str, Builder] = {"zeromq": _zeromq}


def build_outputs(events_cfg: Any, run_id: str, channels: list[str], counters: EventCounters,
                  heartbeat_source: HeartbeatSource) -> list[Output]:
    """The outputs the `events` config section asks for, in REGISTRY order, not yet started.

    Raises UsageError (exit 2) for a bad CURVE key file or directory, naming the config key.
    """
    outputs = []
    for builder in REGISTRY.values():
        out = builder(events_cfg, run_id, channels, counters, heartbeat_source)
        if out is not None:
            outputs.append(out)
    return outputs


__all__ = ["REGISTRY", "EventCounters", "NoCounters", "Output", "OutputHealth", "build_outputs"]
