"""`ad-detector run`: the live daemon. Starts its parts in order, stops them in reverse.

    config -> bundle + models (warmed up) -> metrics HTTP -> publisher (ZeroMQ) ->
    inference thread -> one capture thread per channel -> READY=1

The main thread only supervises: signals (SIGTERM/SIGINT drain and exit 0, SIGHUP reloads
the bundle and decision settings), stalled captures, dead threads (every long-lived one:
captures, inference, publisher, metrics HTTP, CURVE's ZAP handler; see detector.live.threadwatch),
the systemd watchdog (pinged only while the pipeline makes progress). Frames flow capture ->
ring -> inference thread (cross-channel batches, then each channel's `ChannelEngine`, the
same code as `classify`) -> publisher thread, which owns every socket.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from detector.live import sdnotify
from detector.live.batcher import allocate, batch_due
from detector.model.bundle import Bundle, load_bundle
from detector.live.capture import Capture, CaptureSettings
from detector.sources.video import quiet_native_logs
from detector.analysis.engine import ChannelEngine, Transition
from detector.errors import RuntimeFailure, UsageError
from detector.events.schema import rfc3339
from detector.model.inference import GPU_PROVIDERS, Models
from detector.live.metrics import Metrics, MetricsServer
from detector.events.publisher import Publisher
from detector.events.curve import CurveServer, exposure_warnings
from detector.live.ring import FrameMeta, Ring
from detector.live.threadwatch import Death, ThreadWatch

log = logging.getLogger(__name__)


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

    def wall_of(self, media_time: float) -> float:
        """Wall-clock time of a point on the channel timeline, from the latest frame."""
        return self.last_wall - (self.last_media - media_time)


def load_models(cfg: Any) -> tuple[Bundle, Models]:
    bundle = load_bundle(Path(cfg.model))
    inf = cfg.inference
    models = Models(bundle, inf.providers, inf.threads or None, spin=False, engine=inf.engine, precision=inf.precision,
                    gpu=inf.gpu_options())
    if cfg.inference.require_gpu and not any(p in GPU_PROVIDERS for p in models.providers_in_use):
        raise UsageError(f"inference.require_gpu is true but no GPU provider started (in use: {', '.join(models.providers_in_use)}); "
                         "check the NVIDIA driver, CUDA and cuDNN, or set require_gpu: false")
    models.warm_up((1, inf.batch_size))      # both ends of the batch range, before READY
    return bundle, models


class Daemon:
    def __init__(self, cfg: Any):
        self.cfg = cfg
        self.run_id = uuid.uuid4().hex
        self.names = [c.name for c in cfg.channels]
        self.metrics = Metrics(self.names)
        self.stop_event = threading.Event()
        self.reload_requested = threading.Event()
        self._infer_stop = threading.Event()
        self._wake = threading.Event()
        self._pending: tuple[Bundle, Models, Any] | None = None
        self._lock = threading.Lock()
        self.last_inference = time.monotonic()
        self.call_started: float | None = None     # monotonic start of the backbone call in flight
        interval = sdnotify.watchdog_interval()
        self._ping_every = min(1.0, interval / 2) if interval else 1.0   # systemd wants at least every WatchdogSec/2
        self._last_ping = 0.0
        self.bundle: Bundle | None = None
        self.models: Models | None = None
        self.channels: dict[str, Channel] = {}
        self.publisher: Publisher | None = None
        self.server: MetricsServer | None = None
        self.infer_thread: threading.Thread | None = None
        self.watch = ThreadWatch()
        self.failure: str | None = None           # why the supervisor gave up (health says it until exit)
        self._stopping = False

    # ------------------------------------------------------------------ start / stop
    def start(self) -> None:
        cfg = self.cfg
        self.watch.install()          # before any thread starts, so no exception goes unlogged
        quiet_native_logs()
        # each capture thread converts its own frames; OpenCV's pool splitting a 1 ms resize
        # over both cores would only contend with decode and inference (README, "Threads")
        cv2.setNumThreads(1)
        self.bundle, self.models = load_models(cfg)
        self._export_model_info()
        log.info("models ready bundle=%s providers=%s classes=%s window_frames=%d fps=%s", self.bundle.root,
                 ",".join(self.models.providers_in_use), ",".join(self.bundle.classes), self.bundle.window_frames, self.bundle.analysis_fps)
        h, w = self.bundle.input_size
        for c in cfg.channels:
            self.channels[c.name] = Channel(c.name, Ring(cfg.capture.ring_capacity, (h, w, 3)), self._engine(self.bundle, self.models))
        self.server = MetricsServer(cfg.metrics.bind, self.metrics, self.health)
        self.server.start()
        self.watch.watch("metrics-http", lambda: self.server.thread if self.server else None)
        journal = Path(cfg.events.journal) if cfg.events.journal else None
        for warning in exposure_warnings(cfg.events.bind, cfg.events.snapshot_bind, cfg.events.curve is not None):
            log.warning("insecure events socket: %s", warning)
        curve = None
        if cfg.events.curve is not None:
            curve = CurveServer(cfg.events.curve.server_secret_key, cfg.events.curve.allowed_clients_dir,
                                on_failure=lambda reason: self.metrics.auth_failures.labels(reason=reason).inc())
        self.publisher = Publisher(cfg.events.bind, cfg.events.snapshot_bind, cfg.events.heartbeat_seconds, journal, self.run_id,
                                   self.names, send_hwm=cfg.events.send_hwm, curve=curve,
                                   on_sent=lambda ch, typ: self.metrics.events_published.labels(channel=ch, type=typ).inc(),
                                   on_drop=lambda reason: self.metrics.events_dropped.labels(reason=reason).inc(),
                                   on_journal_error=self._journal_error, heartbeat_source=self.heartbeat_state,
                                   journal_max_bytes=cfg.events.journal_max_bytes, journal_keep=cfg.events.journal_keep,
                                   on_journal_state=lambda ok: self.metrics.journal_ok.set(1 if ok else 0))
        self.publisher.start()
        pub = self.publisher
        self.watch.watch("publisher", lambda: pub.thread, alive=lambda: pub.alive, error=lambda: pub.error)
        if curve is not None:
            self.watch.watch("curve-auth", lambda: curve.auth_thread)
        self.infer_thread = threading.Thread(target=self._infer_loop, name="inference", daemon=True)
        self.infer_thread.start()
        self.watch.watch("inference", lambda: self.infer_thread)
        for c in cfg.channels:
            self._start_capture(c)
        sdnotify.ready()
        sdnotify.status(f"watching {len(self.channels)} channel(s)")
        log.info("daemon ready run_id=%s channels=%s events=%s metrics=%s", self.run_id, ",".join(self.names), cfg.events.bind, cfg.metrics.bind)

    def _engine(self, bundle: Bundle, models: Models, decision: Any = None) -> ChannelEngine:
        d = decision or self.cfg.decision
        return ChannelEngine(bundle, self._timed_sequence(models), d.to_settings(), d.hop_seconds)

    def _timed_sequence(self, models: Models):
        hist = self.metrics.inference_seconds.labels(model="sequence")

        def run(windows: np.ndarray) -> np.ndarray:
            t0 = time.perf_counter()
            out = models.probabilities(windows)
            hist.observe(time.perf_counter() - t0)
            return out
        return run

    def _export_model_info(self) -> None:
        assert self.bundle and self.models
        self.metrics.set_model_info(self.bundle.classes, self.models.backbone_sha256, self.bundle.sequence_sha256 or "",
                                    self.models.providers_in_use, self.models.precision)
        for info, model in ((self.models.backbone_info, "backbone"), (self.models.sequence_info, "sequence")):
            if info and info.fallbacks:
                self.metrics.provider_fallbacks.labels(model=model).inc(len(info.fallbacks))

    def _start_capture(self, c: Any) -> None:
        from detector.config import source_kind

        ch = self.channels[c.name]
        k = self.cfg.capture
        settings = CaptureSettings(source=c.source, kind=source_kind(c.source), realtime=c.realtime, open_timeout=k.open_timeout_seconds,
                                   read_timeout=k.read_timeout_seconds, stall_seconds=k.stall_seconds,
                                   reconnect_initial=k.reconnect_initial_seconds, reconnect_max=k.reconnect_max_seconds,
                                   rtsp_transport=k.rtsp_transport)
        m = self.metrics
        name = c.name

        def on_frame(wall: float) -> None:
            ch.captured += 1
            m.frames_captured.labels(channel=name).inc()
            m.last_frame_timestamp.labels(channel=name).set(wall)

        ch.capture = Capture(name, settings, ch.ring, self.bundle.analysis_fps, self.bundle.input_size,
                             on_up=lambda gen: self._stream_up(ch), on_down=lambda reason: self._stream_down(ch, reason),
                             on_frame=on_frame, on_drop=lambda reason: m.frames_dropped.labels(channel=name, reason=reason).inc(),
                             on_reconnect=lambda: m.capture_reconnects.labels(channel=name).inc(),
                             on_fault=lambda kind: m.stream_faults.labels(channel=name, kind=kind).inc())
        ch.capture.start()
        self.watch.watch(f"capture-{name}", lambda: ch.capture.thread if ch.capture else None)

    def _stream_up(self, ch: Channel) -> None:
        self.metrics.stream_up.labels(channel=ch.name).set(1)
        log.info("stream up channel=%s", ch.name)
        self.publisher.publish("stream.up", ch.name)

    def _stream_down(self, ch: Channel, reason: str) -> None:
        self.metrics.stream_up.labels(channel=ch.name).set(0)
        log.warning("stream down channel=%s reason=%s", ch.name, reason)
        self.publisher.publish("stream.down", ch.name, reason=reason)

    def _journal_error(self, exc: Exception) -> None:
        # counted per failed append; the publisher logs once per episode (start and recovery)
        self.metrics.journal_errors.inc()

    def stop(self) -> None:
        """Reverse order: captures, inference (batch in flight finishes), final events, publisher, metrics."""
        self._stopping = True
        sdnotify.stopping()
        log.info("stopping")
        for ch in self.channels.values():
            if ch.capture:
                ch.capture.stop()
        self._infer_stop.set()
        self._wake.set()
        if self.infer_thread:
            self.infer_thread.join(2.0)
        for ch in self.channels.values():
            if ch.capture:
                ch.capture.join(0.2)
            dropped = ch.ring.clear()
            if dropped:
                self.metrics.frames_dropped.labels(channel=ch.name, reason="shutdown").inc(dropped)
            seg = ch.engine.finish(ch.last_media) if ch.engine.current else None
            if seg is not None and self.publisher:
                self._publish_segment("segment.end", ch, seg.label, seg.is_ad, seg.confidence, seg.end, duration=seg.duration)
            if ch.capture and ch.capture.up and self.publisher:
                self.metrics.stream_up.labels(channel=ch.name).set(0)
                self.publisher.publish("stream.down", ch.name, reason="shutdown")
        if self.publisher:
            self.publisher.stop()
        if self.server:
            self.server.stop()
        log.info("stopped run_id=%s", self.run_id)
        self.watch.uninstall()

    # ------------------------------------------------------------------ inference thread
    def _infer_loop(self) -> None:
        assert self.bundle is not None
        bs = self.cfg.inference.batch_size
        delay = self.cfg.inference.max_batch_delay_ms / 1000.0
        h, w = self.bundle.input_size
        batch = np.empty((bs, h, w, 3), np.uint8)
        chans = list(self.channels.values())
        rr = 0
        bb_hist = self.metrics.inference_seconds.labels(model="backbone")
        while not self._infer_stop.is_set():
            self._apply_pending()
            now = time.monotonic()
            sizes = [len(c.ring) for c in chans]
            oldest = [c.ring.oldest_mono() for c in chans]
            oldest_t = min((o for o in oldest if o is not None), default=None)
            if not batch_due(sum(sizes), bs, oldest_t, now, delay):
                self.last_inference = now if not sum(sizes) else self.last_inference
                wait = 0.005 if oldest_t is None else max(0.001, min(0.02, delay - (now - oldest_t)))
                self._wake.wait(wait)
                self._wake.clear()
                continue
            take = allocate(sizes, bs, rr)
            rr = (rr + 1) % len(chans)
            metas: list[tuple[Channel, FrameMeta]] = []
            n = 0
            for ch, k in zip(chans, take):
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
            for (ch, meta), feat in zip(metas, feats):
                self._analyse(ch, meta, feat)

    def _analyse(self, ch: Channel, meta: FrameMeta, feat: np.ndarray) -> None:
        if meta.generation != ch.generation:
            ch.engine.reset()            # a new connection or a timestamp jump: never a window across the gap
            ch.generation = meta.generation
        ch.last_media, ch.last_wall = meta.media_time, meta.wall_time
        result, tr = ch.engine.push(meta.media_time, feat, meta.stats)
        ch.analysed += 1
        self.metrics.frames_analyzed.labels(channel=ch.name).inc()
        if result is not None:
            ch.p_ad = result.p_ad
            self.metrics.ad_probability.labels(channel=ch.name).set(result.p_ad)
            self.metrics.decision_latency.labels(channel=ch.name).observe(time.monotonic() - meta.mono_time)
        if tr is not None:
            self._transition(ch, tr)

    def _transition(self, ch: Channel, tr: Transition) -> None:
        if tr.ended is not None:
            e = tr.ended
            self._publish_segment("segment.end", ch, e.label, e.is_ad, e.confidence, e.end, duration=round(e.duration, 3))
        ch.segment_no += 1
        ch.segment_id = f"{ch.name}-{self.run_id[:8]}-{ch.segment_no}"
        conf = tr.p_ad if tr.is_ad else 1.0 - tr.p_ad
        log.info("segment start channel=%s label=%s is_ad=%s stream_time=%.2f decided_at=%.2f how=%s", ch.name, tr.label, tr.is_ad,
                 tr.boundary, tr.decided_at, tr.how)
        self._publish_segment("segment.start", ch, tr.label, tr.is_ad, round(conf, 4), tr.boundary)

    def _publish_segment(self, typ: str, ch: Channel, label: str, is_ad: bool, confidence: float, media_time: float, **extra: Any) -> None:
        if ch.segment_id is None:
            return
        self.publisher.publish(typ, ch.name, label=label, is_ad=bool(is_ad), confidence=float(confidence), segment_id=ch.segment_id,
                               time=rfc3339(ch.wall_of(media_time)), stream_time=round(float(media_time), 3), **extra)

    # ------------------------------------------------------------------ state for others
    def heartbeat_state(self) -> dict[str, dict[str, Any]]:
        out = {}
        now = time.monotonic()
        for ch in self.channels.values():
            t0, c0, a0 = ch.rate_mark
            dt = max(1e-6, now - t0)
            fps_in, fps_an = (ch.captured - c0) / dt, (ch.analysed - a0) / dt
            ch.rate_mark = (now, ch.captured, ch.analysed)
            cur = ch.engine.current
            out[ch.name] = {"state": cur[2] if cur else "unknown", "p_ad": None if ch.p_ad is None else round(ch.p_ad, 4),
                            "stream_up": bool(ch.capture and ch.capture.up), "fps_in": round(fps_in, 2), "fps_analyzed": round(fps_an, 2)}
        return out

    def health(self) -> tuple[bool, dict[str, Any]]:
        now = time.monotonic()
        details: dict[str, Any] = {"run_id": self.run_id, "channels": {}}
        ok = self.infer_thread is not None and self.infer_thread.is_alive()
        waiting = sum(len(c.ring) for c in self.channels.values())
        infer_ok = ok and (waiting == 0 or now - self.last_inference < 10.0)
        details["inference"] = "ok" if infer_ok else "stuck"
        ok = infer_ok
        if not self._stopping:      # while draining, threads stop on purpose
            dead = {d.name: d.error for d in self.watch.dead()}
            details["threads"] = {name: "dead" if name in dead else "ok" for name in self.watch.names()}
            if dead:
                ok = False
                details["dead_threads"] = dead
        if self.failure is not None:
            ok = False
            details["failure"] = self.failure
        for ch in self.channels.values():
            cap = ch.capture
            up = bool(cap and cap.up and not cap.stalled(now))
            details["channels"][ch.name] = "up" if up else "down"
            ok = ok and up
        # the journal failing does not stop publication, so it degrades rather than fails the
        # check: 200 with status "degraded" (a 503 would get a working daemon restarted by a
        # probe, which frees no disk space); ad_detector_journal_ok says it to Prometheus
        degraded: list[str] = []
        if self.publisher is not None:
            journal = self.publisher.journal_status()
            details["journal"] = journal
            if not journal["ok"]:
                degraded.append(f"journal {journal['path']}: {journal['error']} (events are published but not "
                                "journaled, so they cannot be replayed)")
        details["status"] = "degraded" if ok and degraded else "ok" if ok else "unhealthy"
        if degraded:
            details["degraded"] = degraded
        return ok, details

    # ------------------------------------------------------------------ main thread
    def request_reload(self) -> None:
        self.reload_requested.set()

    def reload(self) -> None:
        """SIGHUP: re-read the config's model and decision sections; a bad bundle is refused."""
        from detector.config import load_config

        try:
            cfg = load_config(self.cfg.source_path) if getattr(self.cfg, "source_path", None) else self.cfg
            bundle, models = load_models(cfg)
        except Exception as exc:  # anything wrong with the new bundle or config: keep running the old one
            log.error("reload refused, keeping the running model error=%r", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            return
        with self._lock:
            self._pending = (bundle, models, cfg.decision)
        self._wake.set()
        log.info("reload accepted bundle=%s sequence_sha256=%s", bundle.root, (bundle.sequence_sha256 or "")[:12])

    def _apply_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None:
            return
        bundle, models, decision = pending
        same_backbone = self.bundle is not None and bundle.backbone_sha256 == self.bundle.backbone_sha256
        self.bundle, self.models = bundle, models
        for ch in self.channels.values():
            new = self._engine(bundle, models, decision)
            new.adopt(ch.engine, keep_window=same_backbone and bundle.window_frames == ch.engine.t)
            ch.engine = new
        self._export_model_info()
        log.info("model swapped in channels=%d kept_windows=%s", len(self.channels), same_backbone)

    def supervise(self) -> None:
        now = time.monotonic()
        dead = self.watch.dead()
        if dead:
            self._fail(dead[0])
        started = self.call_started
        limit = self.cfg.inference.call_timeout_seconds
        if started is not None and now - started > limit:
            self.failure = f"an inference call has not returned for {now - started:.0f} s"
            self.metrics.healthy.set(0)
            raise RuntimeFailure(f"{self.failure} (inference.call_timeout_seconds is {limit:g}); exiting so systemd restarts "
                                 "the daemon")
        for ch in self.channels.values():
            cap = ch.capture
            if cap is None:
                continue
            if (cap.up and cap.stalled(now)) or cap.hung(now):
                cap.abandon()
        healthy, _ = self.health()
        self.metrics.healthy.set(1 if healthy else 0)
        if (healthy or self._pipeline_moving(now)) and now - self._last_ping >= self._ping_every:
            sdnotify.watchdog()
            self._last_ping = now

    def _fail(self, death: Death) -> None:
        """A thread the pipeline needs is gone: unhealthy from now on, no more watchdog pings, exit 1.

        The thread's exception and traceback were logged when it died (detector.live.threadwatch);
        this names it again in the final line, which is what `systemctl status` shows.
        """
        self.failure = f"thread {death.name} died error={death.error}"
        self.metrics.healthy.set(0)
        sdnotify.status(self.failure)
        raise RuntimeFailure(f"{self.failure}; exiting so systemd restarts the daemon")

    def _pipeline_moving(self, now: float) -> bool:
        """The watchdog is fed while inference makes progress, even if a source is down (it is being retried)."""
        return self.infer_thread is not None and self.infer_thread.is_alive() and now - self.last_inference < 10.0

    def run(self) -> int:
        def on_term(signum: int, _frame: Any) -> None:
            log.info("signal received signal=%s", signal.Signals(signum).name)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        signal.signal(signal.SIGHUP, lambda *_: self.request_reload())
        try:
            self.start()
            while not self.stop_event.wait(0.25):
                if self.reload_requested.is_set():
                    self.reload_requested.clear()
                    self.reload()
                self.supervise()
        finally:
            self.stop()
        return 0


def run_command(args: argparse.Namespace) -> int:
    from detector.config import load_config

    cfg = load_config(Path(args.config))
    return Daemon(cfg).run()
