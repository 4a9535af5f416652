"""The model toolchain (issue 2): export-backbone, train, the bundle, and every bad input.

The expensive artefacts (a real tf2onnx export and a trained bundle) come from the
session fixtures in conftest.py; the tests here copy them when they need to change them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import CLI, assert_usage_error, cli_env, copy_bundle, run_cli
from detector.model.bundle import load_bundle, read_manifest
from detector.errors import UsageError

CONTRACT_FILES = ("backbone.onnx", "sequence.onnx", "model.json")


# ----------------------------------------------------------------------------- helpers

def assert_no_complete_bundle(out: Path) -> None:
    """Whatever a failed run left in `out`, it is not a bundle that looks complete."""
    if not out.exists():
        return
    assert not list(out.glob("*.partial*")), list(out.iterdir())
    manifest = read_manifest(out)
    if manifest is None:
        return
    assert not manifest.get("sequence"), manifest
    with pytest.raises(UsageError, match="no sequence model yet"):
        load_bundle(out)


def copy_backbone(backbone_dir: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for name in ("backbone.onnx", "model.json"):
        shutil.copy2(backbone_dir / name, dst / name)
    return dst


def mp4s(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.mp4"))


def first_clip(demo_set, split: str, label: str) -> Path:
    return mp4s(demo_set.data_dir / split / label)[0]


def make_layout(root: Path, demo_set, layout: dict[str, list[str]]) -> Path:
    """DATA folders from demo clips: {'train/football': ['football', ...], 'test/commercial': []}."""
    for folder, labels in layout.items():
        d = root / folder
        d.mkdir(parents=True, exist_ok=True)
        for i, label in enumerate(labels):
            shutil.copy2(first_clip(demo_set, "train", label), d / f"{label}_{i}.mp4")
    return root


def faststart_truncated(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    """An mp4 with its index up front, cut after `fraction` of its bytes: decodes partially."""
    full = dst.with_name(dst.stem + ".full.mp4")
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), "-c", "copy", "-movflags", "+faststart", str(full)],
                   check=True, capture_output=True)
    data = full.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    full.unlink()
    return dst


# ----------------------------------------------------------------------------- export

def test_export_records_parity_and_graph_interface(backbone_dir: Path) -> None:
    import onnxruntime as ort

    manifest = json.loads((backbone_dir / "model.json").read_text())
    part = manifest["backbone"]
    assert part["file"] == "backbone.onnx" and len(part["sha256"]) == 64
    assert part["weights"] == "none"
    diff = part["parity_max_abs_diff"]
    assert isinstance(diff, float) and 0.0 <= diff < 1e-5, f"parity_max_abs_diff {diff}"
    assert part["parity_frames"] >= 1
    assert manifest["input_size"] == [299, 299] and manifest["sequence"] is None
    assert {"tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime"} <= set(manifest["tools"])

    sess = ort.InferenceSession(str(backbone_dir / "backbone.onnx"), providers=["CPUExecutionProvider"])
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert inp.name == "images" and inp.type == "tensor(uint8)"
    assert len(inp.shape) == 4 and not isinstance(inp.shape[0], int) and inp.shape[1:] == [299, 299, 3]
    assert out.name == "features" and out.type == "tensor(float)"
    assert len(out.shape) == 2 and not isinstance(out.shape[0], int) and out.shape[1] == 2048


def test_onnx_backbone_matches_keras_on_real_frames(backbone_dir: Path, demo_set) -> None:
    """The exported graph gives the Keras model's features on decoded frames (BGR in, both)."""
    import onnxruntime as ort

    from detector.sources.video import sample_video
    from ad_detector_export.backbone import build_keras_backbone

    frames = [f.image for f in sample_video(first_clip(demo_set, "test", "football"), 1.0, (299, 299))][:2]
    frames += [f.image for f in sample_video(first_clip(demo_set, "test", "commercial"), 1.0, (299, 299))][:2]
    batch = np.stack(frames)
    assert batch.dtype == np.uint8 and batch.shape == (4, 299, 299, 3)
    sess = ort.InferenceSession(str(backbone_dir / "backbone.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"images": batch})[0]
    # one frame alone gives the same as in a batch (dynamic batch axis)
    single = sess.run(None, {"images": batch[:1]})[0]
    model = build_keras_backbone("none", seed=0)
    expected = model.predict(batch, verbose=0)
    assert got.shape == expected.shape == (4, 2048) and got.dtype == np.float32
    scale = float(np.max(np.abs(expected)))
    assert scale > 0
    rel = float(np.max(np.abs(got - expected))) / scale
    assert rel <= 1e-4, f"ONNX differs from Keras by {rel:.3g} relative"
    assert float(np.max(np.abs(single[0] - got[0]))) / scale <= 1e-4
    # different pictures give different features (the graph is not constant)
    assert float(np.max(np.abs(got[0] - got[2]))) / scale > 1e-3


# ----------------------------------------------------------------------------- the bundle without TensorFlow

NO_TF_SCRIPT = r"""
import sys
from pathlib import Path
import numpy as np
import detector, detector.cli, detector.offline.analyse, detector.analysis.engine, detector.model.models, detector.model.bundle, detector.sources.video
import detector.model.features, detector.offline.formats, detector.offline.scoring, detector.analysis.segments, detector.demo.data, detector.demo.command
from detector.model.bundle import load_bundle
from detector.model.models import Models
from detector.offline.analyse import analyse
from detector.offline.formats import write_outputs

bundle = load_bundle(Path(sys.argv[1]))
models = Models(bundle, ["CPUExecutionProvider"])
models.warm_up()
feats = models.features(np.zeros((3, 299, 299, 3), np.uint8))
assert feats.shape == (3, 2048), feats.shape
probs = models.probabilities(np.zeros((2, bundle.window_frames, 2048), np.float32))
assert probs.shape == (2, len(bundle.classes)), probs.shape
result = analyse(Path(sys.argv[2]), bundle, models, progress=False)
write_outputs(Path(sys.argv[3]), "clip", result.segments, result.times, result.probs, result.classes,
              result.ad_classes, result.fps, result.total_frames, result.duration)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf2onnx", "tensorboard"))
assert not heavy, heavy[:10]
print("OK", len(result.probs))
"""


def test_bundle_loads_and_runs_without_tensorflow(bundle_dir: Path, demo_set, tmp_path: Path) -> None:
    clip = first_clip(demo_set, "test", "commercial")
    proc = subprocess.run([sys.executable, "-c", NO_TF_SCRIPT, str(bundle_dir), str(clip), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300, env=cli_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("OK"), proc.stdout
    assert (tmp_path / "out" / "clip.edl").is_file()


# ----------------------------------------------------------------------------- train

def test_train_end_to_end_writes_a_complete_bundle(bundle_dir: Path, demo_set) -> None:
    manifest = json.loads((bundle_dir / "model.json").read_text())
    assert manifest["format"] == 1
    assert manifest["classes"] == ["commercial", "football"]
    assert manifest["ad_classes"] == ["commercial"]
    assert manifest["window_frames"] == 40 and manifest["analysis_fps"] == 5
    assert manifest["input_size"] == [299, 299]
    for key in ("backbone", "sequence"):
        part = manifest[key]
        assert len(part["sha256"]) == 64 and (bundle_dir / part["file"]).is_file()
    assert manifest["sequence"]["parity_max_abs_diff"] <= 1e-4
    ev = manifest["evaluation"]
    cm = np.array(ev["confusion_matrix"])
    assert cm.shape == (2, 2) and cm.sum() == ev["windows"] > 0
    for cls in manifest["classes"]:
        assert set(ev["per_class"][cls]) >= {"precision", "recall", "f1", "support"}
    acc = ev["accuracy"]
    assert acc == pytest.approx(np.trace(cm) / cm.sum(), abs=1e-4)
    assert acc >= 0.8, f"held-out accuracy {acc:.4f} on {ev['windows']} test windows (chance 0.5); confusion {cm.tolist()}"
    # the training record
    assert (bundle_dir / "training" / "log.csv").is_file()
    assert (bundle_dir / "training" / "best.keras").is_file()
    assert manifest["training"]["epochs_run"] >= 1
    assert manifest["created"].endswith("Z")
    b = load_bundle(bundle_dir)
    assert b.classes == ("commercial", "football") and b.ad_mask == [True, False]
    print(f"\nheld-out window accuracy: {acc:.4f} ({ev['windows']} windows), switch latency: {ev.get('switch_latency')}")


def test_second_train_uses_the_feature_cache_and_prints_the_table(bundle_dir: Path, demo_set, tmp_path: Path,
                                                                  cache_env) -> None:
    out = copy_bundle(bundle_dir, tmp_path / "again")
    # with progress output (not a terminal here): progress goes to stderr, the report to stdout
    proc = run_cli("train", demo_set.data_dir, "-o", out, "--force", "--epochs", "1", env=cache_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = re.search(r"features ready videos=(\d+) from_cache=(\d+) skipped=(\d+)", proc.stderr)
    assert m, proc.stderr[-3000:]
    videos, cached, skipped = map(int, m.groups())
    n_videos = len(mp4s(demo_set.data_dir))
    assert (videos, cached, skipped) == (n_videos, n_videos, 0), m.group(0)
    # the evaluation table goes to stdout
    out_text = proc.stdout
    assert "confusion matrix" in out_text and "accuracy" in out_text, out_text
    for word in ("commercial", "football", "precision", "recall", "f1"):
        assert word in out_text, out_text
    assert "val_loss" in proc.stderr and "val_loss" not in out_text and "Epoch" not in out_text, out_text
    assert load_bundle(out).sequence_sha256


# ----------------------------------------------------------------------------- bad training data

@pytest.mark.parametrize("case", ["missing_data", "missing_test", "empty_class", "single_class", "single_class_named",
                                  "recording_without_labels"])
def test_bad_training_data_is_a_one_line_error(case: str, demo_set, tmp_path: Path, cache_env) -> None:
    data = tmp_path / "DATA"
    out = tmp_path / "model"
    args: list[str] = []
    if case == "missing_data":
        needle = str(data)
    elif case == "missing_test":
        make_layout(data, demo_set, {"train/football": ["football"], "train/commercial": ["commercial"]})
        needle = str(data / "test")
    elif case == "empty_class":
        make_layout(data, demo_set, {"train/football": ["football"], "train/commercial": ["commercial"],
                                     "test/football": ["football"], "test/commercial": []})
        needle = str(data / "test" / "commercial")
    elif case == "single_class":
        make_layout(data, demo_set, {"train/football": ["football"], "test/football": ["football"]})
        needle = "no class named 'commercial'"
    elif case == "single_class_named":
        make_layout(data, demo_set, {"train/football": ["football"], "test/football": ["football"]})
        args = ["--ad-class", "football"]
        needle = "only one class"
    else:
        make_layout(data, demo_set, {"train/football": ["football"], "train/commercial": ["commercial"],
                                     "test/football": ["football"], "test/commercial": ["commercial"]})
        shutil.copy2(demo_set.data_dir / "train" / "recording_01.mp4", data / "train" / "match.mp4")
        needle = str(data / "train" / "match.mp4")
    proc = run_cli("train", data, "-o", out, "--no-progress", *args, env=cache_env, timeout=300)
    assert_usage_error(proc, needle)
    assert_no_complete_bundle(out)


def test_every_video_unreadable(backbone_dir: Path, tmp_path: Path, cache_env) -> None:
    data = tmp_path / "DATA"
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label in ("football", "commercial"):
            (data / split / label).mkdir(parents=True)
            (data / split / label / "clip.mp4").write_bytes(rng.bytes(20000))
    out = copy_backbone(backbone_dir, tmp_path / "model")
    proc = run_cli("train", data, "-o", out, "--no-progress", env=cache_env, timeout=300)
    assert_usage_error(proc, str(data), "no training video could be decoded", "4 skipped")
    assert proc.stderr.count("skipping unreadable video") == 4
    assert_no_complete_bundle(out)


def test_every_clip_shorter_than_a_window(backbone_dir: Path, tmp_path: Path, cache_env) -> None:
    from detector.demo.data import write_clip

    data = tmp_path / "DATA"
    for split in ("train", "test"):
        for label in ("football", "commercial"):
            write_clip(data / split / label / "short.mp4", label, 2.0, seed=3, size=(160, 90))
    out = copy_backbone(backbone_dir, tmp_path / "model")
    proc = run_cli("train", data, "-o", out, "--no-progress", env=cache_env, timeout=300)
    assert_usage_error(proc, str(data), "shorter than a window")
    assert_no_complete_bundle(out)


def test_truncated_video_is_used_up_to_where_it_decodes(backbone_dir: Path, demo_set, tmp_path: Path, caplog) -> None:
    from detector.model.models import Models
    from detector.sources.video import DecodeReport, sample_video
    from ad_detector_train.dataset import Dataset, Item
    from ad_detector_train.trainer import TrainOptions, extract_all

    clip = first_clip(demo_set, "train", "football")
    truncated = faststart_truncated(clip, tmp_path / "cut.mp4")
    report = DecodeReport()
    frames = list(sample_video(truncated, 5.0, (299, 299), report))
    assert report.truncated, report
    assert 1.0 < report.last_time < 9.0, report           # a 10 s clip cut in half
    assert frames and frames[-1].media_time <= report.last_time

    # training warns with the time and uses what decoded
    models = Models(load_bundle(backbone_dir, require_sequence=False))
    ds = Dataset(root=tmp_path, classes=["commercial", "football"], ad_class="commercial",
                 items={"train": [Item(truncated, "train", label="football")], "test": []})
    opts = TrainOptions(data_dir=tmp_path, out_dir=tmp_path / "unused", cache_dir=tmp_path / "cache", progress=False)
    with caplog.at_level(logging.WARNING):
        feats, times, loaded, skipped = extract_all(ds, models, opts)
    assert skipped == [] and len(loaded["train"]) == 1
    assert len(feats[0]) == len(frames)
    warnings = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
    assert warnings and f"decoded_until_s={report.last_time:.2f}" in warnings[0], warnings


# ----------------------------------------------------------------------------- bad weights, bundles, output dirs

def test_weights_path_that_does_not_exist(tmp_path: Path) -> None:
    out = tmp_path / "model"
    proc = run_cli("export-backbone", "-o", out, "--weights", tmp_path / "missing.h5", timeout=300)
    assert_usage_error(proc, str(tmp_path / "missing.h5"), "not found")
    assert not out.exists()


@pytest.mark.parametrize("kind", ["hdf5", "garbage"])
def test_weights_file_that_is_not_inception_v3(kind: str, tmp_path: Path) -> None:
    weights = tmp_path / "weights.h5"
    if kind == "hdf5":
        h5py = pytest.importorskip("h5py")
        with h5py.File(weights, "w") as f:
            f.create_dataset("dense/kernel", data=np.random.default_rng(0).random((4, 4)))
            f.attrs["layer_names"] = [b"dense"]
    else:
        weights.write_bytes(np.random.default_rng(0).bytes(4096))
    out = tmp_path / "model"
    proc = run_cli("export-backbone", "-o", out, "--weights", weights, timeout=300)
    assert_usage_error(proc, str(weights), "not InceptionV3 weights")
    assert not out.exists()


def test_bundle_with_a_corrupt_backbone_is_refused(bundle_dir: Path, demo_set, tmp_path: Path) -> None:
    bad = copy_bundle(bundle_dir, tmp_path / "bad")
    path = bad / "backbone.onnx"
    with open(path, "r+b") as fh:
        fh.seek(path.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0xFF]))
    out = tmp_path / "out"
    proc = run_cli("classify", first_clip(demo_set, "test", "football"), "-m", bad, "-o", out, "--no-progress")
    assert_usage_error(proc, str(path), "does not match model.json")
    assert not out.exists()
    with pytest.raises(UsageError, match="does not match"):
        load_bundle(bad)


def test_train_refuses_a_trained_bundle_without_force(bundle_dir: Path, demo_set, tmp_path: Path, cache_env) -> None:
    out = copy_bundle(bundle_dir, tmp_path / "trained")
    before = {name: (out / name).read_bytes() for name in CONTRACT_FILES}
    proc = run_cli("train", demo_set.data_dir, "-o", out, "--no-progress", env=cache_env)
    assert_usage_error(proc, str(out), "--force")
    assert {name: (out / name).read_bytes() for name in CONTRACT_FILES} == before
    load_bundle(out)


def test_export_refuses_a_directory_with_foreign_files_or_a_trained_model(bundle_dir: Path, tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"\xff\xd8 not a model")
    proc = run_cli("export-backbone", "-o", foreign, "--weights", "none", timeout=300)
    assert_usage_error(proc, str(foreign), "--force")
    assert sorted(p.name for p in foreign.iterdir()) == ["holiday.jpg"]

    trained = copy_bundle(bundle_dir, tmp_path / "trained")
    before = (trained / "model.json").read_bytes()
    proc = run_cli("export-backbone", "-o", trained, "--weights", "none", timeout=300)
    assert_usage_error(proc, str(trained), "--force")
    assert (trained / "model.json").read_bytes() == before
    load_bundle(trained)


def test_a_killed_export_leaves_nothing_that_blocks_the_next(tmp_path: Path) -> None:
    from ad_detector_export.common import foreign_entries, prepare_out_dir

    out = tmp_path / "model"
    (out / ".export.k2j3x9").mkdir(parents=True)          # the staging directory of a killed export
    (out / ".export.k2j3x9" / "backbone.onnx").write_bytes(b"half")
    (out / ".model.abc.partial.json").write_text("{")      # a manifest being written atomically
    assert foreign_entries(out) == []
    assert prepare_out_dir(out, force=False) is None


def test_interrupted_train_never_leaves_a_complete_looking_bundle(bundle_dir: Path, demo_set, tmp_path: Path,
                                                                  cache_env) -> None:
    out = copy_bundle(bundle_dir, tmp_path / "interrupted")
    # an empty feature cache, so the kill lands while features are being extracted
    proc = subprocess.Popen([*CLI, "train", str(demo_set.data_dir), "-o", str(out), "--force", "--no-progress",
                             "--cache-dir", str(tmp_path / "cache")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=cli_env(cache_env))
    watchdog = threading.Timer(300, proc.kill)
    watchdog.start()
    seen = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            seen.append(line)
            if "dataset classes=" in line:
                break
        time.sleep(1.0)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "".join(seen)[-2000:]
    assert_no_complete_bundle(out)
    assert read_manifest(out) is None or not (out / "sequence.onnx").exists()


# ----------------------------------------------------------------------------- the [train] extra

NO_TRAIN_EXTRA = r"""
import sys
# as if `pip install ad-detector` without [train]: the training stack cannot be found or imported
for name in ("tensorflow", "keras", "tf2onnx"):
    sys.modules[name] = None
from detector.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("command", ["train", "export-backbone"])
def test_commands_that_need_the_train_extra_say_so(command: str, tmp_path: Path) -> None:
    args = ["train", str(tmp_path / "DATA"), "-o", str(tmp_path / "m")] if command == "train" else \
        ["export-backbone", "-o", str(tmp_path / "m"), "--weights", "none"]
    proc = subprocess.run([sys.executable, "-c", NO_TRAIN_EXTRA, *args], capture_output=True, text=True, timeout=120,
                          env=cli_env())
    line = assert_usage_error(proc, "pip install 'ad-detector[train]'", f"ad-detector {command}")
    assert "tensorflow" in line
    assert not (tmp_path / "m").exists()
