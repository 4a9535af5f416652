"""The audio block: level, peak and silence of each analysis step's audio, and whether there was any.

Small, real features from what main already decodes; the richer BS.1770 loudness and
spectral features (issue 16, point 1) replace `AudioBlock.compute` here without touching
the plumbing. Level alone is a weak cue (loudness rules equalise it), silence at break
edges and peak-to-level (dynamics) are the useful parts.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from detector.analysis.audio import SILENCE_DBFS, level_dbfs
from detector.analysis.blocks.base import Block, StepInputs

SILENT_BELOW_DBFS = -50.0      # playout's break-edge silences sit far below this; quiet speech does not


def peak_dbfs(samples: np.ndarray) -> float:
    """Sample peak in dBFS (SILENCE_DBFS for digital silence)."""
    peak = float(np.max(np.abs(samples))) if len(samples) else 0.0
    return max(SILENCE_DBFS, 20.0 * math.log10(peak)) if peak > 0 else SILENCE_DBFS


class AudioBlock(Block):
    name = "audio"
    names = ("level_dbfs", "peak_dbfs", "silent", "present")

    def compute(self, state: Any, step: StepInputs) -> np.ndarray:
        samples = step.audio
        if samples is None or not len(samples):
            return np.array([np.nan, np.nan, np.nan, 0.0], np.float32)
        level = level_dbfs(samples)
        return np.array([level, peak_dbfs(samples), 1.0 if level < SILENT_BELOW_DBFS else 0.0, 1.0], np.float32)
