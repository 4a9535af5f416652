"""The interface of a cue block: one small vector per analysis step beside the backbone features.

A block is the unit the sequence model's second input (`cues`) is made of. Each one is a
pure function `(state, step) -> vector` plus the state it carries from one step to the next
(the previous frame, the last seconds of audio, the channel's learnt logo), so the daemon, `classify` and `train` compute the
very same numbers by calling the very same function on the same step inputs (no train/serve
skew). The block modules are thin: the measuring lives in detector.analysis.audiofeatures and
detector.analysis.visualcues, which the benches time on their own.

Missing inputs. A block whose input is absent at a step (the channel has no audio) returns
NaN for its measured values and 0 for its `present` element, if it has one. NaN never
reaches the model: `fill_missing` puts the training mean there, which the graph's
standardisation turns into exactly 0 ("no evidence either way"), while `present` = 0 tells
the model the values are not real. Training fills the same way, with the same function.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from detector.analysis.framestats import FrameStats


@dataclass(frozen=True)
class StepInputs:
    """What one analysis step offers a block: the sampled frame (BGR uint8 at the model's input
    size, as the backbone sees it), its stats, and the audio since the previous step (mono
    float32 16 kHz; None when the source has no audio or none arrived). `image` may be a
    reused buffer: a block reads it during `compute` and keeps nothing that points into it."""

    time: float
    stats: FrameStats
    audio: np.ndarray | None = None
    image: np.ndarray | None = None


class Block(ABC):
    """One cue block. `names` are its elements in order (model.json lists them); size = len(names)."""

    name: str = ""
    names: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return len(self.names)

    def new_state(self, fps: float) -> Any:
        """What the block remembers between steps, fresh at stream start (`fps`: analysis steps per second)."""
        return None

    def after_gap(self, state: Any, fps: float) -> Any:
        """The state after a gap in the stream (reconnect, timestamp jump). By default a fresh
        one; a block whose knowledge belongs to the channel rather than to the connection (the
        learnt station logo) keeps that part, so a reconnect does not cost minutes of relearning."""
        return self.new_state(fps)

    @abstractmethod
    def compute(self, state: Any, step: StepInputs) -> np.ndarray:
        """float32 [size] for this step (NaN for values whose input is missing); may update `state`."""


def fill_missing(cues: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """NaN (missing) elements replaced by the training mean (0 after standardising); a new array."""
    out = np.array(cues, np.float32, copy=True)
    bad = ~np.isfinite(out)
    if bad.any():
        out[bad] = np.broadcast_to(np.asarray(mean, np.float32), out.shape)[bad]
    return out
