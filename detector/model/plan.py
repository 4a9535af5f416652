"""What can be asked of the backbone, and the pure choice of how it runs.

The engine and precision names live here, once: the config validates against the `Engine`
and `Precision` types, the command line offers `ENGINES` and `PRECISIONS`, and the backends
registry (`detector.model.backends`) has one runner per engine name. `GpuOptions` is here too
because it is what the config's `inference.gpu` section becomes, whichever module runs it.

Selection is a pure function (`plan_backbone`) of what was asked for and what the machine
has, so every branch is tested without a GPU and without OpenVINO. Whatever it picks is
logged and reported in `ad_detector_model_info`; an explicit request that cannot be honoured
is a usage error (exit 2), and an automatic choice that is not the best one carries its
reason in `Plan.notes`: a GPU provider that silently falls back to the CPU is exactly the
degradation the house rules forbid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from detector.errors import UsageError

Engine = Literal["auto", "onnxruntime", "openvino"]
Precision = Literal["auto", "fp32", "bf16", "int8"]
ENGINES: tuple[str, ...] = get_args(Engine)
PRECISIONS: tuple[str, ...] = get_args(Precision)
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


@dataclass(frozen=True)
class GpuOptions:
    """What a GPU deployment tunes (config `inference.gpu`)."""

    device_id: int = 0
    fp16: bool = False                      # TensorRT builds fp16 engines (CUDA EP stays fp32)
    tensorrt_cache_dir: Path | None = None  # engines are reused across restarts (minutes saved)
    io_binding: bool = True                 # batches copied once into a preallocated device buffer
    max_batch: int = 16                     # TensorRT optimisation profile: 1..max_batch


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
