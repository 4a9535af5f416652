"""The backbone on ONNX Runtime: the reference path, and the one that reaches NVIDIA GPUs.

ONNX Runtime is what training, the parity checks and the sequence model use, and its CUDA
and TensorRT providers are how a GPU runs the backbone. Everything GPU-specific is here so
it can be tested without a GPU: provider resolution and options are pure functions, and the
I/O-binding runner is the same code on the CPU device. A requested GPU provider that cannot
start is logged as a fallback (and counted by the daemon), never silently dropped.

`onnxruntime` is imported inside the functions that need it: naming an engine in the
registry must not load every engine's library.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

import numpy as np

from detector.model.backends.base import BackboneRunner, RunSettings, SessionInfo
from detector.model.bundle import BACKBONE_INPUT
from detector.model.plan import GPU_PROVIDERS, GpuOptions, Plan, resolve_providers

log = logging.getLogger(__name__)


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


def available_providers() -> list[str]:
    """The execution providers this onnxruntime build has (not whether they can start)."""
    import onnxruntime as ort

    return list(ort.get_available_providers())


def provider_options(providers: Sequence[str], gpu: GpuOptions, input_size: tuple[int, int] = (299, 299)) -> list[dict[str, str]]:
    """ONNX Runtime provider options, one dict per provider, in the same order (pure).

    TensorRT needs an optimisation profile for the dynamic batch axis, otherwise it rebuilds
    its engine for every new batch size; the engine cache (and the timing cache beside it)
    makes a restart load the engine instead of building it again.
    """
    h, w = input_size
    out: list[dict[str, str]] = []
    for name in providers:
        if name == "TensorrtExecutionProvider":
            opts = {"device_id": str(gpu.device_id), "trt_fp16_enable": "1" if gpu.fp16 else "0",
                    "trt_profile_min_shapes": f"{BACKBONE_INPUT}:1x{h}x{w}x3",
                    "trt_profile_opt_shapes": f"{BACKBONE_INPUT}:{gpu.max_batch}x{h}x{w}x3",
                    "trt_profile_max_shapes": f"{BACKBONE_INPUT}:{gpu.max_batch}x{h}x{w}x3"}
            if gpu.tensorrt_cache_dir is not None:
                opts.update({"trt_engine_cache_enable": "1", "trt_engine_cache_path": str(gpu.tensorrt_cache_dir),
                             "trt_timing_cache_enable": "1", "trt_timing_cache_path": str(gpu.tensorrt_cache_dir)})
            out.append(opts)
        elif name == "CUDAExecutionProvider":
            out.append({"device_id": str(gpu.device_id), "cudnn_conv_algo_search": "HEURISTIC",
                        "do_copy_in_default_stream": "1"})
        else:
            out.append({})
    return out


def make_session(path: Path, requested: Sequence[str], threads: int | None = None, spin: bool = True,
                 gpu: GpuOptions | None = None, input_size: tuple[int, int] = (299, 299)) -> tuple[Any, SessionInfo]:
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
    session = ort.InferenceSession(str(path), opts, providers=chosen,
                                   provider_options=provider_options(chosen, gpu or GpuOptions(), input_size))
    in_use = list(session.get_providers())
    fallbacks = list(dropped)
    for name in chosen:
        if name not in in_use:
            fallbacks.append(f"{name} failed to start in ONNX Runtime")
    for reason in fallbacks:
        log.warning("execution provider fallback model=%s reason=%r in_use=%s", path.name, reason, ",".join(in_use))
    return session, SessionInfo(path=Path(path), requested=list(requested), in_use=in_use, fallbacks=fallbacks)


class BoundRunner:
    """Runs a one-input one-output ORT session through I/O binding.

    Each batch size gets a device input and output buffer once; a call copies the frames into
    the input buffer (one host->device copy) and reads the features back, with no per-call
    allocation on the device. On a GPU this is what keeps a batch from being copied twice;
    on the CPU (device "cpu", used by the tests) it is the same code path.
    """

    def __init__(self, session: Any, device: str, device_id: int = 0) -> None:
        self.session = session
        self.device, self.device_id = device, device_id
        self.input, self.output = session.get_inputs()[0].name, session.get_outputs()[0].name
        self.out_dim = int(session.get_outputs()[0].shape[-1]) if isinstance(session.get_outputs()[0].shape[-1], int) else None
        self._buffers: dict[tuple[int, ...], tuple[Any, Any, Any]] = {}

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import onnxruntime as ort

        key = tuple(x.shape)
        if key not in self._buffers:
            dim = self.out_dim or int(self.session.run(None, {self.input: x[:1]})[0].shape[-1])
            inp = ort.OrtValue.ortvalue_from_shape_and_type(list(x.shape), x.dtype, self.device, self.device_id)
            out = ort.OrtValue.ortvalue_from_shape_and_type([x.shape[0], dim], np.float32, self.device, self.device_id)
            binding = self.session.io_binding()
            binding.bind_ortvalue_input(self.input, inp)
            binding.bind_ortvalue_output(self.output, out)
            self._buffers[key] = (inp, out, binding)
        inp, out, binding = self._buffers[key]
        inp.update_inplace(np.ascontiguousarray(x))
        self.session.run_with_iobinding(binding)
        return out.numpy()


class OnnxRuntimeRunner(BackboneRunner):
    """The backbone in an ONNX Runtime session; through I/O binding when it runs on a GPU."""

    engine = "onnxruntime"

    def __init__(self, session: Any, info: SessionInfo, run: Callable[[np.ndarray], np.ndarray]) -> None:
        self.session = session      # the raw InferenceSession, for callers that read its options
        self.info = info
        self._run = run

    @classmethod
    def open(cls, plan: Plan, settings: RunSettings) -> OnnxRuntimeRunner:
        gpu = settings.gpu
        session, info = make_session(plan.file, plan.providers, settings.threads, settings.spin, gpu, settings.input_size)
        info.precision = plan.precision
        run: Callable[[np.ndarray], np.ndarray]
        if any(p in GPU_PROVIDERS for p in info.in_use) and gpu.io_binding:
            run = BoundRunner(session, "cuda", gpu.device_id)
        else:
            run = lambda x: session.run(None, {BACKBONE_INPUT: x})[0]  # noqa: E731
        return cls(session, info, run)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self._run(images)
