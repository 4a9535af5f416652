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


# --------------------------------------------------------------------------- int8: quantize and the guard

# Calibration frames for the test's int8 file: the default is 240; 140 quantizes in ~2/3 of the
# time and on the demo set gives the same guard figures (every window agrees with fp32 on both
# engines, every evaluate figure equal; centred feature cosine 0.994 against 0.995).
CALIBRATION_FRAMES = 140


@pytest.fixture(scope="module")
def int8_bundle(bundle_dir, demo_set, tmp_path_factory, cache_env) -> Path:
    out = copy_bundle(bundle_dir, tmp_path_factory.mktemp("int8") / "bundle")
    before = json.loads((out / "model.json").read_text())
    proc = run_cli("export-backbone", "-o", out, "--quantize", "int8", "--calibration", demo_set.data_dir, "--no-progress",
                   "--calibration-frames", CALIBRATION_FRAMES, env=cache_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = json.loads((out / "model.json").read_text())
    # the trained model and the fp32 backbone are untouched; the int8 file is added beside them
    assert after["sequence"] == before["sequence"] and after["classes"] == before["classes"]
    assert {k: v for k, v in after["backbone"].items() if k != "variants"} == before["backbone"]
    return out


def test_quantize_records_the_int8_variant_in_the_manifest(int8_bundle):
    manifest = json.loads((int8_bundle / "model.json").read_text())
    part = manifest["backbone"]["variants"]["int8"]
    assert part["file"] == "backbone.int8.onnx" and part["precision"] == "int8"
    assert (int8_bundle / "backbone.int8.onnx").stat().st_size < (int8_bundle / "backbone.onnx").stat().st_size / 3
    assert part["calibration"]["frames"] >= 100 and part["calibration"]["videos"] >= 2
    assert part["agreement_with_fp32"]["cosine_mean"] >= 0.99
    # the raw cosine hides error behind the component all features share; centred it does not
    assert part["agreement_with_fp32"]["centred_cosine_mean"] >= 0.97
    assert part["quantizer"].startswith("nncf") and len(part["kept_fp32"]) == 1
    assert manifest["backbone"]["precision"] == "fp32"
    bundle = load_bundle(int8_bundle)
    assert set(bundle.backbone_variants) == {"fp32", "int8"}


def test_a_corrupt_int8_file_is_refused_naming_it(int8_bundle, demo_set, tmp_path):
    broken = copy_bundle(int8_bundle, tmp_path / "broken")
    with open(broken / "backbone.int8.onnx", "r+b") as fh:
        fh.seek(1000)
        fh.write(b"\0garbage\0")
    proc = run_cli("classify", demo_set.broadcast, "-m", broken, "-o", tmp_path / "o", "--no-progress")
    assert_usage_error(proc, "backbone.int8.onnx", "SHA-256")


def _classify(video: Path, bundle: Path, out: Path, *flags: str) -> tuple[list[dict], list[dict], str]:
    proc = run_cli("classify", video, "-m", bundle, "-o", out, "--formats", "json", "csv", "--no-progress", *flags)
    assert proc.returncode == 0, proc.stderr[-3000:]
    segments = json.loads((out / f"{video.stem}.segments.json").read_text())
    with open(out / f"{video.stem}.probabilities.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return segments, rows, proc.stderr


def _label_at(segments: list[dict], t: float) -> str:
    for s in segments:
        if s["start"] <= t < s["end"]:
            return s["label"]
    return segments[-1]["label"]


@pytest.fixture(scope="module")
def fp32_reference(int8_bundle, demo_set, tmp_path_factory) -> tuple[list[dict], list[dict]]:
    """The fp32 ONNX Runtime decisions every faster path is held to."""
    segments, rows, _ = _classify(demo_set.broadcast, int8_bundle, tmp_path_factory.mktemp("fp32"),
                                  "--engine", "onnxruntime", "--precision", "fp32")
    return segments, rows


@pytest.mark.parametrize("engine, precision, expect", [
    ("auto", "auto", "engine=openvino precision=int8"),          # what the daemon picks by itself here
    ("onnxruntime", "int8", "engine=onnxruntime precision=int8"),  # a machine without OpenVINO
    ("openvino", "bf16", "engine=openvino precision=bf16"),
])
def test_faster_paths_agree_with_fp32_and_scores_hold(int8_bundle, demo_set, fp32_reference, tmp_path, engine, precision, expect):
    """The issue's guard, per path: on the demo test broadcast the decided label of at least
    99% of windows is the fp32 one, and no evaluate figure drops by more than 0.5 points.
    (ONNX Runtime's default MinMax int8 missed it on this bundle, 97% of windows; the NNCF
    file export-backbone writes now keeps them all: bench/RESULTS.md section 6b.)"""
    from detector.offline.scoring import score
    from detector.analysis.segments import Segment, read_labels

    ref_seg, ref_rows = fp32_reference
    if precision == "bf16" and not HAS_BF16:
        proc = run_cli("classify", demo_set.broadcast, "-m", int8_bundle, "-o", tmp_path / "out", "--no-progress",
                       "--engine", engine, "--precision", precision)
        assert_usage_error(proc, "no bf16 support", "use int8 or fp32")
        return
    got_seg, got_rows, log = _classify(demo_set.broadcast, int8_bundle, tmp_path / "out", "--engine", engine, "--precision", precision)
    assert expect in log, log[-2000:]
    assert len(ref_rows) == len(got_rows) > 50
    times = [float(r["time"]) for r in ref_rows]
    decided = np.mean([_label_at(ref_seg, t) == _label_at(got_seg, t) for t in times])
    assert decided >= 0.99, f"{expect}: decisions agree with fp32 on {decided:.1%} of windows"
    truth = read_labels(demo_set.truth_csv, {"commercial"})
    duration = max(s["end"] for s in ref_seg)

    def figures(segs: list[dict]) -> dict:
        return score([Segment(s["start"], s["end"], s["label"], s["is_ad"], s["confidence"]) for s in segs], truth, duration)

    ref, got = figures(ref_seg), figures(got_seg)
    for key in ("frame_accuracy", "ad_precision", "ad_recall", "ad_f1", "boundary_recall_1s", "boundary_recall_2s"):
        assert got[key] >= ref[key] - 0.005, f"{key}: {expect} {got[key]} vs fp32 {ref[key]}"
    assert ref["frame_accuracy"] >= 0.9       # the reference itself is a working model


# --------------------------------------------------------------------------- ad-detector bench

def test_bench_candidates_and_channel_estimate_are_plain_arithmetic():
    from detector.offline.bench import candidate_paths, channels_carried

    assert candidate_paths({"fp32"}, None, False) == [("onnxruntime", "fp32")]
    assert candidate_paths({"fp32", "int8"}, OV_AMX, True) == [
        ("onnxruntime", "fp32"), ("onnxruntime-gpu", "fp32"), ("onnxruntime", "int8"),
        ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8")]
    assert candidate_paths({"fp32", "int8"}, OV_OLD, False)[-1] == ("openvino", "int8")
    # 2 cores, 0.1 core-s decode + 5 frames x 0.02 core-s = 0.2 cores per channel -> 8 with 15% headroom
    assert channels_carried(2, 0.1, 5.0, 0.02) == 8
    assert channels_carried(2, 0.0, 5.0, 0.0) == 0


def test_bench_command_times_every_path_and_writes_json(int8_bundle, tmp_path):
    out = tmp_path / "bench.json"
    # one measured second per path: the figures only have to exist and be sane here (bench/ measures for real)
    proc = run_cli("bench", "-m", int8_bundle, "--seconds", "1", "--rounds", "1", "--batch", "4", "--json", out, "--no-progress",
                   timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    got = {(p["engine"], p["precision"]) for p in data["paths"]}
    assert {("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"), ("openvino", "int8")} <= got
    for p in data["paths"]:
        assert p["frames_per_s"] > 0 and p["core_ms_per_frame"] > 0 and p["channels"] >= 0
        assert p["features_cosine_min_vs_fp32"] > 0.99
    assert data["decode"]["cpu_seconds_per_media_second"] > 0
    assert "| openvino | int8 |" in proc.stdout and "fastest:" in proc.stdout


def test_bench_refuses_a_missing_bundle(tmp_path):
    assert_usage_error(run_cli("bench", "-m", tmp_path / "nope"), "nope", "not found")
