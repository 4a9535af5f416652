"""`ad-detector export-backbone --quantize int8`: a static int8 copy of `backbone.onnx`.

Why static int8 with calibration on the user's own training frames: the backbone is the
bottleneck of a CPU-only machine, and OpenVINO runs a QDQ-quantized InceptionV3 about 6x
faster than ONNX Runtime runs the fp32 graph (bench/RESULTS.md). Activation ranges taken
from real frames of the channels the model will watch (football pitches, studio sets,
commercials) keep the features close to fp32; ranges from random or ImageNet images would
not. The quantized graph is an ordinary ONNX file (QuantizeLinear/DequantizeLinear pairs),
so ONNX Runtime and OpenVINO both run it and the bundle stays one format.

The fp32 `backbone.onnx` stays in the bundle unchanged (training, parity checks and GPUs
use it); the int8 file is recorded under `backbone.variants.int8` in `model.json` with its
hash, the calibration it came from and how close its features are to fp32 on frames the
calibration did not see.
"""

from __future__ import annotations

import logging
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from detector.bundle import BACKBONE_INPUT, read_manifest, sha256_file
from detector.errors import RuntimeFailure, UsageError
from detector.video import sample_video
from export.common import STAGING_PREFIX, now_rfc3339, write_manifest

log = logging.getLogger(__name__)

INT8_FILE = "backbone.int8.onnx"
DEFAULT_CALIBRATION_FRAMES = 240
HOLDOUT_FRAMES = 32
# Features of the int8 graph must point the same way as fp32 ones; measured 0.9998 here
MIN_COSINE = 0.98


def calibration_videos(data_dir: Path) -> list[Path]:
    """Every training video (clips of every class and labelled recordings), sorted."""
    from train.dataset import VIDEO_SUFFIXES

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


class _Reader:
    """onnxruntime.quantization calibration reader: a few real frames per call."""

    def __init__(self, frames: np.ndarray, batch: int = 8):
        self.frames, self.batch, self.pos = frames, batch, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.pos >= len(self.frames):
            return None
        chunk = self.frames[self.pos:self.pos + self.batch]
        self.pos += self.batch
        return {BACKBONE_INPUT: np.ascontiguousarray(chunk)}

    def rewind(self) -> None:
        self.pos = 0


def feature_agreement(fp32: Path, int8: Path, frames: np.ndarray) -> dict[str, float]:
    """Cosine similarity and relative L2 error of int8 features against fp32 ones (ORT CPU)."""
    import onnxruntime as ort

    def run(path: Path) -> np.ndarray:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return np.concatenate([sess.run(None, {BACKBONE_INPUT: frames[i:i + 8]})[0] for i in range(0, len(frames), 8)])

    ref, got = run(fp32), run(int8)
    cos = (ref * got).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1) + 1e-12)
    rel = float(np.linalg.norm(got - ref) / (np.linalg.norm(ref) + 1e-12))
    return {"frames": int(len(frames)), "cosine_mean": round(float(cos.mean()), 6), "cosine_min": round(float(cos.min()), 6),
            "relative_l2_error": round(rel, 6)}


def quantize_bundle(out_dir: Path, calibration: Path, frames: int = DEFAULT_CALIBRATION_FRAMES, seed: int = 0,
                    progress: bool = True) -> dict[str, Any]:
    """Add (or replace) the int8 variant of the bundle's backbone; returns its manifest part."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

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
    log.info("calibrating int8 backbone frames=%d videos=%d holdout=%d method=MinMax per_channel=true", len(calib), len(videos), len(holdout))
    target = out_dir / INT8_FILE
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=STAGING_PREFIX) as tmp:
        pre = Path(tmp) / "pre.onnx"
        staged = Path(tmp) / INT8_FILE
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(staged), _Reader(calib), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
        agreement = feature_agreement(fp32, staged, holdout)
        if not np.isfinite(agreement["cosine_min"]) or agreement["cosine_mean"] < MIN_COSINE:
            raise RuntimeFailure(f"int8 backbone rejected: its features differ from fp32 (cosine mean {agreement['cosine_mean']:.4f} "
                                 f"< {MIN_COSINE}) on {len(holdout)} held-out frames; the bundle was not changed")
        manifest.pop("format", None)
        manifest["backbone"].pop("variants", None)
        write_manifest(out_dir, manifest)          # the manifest never names a file that is being replaced
        staged.replace(target)
    part = {"file": INT8_FILE, "sha256": sha256_file(target), "precision": "int8", "format": "QDQ",
            "weights": "int8 per-channel (symmetric), activations uint8 (MinMax)",
            "calibration": {"data": str(Path(calibration).resolve()), "videos": len(videos), "frames": int(len(calib)),
                            "seed": seed},
            "agreement_with_fp32": agreement, "created": now_rfc3339()}
    manifest["backbone"]["variants"] = {"int8": part}
    write_manifest(out_dir, manifest)
    log.info("int8 backbone written path=%s sha256=%s cosine_mean=%.5f cosine_min=%.5f seconds=%.0f", target,
             part["sha256"][:12], agreement["cosine_mean"], agreement["cosine_min"], time.perf_counter() - t0)
    return part
