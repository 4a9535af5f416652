"""`ad-detector export-backbone --quantize int8`: a static int8 copy of `backbone.onnx`.

Why static int8 with calibration on the user's own training frames: the backbone is the
bottleneck of a CPU-only machine, and OpenVINO runs a QDQ-quantized InceptionV3 about 6x
faster than ONNX Runtime runs the fp32 graph (bench/RESULTS.md). Activation ranges taken
from real frames of the channels the model will watch (football pitches, studio sets,
commercials) keep the features close to fp32; ranges from random or ImageNet images would
not. The quantized graph is an ordinary ONNX file (QuantizeLinear/DequantizeLinear pairs),
so ONNX Runtime and OpenVINO both run it and the bundle stays one format.

Why NNCF rather than onnxruntime.quantization, chosen by measurement (bench/RESULTS.md
section 6b): both give the same speed, but NNCF's post-training quantization corrects the
bias each quantized convolution adds to its output (fast bias correction). On the CI
bundle that halved the sequence model's worst probability change (0.28 -> 0.15) and lifted
the features' direction agreement around their mean from 0.982 to 0.994; ORT's MinMax int8
moved 3% of one bundle's decided windows, NNCF's none. The first convolution stays fp32:
OpenVINO mis-executes the signed int8 quantizer NNCF puts on the graph's [-1, 1] input
(features were unrelated to fp32, while ONNX Runtime ran the same file correctly); it is
1 of 94 convolutions and costs no measurable speed.

The fp32 `backbone.onnx` stays in the bundle unchanged (training, parity checks and GPUs
use it); the int8 file is recorded under `backbone.variants.int8` in `model.json` with its
hash, the calibration it came from and how close its features are to fp32 on frames the
calibration did not see.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from detector.model.bundle import BACKBONE_INPUT, read_manifest, sha256_file
from detector.errors import RuntimeFailure, UsageError
from detector.sources.video import sample_video
from ad_detector_export.common import STAGING_PREFIX, now_rfc3339, write_manifest

log = logging.getLogger(__name__)

INT8_FILE = "backbone.int8.onnx"
DEFAULT_CALIBRATION_FRAMES = 240
HOLDOUT_FRAMES = 32
# Features of the int8 graph must point the same way as fp32 ones; measured 0.9998 here
MIN_COSINE = 0.98
# ... also around their mean: raw cosine hides errors when every frame shares a large common
# component (0.9998 raw was 0.982 centred for the MinMax graph that failed the guard; NNCF 0.994)
MIN_CENTRED_COSINE = 0.97


def calibration_videos(data_dir: Path) -> list[Path]:
    """Every training video (clips of every class and labelled recordings), sorted."""
    from detector.sources.video import VIDEO_SUFFIXES

    root = Path(data_dir)
    if not root.is_dir():
        raise UsageError(f"{data_dir}: calibration data directory not found; pass the training DATA_DIR (with train/<class>/*.mp4)")
    base = root / "train" if (root / "train").is_dir() else root
    videos = sorted(p for p in base.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES and not p.name.startswith("."))
    if not videos:
        raise UsageError(f"{base}: no videos to calibrate on ({', '.join(sorted(VIDEO_SUFFIXES)[:4])}, ...); "
                         "pass the training DATA_DIR")
    return videos


def calibration_frames(videos: list[Path], count: int, fps: float, size: tuple[int, int], seed: int = 0,
                       progress: bool = True) -> np.ndarray:
    """`count` frames spread evenly over all videos, sampled and resized exactly as the engine does."""
    from tqdm import tqdm

    per_video = max(1, -(-(count + HOLDOUT_FRAMES) // len(videos)))
    rng = random.Random(seed)
    frames: list[np.ndarray] = []
    for video in tqdm(videos, desc="calibration frames", unit="video", disable=not progress, leave=False):
        try:
            sampled = [f.image for f in sample_video(video, analysis_fps=fps, size=size)]
        except UsageError as exc:
            log.warning("calibration video skipped file=%s reason=%r", video, str(exc))
            continue
        if len(sampled) > per_video:
            sampled = [sampled[i] for i in sorted(rng.sample(range(len(sampled)), per_video))]
        frames.extend(sampled)
    if len(frames) < 8:
        raise UsageError(f"{videos[0].parent}: only {len(frames)} frames could be decoded for calibration; need at least 8")
    rng.shuffle(frames)
    return np.stack(frames[:count + HOLDOUT_FRAMES])


def feature_agreement(fp32: Path, int8: Path, frames: np.ndarray) -> dict[str, float]:
    """How close int8 features are to fp32 ones (ORT CPU): cosine similarity per frame, raw and
    centred on the fp32 features' mean (the part that tells frames apart), and relative L2 error."""
    import onnxruntime as ort

    def run(path: Path) -> np.ndarray:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return np.concatenate([sess.run(None, {BACKBONE_INPUT: frames[i:i + 8]})[0] for i in range(0, len(frames), 8)])

    ref, got = run(fp32), run(int8)
    return compare_features(ref, got)


def compare_features(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    """Agreement figures of two feature matrices [frames, 2048] (pure)."""
    def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)

    mean = ref.mean(0)
    cos, centred = cosine(ref, got), cosine(ref - mean, got - mean)
    rel = float(np.linalg.norm(got - ref) / (np.linalg.norm(ref) + 1e-12))
    return {"frames": int(len(ref)), "cosine_mean": round(float(cos.mean()), 6), "cosine_min": round(float(cos.min()), 6),
            "centred_cosine_mean": round(float(centred.mean()), 6), "centred_cosine_min": round(float(centred.min()), 6),
            "relative_l2_error": round(rel, 6)}


def first_conv(model: Any) -> str | None:
    """Name of the graph's first Conv node (the one that reads the scaled input image)."""
    for node in model.graph.node:
        if node.op_type == "Conv":
            return node.name or None
    return None


def quantize_model(fp32: Path, calib: np.ndarray, dest: Path, progress: bool = False) -> dict[str, Any]:
    """Write a QDQ int8 copy of `fp32` to `dest`, calibrated on `calib` (uint8 BGR frames).

    NNCF post-training quantization: int8 symmetric weights per channel, uint8/int8
    activations per tensor, fast bias correction, first convolution kept fp32 (see the
    module docstring). Returns the method's description for the manifest.
    """
    try:
        import nncf
        import onnx
    except ImportError as exc:
        raise UsageError(f"int8 quantization needs the training extra ({exc.name} is missing): pip install 'ad-detector[train]'") from exc
    nncf.set_log_level(logging.WARNING)   # its per-layer INFO lines would drown ours
    model = onnx.load(str(fp32))
    keep = first_conv(model)
    dataset = nncf.Dataset([calib[i:i + 1] for i in range(len(calib))], lambda x: {BACKBONE_INPUT: np.ascontiguousarray(x)})
    ignored = nncf.IgnoredScope(names=[keep], validate=False) if keep else None
    # NNCF draws its progress bars on stdout; ours is for results, so they go to stderr or nowhere
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(sys.stderr if progress else devnull):
        quantized = nncf.quantize(model, dataset, subset_size=len(calib), fast_bias_correction=True,
                                  **({"ignored_scope": ignored} if ignored else {}))
    onnx.save(quantized, str(dest))
    return {"quantizer": f"nncf {nncf.__version__} post-training (fast bias correction)",
            "weights": "int8 per-channel (symmetric)", "activations": "8-bit per-tensor (NNCF default ranges)",
            "kept_fp32": [keep] if keep else []}


def quantize_bundle(out_dir: Path, calibration: Path, frames: int = DEFAULT_CALIBRATION_FRAMES, seed: int = 0,
                    progress: bool = True) -> dict[str, Any]:
    """Add (or replace) the int8 variant of the bundle's backbone; returns its manifest part."""
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    if manifest is None or not manifest.get("backbone"):
        raise UsageError(f"{out_dir}: no backbone.onnx to quantize; run `ad-detector export-backbone -o {out_dir}` first")
    fp32 = out_dir / manifest["backbone"]["file"]
    if not fp32.is_file() or sha256_file(fp32) != manifest["backbone"]["sha256"]:
        raise UsageError(f"{fp32}: missing or does not match model.json; re-export the backbone")
    if frames < 8:
        raise UsageError(f"--calibration-frames {frames}: need at least 8 frames")
    videos = calibration_videos(calibration)
    size = tuple(manifest.get("input_size") or (299, 299))
    fps = float(manifest.get("analysis_fps") or 5.0)
    t0 = time.perf_counter()
    pool = calibration_frames(videos, frames, fps, size, seed, progress)   # type: ignore[arg-type]
    holdout = pool[-HOLDOUT_FRAMES:] if len(pool) > HOLDOUT_FRAMES + 8 else pool[: min(len(pool), HOLDOUT_FRAMES)]
    calib = pool[:-HOLDOUT_FRAMES] if len(pool) > HOLDOUT_FRAMES + 8 else pool
    log.info("calibrating int8 backbone frames=%d videos=%d holdout=%d quantizer=nncf", len(calib), len(videos), len(holdout))
    target = out_dir / INT8_FILE
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=STAGING_PREFIX) as tmp:
        staged = Path(tmp) / INT8_FILE
        method = quantize_model(fp32, calib, staged, progress)
        agreement = feature_agreement(fp32, staged, holdout)
        if (not np.isfinite(agreement["cosine_min"]) or agreement["cosine_mean"] < MIN_COSINE
                or agreement["centred_cosine_mean"] < MIN_CENTRED_COSINE):
            raise RuntimeFailure(f"int8 backbone rejected: its features differ from fp32 (cosine mean {agreement['cosine_mean']:.4f}, "
                                 f"around the mean {agreement['centred_cosine_mean']:.4f}; need {MIN_COSINE} and "
                                 f"{MIN_CENTRED_COSINE}) on {len(holdout)} held-out frames; the bundle was not changed")
        manifest.pop("format", None)
        manifest["backbone"].pop("variants", None)
        write_manifest(out_dir, manifest)          # the manifest never names a file that is being replaced
        staged.replace(target)
    part = {"file": INT8_FILE, "sha256": sha256_file(target), "precision": "int8", "format": "QDQ", **method,
            "calibration": {"data": str(Path(calibration).resolve()), "videos": len(videos), "frames": int(len(calib)),
                            "seed": seed},
            "agreement_with_fp32": agreement, "created": now_rfc3339()}
    manifest["backbone"]["variants"] = {"int8": part}
    write_manifest(out_dir, manifest)
    log.info("int8 backbone written path=%s sha256=%s cosine_mean=%.5f centred_cosine_mean=%.4f centred_cosine_min=%.4f seconds=%.0f",
             target, part["sha256"][:12], agreement["cosine_mean"], agreement["centred_cosine_mean"],
             agreement["centred_cosine_min"], time.perf_counter() - t0)
    return part
