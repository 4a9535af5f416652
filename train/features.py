"""Backbone features of every training video, through the bundle's own `backbone.onnx`.

Cached per video, keyed by the file's identity (path, size, modification time), the
backbone's hash, the analysis fps and the input size: a second `train` skips decoding,
and a new backbone or fps never reuses stale features. Cache files are plain `.npz`
arrays (no pickle). The cue vectors of every block (see detector.analysis.blocks) are
cached beside the features with the blocks' names, so any `--blocks` choice reuses them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detector.analysis.blocks import ALL_BLOCKS
from detector.errors import UsageError
from detector.model.features import extract_features
from detector.util.fsutil import atomic_path

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ad-detector" / "features"


@dataclass
class Track:
    times: np.ndarray
    features: np.ndarray
    truncated_at: float | None = None      # media time where decoding stopped early, if it did
    cues: np.ndarray | None = None          # float32 [n, K] raw cue vectors of `cue_blocks` (NaN = missing)
    cue_blocks: tuple[str, ...] = ()


def cache_key(video: Path, backbone_sha256: str, fps: float, input_size: tuple[int, int]) -> str:
    st = video.stat()
    ident = {"path": str(video.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
             "backbone": backbone_sha256, "fps": fps, "input_size": list(input_size), "v": 4,
             "blocks": list(ALL_BLOCKS)}   # v2: bilinear resize; v3: cue vectors cached beside; v4: rich blocks
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]


def load_or_extract(video: Path, models, fps: float, cache_dir: Path, on_batch=None) -> tuple[Track, bool]:
    """(track, came_from_cache). Raises UsageError for a video that cannot be decoded."""
    bundle = models.bundle
    key = cache_key(video, bundle.backbone_sha256, fps, bundle.input_size)
    path = cache_dir / f"{key}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                trunc = float(z["truncated_at"]) if "truncated_at" in z and np.isfinite(z["truncated_at"]) else None
                blocks = tuple(str(n) for n in z["cue_blocks"])
                if blocks != ALL_BLOCKS or len(z["cues"]) != len(z["times"]):
                    raise KeyError("cue blocks differ from this version's")
                return Track(z["times"], z["features"], trunc, z["cues"], blocks), True
        except (OSError, ValueError, KeyError) as exc:
            log.warning("feature cache unreadable, re-extracting file=%s error=%r", path, str(exc))
    track = extract_features(video, models.features, fps, bundle.input_size, batch_size=16, on_batch=on_batch)
    if len(track.times) == 0:
        raise UsageError(f"{video}: no frames decoded")
    trunc = track.report.last_time if track.report.truncated else None
    cache_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, times=track.times, features=track.features, truncated_at=np.float64(np.nan if trunc is None else trunc),
                     cues=track.cues, cue_blocks=np.array(track.cue_blocks, dtype=str))
    return Track(track.times, track.features, trunc, track.cues, track.cue_blocks), False
