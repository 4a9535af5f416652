"""What the driver does to a worker's events before publishing them (pure, no Ray).

A worker incarnation knows only its own life: its segment numbers and media timeline start
again when Ray restarts it. The driver keeps, per channel, what subscribers were told, so
the one stream stays consistent across worker restarts:
- `segment_id`s are numbered here, once per run, so a restarted worker never reuses one, and
  an ad segment's SCTE-35 cue is made again from the published id (its splice_event_id
  derives from it), so cue-out and cue-in still pair up;
- `stream_time` continues: each incarnation's media clock is shifted so that its wall-clock
  anchor matches the previous one's (a lost minute is a minute on the timeline, as with a
  reconnect in the single-process daemon);
- a lost worker ends what it cannot end itself: the open segment (`boundary: stream_end` at
  the last analysed position) and `stream.down` with `reason: worker_lost`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from detector.analysis.boundary import STREAM_END
from detector.events.schema import rfc3339
from detector.live.inference_loop import segment_cue

WORKER_LOST = "worker_lost"
Event = tuple[str, str, dict[str, Any]]


@dataclass
class ChannelRelay:
    name: str
    run_id: str
    segment_no: int = 0
    open: dict[str, Any] | None = None       # the published segment.start of the open segment
    up: bool = False
    offset: float = 0.0                      # added to this incarnation's media times
    anchor: float | None = None              # wall - media of this incarnation (None: no frame yet)
    last_stream_time: float = 0.0            # latest analysed position, on the published timeline
    last_wall: float = 0.0
    _carry: float | None = field(default=None, repr=False)   # previous incarnations' wall - stream_time

    def position(self, media: float, wall: float) -> None:
        """The worker's latest analysed frame (media time on its clock, wall time)."""
        if wall <= 0:
            return
        if self.anchor is None:
            self.anchor = wall - media
            if self._carry is not None:      # a new incarnation: keep wall - stream_time continuous
                self.offset = self.anchor - self._carry
        self.last_stream_time = media + self.offset
        self.last_wall = wall

    def incoming(self, type: str, fields: dict[str, Any]) -> list[Event]:
        """A worker's event as subscribers should see it."""
        f = dict(fields)
        if "stream_time" in f and f["stream_time"] is not None:
            f["stream_time"] = round(float(f["stream_time"]) + self.offset, 3)
        if type == "segment.start":
            self.segment_no += 1
            f["segment_id"] = f"{self.name}-{self.run_id[:8]}-{self.segment_no}"
            self.open = f
        elif type == "segment.end":
            if self.open is None:
                return []
            f["segment_id"] = self.open["segment_id"]
            self.open = None
        if type.startswith("segment.") and "scte35" in f:
            f["scte35"] = segment_cue(type, f["segment_id"], f.get("pts"), bool(f.get("withdrawn"))).as_event()
        elif type == "stream.up":
            self.up = True
        elif type == "stream.down":
            self.up = False
        return [(type, self.name, f)]

    def lost(self) -> list[Event]:
        """The worker carrying this channel is gone: end what it left open; the next incarnation
        starts a fresh media clock, which `position` joins onto this timeline."""
        out: list[Event] = []
        if self.open is not None:
            start = self.open
            end = max(self.last_stream_time, float(start.get("stream_time") or 0.0))
            fields = {
                "label": start["label"], "is_ad": start["is_ad"], "confidence": start["confidence"],
                "segment_id": start["segment_id"], "time": rfc3339(self.last_wall) if self.last_wall else start["time"],
                "stream_time": round(end, 3), "pts": None, "boundary": STREAM_END,
                "duration": round(end - float(start.get("stream_time") or 0.0), 3)}
            if start["is_ad"]:       # the cue-in that pairs with the start's cue-out (immediate: no PTS known)
                fields["scte35"] = segment_cue("segment.end", start["segment_id"], None).as_event()
            out.append(("segment.end", self.name, fields))
            self.open = None
        # said even when the source was already down: it tells why the next stream.up comes from a new worker
        out.append(("stream.down", self.name, {"reason": WORKER_LOST}))
        self.up = False
        if self.anchor is not None:
            self._carry = self.anchor - self.offset      # wall - stream_time, which the next incarnation keeps
        self.anchor = None
        return out
