"""The audio block: what each analysis step sounds like (detector.analysis.audiofeatures).

Loudness rules (EBU R128, CALM) equalise the *level* of ads and programme, so the block
carries the *shape* of the sound: K-weighted momentary and short-term loudness, RMS, peak
and crest, silence (playout's break-edge gaps), dynamic range and low-energy ratio over the
last 3 s (compressed music beds against speech and crowd), and spectral descriptors with 12
mel band energies. The 3 s context is the block's state.

Missing audio. A step without audio (a source without an audio stream; audio that has not
arrived yet) gives NaN for every value and 0 for `audio_present` (see blocks.base). Live
audio can arrive a step late, so one missing step does not throw the context away; only
when audio has been missing for as long as the context (or after a stream gap) does the
next audio start a fresh context, so sound from before a real outage is never glued to
sound after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from detector.analysis.audiofeatures import AUDIO_FEATURE_NAMES, CONTEXT_SECONDS, AudioFeatureTrack
from detector.analysis.blocks.base import Block, StepInputs

PRESENT = AUDIO_FEATURE_NAMES.index("audio_present")


@dataclass
class AudioState:
    fps: float
    track: AudioFeatureTrack = field(default_factory=AudioFeatureTrack)
    missing_steps: int = 0


def missing_vector() -> np.ndarray:
    out = np.full(len(AUDIO_FEATURE_NAMES), np.nan, np.float32)
    out[PRESENT] = 0.0
    return out


class AudioBlock(Block):
    name = "audio"
    names = AUDIO_FEATURE_NAMES

    def new_state(self, fps: float) -> AudioState:
        return AudioState(fps)

    def compute(self, state: AudioState, step: StepInputs) -> np.ndarray:
        samples = step.audio
        if samples is None or not len(samples):
            state.missing_steps += 1
            if state.missing_steps >= CONTEXT_SECONDS * state.fps:       # as long without audio as the context
                state.track.reset()
            return missing_vector()
        state.missing_steps = 0
        return state.track.push(samples)
