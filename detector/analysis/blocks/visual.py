"""The visual block: the classic broadcast picture cues (detector.analysis.visualcues).

Black frame, the channel's station logo (learnt over the first ~30 s, then present or not),
letterbox / pillarbox and the aspect inside the bars, the cut to the previous step and the
cut rate over the last 8 s: what separates an ad that looks like the programme from the
programme. Measured on the analysed frame (the backbone's input), so live, `classify` and
`train` see the same pixels.

The logo belongs to the channel, not to the connection: after a gap only the cut history
starts afresh, the learnt mask stays (`after_gap`). Without a picture (only stats given, as
in some unit uses) the stats-based values are still real and the rest is NaN (missing).
"""

from __future__ import annotations

import numpy as np

from detector.analysis.blocks.base import Block, StepInputs
from detector.analysis.framestats import cut_strength, is_black
from detector.analysis.visualcues import VISUAL_CUE_NAMES, VisualCueState, visual_cues

CUT_RATE_SECONDS = 8.0      # shot cuts per second over this long (a spot's pace against a match's)


class VisualBlock(Block):
    name = "visual"
    names = VISUAL_CUE_NAMES

    def new_state(self, fps: float) -> VisualCueState:
        return VisualCueState.create(fps, max(2, int(round(CUT_RATE_SECONDS * fps))))

    def after_gap(self, state: VisualCueState, fps: float) -> VisualCueState:
        state.reset()
        return state

    def compute(self, state: VisualCueState, step: StepInputs) -> np.ndarray:
        if step.image is not None:
            return visual_cues(step.image, step.stats, state)
        out = np.full(len(VISUAL_CUE_NAMES), np.nan, np.float32)
        out[VISUAL_CUE_NAMES.index("black")] = float(is_black(step.stats))
        out[VISUAL_CUE_NAMES.index("cut")] = cut_strength(state.previous, step.stats) if state.previous is not None else 0.0
        state.previous = step.stats
        return out
