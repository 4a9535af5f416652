"""The backbone behind a Ray Serve deployment (detector.cluster.backbone): a remote runner.

Used by the channel workers of a cluster run. One call sends the batch a worker cut across
its channels; the replica merges it with other workers' requests (`@serve.batch`). A call
that fails because a replica died or none is up yet (a restart, an autoscaling step) is sent
again until `timeout` has passed since the first attempt: Serve routes it to a live replica.
Each retry is logged and counted; past the timeout the error goes up and the worker's
inference thread dies, which ends the worker and lets Ray restart it (stream.down/up).

Not in the engine registry: `inference.engine` still names what runs *on the replica*; this
runner is chosen by the `cluster` section, not by the engine name.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from detector.model.backends.base import BackboneRunner, RunSettings, SessionInfo
from detector.model.plan import Plan

log = logging.getLogger("detector.model.backends.ray_serve")

APP = "ad-detector"          # the Serve application and deployment detector.cluster.backbone runs
DEPLOYMENT = "Backbone"


def retry_delays(first: float = 0.1, cap: float = 2.0) -> Any:
    """Backoff between attempts: doubling from `first` up to `cap` (pure generator)."""
    delay = first
    while True:
        yield delay
        delay = min(cap, delay * 2)


class RayServeRunner(BackboneRunner):
    """Frames to the backbone deployment, features back; retries across replica failures."""

    engine = "ray_serve"

    def __init__(self, handle: Any, info: SessionInfo, caller: str, timeout: float,
                 on_retry: Callable[[str], None] = lambda error: None) -> None:
        self.handle = handle
        self.info = info
        self.caller = caller           # the worker's name: the replica counts distinct callers per batch
        self.timeout = timeout
        self.on_retry = on_retry

    @classmethod
    def open(cls, plan: Plan, settings: RunSettings) -> RayServeRunner:
        raise NotImplementedError("RayServeRunner is made with RayServeRunner.connect (it needs the deployment handle)")

    @classmethod
    def connect(cls, caller: str, timeout: float, on_retry: Callable[[str], None] = lambda error: None) -> RayServeRunner:
        """The handle of the running backbone deployment and what its replicas run."""
        from ray import serve

        handle = serve.get_deployment_handle(DEPLOYMENT, app_name=APP)
        runner = cls(handle, SessionInfo(path=Path("."), requested=[], in_use=[]), caller, timeout, on_retry)
        d = runner._call(lambda: handle.describe.remote())
        runner.info = SessionInfo(path=Path(d["replica"]), requested=d["requested"],
                                  in_use=[f"ray_serve:{p}" for p in d["in_use"]], fallbacks=d["fallbacks"],
                                  engine=f"ray_serve/{d['engine']}", precision=d["precision"])
        runner.backbone_sha256 = d["backbone_sha256"]
        return runner

    def _call(self, submit: Callable[[], Any]) -> Any:
        t0 = time.monotonic()
        deadline = t0 + self.timeout
        delays = retry_delays()
        attempt = 0
        while True:
            left = deadline - time.monotonic()
            attempt += 1
            try:
                out = submit().result(timeout_s=max(0.5, left))
                if attempt > 1:
                    log.info("backbone call recovered caller=%s attempts=%d seconds=%.1f", self.caller, attempt,
                             time.monotonic() - t0)
                return out
            except Exception as exc:  # noqa: BLE001 - any replica failure: try another until the deadline
                error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                if time.monotonic() + 0.1 >= deadline:
                    raise RuntimeError(f"backbone deployment gave no answer within {self.timeout:g} s "
                                       f"(cluster.backbone_timeout_seconds): {error}") from exc
                log.warning("backbone call failed, retrying caller=%s error=%r", self.caller, error[:200])
                self.on_retry(error)
                time.sleep(min(next(delays), max(0.0, deadline - time.monotonic())))

    def __call__(self, images: np.ndarray) -> np.ndarray:
        frames = np.ascontiguousarray(images)
        return self._call(lambda: self.handle.infer.remote(frames, self.caller))
