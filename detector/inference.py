"""The one inference interface of the runtime: ONNX Runtime in-process today.

Nothing else in `detector/` knows which engine runs the graphs, so a Triton client can
take this module's place for pooled GPUs (DESIGN.md, "Growing past one machine").

Execution providers are requested in order and the ones actually in use are reported:
a GPU provider that silently falls back to CPU is exactly the kind of degradation the
house rules forbid, so every fallback is logged and kept in `fallbacks`.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detector.bundle import BACKBONE_INPUT, SEQUENCE_INPUT, Bundle

log = logging.getLogger(__name__)

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def nvidia_driver_present() -> bool:
    """Whether the NVIDIA driver library loads; without it CUDA/TensorRT cannot start.

    Checking first avoids ONNX Runtime's multi-line error dump on CPU-only machines while
    still saying plainly that the GPU was requested and is not there.
    """
    try:
        ctypes.CDLL("libcuda.so.1")
        return True
    except OSError:
        return False


def resolve_providers(requested: Sequence[str], available: Sequence[str], driver_present: bool) -> tuple[list[str], list[str]]:
    """Pure selection: which of the requested providers to try, and why others were dropped.

    Returns (providers to pass to ONNX Runtime, human-readable reasons for each dropped one).
    CPU is always appended last so a session can be created at all.
    """
    chosen: list[str] = []
    dropped: list[str] = []
    for name in requested:
        if name in chosen:
            continue
        if name not in available:
            dropped.append(f"{name} is not in this onnxruntime build (available: {', '.join(available)})")
        elif name in GPU_PROVIDERS and not driver_present:
            dropped.append(f"{name} needs an NVIDIA GPU and driver (libcuda.so.1 not found)")
        else:
            chosen.append(name)
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen, dropped


@dataclass
class SessionInfo:
    path: Path
    requested: list[str]
    in_use: list[str]
    fallbacks: list[str] = field(default_factory=list)


def make_session(path: Path, requested: Sequence[str], threads: int | None = None, spin: bool = True) -> tuple[Any, SessionInfo]:
    """An ONNX Runtime session with the requested providers, and what it really uses.

    `spin=False` stops idle intra-op threads from busy-waiting for the next call: the live
    daemon calls the backbone a few times a second and would otherwise burn CPU the
    capture threads need; offline runs keep spinning (back-to-back calls, a bit faster).
    """
    import onnxruntime as ort

    chosen, dropped = resolve_providers(list(requested), ort.get_available_providers(), nvidia_driver_present())
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), opts, providers=chosen)
    in_use = list(session.get_providers())
    fallbacks = list(dropped)
    for name in chosen:
        if name not in in_use:
            fallbacks.append(f"{name} failed to start in ONNX Runtime")
    for reason in fallbacks:
        log.warning("execution provider fallback model=%s reason=%r in_use=%s", path.name, reason, ",".join(in_use))
    return session, SessionInfo(path=Path(path), requested=list(requested), in_use=in_use, fallbacks=fallbacks)


def default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


class Models:
    """Both graphs of a bundle, ready to run."""

    def __init__(self, bundle: Bundle, providers: Sequence[str] = ("CPUExecutionProvider",), threads: int | None = None,
                 spin: bool = True):
        self.bundle = bundle
        self.backbone, self.backbone_info = make_session(bundle.backbone_path, providers, threads, spin)
        self.sequence = None
        self.sequence_info: SessionInfo | None = None
        if bundle.sequence_path is not None:
            self.sequence, self.sequence_info = make_session(bundle.sequence_path, providers, threads, spin)

    @property
    def providers_in_use(self) -> list[str]:
        return self.backbone_info.in_use

    def features(self, images: np.ndarray) -> np.ndarray:
        """uint8 BGR [N, H, W, 3] -> float32 [N, D]."""
        return self.backbone.run(None, {BACKBONE_INPUT: images})[0]

    def probabilities(self, windows: np.ndarray) -> np.ndarray:
        """float32 [N, T, D] -> float32 [N, C]."""
        if self.sequence is None:
            raise RuntimeError("bundle has no sequence model")
        return self.sequence.run(None, {SEQUENCE_INPUT: np.ascontiguousarray(windows, dtype=np.float32)})[0]

    def warm_up(self) -> None:
        """One call of each graph, so the first real frame does not pay for allocation."""
        h, w = self.bundle.input_size
        feats = self.features(np.zeros((1, h, w, 3), np.uint8))
        if self.sequence is not None:
            self.probabilities(np.zeros((1, self.bundle.window_frames, feats.shape[1]), np.float32))
