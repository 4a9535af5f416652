"""`ad-detector export-backbone`: Keras InceptionV3 -> `backbone.onnx` taking uint8 BGR.

The colour conversion and Inception scaling live inside the graph, so the runtime feeds
OpenCV's frames as they are and can never get the order or scaling wrong (the original
tutorial fed BGR to an RGB model).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from detector.model.bundle import BACKBONE_INPUT, BACKBONE_OUTPUT, FEATURE_DIM, sha256_file
from detector.errors import RuntimeFailure, UsageError
from ad_detector_export.common import (OPSET, STAGING_PREFIX, invalidate, name_batch_axis, now_rfc3339, prepare_out_dir, quiet_tensorflow,
                           save_onnx, tool_versions, write_manifest)

log = logging.getLogger(__name__)

INPUT_SIZE = (299, 299)
NOTOP_FILE = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
PARITY_RTOL = 1e-4


def check_weights_arg(weights: str) -> None:
    """`--weights` is imagenet, none, or an existing .h5 file (checked before anything is created)."""
    if weights not in ("imagenet", "none"):
        path = Path(weights)
        if not path.is_file():
            raise UsageError(f"{weights}: weights file not found; pass --weights imagenet, none, or the path of {NOTOP_FILE}")
        if path.suffix.lower() not in (".h5", ".hdf5", ".keras") and not path.name.endswith(".weights.h5"):
            raise UsageError(f"{weights}: not a Keras weights file (.h5); expected {NOTOP_FILE}")


def build_keras_backbone(weights: str, seed: int = 0) -> Any:
    """uint8 BGR [N,299,299,3] -> float32 [N,2048], as a Keras model."""
    quiet_tensorflow()
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    check_weights_arg(weights)
    base_weights = None if weights == "none" else weights
    images = keras.Input((*INPUT_SIZE, 3), dtype="uint8", name=BACKBONE_INPUT)
    # BGR -> RGB and [0,255] -> [-1,1] (keras.applications.inception_v3.preprocess_input)
    x = keras.layers.Lambda(lambda v: tf.cast(tf.reverse(v, axis=[-1]), tf.float32) / 127.5 - 1.0, name="bgr_to_inception")(images)
    try:
        base = keras.applications.InceptionV3(include_top=False, pooling="avg", weights=base_weights, input_shape=(*INPUT_SIZE, 3))
    except Exception as exc:  # Keras raises ValueError, OSError or h5py errors for foreign files
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        if weights == "imagenet":
            raise UsageError(f"cannot download the ImageNet weights ({first}); on an offline machine copy {NOTOP_FILE} over and pass --weights PATH") from None
        raise UsageError(f"{weights}: not InceptionV3 weights without the top ({first}); expected {NOTOP_FILE}") from None
    features = keras.layers.Identity(name=BACKBONE_OUTPUT)(base(x))
    return keras.Model(images, features, name="backbone")


def sample_frames(count: int = 8, seed: int = 0) -> np.ndarray:
    """Real decoded frames for the parity check: a short drawn football and commercial clip."""
    import tempfile

    from detector.demo.data import write_clip
    from detector.sources.video import sample_video

    frames = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, label in enumerate(("football", "commercial")):
            path = Path(tmp) / f"{label}.mp4"
            write_clip(path, label, seconds=2.0, seed=seed + i)
            for frame in sample_video(path, analysis_fps=2.0, size=INPUT_SIZE):
                frames.append(frame.image)
    return np.stack(frames[:count])


def check_parity(keras_model: Any, onnx_path: Path, frames: np.ndarray) -> float:
    """Largest |ONNX - Keras| over the frames; raises RuntimeFailure beyond tolerance."""
    import onnxruntime as ort

    expected = keras_model.predict(frames, verbose=0)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {BACKBONE_INPUT: frames})[0]
    diff = float(np.max(np.abs(got - expected)))
    # relative to the features' own scale: random-weight features peak around 1e-2, ImageNet ones around 10
    tol = PARITY_RTOL * float(np.max(np.abs(expected))) + 1e-8
    if not np.isfinite(diff) or diff > tol:
        raise RuntimeFailure(f"backbone export parity failed: ONNX differs from Keras by {diff:.3g} (tolerance {tol:.3g}); the ONNX file was not published")
    return diff


def export_backbone(out_dir: Path, weights: str = "none", force: bool = False, seed: int = 0, analysis_fps: float = 5.0) -> dict[str, Any]:
    """Export, check parity, write `backbone.onnx` and a backbone-only `model.json`."""
    out_dir = Path(out_dir)
    check_weights_arg(weights)
    created = not out_dir.exists()
    current = prepare_out_dir(out_dir, force)
    weights_name = weights if weights in ("imagenet", "none") else Path(weights).name
    if current is not None and not force:
        if current.get("sequence"):
            raise UsageError(f"{out_dir}: holds a trained model; a new backbone would invalidate it. Use another -o, or --force to replace it")
        old = (current.get("backbone") or {}).get("weights")
        if old not in (None, weights_name):
            raise UsageError(f"{out_dir}: holds a backbone with weights '{old}', not '{weights_name}'; use another -o or --force")
    try:
        model = build_keras_backbone(weights, seed)
    except UsageError:
        if created and not any(out_dir.iterdir()):
            out_dir.rmdir()   # refused weights leave no empty bundle directory behind
        raise

    import tf2onnx

    log.info("converting InceptionV3 to ONNX (opset %d)", OPSET)
    import tensorflow as tf

    spec = (tf.TensorSpec((None, *INPUT_SIZE, 3), tf.uint8, name=BACKBONE_INPUT),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=OPSET)
    name_batch_axis(proto)
    outputs = [o.name for o in proto.graph.output]
    if outputs != [BACKBONE_OUTPUT]:
        raise RuntimeFailure(f"tf2onnx produced outputs {outputs}, expected ['{BACKBONE_OUTPUT}']")

    invalidate(out_dir)
    (out_dir / "sequence.onnx").unlink(missing_ok=True)
    (out_dir / "backbone.int8.onnx").unlink(missing_ok=True)   # quantized from the old fp32 graph
    path = out_dir / "backbone.onnx"
    import tempfile

    for stale in out_dir.glob(f"{STAGING_PREFIX}*"):     # from an export that was killed
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=STAGING_PREFIX) as tmp:
        staged = Path(tmp) / "backbone.onnx"
        save_onnx(proto, staged)
        frames = sample_frames(seed=seed)
        diff = check_parity(model, staged, frames)
        staged.replace(path)
    part = {"file": path.name, "sha256": sha256_file(path), "weights": weights_name, "precision": "fp32",
            "input": BACKBONE_INPUT, "output": BACKBONE_OUTPUT, "feature_dim": FEATURE_DIM, "opset": OPSET,
            "parity_max_abs_diff": diff, "parity_frames": int(len(frames))}
    manifest = {"input_size": list(INPUT_SIZE), "analysis_fps": analysis_fps, "backbone": part, "sequence": None,
                "created": now_rfc3339(), "tools": tool_versions()}
    write_manifest(out_dir, manifest)
    log.info("backbone exported path=%s sha256=%s parity_max_abs_diff=%.3g", path, part["sha256"][:12], diff)
    return part
