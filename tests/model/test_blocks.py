"""Cue blocks beside the backbone features (issue 16, points 3 and 5): the block functions, the
manifest, a blocks bundle trained and exported for real, the same cue vectors in training and
classification, a source without audio (offline and live), and the side-by-side ablation.

One small blocks bundle is trained per module (2 epochs) on the session's demo set, after the
session bundle, so every feature and cue vector comes from the warm feature cache.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from detector.analysis.audiofeatures import AUDIO_FEATURE_NAMES
from detector.analysis.blocks import ALL_BLOCKS, CueComputer, block_columns, fill_missing, parse_block_list
from detector.analysis.visualcues import VISUAL_CUE_NAMES
from detector.analysis.framestats import frame_stats
from detector.errors import UsageError

RATE = 16_000
GREY = frame_stats(np.full((36, 64, 3), 120, np.uint8))
BLACK = frame_stats(np.zeros((36, 64, 3), np.uint8))
RED = frame_stats(np.dstack([np.zeros((36, 64)), np.zeros((36, 64)), np.full((36, 64), 250)]).astype(np.uint8))


# ----------------------------------------------------------------------------- the block functions (pure)

A_PRESENT, A_RMS, A_PEAK, A_SILENCE = (AUDIO_FEATURE_NAMES.index(n) for n in ("audio_present", "rms_dbfs", "peak_dbfs", "silence"))
V = {n: i for i, n in enumerate(VISUAL_CUE_NAMES)}


def test_audio_block_measures_the_sound_and_marks_missing_audio() -> None:
    cc = CueComputer(["audio"], fps=5.0)
    assert cc.size == len(AUDIO_FEATURE_NAMES) == 26
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(RATE // 5) / RATE)).astype(np.float32)
    v = cc.step(0.0, GREY, tone)
    assert v[A_RMS] == pytest.approx(-9.03, abs=0.05) and v[A_PEAK] == pytest.approx(-6.02, abs=0.05)
    assert (v[A_SILENCE], v[A_PRESENT]) == (0.0, 1.0) and np.isfinite(v).all()
    silence = cc.step(0.2, GREY, np.zeros(3200, np.float32))
    assert (silence[A_SILENCE], silence[A_PRESENT]) == (1.0, 1.0)                       # digital silence: silent, present
    missing = cc.step(0.4, GREY, None)
    assert missing[A_PRESENT] == 0.0 and np.isnan(np.delete(missing, A_PRESENT)).all()  # no audio: NaN values, present 0


def test_audio_block_keeps_its_context_over_one_late_step_but_not_over_an_outage() -> None:
    """Live audio can arrive a step late: one missing step must not wipe the 3 s context; a
    long outage or a stream gap must (sound before an outage is never glued to sound after it)."""
    rng = np.random.default_rng(1)
    loud = (0.3 * rng.standard_normal(3200)).astype(np.float32)
    quiet = (0.003 * rng.standard_normal(3200)).astype(np.float32)
    st = AUDIO_FEATURE_NAMES.index("short_term_lufs")

    def short_term(gap_steps: int, reset: bool = False) -> float:
        cc = CueComputer(["audio"], fps=5.0)
        for i in range(10):
            cc.step(i * 0.2, GREY, loud)
        for i in range(gap_steps):
            cc.step(2.0 + i * 0.2, GREY, None)
        if reset:
            cc.reset()
        return float(cc.step(9.0, GREY, quiet)[st])

    fresh = CueComputer(["audio"], fps=5.0).step(0.0, GREY, quiet)[st]
    assert short_term(1) > fresh + 20              # the loud context is still there after one late step
    assert short_term(15) == pytest.approx(fresh, abs=0.01)          # 3 s without audio: a fresh context
    assert short_term(0, reset=True) == pytest.approx(fresh, abs=0.01)   # a stream gap: a fresh context


def test_visual_block_measures_picture_cues_and_keeps_the_logo_across_a_gap() -> None:
    cc = CueComputer(["visual"], fps=5.0)
    assert cc.size == len(VISUAL_CUE_NAMES) == 8
    first = cc.step(0.0, BLACK, None, np.zeros((36, 64, 3), np.uint8))
    assert first[V["black"]] == 1.0 and first[V["cut"]] == 0.0
    grey = np.full((36, 64, 3), 120, np.uint8)
    assert cc.step(0.2, GREY, None, grey)[V["cut"]] > 0.9                  # black -> grey: a cut
    assert cc.step(0.4, GREY, None, grey)[V["cut"]] == 0.0                 # same picture: none
    boxed = np.zeros((90, 160, 3), np.uint8)
    boxed[12:78] = 120                                                     # bars above and below
    assert cc.step(0.6, GREY, None, boxed)[V["letterbox"]] == pytest.approx(24 / 90, abs=0.03)
    # a station logo: static edges in a corner over moving content, learnt in 30 s (150 steps at 5 fps)
    rng = np.random.default_rng(3)
    cc = CueComputer(["visual"], fps=5.0)

    def frame(logo: bool) -> np.ndarray:
        img = np.full((120, 200, 3), 70, np.uint8)
        x = int(rng.integers(60, 140))
        img[40:90, x:x + 30] = 200                                          # something moving in the middle
        if logo:
            img[6:20, 168:192] = 255                                         # a white bug top right
        return img

    values = [cc.step(i * 0.2, GREY, None, frame(True)) for i in range(200)]
    assert values[0][V["logo_ready"]] == 0.0 and values[-1][V["logo_ready"]] == 1.0 and values[-1][V["logo"]] > 0.8
    cc.reset()                                                              # a reconnect: the channel's logo stays
    after = cc.step(60.0, GREY, None, frame(False))
    assert after[V["logo_ready"]] == 1.0 and after[V["logo"]] < 0.2 and after[V["cut"]] == 0.0
    # without a picture the stats-based values are still measured, the rest is missing
    partial = CueComputer(["visual"]).step(0.0, BLACK, None)
    assert partial[V["black"]] == 1.0 and np.isnan(partial[V["logo"]])


def test_missing_values_become_the_training_mean_and_block_lists_parse() -> None:
    mean = np.array([-24.0, -12.0, 0.0, 1.0], np.float32)
    filled = fill_missing(np.array([[np.nan, np.nan, np.nan, 0.0]], np.float32), mean)
    assert filled.tolist() == [[-24.0, -12.0, 0.0, 0.0]]       # standardised: 0 0 0 and present far below its mean
    assert parse_block_list("audio,visual") == ("audio", "visual") and parse_block_list("") == () == parse_block_list("none")
    with pytest.raises(ValueError, match="unknown block 'logo'; this version computes audio, visual"):
        parse_block_list("audio,logo")
    assert block_columns(ALL_BLOCKS, ["visual", "audio"]).tolist() == [*range(26, 34), *range(26)]


def test_manifest_blocks_are_checked_against_what_this_version_computes(tmp_path: Path) -> None:
    from detector.model.bundle import _parse_blocks

    n = len(AUDIO_FEATURE_NAMES)
    good = {"name": "audio", "size": n, "names": list(AUDIO_FEATURE_NAMES), "mean": [-24] * n, "std": [3] * n}
    assert _parse_blocks([good], tmp_path / "model.json")[0].size == n
    # a bundle of the first blocks version (4 audio elements) is refused with what to do
    old = {"name": "audio", "size": 4, "names": ["level_dbfs", "peak_dbfs", "silent", "present"],
           "mean": [-24, -12, 0, 1], "std": [3, 3, 0.1, 0.1]}
    for bad, needle in [({**good, "name": "logo"}, "not a block this version computes"),
                        (old, "retrain the bundle with this version"),
                        ({**good, "std": [3] * (n - 1) + [0]}, "'blocks[0].std' must be positive"),
                        ({**good, "mean": [1, 2]}, f"'blocks[0].mean' must list {n} finite numbers")]:
        with pytest.raises(UsageError, match=re.escape(needle)):
            _parse_blocks([bad], tmp_path / "model.json")


# ----------------------------------------------------------------------------- a real blocks bundle

@pytest.fixture(scope="module")
def blocks_bundle(tmp_path_factory, bundle_dir: Path, backbone_dir: Path, demo_set, cache_env) -> Path:
    """Trained with --blocks audio,visual (after `bundle_dir`, whose training filled the feature cache)."""
    out = tmp_path_factory.mktemp("blocks") / "bundle"
    out.mkdir()
    for name in ("backbone.onnx", "model.json"):
        shutil.copy2(backbone_dir / name, out / name)
    proc = run_cli("train", demo_set.data_dir, "-o", out, "--no-progress", "--epochs", "2", "--blocks", "audio,visual", env=cache_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"features ready videos=(\d+) from_cache=\1 ", proc.stderr), proc.stderr[-3000:]   # cues came from the cache
    return out


@pytest.fixture(scope="module")
def clip(tmp_path_factory, demo_set) -> tuple[Path, Path, Path]:
    """14 s of the demo broadcast around its first break edge (football to 8 s, then ads: one
    8 s window and six more decisions), with its sound, the same without an audio stream, and the truth."""
    d = tmp_path_factory.mktemp("clip")
    with_audio, silent, truth = d / "edge.mp4", d / "edge_noaudio.mp4", d / "edge.csv"
    subprocess.run(["ffmpeg", "-v", "error", "-ss", "22", "-i", str(demo_set.broadcast), "-t", "14", "-c:v", "mpeg4", "-q:v", "3",
                    "-c:a", "aac", str(with_audio)], check=True, timeout=120)
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(with_audio), "-an", "-c", "copy", str(silent)], check=True, timeout=60)
    truth.write_text("start,end,label\n0.000,8.000,football\n8.000,14.000,commercial\n")
    return with_audio, silent, truth


def test_blocks_bundle_declares_its_blocks_and_its_graph_takes_cues(blocks_bundle: Path, bundle_dir: Path) -> None:
    import onnxruntime as ort

    from detector.model.bundle import load_bundle

    manifest = json.loads((blocks_bundle / "model.json").read_text())
    assert [(b["name"], b["size"]) for b in manifest["blocks"]] == [("audio", 26), ("visual", 8)]
    audio = manifest["blocks"][0]
    assert audio["names"] == list(AUDIO_FEATURE_NAMES)
    assert -40 < audio["mean"][A_RMS] < -15 and audio["std"][A_RMS] > 0.5     # the demo's sound really was measured
    assert 0.9 < audio["mean"][A_PRESENT] <= 1.0
    bundle = load_bundle(blocks_bundle)
    assert bundle.cue_size == 34
    sess = ort.InferenceSession(str(blocks_bundle / "sequence.onnx"), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape[1:]) for i in sess.get_inputs()] == [("features", [bundle.window_frames, 2048]),
                                                                   ("cues", [bundle.window_frames, 34])]
    # a bundle trained without blocks is what it always was: no key, one input
    assert "blocks" not in json.loads((bundle_dir / "model.json").read_text())
    plain = ort.InferenceSession(str(bundle_dir / "sequence.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in plain.get_inputs()] == ["features"]


def test_classify_feeds_the_model_the_cue_vectors_training_computes(blocks_bundle: Path, clip) -> None:
    """No skew: the engine (live and classify) and the training extraction give the same vectors."""
    from detector.model.bundle import load_bundle
    from detector.model.features import extract_features
    from detector.model.models import Models
    from detector.offline.analyse import analyse

    with_audio, _, _ = clip
    bundle = load_bundle(blocks_bundle)
    models = Models(bundle)
    result = analyse(with_audio, bundle, models, progress=False)
    track = extract_features(with_audio, models.features, bundle.analysis_fps, bundle.input_size)
    names = [b.name for b in bundle.blocks]
    trained = track.cues[:, block_columns(track.cue_blocks, names)]
    assert result.cues is not None and result.cues.shape == trained.shape == (len(track.times), 34)
    np.testing.assert_array_equal(result.cues, trained)
    present = result.cues[:, A_PRESENT]
    assert present.mean() > 0.95                      # the clip has sound at (nearly) every step
    assert np.nanmax(result.cues[:, 26 + V["cut"]]) > 0.3         # and cuts (the break edge, the spots)


def test_a_source_without_audio_runs_with_the_audio_block_missing(blocks_bundle: Path, clip, tmp_path: Path) -> None:
    """Offline: classify works and says so; live: the daemon publishes segment events."""
    from livekit import Daemon, Listener, write_config

    _, silent, _ = clip
    proc = run_cli("classify", silent, "-m", blocks_bundle, "-o", tmp_path / "out", "--formats", "json", "--no-progress",
                   "--engine", "onnxruntime", "--precision", "fp32")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "source has no audio, the model's audio block is marked missing" in proc.stderr
    segments = json.loads((tmp_path / "out" / "edge_noaudio.segments.json").read_text())
    assert segments and segments[0]["start"] == 0.0 and segments[-1]["end"] == pytest.approx(14.0, abs=0.1)

    cfg = tmp_path / "config.yaml"
    # paced as live: read at full speed, a slow CPU drops frames at the ring and each replay of
    # the 14 s file starts a fresh window that never fills (AMD EPYC session, 2026-12-05)
    ep = write_config(cfg, blocks_bundle, [{"name": "mute", "source": str(silent), "realtime": True}])
    listener = Listener(ep["events"])
    daemon = Daemon(cfg)
    try:
        assert listener.wait_for(lambda: listener.of_type("segment.start"), timeout=60), daemon.log()[-3000:]
        assert daemon.proc.poll() is None, daemon.log()[-3000:]
    finally:
        code = daemon.stop()
        listener.close()
    first = listener.of_type("segment.start")[0]
    assert first["channel"] == "mute" and first["label"] in ("football", "commercial")
    log = daemon.log()
    assert code == 0, log[-3000:]
    assert "source has no audio channel=mute" in log and "Traceback" not in log


def test_evaluate_ablation_prints_every_bundle_side_by_side(blocks_bundle: Path, bundle_dir: Path, clip) -> None:
    with_audio, _, truth = clip
    proc = run_cli("evaluate", with_audio, "--truth", truth, "-m", bundle_dir, "-m", blocks_bundle, "--no-progress",
                   "--engine", "onnxruntime", "--precision", "fp32")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["video"] == str(with_audio)
    assert [(m["model"], m["blocks"]) for m in out["models"]] == [(str(bundle_dir), []), (str(blocks_bundle), ["audio", "visual"])]
    for m in out["models"]:
        assert 0.0 <= m["frame_accuracy"] <= 1.0 and "ad_f1" in m and "boundary_recall_1s" in m
    # both bundles carry the same backbone: one decode and backbone pass served both ...
    assert f"backbone shared with={bundle_dir}" in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.count("models loaded bundle=") == 2 and proc.stderr.count("backbone shared with=") == 1
    # ... and each bundle scores exactly as it does alone
    alone = run_cli("evaluate", with_audio, "--truth", truth, "-m", blocks_bundle, "--no-progress",
                    "--engine", "onnxruntime", "--precision", "fp32")
    assert alone.returncode == 0, alone.stderr[-3000:]
    single = json.loads(alone.stdout)
    assert {k: v for k, v in out["models"][1].items() if k not in ("model", "blocks", "speed_x_realtime")} == \
        {k: v for k, v in single.items() if k not in ("video", "speed_x_realtime")}
