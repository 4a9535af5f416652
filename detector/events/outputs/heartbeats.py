"""Heartbeat payloads: the pipeline's live view of each channel, checked, with a fallback.

Heartbeats (CONTRACT.md: `state`, `p_ad`, `stream_up`, `fps_in`, `fps_analyzed`) are built
on the publisher thread once per `heartbeat_seconds` from `heartbeat_source()`, a callable the
daemon passes in (channel -> those keys). The source belongs to another part of the daemon and
may fail or hand out values the contract forbids; a heartbeat must still go out, because its
absence is what tells subscribers the daemon is gone. So every key the source lacks, and every
channel whose values are invalid, falls back to what the published events say (the snapshot
state). Kept apart from the publisher so the policy is read and tested in one place.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from detector.events import schema as events

log = logging.getLogger(__name__)

HeartbeatSource = Callable[[], Mapping[str, Mapping[str, Any]]]


def live_view(source: HeartbeatSource | None) -> Mapping[str, Mapping[str, Any]]:
    """What the source says this round; {} (published state only) when it fails or gives junk."""
    if source is None:
        return {}
    try:
        live = source() or {}
    except Exception:
        log.exception("heartbeat source failed; heartbeats carry the published state only")
        return {}
    return live if isinstance(live, Mapping) else {}


def published_fields(tracked: Mapping[str, Any]) -> dict[str, Any]:
    """Heartbeat fields from the snapshot state alone (rates unknown: 0)."""
    return {"state": tracked["state"], "p_ad": tracked["p_ad"], "stream_up": tracked["stream_up"],
            "fps_in": 0.0, "fps_analyzed": 0.0}


def make_heartbeat(name: str, seq: int, run_id: str, emitted: float, tracked: Mapping[str, Any],
                   live: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """A valid heartbeat event for channel `name`: the live values over the published ones,
    or the published ones alone when the live values break the contract (logged)."""
    fields = published_fields(tracked)
    source = live.get(name)
    if isinstance(source, Mapping):
        fields.update({k: source[k] for k in events.HEARTBEAT_FIELDS if k in source})
    try:
        return events.make_event("heartbeat", name, seq, run_id, emitted, **fields)
    except ValueError as exc:
        log.warning("heartbeat source gave invalid values, using published state channel=%s error=%s", name, exc)
    return events.make_event("heartbeat", name, seq, run_id, emitted, **published_fields(tracked))
