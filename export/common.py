"""What both exports share: the bundle directory guard, manifests, tool versions, tf2onnx."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from pathlib import Path
from typing import Any

from detector import __version__
from detector.model.bundle import FORMAT, MANIFEST, read_manifest
from detector.errors import UsageError
from detector.util.fsutil import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

OPSET = 17
# Files a bundle directory may hold besides model.json: ours, so re-running into it is fine.
OWN_ENTRIES = {"backbone.onnx", "backbone.int8.onnx", "sequence.onnx", "training", MANIFEST}
# Prefix of the staging directory an export works in (left behind only if the export was killed).
STAGING_PREFIX = ".export."


def quiet_tensorflow() -> None:
    """TensorFlow's C++ start-up chatter is not for users; errors still show."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def now_rfc3339() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def tool_versions() -> dict[str, str]:
    import keras
    import onnx
    import onnxruntime
    import tensorflow as tf
    import tf2onnx

    return {"ad_detector": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "tf2onnx": tf2onnx.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def foreign_entries(out_dir: Path) -> list[str]:
    """Entries of `out_dir` that no export or training of ours wrote."""
    if not out_dir.exists():
        return []
    return sorted(p.name for p in out_dir.iterdir()
                  if p.name not in OWN_ENTRIES and ".partial" not in p.name and not p.name.startswith(STAGING_PREFIX))


def prepare_out_dir(out_dir: Path, force: bool) -> dict[str, Any] | None:
    """Check the output directory can take a bundle; returns its current manifest if any."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir}: exists and is not a directory; choose another -o")
    foreign = foreign_entries(out_dir)
    if foreign and not force:
        raise UsageError(f"{out_dir}: holds other files ({', '.join(foreign[:3])}{'...' if len(foreign) > 3 else ''}), not a model bundle; choose an empty directory or pass --force")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"{out_dir}: cannot write there ({exc.strerror}); choose another -o") from None
    return read_manifest(out_dir)


def invalidate(out_dir: Path) -> None:
    """Remove model.json first, so a run interrupted while files change leaves no bundle that looks complete."""
    (out_dir / MANIFEST).unlink(missing_ok=True)


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> None:
    manifest = {"format": FORMAT, **manifest}
    atomic_write_text(out_dir / MANIFEST, json.dumps(manifest, indent=2, sort_keys=False) + "\n")


def save_onnx(model_proto: Any, path: Path) -> None:
    import onnx

    with atomic_path(path) as tmp:
        onnx.save(model_proto, str(tmp))


def name_batch_axis(model_proto: Any) -> None:
    """tf2onnx names dynamic axes 'unk__123'; call the batch axis 'N' (and any other free axis 'T')."""
    for value in list(model_proto.graph.input) + list(model_proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        for i, d in enumerate(dims):
            if d.dim_param or not d.dim_value:
                d.dim_param = "N" if i == 0 else "T"
