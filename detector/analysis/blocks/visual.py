"""The visual block: black frame, cut strength to the previous step, mean luma.

The classic cues Comskip uses, from the frame stats every sampled frame already has
(detector.analysis.framestats); logo presence and letterbox (issue 16, point 2) replace
`VisualBlock.compute` here. The previous step's stats are the block's state, so a cut is
measured between analysis steps, the same live and offline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detector.analysis.blocks.base import Block, StepInputs
from detector.analysis.framestats import FrameStats, cut_strength, is_black


@dataclass
class VisualState:
    previous: FrameStats | None = None


class VisualBlock(Block):
    name = "visual"
    names = ("black", "cut_strength", "luma")

    def new_state(self) -> VisualState:
        return VisualState()

    def compute(self, state: VisualState, step: StepInputs) -> np.ndarray:
        cut = cut_strength(state.previous, step.stats) if state.previous is not None else 0.0
        state.previous = step.stats
        return np.array([1.0 if is_black(step.stats) else 0.0, cut, step.stats.luma / 255.0], np.float32)
