"""Features of a whole video through the bundle's backbone: the one path training and
offline classification share, so there is no train/serve skew in decoding, sampling,
resizing or colour order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from detector.framestats import FrameStats
from detector.video import DecodeReport, SampledFrame, sample_video

T = TypeVar("T")


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of up to `size` items (the offline batcher: a file never waits)."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass
class FeatureTrack:
    times: np.ndarray                       # float64 [n] media seconds
    features: np.ndarray                    # float32 [n, D]
    stats: list[FrameStats] = field(default_factory=list)
    report: DecodeReport = field(default_factory=DecodeReport)


def extract_features(path: Path, run_backbone: Callable[[np.ndarray], np.ndarray], analysis_fps: float,
                     input_size: tuple[int, int], batch_size: int = 16,
                     on_batch: Callable[[list[SampledFrame], np.ndarray], None] | None = None) -> FeatureTrack:
    """Decode, sample and run the backbone over a file in batches.

    `on_batch` sees each batch of frames with their features (progress bars, annotation).
    """
    report = DecodeReport()
    times: list[float] = []
    feats: list[np.ndarray] = []
    stats: list[FrameStats] = []
    for batch in batched(sample_video(path, analysis_fps, input_size, report), batch_size):
        images = np.stack([f.image for f in batch])
        out = run_backbone(images)
        feats.append(out.astype(np.float32, copy=False))
        times.extend(f.media_time for f in batch)
        stats.extend(f.stats for f in batch)
        if on_batch is not None:
            on_batch(batch, out)
    dim = feats[0].shape[1] if feats else 0
    return FeatureTrack(np.asarray(times, np.float64), np.concatenate(feats) if feats else np.zeros((0, dim), np.float32),
                        stats, report)
