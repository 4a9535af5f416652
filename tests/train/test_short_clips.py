"""Issue 13 item 1: clips shorter than the window (ad spots are often 5-10 s) train by default.

Through the real command line on generated clips in the tutorial's layout: 6 s clips and the
default 8 s window. Clips from half a window up to a window give windows padded exactly the
way a live window is filled at stream start (the oldest frame repeated in front,
`detector.analysis.window.pad_front`), the bundle records from how many frames it may decide
(`window_min_frames`), and clips too short even for that are a one-line error naming the
option that fixes it.
"""

from __future__ import annotations

import json
from pathlib import Path


from conftest import assert_usage_error, run_cli
from detector.model.bundle import load_bundle


def short_clip_layout(root: Path, seconds: float, train: int = 3, test: int = 1) -> Path:
    from detector.demo.data import write_clip

    for split, count in (("train", train), ("test", test)):
        for label in ("football", "commercial"):
            for i in range(count):
                write_clip(root / split / label / f"{label}_{i}.mp4", label, seconds, seed=100 * i + (split == "test"),
                           size=(160, 90))
    return root


def copy_backbone(backbone_dir: Path, dst: Path) -> Path:
    import shutil

    dst.mkdir(parents=True)
    for name in ("backbone.onnx", "model.json"):
        shutil.copy2(backbone_dir / name, dst / name)
    return dst


def test_six_second_clips_train_with_the_default_window(backbone_dir: Path, tmp_path: Path, cache_env) -> None:
    data = short_clip_layout(tmp_path / "DATA", 6.0)
    out = copy_backbone(backbone_dir, tmp_path / "model")
    proc = run_cli("train", data, "-o", out, "--no-progress", "--epochs", "2", env=cache_env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no training windows" not in proc.stderr
    assert "skipping video shorter" not in proc.stderr
    # the log says what was done with the short clips, and which option changes it
    padded = [l for l in proc.stderr.splitlines() if "padded" in l and "--window-seconds" in l]
    assert padded, proc.stderr[-3000:]
    manifest = json.loads((out / "model.json").read_text())
    assert manifest["window_frames"] == 40                       # the default window, not silently changed
    assert manifest["window_min_frames"] == 20                   # the engine may decide from half a window on
    windows = manifest["training"]["windows"]
    assert windows["train"]["padded"] > 0 and windows["test"]["padded"] > 0, windows
    assert windows["train"]["transition"] > 0, windows           # short clips still teach the switch
    assert manifest["evaluation"]["windows"] > 0
    assert load_bundle(out).sequence_sha256


def test_clips_too_short_even_for_a_padded_window_name_the_option(backbone_dir: Path, tmp_path: Path, cache_env) -> None:
    data = short_clip_layout(tmp_path / "DATA", 2.0, train=1, test=1)
    out = copy_backbone(backbone_dir, tmp_path / "model")
    proc = run_cli("train", data, "-o", out, "--no-progress", env=cache_env, timeout=300)
    line = assert_usage_error(proc, str(data), "shorter than a window", "--window-seconds")
    assert "--window-seconds 2" in line, line       # the longest clip's length: every clip fills such a window
