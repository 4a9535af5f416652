"""The backbone on OpenVINO's CPU plugin: the fast path on a CPU-only broadcast machine.

On a machine without a GPU the backbone is the bottleneck, and OpenVINO runs the same ONNX
files several times faster than ONNX Runtime's CPU provider (int8 on VNNI/AMX, bf16 on AMX;
bench/RESULTS.md). The `openvino` runtime package is its own library, so it installs beside
onnxruntime-gpu without conflict (unlike the onnxruntime-openvino build, which replaces it).
Its capabilities decide which precisions the plan may choose, so they are read here and
nowhere else.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from detector.model.backends.base import BackboneRunner, RunSettings, SessionInfo
from detector.model.plan import Plan

log = logging.getLogger(__name__)

OPENVINO_DEVICE = "OpenVINO:CPU"


def openvino_capabilities() -> list[str] | None:
    """OpenVINO's CPU capabilities (e.g. FP32, BF16, INT8), or None when it is not installed."""
    try:
        import openvino as ov
    except ImportError:
        return None
    try:
        return [str(c) for c in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]
    except Exception as exc:  # noqa: BLE001 - a broken install is reported, ORT still works
        log.warning("openvino is installed but its CPU plugin failed to start error=%r", str(exc).splitlines()[0][:200])
        return None


class OpenVinoRunner(BackboneRunner):
    """The backbone compiled by OpenVINO's CPU plugin.

    The graph keeps its dynamic batch axis (OpenVINO compiles dynamic shapes; measured as
    fast as a static shape at batch 16 here), so one compiled model serves every batch the
    batcher forms. The precision hint is always set explicitly: on CPUs with AMX OpenVINO
    otherwise switches fp32 graphs to bf16 by itself, and the user asked for what they asked.
    """

    engine = "openvino"

    def __init__(self, path: Path, precision: str, threads: int | None) -> None:
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(path))
        cfg: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY",
                               "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"}
        if threads:
            cfg["INFERENCE_NUM_THREADS"] = int(threads)
        self.compiled = core.compile_model(model, "CPU", cfg)
        self.request = self.compiled.create_infer_request()
        self.output = self.compiled.output(0)
        self.info = SessionInfo(path=Path(path), requested=[OPENVINO_DEVICE], in_use=[OPENVINO_DEVICE],
                                engine="openvino", precision=precision)

    @classmethod
    def open(cls, plan: Plan, settings: RunSettings) -> OpenVinoRunner:
        return cls(plan.file, plan.precision, settings.threads)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        result = self.request.infer({0: np.ascontiguousarray(images)})
        return np.array(result[self.output], dtype=np.float32, copy=True)
