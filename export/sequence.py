"""Keras sequence model -> `sequence.onnx` (the ONNX LSTM op), checked against Keras."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from detector.model.bundle import SEQUENCE_CUES, SEQUENCE_INPUT, SEQUENCE_OUTPUT
from detector.errors import RuntimeFailure
from ad_detector_export.common import OPSET, name_batch_axis, save_onnx

PARITY_ATOL = 1e-4


def export_sequence(model: Any, path: Path, t: int, d: int, check: np.ndarray, k: int = 0) -> float:
    """Write `path` and return the largest |ONNX - Keras| probability difference on `check`.

    With `k` cue elements the graph has a second input `cues` [N, T, k] and `check` holds
    rows [features | cues] ([N, T, d + k]), split here the way the trainer feeds the model.
    """
    import onnxruntime as ort
    import tensorflow as tf
    import tf2onnx

    spec = (tf.TensorSpec((None, t, d), tf.float32, name=SEQUENCE_INPUT),)
    if k:
        spec += (tf.TensorSpec((None, t, k), tf.float32, name=SEQUENCE_CUES),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=OPSET)
    name_batch_axis(proto)
    outputs = [o.name for o in proto.graph.output]
    if outputs != [SEQUENCE_OUTPUT]:
        raise RuntimeFailure(f"tf2onnx produced outputs {outputs}, expected ['{SEQUENCE_OUTPUT}']")
    save_onnx(proto, path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    if k:
        feed = {SEQUENCE_INPUT: np.ascontiguousarray(check[..., :d]), SEQUENCE_CUES: np.ascontiguousarray(check[..., d:])}
        got = sess.run(None, feed)[0]
        expected = model.predict(feed, verbose=0)
    else:
        got = sess.run(None, {SEQUENCE_INPUT: check})[0]
        expected = model.predict(check, verbose=0)
    diff = float(np.max(np.abs(got - expected))) if len(check) else 0.0
    if not np.isfinite(diff) or diff > PARITY_ATOL:
        path.unlink(missing_ok=True)
        raise RuntimeFailure(f"sequence export parity failed: ONNX differs from Keras by {diff:.3g} (tolerance {PARITY_ATOL}); nothing was published")
    return diff
