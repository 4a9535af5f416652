"""A channel worker: a Ray actor running the single-process pipeline for a group of channels.

Each worker is the daemon minus its outputs: capture threads, rings, the inference thread
(cross-channel batches of *its* channels, sent to the backbone deployment), each channel's
`ChannelEngine` and decision: the same classes `ad-detector run` uses on one machine, so the
events are the same. What it would publish it keeps in an `EventBuffer`; the driver collects
the buffer, its metrics and its channels' state with `poll` and publishes them through the
one publisher, so `seq` stays one sequence for the whole cluster.

A worker whose pipeline breaks (a thread died, a backbone call stuck past the timeout) exits
its process: Ray restarts the actor (`cluster.worker_max_restarts`), which opens its sources
again, and the driver tells subscribers with `stream.down` / `stream.up`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from typing import Any

import cv2
from prometheus_client import Counter

from detector.analysis.audio import AudioBuffer
from detector.config import Config
from detector.errors import RuntimeFailure
from detector.live.channel import Channel
from detector.live.daemon import Daemon
from detector.live.ring import Ring
from detector.model.backends.ray_serve import RayServeRunner
from detector.model.bundle import load_bundle
from detector.model.models import Models
from detector.sources.video import quiet_native_logs

log = logging.getLogger("detector.cluster.worker")

SUPERVISE_SECONDS = 0.25


class EventBuffer:
    """The worker's event sink: kept in order until the driver collects them (never blocks)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[tuple[str, str, dict[str, Any]]] = []

    def publish(self, type: str, channel: str, **fields: Any) -> None:
        with self._lock:
            self._items.append((type, channel, fields))

    def drain(self) -> list[tuple[str, str, dict[str, Any]]]:
        with self._lock:
            items, self._items = self._items, []
        return items


class WorkerPipeline(Daemon):
    """The daemon's stages for this worker's channels, without metrics server, outputs or systemd."""

    def __init__(self, cfg: Config, run_id: str, worker: str) -> None:
        super().__init__(cfg)
        self.run_id = run_id                 # the driver's: segment ids and events belong to its run
        self.worker = worker
        self.buffer = EventBuffer()
        self.events = self.buffer            # type: ignore[assignment]
        self.backbone_retries = Counter("ad_detector_backbone_retries", "Backbone calls sent again because a Serve "
                                        "replica failed or none was up (cluster runs).", registry=self.metrics.registry)

    def start(self) -> None:
        cfg = self.cfg
        assert cfg.cluster is not None
        self.watch.install()
        quiet_native_logs()
        cv2.setNumThreads(1)
        runner = RayServeRunner.connect(self.worker, cfg.cluster.backbone_timeout_seconds,
                                        on_retry=lambda error: self.backbone_retries.inc())
        self.bundle = load_bundle(cfg.model)
        self.models = Models(self.bundle, ("CPUExecutionProvider",), 1, spin=False, backbone=runner)
        self.models.warm_up((1,))
        self._export_model_info()
        h, w = self.bundle.input_size
        for c in cfg.channels:
            self.channels[c.name] = Channel(c.name, Ring(cfg.capture.ring_capacity, (h, w, 3)),
                                            self._engine(self.bundle, self.models, cfg.decision),
                                            audio=AudioBuffer(seconds=cfg.capture.audio_buffer_seconds))
        self._run_stage(self._final_events_stage())
        self._run_stage(self._inference_stage())
        for c in cfg.channels:
            self._run_stage(self._capture_stage(c))
        log.info("worker ready worker=%s channels=%s backbone=%s", self.worker, ",".join(self.names),
                 runner.info.engine)

    def _final_events_stage(self) -> Any:
        from detector.live.daemon import Stage

        return Stage("final events", lambda: None, self._final_events)

    def report(self) -> dict[str, Any]:
        """What the driver needs each poll: events since the last, metrics, each channel's state."""
        now = time.monotonic()
        channels = {}
        for ch in self.channels.values():
            cap = ch.capture
            cur = ch.engine.current
            channels[ch.name] = {
                "state": cur[2] if cur else "unknown", "p_ad": ch.p_ad, "up": ch.up,
                "stalled": bool(cap and cap.stalled(now)), "faults": list(cap.faults.open_kinds()) if cap else [],
                "captured": ch.captured, "analysed": ch.analysed, "media": ch.last_media, "wall": ch.last_wall,
                "waiting": len(ch.ring)}
        loop = self.inference
        return {"events": self.buffer.drain(), "families": list(self.metrics.registry.collect()), "channels": channels,
                "inference_alive": loop is not None and loop.alive(),
                "inference_idle": now - loop.last_inference if loop else 0.0}


class ChannelGroup:
    """The Ray actor around one `WorkerPipeline` (created by the driver with `ray.remote`)."""

    def __init__(self, cfg: Config, names: list[str], run_id: str, worker: str) -> None:
        for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            os.environ.pop(key, None)        # only the driver speaks to systemd
        from detector.util.logsetup import setup_logging

        setup_logging()
        group = cfg.model_copy(update={"channels": [c for c in cfg.channels if c.name in names]})
        self.incarnation = uuid.uuid4().hex
        self.pipeline = WorkerPipeline(group, run_id, worker)
        self.pipeline.start()
        self._stop = threading.Event()
        threading.Thread(target=self._supervise, name="worker-supervisor", daemon=True).start()

    def ready(self) -> tuple[str, int]:
        """(incarnation, pid): a new incarnation after each restart; the pid names the process in the logs."""
        return self.incarnation, os.getpid()

    def poll(self) -> dict[str, Any]:
        out = self.pipeline.report()
        out["incarnation"] = self.incarnation
        out["pid"] = os.getpid()
        return out

    def stop(self) -> list[tuple[str, str, dict[str, Any]]]:
        """Drain: captures, inference, the final events (open segments end, streams go down)."""
        self._stop.set()
        self.pipeline.stop()
        return self.pipeline.buffer.drain()

    def _supervise(self) -> None:
        while not self._stop.wait(SUPERVISE_SECONDS):
            try:
                self.pipeline.supervise()
            except RuntimeFailure as exc:
                if self._stop.is_set():
                    return
                log.error("worker failed, exiting so Ray restarts it worker=%s error=%r", self.pipeline.worker, str(exc))
                logging.shutdown()
                os._exit(1)
