"""The backbone as a Ray Serve deployment: one batched ONNX Runtime session per replica.

Workers send the frames they batched across their own channels; `@serve.batch` merges the
requests of every worker that arrive within `inference.max_batch_delay_ms` of the first (or
until `inference.batch_size` requests wait), the same rule as the in-process batcher, and
runs them as one call. So one replica's batch holds frames of several workers' channels,
which is what keeps a GPU busy with many channels.

A replica keeps the sizes of its batches (frames, and distinct callers) in its own
Prometheus registry; the driver reads them through `stats` and serves them on its one
endpoint as `ad_detector_replica_batch_frames` / `ad_detector_replica_batch_callers`.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from ray import serve

log = logging.getLogger("detector.cluster.backbone")

from detector.model.backends.ray_serve import APP, DEPLOYMENT  # noqa: E402  (the names the runner looks up)
FRAME_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
CALLER_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 32, 64)


def split_features(features: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    """The merged batch's features cut back into each request's share (pure)."""
    out, start = [], 0
    for n in sizes:
        out.append(features[start:start + n])
        start += n
    return out


@serve.deployment(name=DEPLOYMENT)
class Backbone:
    """One replica: the bundle's backbone in ONNX Runtime (or the engine the plan picks)."""

    def __init__(self, model_dir: str, providers: list[str], engine: str, precision: str, threads: int,
                 max_batch_size: int, batch_wait_timeout_s: float) -> None:
        from prometheus_client import CollectorRegistry, Histogram

        from detector.util.logsetup import setup_logging
        from detector.model.bundle import load_bundle
        from detector.model.models import Models

        setup_logging()
        self.bundle = load_bundle(Path(model_dir))
        self.models = Models(self.bundle, providers, threads or None, spin=False, engine=engine, precision=precision)
        self.models.warm_up((1, max_batch_size))
        self.infer.set_max_batch_size(max_batch_size)
        self.infer.set_batch_wait_timeout_s(batch_wait_timeout_s)
        self.replica = f"{os.uname().nodename}:{os.getpid()}"
        self.registry = CollectorRegistry()
        self.frames = Histogram("ad_detector_replica_batch_frames", "Frames per backbone call on a Serve replica "
                                "(merged from every worker's requests).", ["replica"], buckets=FRAME_BUCKETS,
                                registry=self.registry).labels(replica=self.replica)
        self.callers = Histogram("ad_detector_replica_batch_callers", "Distinct channel workers whose frames one "
                                 "replica batch held.", ["replica"], buckets=CALLER_BUCKETS,
                                 registry=self.registry).labels(replica=self.replica)
        self.max_frames = 0
        self.max_callers = 0
        log.info("backbone replica ready replica=%s engine=%s precision=%s in_use=%s max_batch=%d wait_ms=%.0f",
                 self.replica, self.models.plan.engine, self.models.precision, ",".join(self.models.providers_in_use),
                 max_batch_size, batch_wait_timeout_s * 1000)

    def describe(self) -> dict[str, Any]:
        """What really runs here, for the workers' `SessionInfo` and `ad_detector_model_info`."""
        info = self.models.backbone_info
        return {"engine": self.models.plan.engine, "precision": self.models.precision, "in_use": list(info.in_use),
                "requested": list(info.requested), "fallbacks": list(info.fallbacks),
                "backbone_sha256": self.models.backbone_sha256, "replica": self.replica}

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.1)
    async def infer(self, images: list[np.ndarray], callers: list[str]) -> list[np.ndarray]:
        sizes = [len(x) for x in images]
        merged = images[0] if len(images) == 1 else np.concatenate(images)
        t0 = time.perf_counter()
        feats = self.models.features(merged)
        n_callers = len(set(callers))
        self.frames.observe(len(merged))
        self.callers.observe(n_callers)
        self.max_frames = max(self.max_frames, len(merged))
        self.max_callers = max(self.max_callers, n_callers)
        log.debug("backbone batch frames=%d requests=%d callers=%d seconds=%.3f", len(merged), len(images), n_callers,
                  time.perf_counter() - t0)
        return split_features(feats, sizes)

    async def __call__(self, images: np.ndarray, caller: str) -> np.ndarray:
        return await self.infer(images, caller)

    def stats(self) -> dict[str, Any]:
        """This replica's batch histograms (Prometheus families) and the largest batch seen."""
        return {"replica": self.replica, "families": list(self.registry.collect()), "max_frames": self.max_frames,
                "max_callers": self.max_callers}


def deploy(model_dir: Path, inference: Any, backbone: Any) -> Any:
    """Start (or update) the backbone application and return its handle once every replica is up.

    `inference` is the config's inference section (batch size, delay, engine), `backbone` the
    cluster section's backbone (replicas, autoscaling bound, CPUs and GPUs per replica).
    """
    options: dict[str, Any] = {"ray_actor_options": {"num_cpus": backbone.cpus_per_replica,
                                                     "num_gpus": backbone.gpus_per_replica},
                               "max_ongoing_requests": max(32, 4 * inference.batch_size),
                               # no per-request access log: a line per batch would drown the daemon's own lines
                               "logging_config": {"enable_access_log": False, "log_level": "WARNING"}}
    if backbone.max_replicas is not None:
        options["autoscaling_config"] = {"min_replicas": backbone.replicas, "max_replicas": backbone.max_replicas,
                                         "target_ongoing_requests": max(2, inference.batch_size // 2)}
    else:
        options["num_replicas"] = backbone.replicas
    threads = inference.threads or max(1, int(backbone.cpus_per_replica))
    app = Backbone.options(**options).bind(str(model_dir), list(inference.providers), inference.engine,
                                           inference.precision, threads, inference.batch_size,
                                           inference.max_batch_delay_ms / 1000.0)
    return serve.run(app, name=APP, route_prefix=None, blocking=False)
