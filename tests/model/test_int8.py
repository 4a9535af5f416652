"""The int8 guard (decisions agree with fp32 on every path) and `ad-detector bench`.

Split from test_inference.py so that the two workers of `make test` can run them side by side.
The paths are compared on a 60 s cut of the demo test broadcast that holds both of its
boundaries (programme 10 s, the break 47 s, programme 3 s): every window of it is compared,
at half the cost of the whole broadcast for each of the three classify runs.
"""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from detector.model.bundle import load_bundle
from tests.conftest import assert_usage_error, copy_bundle, run_cli
from tests.model.test_inference import HAS_BF16, OV_AMX, OV_OLD

CUT = (20.0, 60.0)          # start, length (s) in the 120 s demo test broadcast (break 30.0-77.12)


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
def cut_broadcast(demo_set, tmp_path_factory) -> tuple[Path, Path]:
    """(video, truth CSV): CUT of the demo test broadcast, re-encoded so it starts on its first
    frame, with the truth shifted to its clock."""
    from detector.analysis.segments import read_labels

    d = tmp_path_factory.mktemp("cut")
    start, length = CUT
    video = d / "broadcast-cut.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", str(start), "-i", str(demo_set.broadcast), "-t", str(length),
                    "-c:v", "mpeg4", "-q:v", "2", "-c:a", "aac", str(video)], check=True, timeout=120)
    rows = ["start,end,label"]
    for s in read_labels(demo_set.truth_csv, {"commercial"}):
        a, b = max(s.start - start, 0.0), min(s.end - start, length)
        if b > a:
            rows.append(f"{a:.3f},{b:.3f},{s.label}")
    truth = d / "broadcast-cut.csv"
    truth.write_text("\n".join(rows) + "\n")
    assert len(rows) == 4, rows          # programme, the break, programme: both boundaries inside
    return video, truth


@pytest.fixture(scope="module")
def fp32_reference(int8_bundle, cut_broadcast, tmp_path_factory) -> tuple[list[dict], list[dict]]:
    """The fp32 ONNX Runtime decisions every faster path is held to."""
    segments, rows, _ = _classify(cut_broadcast[0], int8_bundle, tmp_path_factory.mktemp("fp32"),
                                  "--engine", "onnxruntime", "--precision", "fp32")
    return segments, rows


@pytest.mark.parametrize("engine, precision, expect", [
    ("auto", "auto", "engine=openvino precision=int8"),          # what the daemon picks by itself here
    ("onnxruntime", "int8", "engine=onnxruntime precision=int8"),  # a machine without OpenVINO
    ("openvino", "bf16", "engine=openvino precision=bf16"),
])
def test_faster_paths_agree_with_fp32_and_scores_hold(int8_bundle, cut_broadcast, fp32_reference, tmp_path, engine, precision, expect):
    """The issue's guard, per path: on the demo test broadcast (its cut holding both boundaries) the decided label of at least
    99% of windows is the fp32 one, and no evaluate figure drops by more than 0.5 points.
    (ONNX Runtime's default MinMax int8 missed it on this bundle, 97% of windows; the NNCF
    file export-backbone writes now keeps them all: bench/RESULTS.md section 6b.)"""
    from detector.offline.scoring import score
    from detector.analysis.segments import Segment, read_labels

    ref_seg, ref_rows = fp32_reference
    if precision == "bf16" and not HAS_BF16:
        proc = run_cli("classify", cut_broadcast[0], "-m", int8_bundle, "-o", tmp_path / "out", "--no-progress",
                       "--engine", engine, "--precision", precision)
        assert_usage_error(proc, "no bf16 support", "use int8 or fp32")
        return
    got_seg, got_rows, log = _classify(cut_broadcast[0], int8_bundle, tmp_path / "out", "--engine", engine, "--precision", precision)
    assert expect in log, log[-2000:]
    assert len(ref_rows) == len(got_rows) > 50
    times = [float(r["time"]) for r in ref_rows]
    decided = np.mean([_label_at(ref_seg, t) == _label_at(got_seg, t) for t in times])
    assert decided >= 0.99, f"{expect}: decisions agree with fp32 on {decided:.1%} of windows"
    truth = read_labels(cut_broadcast[1], {"commercial"})
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
