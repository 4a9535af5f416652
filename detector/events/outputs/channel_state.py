"""What the snapshot says: the last `seq` and each channel's state, as the published events left them.

Its own module because three parties share it: the publisher thread writes it (one event at a
time, in `seq` order), the snapshot reply and the replay worker read it, and heartbeats fall
back to it when the pipeline's live view is missing. `seq` and the channel states change
together under one lock, so a snapshot reflects exactly the events up to its `seq`: a late
joiner that drops updates with seq <= the snapshot's misses nothing and applies nothing twice.
"""

from __future__ import annotations

import copy
import logging
import threading
from typing import Any

log = logging.getLogger(__name__)


def new_channel_state() -> dict[str, Any]:
    """The snapshot entry of a channel no event has described yet (CONTRACT.md "Snapshot")."""
    return {"state": "unknown", "segment_id": None, "since": None, "stream_up": False, "p_ad": None}


class ChannelStates:
    """`seq` plus {channel: {state, segment_id, since, stream_up, p_ad}}. Thread-safe."""

    def __init__(self, channels: list[str]) -> None:
        self._lock = threading.Lock()
        self._seq = 0
        self._channels: dict[str, dict[str, Any]] = {name: new_channel_state() for name in channels}
        self._open: set[str] = set()   # channels with a segment.start not yet followed by its segment.end

    @property
    def seq(self) -> int:
        with self._lock:
            return self._seq

    def names(self) -> list[str]:
        with self._lock:
            return list(self._channels)

    def tracked(self, name: str) -> dict[str, Any]:
        """A copy of one channel's state (a new channel's default when unknown)."""
        with self._lock:
            state = self._channels.get(name)
            return dict(state) if state is not None else new_channel_state()

    def snapshot(self) -> tuple[int, dict[str, dict[str, Any]]]:
        """(seq, channels) read together."""
        with self._lock:
            return self._seq, copy.deepcopy(self._channels)

    def record(self, event: dict[str, Any]) -> None:
        """`event` was published (or journaled by the salvage): its seq is the last, its state applies."""
        with self._lock:
            self._seq = event["seq"]
            if event["type"] == "heartbeat":
                state = self._channels.get(event["channel"])
                if state is not None:
                    state["p_ad"] = event["p_ad"]
                return
            self._apply(event)

    def _apply(self, event: dict[str, Any]) -> None:
        type_ = event["type"]
        state = self._channels.get(event["channel"])
        if state is None:
            log.info("publishing for a channel not configured at start channel=%s", event["channel"])
            state = self._channels[event["channel"]] = new_channel_state()
        name = event["channel"]
        if type_ == "segment.start":
            state.update(state=event["label"], segment_id=event["segment_id"], since=event["time"])
            self._open.add(name)
        elif type_ == "segment.end":
            # the segment is over, but the state stays: the next segment.start follows at once,
            # and a late joiner in between should not see "unknown" flicker by
            self._open.discard(name)
        elif type_ == "stream.down":
            state["stream_up"] = False
            if name not in self._open:
                state.update(state="unknown", segment_id=None, since=event["emitted"])
            # else a reconnect: the engine keeps the open segment across it (and heartbeats say
            # its label), so the snapshot keeps it too until its segment.end
        elif type_ == "stream.up":
            state["stream_up"] = True
