"""What /healthz says, as a pure function of the daemon's parts (tested without threads).

A liveness probe restarts the daemon on a 503, so a 503 must mean the daemon itself cannot
work: a thread it needs has died, inference is stuck, an output is stuck, or it is exiting.
A channel whose source is down is not that (the daemon is retrying it, and a restart would
interrupt every healthy channel): it makes the status "degraded" (still 200), with the
channel's state in the body. A failing journal is "degraded" too: events are still
published, and a restart frees no disk space.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

INFERENCE_STUCK_SECONDS = 10.0


@dataclass(frozen=True)
class ChannelHealth:
    up: bool
    stalled: bool = False
    faults: tuple[str, ...] = ()         # fault kinds with an open episode


@dataclass
class HealthInputs:
    run_id: str
    now: float
    inference_alive: bool
    frames_waiting: int
    last_inference: float
    watched: list[str]
    dead: dict[str, str]                  # thread name -> what killed it
    stopping: bool
    failure: str | None
    channels: dict[str, ChannelHealth]
    outputs: dict[str, Any] = field(default_factory=dict)     # name -> OutputHealth


def assess(h: HealthInputs) -> tuple[bool, dict[str, Any]]:
    """(healthy, body): healthy False means 503."""
    body: dict[str, Any] = {"run_id": h.run_id, "channels": {}}
    infer_ok = h.inference_alive and (h.frames_waiting == 0 or h.now - h.last_inference < INFERENCE_STUCK_SECONDS)
    body["inference"] = "ok" if infer_ok else "stuck"
    ok = infer_ok
    if not h.stopping:      # while draining, threads stop on purpose
        body["threads"] = {name: "dead" if name in h.dead else "ok" for name in h.watched}
        if h.dead:
            ok = False
            body["dead_threads"] = dict(h.dead)
    if h.failure is not None:
        ok = False
        body["failure"] = h.failure
    degraded: list[str] = []
    down = []
    for name, ch in h.channels.items():
        state = "up" if ch.up and not ch.stalled else "down"
        body["channels"][name] = {"state": state, "faults": list(ch.faults)} if ch.faults else {"state": state}
        if state == "down":
            down.append(name)
    if down:
        degraded.append(f"{len(down)} of {len(h.channels)} channel(s) down: {', '.join(down)} (being retried)")
    for name, out in h.outputs.items():
        if out.details:
            body.update(out.details)
        if not out.ok:
            ok = False
            body.setdefault("outputs", {})[name] = "failing"
        degraded.extend(out.degraded)
    body["status"] = "unhealthy" if not ok else "degraded" if degraded else "ok"
    if degraded:
        body["degraded"] = degraded
    return ok, body
