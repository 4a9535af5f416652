"""Cheap per-frame statistics for boundary cues (black frames and shot cuts).

Computed on each sampled frame after it has been resized for the model, on a tiny copy,
so they cost microseconds. Comskip's users complain about cuts landing inside scenes;
snapping decided boundaries to these cues is how ours land on the real cut.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

_BINS = 8


@dataclass(frozen=True)
class FrameStats:
    luma: float          # mean luma 0..255
    luma_max: float      # 99th percentile luma: a black frame is dark everywhere, not just on average
    hist: np.ndarray     # normalised joint colour histogram, float32 [_BINS*3]


def frame_stats(image: np.ndarray) -> FrameStats:
    """Stats of one BGR uint8 frame (any size)."""
    small = cv2.resize(image, (64, 36), interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    hist = np.concatenate([np.bincount(small[..., c].ravel() >> 5, minlength=_BINS) for c in range(3)]).astype(np.float32)
    hist /= max(1.0, float(hist.sum()))
    return FrameStats(float(grey.mean()), float(np.percentile(grey, 99)), hist)


def is_black(stats: FrameStats, threshold: float = 24.0) -> bool:
    return stats.luma_max <= threshold


def cut_strength(a: FrameStats, b: FrameStats) -> float:
    """0 (same picture) .. 1 (nothing in common): histogram distance between two frames."""
    # each histogram sums to 1 over the three channels, so half the L1 distance is in [0, 1]
    return float(0.5 * np.abs(a.hist - b.hist).sum())
