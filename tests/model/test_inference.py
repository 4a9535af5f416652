"""Backbone engines and precisions: the pure choice, GPU options, the real OpenVINO and ONNX
Runtime sessions on the exported graph, and the int8 guard (decisions agree with fp32).

The GPU cannot be exercised here (no NVIDIA device), so its provider options and the
selection logic are checked as pure functions, and the I/O-binding runner runs on the CPU
device, which is the same code path with another device name.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from detector.model.bundle import load_bundle
from detector.errors import UsageError
from detector.model.backends.onnxruntime import provider_options
from detector.model.models import Models
from detector.model.plan import GpuOptions, plan_backbone
from tests.conftest import assert_usage_error, copy_bundle, run_cli

CPU = ["CPUExecutionProvider"]
ALL = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
GPU_REQ = ["CUDAExecutionProvider", "CPUExecutionProvider"]
V_FP32 = {"fp32": Path("b/backbone.onnx")}
V_INT8 = {"fp32": Path("b/backbone.onnx"), "int8": Path("b/backbone.int8.onnx")}
OV_AMX = ["FP32", "BF16", "INT8", "FP16"]
OV_OLD = ["FP32", "INT8"]


def _cpu_has_bf16() -> bool:
    """Whether OpenVINO offers bf16 on this CPU (Intel AMX: yes; the AMD EPYC sessions: no)."""
    from detector.model.backends.openvino import openvino_capabilities

    return "BF16" in (openvino_capabilities() or [])


HAS_BF16 = _cpu_has_bf16()


# --------------------------------------------------------------------------- the choice (pure)

@pytest.mark.parametrize("variants, providers, driver, caps, expected", [
    # no GPU, OpenVINO installed: int8 when the bundle has it (guarded at export), else bf16 on AMX, else fp32
    (V_INT8, GPU_REQ, False, OV_AMX, ("openvino", "int8", "backbone.int8.onnx")),
    (V_INT8, GPU_REQ, False, OV_OLD, ("openvino", "int8", "backbone.int8.onnx")),
    (V_FP32, GPU_REQ, False, OV_AMX, ("openvino", "bf16", "backbone.onnx")),
    (V_FP32, GPU_REQ, False, OV_OLD, ("openvino", "fp32", "backbone.onnx")),
    # no OpenVINO: ONNX Runtime CPU, int8 if present
    (V_INT8, GPU_REQ, False, None, ("onnxruntime", "int8", "backbone.int8.onnx")),
    (V_FP32, CPU, False, None, ("onnxruntime", "fp32", "backbone.onnx")),
    # a GPU that can start wins, in fp32 (TensorRT fp16 is a provider option)
    (V_INT8, GPU_REQ, True, OV_AMX, ("onnxruntime", "fp32", "backbone.onnx")),
    # a driver but the user listed only the CPU provider: no GPU
    (V_INT8, CPU, True, OV_OLD, ("openvino", "int8", "backbone.int8.onnx")),
])
def test_auto_picks_the_fastest_path_the_machine_has(variants, providers, driver, caps, expected):
    plan = plan_backbone("auto", "auto", variants, providers, ALL, driver, caps)
    assert (plan.engine, plan.precision, plan.file.name) == expected
    if plan.engine == "onnxruntime":
        assert plan.providers[-1] == "CPUExecutionProvider"
        assert ("CUDAExecutionProvider" in plan.providers) == (driver and "CUDAExecutionProvider" in providers)


def test_auto_says_why_the_gpu_was_not_used():
    plan = plan_backbone("auto", "auto", V_FP32, GPU_REQ, ALL, False, OV_AMX)
    assert any("libcuda.so.1 not found" in n for n in plan.notes), plan.notes
    plan = plan_backbone("auto", "auto", V_FP32, GPU_REQ, CPU, True, None)
    assert any("not in this onnxruntime build" in n for n in plan.notes), plan.notes
    assert any("pip install openvino" in n for n in plan.notes), plan.notes
    plan = plan_backbone("auto", "auto", V_FP32, CPU, CPU, False, OV_AMX)
    assert plan.precision == "bf16" and any("--quantize int8" in n for n in plan.notes), plan.notes


@pytest.mark.parametrize("engine, precision, variants, caps, needle", [
    ("openvino", "auto", V_FP32, None, "openvino package is not installed"),
    ("auto", "int8", V_FP32, OV_AMX, "--quantize int8 --calibration"),
    ("onnxruntime", "bf16", V_FP32, OV_AMX, "bf16 needs inference.engine openvino"),
    ("openvino", "bf16", V_FP32, OV_OLD, "no bf16 support"),
    ("openvino", "int8", V_INT8, ["FP32"], "no INT8 support"),
    ("tensorflow", "auto", V_FP32, OV_AMX, "inference.engine"),
    ("auto", "fp16", V_FP32, OV_AMX, "inference.precision"),
])
def test_explicit_requests_are_honoured_or_refused_never_changed(engine, precision, variants, caps, needle):
    with pytest.raises(UsageError, match=None) as info:
        plan_backbone(engine, precision, variants, CPU, CPU, False, caps, "models/x")
    assert needle in str(info.value)


def test_explicit_requests_that_fit_are_kept():
    assert plan_backbone("onnxruntime", "int8", V_INT8, CPU, CPU, False, OV_AMX).file.name == "backbone.int8.onnx"
    plan = plan_backbone("openvino", "fp32", V_INT8, CPU, CPU, False, OV_AMX)
    assert (plan.engine, plan.precision, plan.file.name, plan.providers) == ("openvino", "fp32", "backbone.onnx", ())
    plan = plan_backbone("openvino", "auto", V_FP32, GPU_REQ, ALL, True, OV_AMX)
    assert plan.engine == "openvino" and any("GPU provider is available" in n for n in plan.notes)


def test_every_engine_name_has_one_backend():
    from detector.model.backends import BACKENDS, BackboneRunner, backend
    from detector.model.plan import ENGINES

    assert set(BACKENDS) == set(ENGINES) - {"auto"}
    assert all(issubclass(cls, BackboneRunner) and cls.engine == name for name, cls in BACKENDS.items())
    with pytest.raises(UsageError, match="no backend runs 'triton'"):
        backend("triton")


def test_a_backend_needs_only_open_and_a_batched_call():
    """What a remote backend (Ray Serve, Triton) has to write: no local graph, no session."""
    from detector.model.backends.base import BackboneRunner, RunSettings, SessionInfo
    from detector.model.plan import Plan

    class Remote(BackboneRunner):
        engine = "remote"

        def __init__(self) -> None:
            self.batches: list[int] = []

        @classmethod
        def open(cls, plan: Plan, settings: RunSettings) -> "Remote":
            runner = cls()
            runner.info = SessionInfo(path=plan.file, requested=["serve"], in_use=["serve"], engine=cls.engine,
                                      precision=plan.precision)
            return runner

        def __call__(self, images: np.ndarray) -> np.ndarray:
            assert images.dtype == np.uint8 and images.shape[1:] == (299, 299, 3)
            self.batches.append(len(images))
            return np.zeros((len(images), 2048), np.float32)

    runner = Remote.open(Plan("remote", "int8", Path("b/backbone.int8.onnx")), RunSettings())
    assert runner.warm_up([16, 1, 16, 0], (299, 299)) == 2048
    assert runner.batches == [1, 16]                    # each distinct batch size once, smallest first
    assert (runner.precision, runner.providers_in_use, runner.fallbacks) == ("int8", ["serve"], [])
    runner.close()


def test_tensorrt_options_build_one_engine_for_the_batch_range_and_cache_it(tmp_path):
    trt, cuda, cpu = provider_options(ALL, GpuOptions(device_id=1, fp16=True, tensorrt_cache_dir=tmp_path, max_batch=24))
    assert trt["device_id"] == "1" and trt["trt_fp16_enable"] == "1"
    assert trt["trt_profile_min_shapes"] == "images:1x299x299x3"
    assert trt["trt_profile_max_shapes"] == trt["trt_profile_opt_shapes"] == "images:24x299x299x3"
    assert trt["trt_engine_cache_enable"] == "1" and trt["trt_engine_cache_path"] == str(tmp_path)
    assert trt["trt_timing_cache_path"] == str(tmp_path)
    assert cuda["device_id"] == "1" and cpu == {}
    trt, _, _ = provider_options(ALL, GpuOptions())
    assert "trt_engine_cache_enable" not in trt and trt["trt_fp16_enable"] == "0"


def test_config_carries_engine_precision_and_gpu_options(tmp_path):
    from detector.config import parse_config

    cfg = parse_config("model: m\nchannels: [{name: a, source: rtsp://h/x}]\n"
                       "inference: {engine: openvino, precision: int8, batch_size: 8,"
                       " gpu: {device_id: 2, fp16: true, tensorrt_cache_dir: trt}}\n", base_dir=tmp_path)
    assert (cfg.inference.engine, cfg.inference.precision) == ("openvino", "int8")
    opts = cfg.inference.gpu_options()
    assert (opts.device_id, opts.fp16, opts.tensorrt_cache_dir, opts.max_batch) == (2, True, tmp_path / "trt", 8)
    defaults = parse_config("model: m\nchannels: [{name: a, source: rtsp://h/x}]\n", base_dir=tmp_path).inference
    assert (defaults.engine, defaults.precision, defaults.gpu.io_binding) == ("auto", "auto", True)


def test_bad_engine_in_a_config_is_exit_2_naming_the_key(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: m\nchannels: [{name: a, source: rtsp://h/x}]\ninference:\n  engine: tensorrt\n  gpu: {device_id: -1}\n")
    proc = run_cli("check-config", "-c", cfg)
    assert proc.returncode == 2
    assert "inference.engine" in proc.stderr and "inference.gpu.device_id" in proc.stderr


# --------------------------------------------------------------------------- real sessions

@pytest.fixture(scope="module")
def frames(backbone_dir) -> np.ndarray:
    from bench.common import demo_frames

    return demo_frames(12, seconds=2.0)


def test_openvino_and_io_binding_give_the_reference_features(backbone_dir, frames):
    from detector.model.backends.onnxruntime import BoundRunner

    bundle = load_bundle(backbone_dir, require_sequence=False)
    ref_models = Models(bundle, CPU, engine="onnxruntime", precision="fp32")
    ref = ref_models.features(frames)
    scale = float(np.abs(ref).max())
    for engine, precision, rtol in (("openvino", "fp32", 1e-4), ("openvino", "bf16", 5e-2)):
        if precision == "bf16" and not HAS_BF16:       # this CPU: refused in one line, never fp32 quietly
            with pytest.raises(UsageError, match="no bf16 support.*use int8 or fp32"):
                Models(bundle, CPU, engine=engine, precision=precision)
            continue
        m = Models(bundle, CPU, engine=engine, precision=precision)
        assert (m.plan.engine, m.precision, m.providers_in_use) == (engine, precision, ["OpenVINO:CPU"])
        for n in (1, 5, 12):                       # one compiled model serves every batch size
            got = m.features(frames[:n])
            assert got.shape == (n, 2048) and got.dtype == np.float32
            assert float(np.abs(got - ref[:n]).max()) <= rtol * scale, (engine, precision, n)
    bound = BoundRunner(ref_models.backbone.session, "cpu")
    for n in (3, 12, 3):                           # buffers per batch size, reused
        np.testing.assert_allclose(bound(frames[:n]), ref[:n], rtol=0, atol=1e-6 * scale)


def test_int8_requested_on_a_bundle_without_it_is_exit_2(bundle_dir, demo_set, tmp_path):
    proc = run_cli("classify", demo_set.broadcast, "-m", bundle_dir, "-o", tmp_path / "o", "--precision", "int8", "--no-progress")
    assert_usage_error(proc, "no int8 backbone", "--quantize int8")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
