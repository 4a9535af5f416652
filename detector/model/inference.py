"""The one inference interface of the runtime: ONNX Runtime or OpenVINO, in-process.

Nothing else in `detector/` knows which engine runs the graphs, so a Triton client can
take this module's place for pooled GPUs (DESIGN.md, "Growing past one machine").

Why two engines: on a CPU-only broadcast machine the backbone is the bottleneck, and
OpenVINO's CPU plugin runs the same ONNX files several times faster than ONNX Runtime's CPU
provider (int8 on VNNI/AMX, bf16 on AMX; bench/RESULTS.md). The `openvino` runtime package
is its own library, so it installs beside onnxruntime-gpu without conflict (unlike the
onnxruntime-openvino build, which replaces it). On an NVIDIA GPU, ONNX Runtime's CUDA or
TensorRT provider is used. The small sequence model always runs in ONNX Runtime.

Selection is a pure function (`plan_backbone`) of what was asked for and what the machine
has, so it is tested without a GPU. Whatever it picks is logged and reported in
`ad_detector_model_info`; an explicit request that cannot be honoured is a usage error
(exit 2), and an automatic choice that is not the best one is logged with the reason: a GPU
provider that silently falls back to CPU is exactly the degradation the house rules forbid.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from detector.model.bundle import BACKBONE_INPUT, BACKBONE_OUTPUT, SEQUENCE_INPUT, Bundle
from detector.errors import UsageError

log = logging.getLogger(__name__)

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
ENGINES = ("auto", "onnxruntime", "openvino")
PRECISIONS = ("auto", "fp32", "bf16", "int8")
OPENVINO_DEVICE = "OpenVINO:CPU"


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


# --------------------------------------------------------------------------- GPU options

@dataclass(frozen=True)
class GpuOptions:
    """What a GPU deployment tunes (config `inference.gpu`)."""

    device_id: int = 0
    fp16: bool = False                      # TensorRT builds fp16 engines (CUDA EP stays fp32)
    tensorrt_cache_dir: Path | None = None  # engines are reused across restarts (minutes saved)
    io_binding: bool = True                 # batches copied once into a preallocated device buffer
    max_batch: int = 16                     # TensorRT optimisation profile: 1..max_batch


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


# --------------------------------------------------------------------------- the plan

@dataclass(frozen=True)
class Plan:
    """Which engine runs the backbone, at which precision, from which file, and why."""

    engine: str                      # onnxruntime | openvino
    precision: str                   # fp32 | bf16 | int8
    file: Path
    providers: tuple[str, ...] = ()  # ONNX Runtime providers to try (onnxruntime engine)
    notes: tuple[str, ...] = ()      # why auto chose this, for the log


def plan_backbone(engine: str, precision: str, variants: Mapping[str, Path], providers: Sequence[str],
                  available: Sequence[str], driver_present: bool, openvino_caps: Sequence[str] | None,
                  bundle_root: Path | str = "the bundle") -> Plan:
    """Choose the backbone's engine, precision and file (pure; raises UsageError).

    `variants` maps precision -> file ("fp32" always; "int8" when the bundle was quantized).
    `openvino_caps` is OpenVINO's CPU OPTIMIZATION_CAPABILITIES, or None when not installed.
    `auto` prefers a requested GPU provider that can start, then OpenVINO, then ONNX Runtime
    CPU; precision `auto` prefers int8 (when the bundle has it and the engine runs it on the
    CPU), then bf16 (OpenVINO on a CPU with BF16), then fp32. Explicit requests are honoured or refused, never quietly changed.
    """
    if engine not in ENGINES:
        raise UsageError(f"inference.engine: {engine!r} is not one of {', '.join(ENGINES)}")
    if precision not in PRECISIONS:
        raise UsageError(f"inference.precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
    chosen, dropped = resolve_providers(providers, available, driver_present)
    gpu_ok = any(p in GPU_PROVIDERS for p in chosen)
    caps = {c.upper() for c in (openvino_caps or ())}
    notes: list[str] = []
    if engine == "auto":
        if gpu_ok:
            engine = "onnxruntime"
            notes.append("a GPU provider is available")
        elif openvino_caps is not None:
            engine = "openvino"
            notes.append("no GPU; OpenVINO is installed and fastest on CPU")
        else:
            engine = "onnxruntime"
            notes.append("no GPU and OpenVINO is not installed (pip install openvino for a faster CPU path)")
    elif engine == "openvino" and openvino_caps is None:
        raise UsageError("inference.engine is openvino but the openvino package is not installed; "
                         "pip install openvino, or set inference.engine: onnxruntime")
    if engine == "openvino" and gpu_ok:
        notes.append("OpenVINO runs on the CPU although a GPU provider is available (inference.engine: openvino)")

    on_gpu = engine == "onnxruntime" and gpu_ok
    if precision == "auto":
        # int8 first when the bundle has it: export-backbone only writes an int8 file whose
        # features stayed close to fp32 (NNCF, first conv in fp32, centred-cosine refusal), and
        # on the demo broadcast its decisions matched fp32 on every window at ~1.5x bf16's
        # speed (bench/RESULTS.md section 6b). Then bf16 where the CPU has it, then fp32.
        if "int8" in variants and not on_gpu and (engine == "onnxruntime" or "INT8" in caps):
            precision = "int8"
        elif engine == "openvino" and "BF16" in caps:
            precision = "bf16"
            if "int8" not in variants:
                notes.append("bf16 on this CPU; `ad-detector export-backbone --quantize int8 --calibration DATA_DIR` adds a faster int8 backbone")
        else:
            precision = "fp32"
    elif precision == "int8" and "int8" not in variants:
        raise UsageError(f"{bundle_root}: inference.precision is int8 but the bundle has no int8 backbone; run "
                         f"`ad-detector export-backbone -o {bundle_root} --quantize int8 --calibration DATA_DIR`")
    elif precision == "bf16":
        if engine != "openvino":
            raise UsageError("inference.precision bf16 needs inference.engine openvino (ONNX Runtime runs this graph in fp32 or int8)")
        if "BF16" not in caps:
            raise UsageError("inference.precision is bf16 but this CPU has no bf16 support (OpenVINO capabilities: "
                             f"{', '.join(sorted(caps)) or 'none'}); use int8 or fp32")
    elif precision == "int8" and engine == "openvino" and "INT8" not in caps:
        raise UsageError("inference.precision is int8 but OpenVINO reports no INT8 support on this CPU; use fp32")
    file = variants["int8"] if precision == "int8" else variants["fp32"]
    return Plan(engine=engine, precision=precision, file=Path(file),
                providers=tuple(chosen) if engine == "onnxruntime" else (), notes=tuple(notes + dropped))


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


# --------------------------------------------------------------------------- sessions

@dataclass
class SessionInfo:
    path: Path
    requested: list[str]
    in_use: list[str]
    fallbacks: list[str] = field(default_factory=list)
    engine: str = "onnxruntime"
    precision: str = "fp32"


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

    def __init__(self, session: Any, device: str, device_id: int = 0):
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


class OpenVinoRunner:
    """The backbone compiled by OpenVINO's CPU plugin, called like an ORT session's run.

    The graph keeps its dynamic batch axis (OpenVINO compiles dynamic shapes; measured as
    fast as a static shape at batch 16 here), so one compiled model serves every batch the
    batcher forms. The precision hint is always set explicitly: on CPUs with AMX OpenVINO
    otherwise switches fp32 graphs to bf16 by itself, and the user asked for what they asked.
    """

    def __init__(self, path: Path, precision: str, threads: int | None):
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

    def __call__(self, x: np.ndarray) -> np.ndarray:
        result = self.request.infer({0: np.ascontiguousarray(x)})
        return np.array(result[self.output], dtype=np.float32, copy=True)


def default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


class Models:
    """Both graphs of a bundle, ready to run.

    `engine` / `precision` choose how the backbone runs (see `plan_backbone`); the defaults
    ("onnxruntime", "fp32") are the reference path that training and the parity checks use.
    """

    def __init__(self, bundle: Bundle, providers: Sequence[str] = ("CPUExecutionProvider",), threads: int | None = None,
                 spin: bool = True, engine: str = "onnxruntime", precision: str = "fp32", gpu: GpuOptions | None = None):
        import onnxruntime as ort

        self.bundle = bundle
        gpu = gpu or GpuOptions()
        caps = openvino_capabilities() if engine in ("auto", "openvino") else None
        self.plan = plan_backbone(engine, precision, bundle.backbone_variants, providers, ort.get_available_providers(),
                                  nvidia_driver_present(), caps, bundle.root)
        for note in self.plan.notes:
            log.info("backbone plan note=%r", note)
        self._run_backbone: Callable[[np.ndarray], np.ndarray]
        if self.plan.engine == "openvino":
            self.backbone = OpenVinoRunner(self.plan.file, self.plan.precision, threads)
            self.backbone_info = SessionInfo(path=self.plan.file, requested=[OPENVINO_DEVICE], in_use=[OPENVINO_DEVICE],
                                             engine="openvino", precision=self.plan.precision)
            self._run_backbone = self.backbone
        else:
            self.backbone, self.backbone_info = make_session(self.plan.file, self.plan.providers, threads, spin, gpu, bundle.input_size)
            self.backbone_info.precision = self.plan.precision
            on_gpu = any(p in GPU_PROVIDERS for p in self.backbone_info.in_use)
            if on_gpu and gpu.io_binding:
                self._run_backbone = BoundRunner(self.backbone, "cuda", gpu.device_id)
            else:
                session = self.backbone
                self._run_backbone = lambda x: session.run(None, {BACKBONE_INPUT: x})[0]
        log.info("backbone ready engine=%s precision=%s file=%s in_use=%s", self.plan.engine, self.plan.precision,
                 self.plan.file.name, ",".join(self.backbone_info.in_use))
        self.sequence = None
        self.sequence_info: SessionInfo | None = None
        if bundle.sequence_path is not None:
            seq_providers = self.plan.providers or ("CPUExecutionProvider",)
            self.sequence, self.sequence_info = make_session(bundle.sequence_path, seq_providers, threads, spin, gpu)

    @property
    def providers_in_use(self) -> list[str]:
        return self.backbone_info.in_use

    @property
    def precision(self) -> str:
        return self.plan.precision

    @property
    def backbone_sha256(self) -> str:
        """Hash of the backbone file actually running (the int8 file when int8 is in use)."""
        return self.bundle.variant_sha256(self.plan.precision)

    def features(self, images: np.ndarray) -> np.ndarray:
        """uint8 BGR [N, H, W, 3] -> float32 [N, D]."""
        return self._run_backbone(images)

    def probabilities(self, windows: np.ndarray) -> np.ndarray:
        """float32 [N, T, D] -> float32 [N, C]."""
        if self.sequence is None:
            raise RuntimeError("bundle has no sequence model")
        return self.sequence.run(None, {SEQUENCE_INPUT: np.ascontiguousarray(windows, dtype=np.float32)})[0]

    def warm_up(self, batch_sizes: Sequence[int] = (1,)) -> None:
        """A call of each graph per batch size, so the first real frames do not pay for
        allocation, kernel selection or (TensorRT) engine builds before READY."""
        h, w = self.bundle.input_size
        feats = None
        for n in sorted(set(int(b) for b in batch_sizes if b >= 1)) or [1]:
            feats = self.features(np.zeros((n, h, w, 3), np.uint8))
        if self.sequence is not None and feats is not None:
            self.probabilities(np.zeros((1, self.bundle.window_frames, feats.shape[1]), np.float32))


__all__ = ["BACKBONE_OUTPUT", "BoundRunner", "ENGINES", "GPU_PROVIDERS", "GpuOptions", "Models", "OpenVinoRunner", "PRECISIONS",
           "Plan", "SessionInfo", "default_threads", "make_session", "nvidia_driver_present", "openvino_capabilities",
           "plan_backbone", "provider_options", "resolve_providers"]
