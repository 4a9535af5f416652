"""The inference thread: cross-channel batches through the backbone, then each channel's engine.

Frames wait in the channels' rings; a batch is cut when it is full or when the oldest frame
has waited `max_batch_delay_ms` (DeepStream's rule: the timeout starts with the first frame of
the batch), taking from the channels round-robin so no channel starves (detector.live.batcher).
One backbone call per batch, then every frame goes to its channel's `ChannelEngine` (the same
code `classify` runs), whose decisions become `segment.*` events.

A new model (SIGHUP) is handed over with `swap()` and taken at the top of the next turn, so a
batch never runs half on one model and half on another.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from detector.analysis.audio import level_dbfs
from detector.analysis.engine import ChannelEngine, Transition
from detector.analysis.segments import Segment
from detector.events.schema import rfc3339
from detector.events.scte35 import Scte35Cue, splice_event_id, splice_insert
from detector.live.batcher import allocate, batch_due
from detector.live.channel import Channel, EventSink
from detector.live.metrics import Metrics
from detector.live.ring import FrameMeta
from detector.model.bundle import Bundle
from detector.model.models import Models
from detector.util.threads import block_process_signals

log = logging.getLogger("detector.live.daemon")

EngineFactory = Callable[[Bundle, Models, Any], ChannelEngine]


class InferenceLoop:
    def __init__(self, channels: list[Channel], bundle: Bundle, models: Models, batch_size: int, max_batch_delay_ms: int,
                 metrics: Metrics, events: EventSink, run_id: str, make_engine: EngineFactory,
                 retire: Callable[[list[Any]], None] = lambda objects: None):
        self.channels = channels
        self.bundle = bundle
        self.models = models
        self.batch_size = batch_size
        self.delay = max_batch_delay_ms / 1000.0
        self.metrics = metrics
        self.events = events
        self.run_id = run_id
        self.make_engine = make_engine
        self.retire = retire           # where replaced models go to be released (not on this thread)
        self.last_inference = time.monotonic()
        self.call_started: float | None = None     # monotonic start of the backbone call in flight
        self.thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._pending: tuple[Bundle, Models, Any] | None = None
        self.on_swapped: Callable[[Bundle, Models], None] = lambda bundle, models: None

    # -- control (any thread)
    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="inference", daemon=True)
        self.thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """The batch in flight finishes; frames still in the rings are left for `drain` to count."""
        self._stop.set()
        self._wake.set()
        if self.thread is not None:
            self.thread.join(timeout)

    def swap(self, bundle: Bundle, models: Models, decision: Any) -> None:
        with self._lock:
            self._pending = (bundle, models, decision)
        self._wake.set()

    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    # -- the thread
    def _run(self) -> None:
        block_process_signals()       # this thread runs the models: see detector.util.threads
        h, w = self.bundle.input_size
        batch = np.empty((self.batch_size, h, w, 3), np.uint8)
        rr = 0
        bb_hist = self.metrics.inference_seconds.labels(model="backbone")
        while not self._stop.is_set():
            self._apply_pending()
            now = time.monotonic()
            sizes = [len(c.ring) for c in self.channels]
            oldest_t = min((o for o in (c.ring.oldest_mono() for c in self.channels) if o is not None), default=None)
            if not batch_due(sum(sizes), self.batch_size, oldest_t, now, self.delay):
                self.last_inference = now if not sum(sizes) else self.last_inference
                wait = 0.005 if oldest_t is None else max(0.001, min(0.02, self.delay - (now - oldest_t)))
                self._wake.wait(wait)
                self._wake.clear()
                continue
            take = allocate(sizes, self.batch_size, rr)
            rr = (rr + 1) % len(self.channels)
            metas: list[tuple[Channel, FrameMeta]] = []
            n = 0
            for ch, k in zip(self.channels, take):
                if k:
                    got = ch.ring.pop_into(batch, n, k)
                    metas += [(ch, m) for m in got]
                    n += len(got)
            if not n:
                continue
            t0 = time.perf_counter()
            self.call_started = time.monotonic()
            feats = self.models.features(batch[:n])
            self.call_started = None
            bb_hist.observe(time.perf_counter() - t0)
            self.metrics.batch_size.observe(n)
            self.last_inference = time.monotonic()
            for i, ((ch, meta), feat) in enumerate(zip(metas, feats)):
                self._analyse(ch, meta, feat, batch[i])

    def _apply_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None:
            return
        bundle, models, decision = pending
        same_backbone = bundle.backbone_sha256 == self.bundle.backbone_sha256
        old: list[Any] = [self.models]
        self.bundle, self.models = bundle, models
        for ch in self.channels:
            new = self.make_engine(bundle, models, decision)
            new.adopt(ch.engine, keep_window=same_backbone and bundle.window_frames == ch.engine.t)
            old.append(ch.engine)
            ch.engine = new
        self.retire(old)            # released on the model-loader thread, not here (detector.live.loader)
        del old
        self.on_swapped(bundle, models)
        log.info("model swapped in channels=%d kept_windows=%s", len(self.channels), same_backbone)

    def _analyse(self, ch: Channel, meta: FrameMeta, feat: np.ndarray, image: np.ndarray | None = None) -> None:
        if meta.generation != ch.generation:
            ch.engine.reset()            # a new connection or a timestamp jump: never a window across the gap
            ch.generation = meta.generation
            ch.audio_from = None
        ch.last_media, ch.last_wall = meta.media_time, meta.wall_time
        ch.pts_marks.add(meta.media_time, meta.pts)
        audio = ch.audio.read(ch.audio_from if ch.audio_from is not None else meta.media_time - 1.0 / ch.engine.fps,
                              meta.media_time)
        ch.audio_from = meta.media_time
        if audio is not None:
            self.metrics.audio_level.labels(channel=ch.name).set(round(level_dbfs(audio), 2))
        nonfinite = ch.engine.nonfinite_windows
        result, tr = ch.engine.push(meta.media_time, feat, meta.stats, audio, image)
        if ch.engine.nonfinite_windows != nonfinite:
            self.metrics.nonfinite_windows.labels(channel=ch.name).inc(ch.engine.nonfinite_windows - nonfinite)
        for action in ch.engine.take_rule_actions():      # the engine logged them
            self.metrics.break_rule_actions.labels(channel=ch.name, rule=action.rule).inc()
        ch.analysed += 1
        self.metrics.frames_analyzed.labels(channel=ch.name).inc()
        if result is not None:
            ch.p_ad = result.p_ad
            self.metrics.ad_probability.labels(channel=ch.name).set(result.p_ad)
            self.metrics.decision_latency.labels(channel=ch.name).observe(time.monotonic() - meta.mono_time)
        if tr is not None:
            self._transition(ch, tr)
        self._loudness(ch, meta.media_time)

    def _loudness(self, ch: Channel, now: float) -> None:
        """The channel's BS.1770 gauges (NaN while there is no measurement)."""
        gauge = self.metrics.loudness
        for window, value in (("short_term", ch.loudness.short_term(now)), ("integrated_segment", ch.loudness.segment_integrated())):
            gauge.labels(channel=ch.name, window=window).set(math.nan if value is None else round(value, 2))

    def _transition(self, ch: Channel, tr: Transition) -> None:
        if tr.ended is not None:
            e = tr.ended
            # the ended segment's integrated loudness (LUFS, its own channels; null without a measurement)
            lufs = ch.loudness.segment_integrated(until=e.end)
            publish_segment(self.events, "segment.end", ch, e.label, e.is_ad, e.confidence, e.end, tr.boundary_kind,
                            pts=ch.pts_marks.pts_at(e.end), withdrawn=e.withdrawn, duration=round(e.duration, 3),
                            integrated_lufs=None if lufs is None else round(lufs, 1), **flag_fields(e))
        ch.loudness.start_segment(tr.boundary)
        ch.segment_no += 1
        ch.segment_id = f"{ch.name}-{self.run_id[:8]}-{ch.segment_no}"
        conf = tr.p_ad if tr.is_ad else 1.0 - tr.p_ad
        log.info("segment start channel=%s label=%s is_ad=%s stream_time=%.2f decided_at=%.2f how=%s", ch.name, tr.label, tr.is_ad,
                 tr.boundary, tr.decided_at, tr.boundary_kind)
        publish_segment(self.events, "segment.start", ch, tr.label, tr.is_ad, round(conf, 4), tr.boundary, tr.boundary_kind,
                        pts=ch.pts_marks.pts_at(tr.boundary))


def flag_fields(seg: Segment) -> dict[str, Any]:
    """What the break rules noticed but did not change, for a `segment.end`: `flags` such as
    `long_break` / `long_spot` (only when there is any; `withdrawn` is publish_segment's own)."""
    return {"flags": list(seg.flags)} if seg.flags else {}


def segment_cue(typ: str, segment_id: str, pts: int | None, withdrawn: bool = False) -> Scte35Cue:
    """The SCTE-35 cue of an ad segment event: out at its start, back in at its end, both under
    the segment's splice_event_id; the end of a withdrawn start cancels that event instead, so a
    splicer that armed on the cue-out is never left waiting for a cue-in."""
    event_id = splice_event_id(segment_id)
    if typ == "segment.end" and withdrawn:
        return splice_insert(event_id, False, None, cancel=True)
    return splice_insert(event_id, typ == "segment.start", pts)


def publish_segment(events: EventSink, typ: str, ch: Channel, label: str, is_ad: bool, confidence: float, media_time: float,
                    boundary: str, pts: int | None = None, withdrawn: bool = False, **extra: Any) -> None:
    """A `segment.*` event of `ch`'s current segment, its `time` on the wall clock of the boundary.

    `pts` is the boundary's source PTS (90 kHz, mod 2**33, from the analysed frames' PTS:
    `Channel.pts_marks`); None for a source without a clock (a capture card), whose cues are
    then immediate splices. Ad segments carry their SCTE-35 cue (`scte35`), which then goes to
    the channel's cue sinks (the inline marker).
    """
    if ch.segment_id is None:
        return
    cue = segment_cue(typ, ch.segment_id, pts, withdrawn) if is_ad else None
    if cue is not None:
        extra["scte35"] = cue.as_event()
        if withdrawn:
            extra["withdrawn"] = True
    events.publish(typ, ch.name, label=label, is_ad=bool(is_ad), confidence=float(confidence), segment_id=ch.segment_id,
                   time=rfc3339(ch.wall_of(media_time)), stream_time=round(float(media_time), 3), pts=pts, boundary=boundary,
                   **extra)
    if cue is not None:
        for sink in ch.cue_sinks:
            try:
                sink(cue)
            except Exception:   # noqa: BLE001 - an output's failure must not stop detection; it is logged
                log.exception("cue sink failed channel=%s segment_id=%s", ch.name, ch.segment_id)
