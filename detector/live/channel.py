"""One channel inside the daemon: its ring, its engine, its capture, and what it has said.

`ChannelMonitor` is the capture's observer: it turns what the capture thread learns (stream
up/down, frames, drops, reconnects, faults) into metrics and `stream.*` events, so the
capture knows nothing of Prometheus or ZeroMQ.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any, Protocol

from detector.analysis.audio import AudioBuffer
from detector.analysis.loudness import LoudnessMeter
from detector.analysis.clock import PtsMarks
from detector.analysis.engine import ChannelEngine
from detector.events.scte35 import Scte35Cue
from detector.sources.cues import UpstreamCue
from detector.live.capture import Capture
from detector.live.metrics import Metrics
from detector.live.ring import Ring

log = logging.getLogger("detector.live.daemon")


class EventSink(Protocol):
    """Where the pipeline's events go (the outputs' fan-out): `publish` queues, never blocks."""

    def publish(self, type: str, channel: str, **fields: Any) -> None: ...


@dataclass
class Channel:
    name: str
    ring: Ring
    engine: ChannelEngine
    capture: Capture | None = None
    generation: int = 0
    segment_no: int = 0
    segment_id: str | None = None
    p_ad: float | None = None
    last_media: float = 0.0
    last_wall: float = 0.0
    captured: int = 0
    analysed: int = 0
    rate_mark: tuple[float, int, int] = field(default_factory=lambda: (time.monotonic(), 0, 0))
    audio: AudioBuffer = field(default_factory=AudioBuffer)
    pts_marks: PtsMarks = field(default_factory=PtsMarks)     # media time -> source PTS of analysed frames
    audio_from: float | None = None                           # where the next analysis step's audio starts
    # who else acts on this channel's SCTE-35 cues besides the events (the inline marker): called
    # with each cue right after its event is published, on the inference thread, must not block
    cue_sinks: list[Callable[[Scte35Cue], None]] = field(default_factory=list)
    loudness: LoudnessMeter = field(default_factory=LoudnessMeter)   # BS.1770 meter of the source's own channels

    def wall_of(self, media_time: float) -> float:
        """Wall-clock time of a point on the channel timeline, from the latest frame."""
        return self.last_wall - (self.last_media - media_time)

    @property
    def up(self) -> bool:
        return bool(self.capture and self.capture.up)

    def rates(self, now: float) -> tuple[float, float]:
        """Frames/s captured and analysed since the last call (one heartbeat round)."""
        t0, c0, a0 = self.rate_mark
        dt = max(1e-6, now - t0)
        self.rate_mark = (now, self.captured, self.analysed)
        return (self.captured - c0) / dt, (self.analysed - a0) / dt


class ChannelMonitor:
    """The capture's observer for one channel (runs on the capture thread)."""

    def __init__(self, channel: Channel, metrics: Metrics, events: EventSink):
        self.channel = channel
        self.events = events
        name = channel.name
        self._captured = metrics.frames_captured.labels(channel=name)
        self._last_frame = metrics.last_frame_timestamp.labels(channel=name)
        self._up = metrics.stream_up.labels(channel=name)
        self._reconnects = metrics.capture_reconnects.labels(channel=name)
        self._dropped = metrics.frames_dropped
        self._faults = metrics.stream_faults
        self._decode_errors = metrics.decode_errors.labels(channel=name)
        self._audio_present = metrics.audio_present.labels(channel=name)
        self._pts_wraps = metrics.pts_wraps.labels(channel=name)
        self._cues = metrics.upstream_cues.labels(channel=name)

    def stream_up(self, generation: int) -> None:
        self._up.set(1)
        log.info("stream up channel=%s", self.channel.name)
        self.events.publish("stream.up", self.channel.name)

    def stream_down(self, reason: str) -> None:
        self._up.set(0)
        log.warning("stream down channel=%s reason=%s", self.channel.name, reason)
        self.events.publish("stream.down", self.channel.name, reason=reason)

    def frame_captured(self, wall: float) -> None:
        self.channel.captured += 1
        self._captured.inc()
        self._last_frame.set(wall)

    def frame_dropped(self, reason: str) -> None:
        self._dropped.labels(channel=self.channel.name, reason=reason).inc()

    def reconnecting(self) -> None:
        self._reconnects.inc()

    def fault(self, kind: str) -> None:
        self._faults.labels(channel=self.channel.name, kind=kind).inc()

    def decode_errors(self, count: int) -> None:
        self._decode_errors.inc(count)

    def audio_present(self, present: bool) -> None:
        self._audio_present.set(1 if present else 0)

    def pts_wrapped(self) -> None:
        self._pts_wraps.inc()

    def upstream_cue(self, cue: UpstreamCue, stream_time: float | None) -> None:
        """A SCTE-35 cue in the source: counted and published as `cue.upstream`."""
        self._cues.inc()
        log.info("upstream cue channel=%s command=%s out_of_network=%s event_id=%s pts=%s", self.channel.name, cue.command,
                 cue.out_of_network, cue.event_id, cue.pts)
        self.events.publish("cue.upstream", self.channel.name, **cue.payload(), stream_time=stream_time)
