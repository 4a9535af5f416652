"""Cue blocks: per-step vectors beside the backbone features (one module per block).

`BLOCKS` is the registry of what this version computes; a bundle's `model.json` `blocks`
names some of them in order, with their normalisation statistics. `CueComputer` runs a list
of blocks step by step with their state: the one object the live engine, `classify` and
`train` all use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from detector.analysis.blocks.audio import AudioBlock
from detector.analysis.blocks.base import Block, StepInputs, fill_missing
from detector.analysis.blocks.visual import VisualBlock
from detector.analysis.framestats import FrameStats

BLOCKS: dict[str, Block] = {b.name: b for b in (AudioBlock(), VisualBlock())}
ALL_BLOCKS: tuple[str, ...] = tuple(BLOCKS)


def parse_block_list(text: str) -> tuple[str, ...]:
    """`audio,visual` -> ("audio", "visual"); '' or 'none' -> (); ValueError naming an unknown block."""
    text = (text or "").strip()
    if text.lower() in ("", "none"):
        return ()
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in BLOCKS]
    if unknown:
        raise ValueError(f"unknown block {unknown[0]!r}; this version computes {', '.join(ALL_BLOCKS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"block listed twice in {text!r}")
    return names


class CueComputer:
    """The named blocks in order, each with its state: `step(...)` -> float32 [K] (NaN = missing)."""

    def __init__(self, names: Sequence[str], fps: float = 5.0):
        self.blocks = [BLOCKS[n] for n in names]
        self.names = tuple(names)
        self.fps = float(fps)
        self.size = sum(b.size for b in self.blocks)
        self._states: list[Any] = [b.new_state(self.fps) for b in self.blocks]

    def reset(self) -> None:
        """A stream gap: no cut or audio context across it; what belongs to the channel (its logo) stays."""
        self._states = [b.after_gap(s, self.fps) for b, s in zip(self.blocks, self._states)]

    def step(self, t: float, stats: FrameStats, audio: np.ndarray | None, image: np.ndarray | None = None) -> np.ndarray:
        inputs = StepInputs(t, stats, audio, image)
        if not self.blocks:
            return np.zeros(0, np.float32)
        return np.concatenate([b.compute(s, inputs) for b, s in zip(self.blocks, self._states)]).astype(np.float32, copy=False)


def block_columns(computed: Sequence[str], wanted: Sequence[str]) -> np.ndarray:
    """Column indices of the `wanted` blocks (in that order) in vectors computed for `computed`."""
    starts, pos = {}, 0
    for n in computed:
        starts[n] = pos
        pos += BLOCKS[n].size
    return np.concatenate([np.arange(starts[n], starts[n] + BLOCKS[n].size) for n in wanted]) if wanted else np.zeros(0, np.int64)


__all__ = ["ALL_BLOCKS", "BLOCKS", "Block", "CueComputer", "StepInputs", "block_columns", "fill_missing", "parse_block_list"]
