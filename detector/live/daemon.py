"""`ad-detector run`: the orchestrator. Builds the stages, starts them in order, stops them in reverse.

    models (loaded, warmed up) -> metrics HTTP -> outputs (ZeroMQ publisher, journal) ->
    inline markers (channels with an `output`) -> inference thread -> one capture thread per
    channel -> READY=1

Frames flow capture -> ring -> inference thread (cross-channel batches, then each channel's
`ChannelEngine`, the same code as `classify`) -> outputs. Stopping runs the same list
backwards: captures, inference (the batch in flight finishes), the final events (each open
segment ends, each stream goes down), the markers (what they hold goes out, with the cue-in
of a break still open), outputs (queued events delivered), metrics.

The main thread only supervises: signals (SIGTERM/SIGINT drain and exit 0; SIGHUP reloads
the bundle and decision settings, loaded on a thread of its own so the watchdog keeps being
fed), stalled captures, dead threads (detector.live.threadwatch), a stuck inference call,
and the systemd watchdog (pinged only while the pipeline makes progress).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2

from detector.analysis.boundary import STREAM_END
from detector.analysis.engine import ChannelEngine
from detector.config import ChannelConfig, Config, DecisionConfig, load_config, state_dir_from
from detector.errors import RuntimeFailure, UsageError
from detector.events.curve import exposure_warnings
from detector.events.outputs import Output, build_outputs
from detector.live import sdnotify
from detector.live.capture import Capture, CaptureSettings
from detector.live.channel import Channel, ChannelMonitor
from detector.live.health import ChannelHealth, HealthInputs, assess
from detector.live.inference_loop import InferenceLoop, flag_fields, publish_segment
from detector.live.loader import ModelLoader
from detector.live.metrics import Metrics
from detector.live.ring import Ring
from detector.live.server import MetricsServer
from detector.live.threadwatch import Death, ThreadWatch
from detector.marker.checks import marker_warnings
from detector.marker.marker import InlineMarker, MarkerSettings
from detector.model.bundle import Bundle, load_bundle
from detector.model.models import Models
from detector.model.plan import GPU_PROVIDERS
from detector.sources.video import quiet_native_logs
from detector.analysis.audio import AudioBuffer

log = logging.getLogger(__name__)

# How long a stop waits, in all, for the capture threads to leave libav. They are all told to stop
# first, so they wind down together; one still blocked in a read (it leaves at its read timeout)
# is left to the CLI's exit guard (detector/util/exitguard.py) rather than delaying the 5 s drain.
CAPTURE_JOIN_SECONDS = 2.0
LIVE_SEGMENTS_KEPT = 16      # the daemon publishes segments as they close; memory stays flat over months


def load_models(cfg: Config) -> tuple[Bundle, Models]:
    """The bundle and its two graphs, warmed up at both ends of the batch range (before READY)."""
    bundle = load_bundle(Path(cfg.model))
    inf = cfg.inference
    models = Models(bundle, inf.providers, inf.threads or None, spin=False, engine=inf.engine, precision=inf.precision,
                    gpu=inf.gpu_options())
    if inf.require_gpu and not any(p in GPU_PROVIDERS for p in models.providers_in_use):
        raise UsageError(f"inference.require_gpu is true but no GPU provider started (in use: {', '.join(models.providers_in_use)}); "
                         "check the NVIDIA driver, CUDA and cuDNN, or set require_gpu: false")
    models.warm_up((1, inf.batch_size))
    return bundle, models


def reload_refusal(running: Bundle, new: Bundle) -> str | None:
    """Why a new bundle cannot replace the running one without restarting the captures, or None.

    The captures sample at the bundle's analysis rate and resize to its input size; a bundle
    that wants other frames would be fed the wrong ones (wrong decisions, or a crash on shape).
    """
    if new.analysis_fps != running.analysis_fps:
        return f"analysis_fps {new.analysis_fps:g} differs from the running {running.analysis_fps:g} (restart the daemon to change it)"
    if tuple(new.input_size) != tuple(running.input_size):
        return f"input_size {list(new.input_size)} differs from the running {list(running.input_size)} (restart the daemon to change it)"
    return None


@dataclass
class Stage:
    """One part of the pipeline as the orchestrator sees it: started in order, stopped in reverse."""

    name: str
    start: Callable[[], None]
    stop: Callable[[], None]


class Fanout:
    """Every output gets every event; `publish` only queues (each output's own thread sends)."""

    def __init__(self, outputs: list[Output]):
        self.outputs = outputs

    def publish(self, type: str, channel: str, **fields: Any) -> None:
        for out in self.outputs:
            out.publish(type, channel, **fields)


class Daemon:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.run_id = uuid.uuid4().hex
        self.names = [c.name for c in cfg.channels]
        self.metrics = Metrics(self.names, marker_channels=[c.name for c in cfg.channels if c.output is not None])
        self.watch = ThreadWatch()
        self.stop_event = threading.Event()
        self.reload_requested = threading.Event()
        self.bundle: Bundle | None = None
        self.models: Models | None = None
        self.channels: dict[str, Channel] = {}
        self.markers: dict[str, InlineMarker] = {}
        self.outputs: list[Output] = []
        self.events = Fanout(self.outputs)
        self.inference: InferenceLoop | None = None
        self.server: MetricsServer | None = None
        self.stages: list[Stage] = []
        self.failure: str | None = None           # why the supervisor gave up (health says it until exit)
        self._stopping = False
        self._join_deadline = 0.0
        self.loader = ModelLoader()             # builds and releases every model (detector.live.loader)
        interval = sdnotify.watchdog_interval()
        self._ping_every = min(1.0, interval / 2) if interval else 1.0   # systemd wants at least every WatchdogSec/2
        self._last_ping = 0.0

    # ------------------------------------------------------------------ start / stop
    def start(self) -> None:
        cfg = self.cfg
        self.watch.install()          # before any thread starts, so no exception goes unlogged
        quiet_native_logs()
        # each capture thread converts its own frames; OpenCV's pool splitting a 1 ms resize
        # over both cores would only contend with decode and inference (README, "Threads")
        cv2.setNumThreads(1)
        self.bundle, self.models = self.loader.call(lambda: load_models(cfg))
        self.watch.watch("model-loader", lambda: self.loader.thread)
        self._export_model_info()
        log.info("models ready bundle=%s providers=%s classes=%s window_frames=%d fps=%s", self.bundle.root,
                 ",".join(self.models.providers_in_use), ",".join(self.bundle.classes), self.bundle.window_frames,
                 self.bundle.analysis_fps)
        h, w = self.bundle.input_size
        for c in cfg.channels:
            self.channels[c.name] = Channel(c.name, Ring(cfg.capture.ring_capacity, (h, w, 3)),
                                            self._engine(self.bundle, self.models, cfg.decision),
                                            audio=AudioBuffer(seconds=cfg.capture.audio_buffer_seconds))
        self._run_stage(self._metrics_stage())
        self._run_stage(self._outputs_stage())
        for c in cfg.channels:
            if c.output is not None:
                self._run_stage(self._marker_stage(c))
        self._run_stage(Stage("final events", lambda: None, self._final_events))
        self._run_stage(self._inference_stage())
        for c in cfg.channels:
            self._run_stage(self._capture_stage(c))
        sdnotify.ready()
        sdnotify.status(f"watching {len(self.channels)} channel(s)")
        log.info("daemon ready run_id=%s channels=%s events=%s metrics=%s", self.run_id, ",".join(self.names), cfg.events.bind,
                 cfg.metrics.bind)

    def _run_stage(self, stage: Stage) -> None:
        stage.start()
        self.stages.append(stage)

    def stop(self) -> None:
        """The stages in reverse order; each one's failure is logged and the rest still stop."""
        self._stopping = True
        sdnotify.stopping()
        log.info("stopping")
        self._join_deadline = time.monotonic() + CAPTURE_JOIN_SECONDS
        for ch in self.channels.values():
            if ch.capture is not None:
                ch.capture.stop()     # every capture winds down at once; the stages join them in turn
        for stage in reversed(self.stages):
            try:
                stage.stop()
            except Exception:  # noqa: BLE001 - keep stopping the others, say which one failed
                log.exception("stopping failed stage=%s", stage.name)
        self.stages.clear()
        log.info("stopped run_id=%s", self.run_id)
        self.watch.uninstall()

    # ------------------------------------------------------------------ the stages
    def _metrics_stage(self) -> Stage:
        self.server = MetricsServer(self.cfg.metrics.bind, self.metrics, self.health)
        server = self.server

        def start() -> None:
            server.start()
            self.watch.watch("metrics-http", lambda: server.thread)
        return Stage("metrics", start, server.stop)

    def _outputs_stage(self) -> Stage:
        ev = self.cfg.events
        for warning in exposure_warnings(ev.bind, ev.snapshot_bind, ev.curve is not None):
            log.warning("insecure events socket: %s", warning)
        self.outputs[:] = build_outputs(ev, self.run_id, self.names, self.metrics, self.heartbeat_state)

        def start() -> None:
            for out in self.outputs:
                out.start()
                self.watch.watch_all(out.watched_threads())

        def stop() -> None:
            for out in reversed(self.outputs):
                out.stop()
        return Stage("outputs", start, stop)

    def _marker_stage(self, c: ChannelConfig) -> Stage:
        """The channel's inline marker: fed by its capture's tap, cued by its ad segment events."""
        assert c.output is not None
        o = c.output
        for warning in marker_warnings(self.cfg):
            if warning.startswith(f"channels[{self.names.index(c.name)}]."):
                log.warning("marker delay short channel=%s warning=%r", c.name, warning)
        marker = self.markers[c.name] = InlineMarker(c.name, MarkerSettings(o.url, o.delay_seconds, o.preroll_seconds,
                                                                            o.max_buffer_bytes), self.metrics)
        self.channels[c.name].cue_sinks.append(marker.cue)

        def start() -> None:
            marker.start()
            self.watch.watch(f"marker-{c.name}", lambda: marker.thread)
        return Stage(f"marker-{c.name}", start, marker.stop)

    def _inference_stage(self) -> Stage:
        assert self.bundle is not None and self.models is not None
        inf = self.cfg.inference
        loop = self.inference = InferenceLoop(list(self.channels.values()), self.bundle, self.models, inf.batch_size,
                                              inf.max_batch_delay_ms, self.metrics, self.events, self.run_id, self._engine,
                                              retire=self.loader.retire)
        loop.on_swapped = self._swapped

        def start() -> None:
            loop.start()
            self.watch.watch("inference", lambda: loop.thread)
        return Stage("inference", start, loop.stop)

    def _capture_stage(self, c: ChannelConfig) -> Stage:
        assert self.bundle is not None
        ch = self.channels[c.name]
        k = self.cfg.capture
        settings = CaptureSettings(source=c.source, realtime=c.realtime,
                                   open_timeout=k.open_timeout_seconds, read_timeout=k.read_timeout_seconds,
                                   stall_seconds=k.stall_seconds, reconnect_initial=k.reconnect_initial_seconds,
                                   reconnect_max=k.reconnect_max_seconds, rtsp_transport=k.rtsp_transport,
                                   fault_quiet=k.fault_quiet_seconds, hls_read_timeout=k.hls_read_timeout_seconds,
                                   udp_fifo_packets=k.udp_fifo_packets, decode_threads=k.decode_threads,
                                   skip_nonref=k.skip_nonref_frames,
                                   tap=self.markers[c.name].feed if c.name in self.markers else None)
        ch.capture = Capture(c.name, settings, ch.ring, self.bundle.analysis_fps, self.bundle.input_size,
                             ChannelMonitor(ch, self.metrics, self.events), audio=ch.audio, loudness=ch.loudness)
        cap = ch.capture

        def start() -> None:
            cap.start()
            self.watch.watch(f"capture-{c.name}", lambda: cap.thread)

        def stop() -> None:
            cap.stop()
            cap.join(max(0.2, self._join_deadline - time.monotonic()))
            if cap.alive():
                log.warning("capture still inside its source at stop channel=%s (leaves at its read timeout)", ch.name)
            dropped = ch.ring.clear()
            if dropped:
                self.metrics.frames_dropped.labels(channel=ch.name, reason="shutdown").inc(dropped)
        return Stage(f"capture-{c.name}", start, stop)

    def _final_events(self) -> None:
        """After captures and inference stopped: each open segment ends, each stream goes down."""
        for ch in self.channels.values():
            seg = ch.engine.finish(ch.last_media) if ch.engine.current else None
            if seg is not None:
                lufs = ch.loudness.segment_integrated(until=seg.end)
                publish_segment(self.events, "segment.end", ch, seg.label, seg.is_ad, seg.confidence, seg.end, STREAM_END,
                                pts=ch.pts_marks.pts_at(seg.end), withdrawn=seg.withdrawn, duration=round(seg.duration, 3),
                                integrated_lufs=None if lufs is None else round(lufs, 1), **flag_fields(seg))
            if ch.up:
                self.metrics.stream_up.labels(channel=ch.name).set(0)
                self.events.publish("stream.down", ch.name, reason="shutdown")

    def _engine(self, bundle: Bundle, models: Models, decision: DecisionConfig) -> ChannelEngine:
        hist = self.metrics.inference_seconds.labels(model="sequence")

        def probabilities(windows: Any, cues: Any = None) -> Any:
            t0 = time.perf_counter()
            out = models.probabilities(windows, cues)
            hist.observe(time.perf_counter() - t0)
            return out
        return ChannelEngine(bundle, probabilities, decision.to_settings(), decision.hop_seconds, keep_segments=LIVE_SEGMENTS_KEPT)

    def _export_model_info(self) -> None:
        assert self.bundle and self.models
        self.metrics.set_model_info(self.bundle.classes, self.models.backbone_sha256, self.bundle.sequence_sha256 or "",
                                    self.models.providers_in_use, self.models.precision)
        for info, model in ((self.models.backbone_info, "backbone"), (self.models.sequence_info, "sequence")):
            if info and info.fallbacks:
                self.metrics.provider_fallbacks.labels(model=model).inc(len(info.fallbacks))

    # ------------------------------------------------------------------ state for others
    def heartbeat_state(self) -> dict[str, dict[str, Any]]:
        out = {}
        now = time.monotonic()
        for ch in self.channels.values():
            fps_in, fps_an = ch.rates(now)
            cur = ch.engine.current
            out[ch.name] = {"state": cur[2] if cur else "unknown", "p_ad": None if ch.p_ad is None else round(ch.p_ad, 4),
                            "stream_up": ch.up, "fps_in": round(fps_in, 2), "fps_analyzed": round(fps_an, 2)}
        return out

    def health(self) -> tuple[bool, dict[str, Any]]:
        now = time.monotonic()
        loop = self.inference
        channels = {}
        for ch in self.channels.values():
            cap = ch.capture
            channels[ch.name] = ChannelHealth(up=ch.up, stalled=bool(cap and cap.stalled(now)),
                                              faults=tuple(cap.faults.open_kinds()) if cap else ())
        return assess(HealthInputs(
            run_id=self.run_id, now=now, inference_alive=loop is not None and loop.alive(),
            frames_waiting=sum(len(c.ring) for c in self.channels.values()),
            last_inference=loop.last_inference if loop else 0.0, watched=self.watch.names(),
            dead={d.name: d.error for d in self.watch.dead()}, stopping=self._stopping, failure=self.failure,
            channels=channels, outputs={**{out.name: out.health() for out in self.outputs},
                                        **{f"marker-{name}": m.health() for name, m in self.markers.items()}}))

    # ------------------------------------------------------------------ main thread
    def request_reload(self) -> None:
        self.reload_requested.set()

    def reload(self) -> None:
        """SIGHUP: load the config's model and decision sections on the model-loader thread.

        Loading and warming up a model can take minutes (a TensorRT engine build); on the main
        thread no watchdog ping would happen meanwhile and systemd would kill the daemon, and
        SIGTERM would wait for it. A SIGHUP during a reload is folded into the one in progress.
        """
        if not self.loader.background(self._load_new_model):
            log.info("reload already in progress; this request is folded into it")

    def _load_new_model(self) -> None:
        """Load, check against the running bundle, hand over to the inference thread; any problem keeps the old one."""
        try:
            cfg = load_config(self.cfg.source_path, self.cfg.state_dir) if self.cfg.source_path is not None else self.cfg
            bundle, models = load_models(cfg)
        except Exception as exc:  # noqa: BLE001 - anything wrong with the new bundle or config: keep running the old one
            log.error("reload refused, keeping the running model error=%r", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            return
        assert self.bundle is not None and self.inference is not None
        refusal = reload_refusal(self.bundle, bundle)
        if refusal is not None:
            log.error("reload refused, keeping the running model error=%r", f"{bundle.root}: {refusal}")
            return
        self.inference.swap(bundle, models, cfg.decision)
        log.info("reload accepted bundle=%s sequence_sha256=%s", bundle.root, (bundle.sequence_sha256 or "")[:12])

    def _swapped(self, bundle: Bundle, models: Models) -> None:
        """On the inference thread, once the new model runs."""
        self.bundle, self.models = bundle, models
        self._export_model_info()

    def supervise(self) -> None:
        now = time.monotonic()
        dead = self.watch.dead()
        if dead:
            self._fail(dead[0])
        loop = self.inference
        started = loop.call_started if loop else None
        limit = self.cfg.inference.call_timeout_seconds
        if started is not None and now - started > limit:
            self.failure = f"an inference call has not returned for {now - started:.0f} s"
            self.metrics.healthy.set(0)
            raise RuntimeFailure(f"{self.failure} (inference.call_timeout_seconds is {limit:g}); exiting so systemd restarts "
                                 "the daemon")
        for ch in self.channels.values():
            cap = ch.capture
            if cap is not None and ((cap.up and cap.stalled(now)) or cap.hung(now)):
                cap.abandon()
        # healthy covers inference making progress and every output delivering (a stuck publisher
        # is unhealthy); a source being retried is only "degraded", so pings go on through it
        healthy, _ = self.health()
        self.metrics.healthy.set(1 if healthy else 0)
        if healthy and now - self._last_ping >= self._ping_every:
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
    return Daemon(load_config(Path(args.config), state_dir_from(os.environ))).run()
