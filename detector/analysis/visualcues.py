"""Classic broadcast picture cues per analysis step: black frame, station logo, letterbox /
pillarbox, shot cuts (pure functions plus one small learner per channel).

Comskip and pycommflag separate ads from programme with these where a content model cannot:
an ad that looks like the programme (a sports drink on grass) still lacks the channel's logo,
is often framed differently (a 4:3 or letterboxed spot in a 16:9 programme) and is cut
faster. They cost little next to the backbone (bench/visual_cues.py, bench/RESULTS.md), and
they work on the analysed 299x299 frame (any size works), so live, `classify` and `train`
compute them the same way.

The cue vector has a fixed order and size, `VISUAL_CUE_NAMES` (a model trained on them
depends on it; append, never reorder):

=================  ======================================================================
black              1.0 when the frame is black (framestats.is_black), else 0.0
logo               share of the learnt logo mask's pixels with an edge in this frame, 0..1
                   (0 while the mask is not learnt)
logo_ready         1.0 once the channel's logo mask is learnt (else `logo` means nothing)
letterbox          share of the height taken by black bars above and below, 0..1
pillarbox          share of the width taken by black bars left and right, 0..1
active_aspect      display aspect ratio of the picture inside the bars, from the source's
                   display aspect (16:9 unless told); the source's own aspect without bars
cut                shot-cut strength to the previous step, 0..1 (framestats.cut_strength)
cut_rate           shot cuts per second over the last `window_frames` steps
=================  ======================================================================

The logo is learnt per channel, as Comskip does: edges (Canny) in the four corners are
counted over the last minutes; a pixel is logo where it has had an edge in more than
`persist` of the frames. A station logo is static, so its edges persist while programme
content moves under it. The learner keeps a fixed amount of memory (one uint16 counter per
corner pixel) and forgets with a half-life: every `horizon_frames` frames all counts halve,
so a logo that changes (another programme, a sponsor's bug) is relearnt within minutes.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

from detector.analysis.framestats import FrameStats, cut_strength, is_black

VISUAL_CUE_NAMES: tuple[str, ...] = ("black", "logo", "logo_ready", "letterbox", "pillarbox", "active_aspect", "cut",
                                     "cut_rate")
VISUAL_CUE_SIZE = len(VISUAL_CUE_NAMES)

BAR_LUMA = 24.0            # a bar row/column is this dark everywhere (as framestats' black threshold)
CUT_THRESHOLD = 0.3        # cut_strength from which a change is a shot cut (as boundary.BoundarySettings)


# ----------------------------------------------------------------------------- letterbox / pillarbox

def active_area(grey: np.ndarray, threshold: float = BAR_LUMA) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) bar sizes in pixels: rows / columns dark over their whole length.

    A black frame has no active area; it is reported as no bars (the `black` cue says it).
    """
    h, w = grey.shape
    rows = grey.max(axis=1) <= threshold
    cols = grey.max(axis=0) <= threshold
    if rows.all() or cols.all():
        return 0, 0, 0, 0
    top = int(np.argmin(rows))
    bottom = int(np.argmin(rows[::-1]))
    left = int(np.argmin(cols))
    right = int(np.argmin(cols[::-1]))
    return top, bottom, left, right


def bar_cues(grey: np.ndarray, source_aspect: float = 16 / 9) -> tuple[float, float, float]:
    """(letterbox, pillarbox, active_aspect) of a grey frame whose source has `source_aspect`.

    Measured on a small copy: an area-averaged row is dark only if the whole row is, and
    a few noisy pixels in a bar do not end it.
    """
    small = cv2.resize(grey, (96, 96), interpolation=cv2.INTER_AREA) if grey.shape != (96, 96) else grey
    top, bottom, left, right = active_area(small)
    h, w = small.shape
    letterbox = (top + bottom) / h
    pillarbox = (left + right) / w
    aspect = source_aspect * ((w - left - right) / w) / ((h - top - bottom) / h)
    return letterbox, pillarbox, aspect


# ----------------------------------------------------------------------------- station logo

def corner_edges(grey: np.ndarray, corner: float = 0.25, low: int = 60, high: int = 160) -> np.ndarray:
    """Canny edges of the four corners (each `corner` of the width and height), as bool
    [4, ch, cw] in the order top-left, top-right, bottom-left, bottom-right."""
    h, w = grey.shape
    ch, cw = max(8, int(h * corner)), max(8, int(w * corner))
    corners = (grey[:ch, :cw], grey[:ch, w - cw:], grey[h - ch:, :cw], grey[h - ch:, w - cw:])
    return np.stack([cv2.Canny(np.ascontiguousarray(c), low, high) > 0 for c in corners])


class LogoLearner:
    """The static-edge mask of one channel's corners (see the module docstring).

    Memory is fixed: one uint16 count per corner pixel of the first frame's size.
    """

    def __init__(self, horizon_frames: int = 3000, persist: float = 0.6, min_frames: int = 150, min_pixels: int = 12,
                 corner: float = 0.25):
        if not (0.0 < persist <= 1.0 and 2 <= horizon_frames <= 60000 and min_frames >= 1):
            # counts are uint16 and halve at the horizon: it must stay below 65536
            raise ValueError("need 0 < persist <= 1, 2 <= horizon_frames <= 60000, min_frames >= 1")
        self.horizon_frames = horizon_frames      # 3000 = 10 min at 5 analysed frames/s
        self.persist = persist
        self.min_frames = min_frames              # 150 = 30 s at 5 frames/s before a mask counts
        self.min_pixels = min_pixels
        self.corner = corner
        self.counts: np.ndarray | None = None     # uint16 [4, ch, cw]
        self.frames = 0.0                         # frames counted (halved with the counts)
        self._mask: np.ndarray | None = None
        self._mask_pixels = 0
        self._rings: list[np.ndarray | None] | None = None    # per corner: the mask's surroundings (presence)

    def reset(self) -> None:
        """Forget the mask (another channel's content, a resolution change)."""
        self.counts, self.frames, self._mask, self._mask_pixels, self._rings = None, 0.0, None, 0, None

    def update(self, edges: np.ndarray) -> None:
        """Count one frame's corner edges; halve everything once the horizon is reached."""
        if self.counts is None or self.counts.shape != edges.shape:
            self.counts = np.zeros(edges.shape, np.uint16)
            self.frames = 0.0
        self.counts += edges
        self.frames += 1
        if self.frames >= self.horizon_frames:
            self.counts >>= 1
            self.frames /= 2
        self._mask = None
        self._rings = None

    @property
    def mask(self) -> np.ndarray | None:
        """Where the logo is (bool [4, ch, cw]), or None while not learnt."""
        if self.counts is None or self.frames < self.min_frames:
            return None
        if self._mask is None:
            self._mask = self.counts >= self.persist * self.frames
            self._mask_pixels = int(self._mask.sum())
        return self._mask if self._mask_pixels >= self.min_pixels else None

    def presence(self, edges: np.ndarray) -> float:
        """How clearly the learnt static mark shows now (0..1; 0 with no mask).

        Per corner: the share of the corner's mask pixels with an edge on or next to them (a
        logo's edges shift by a pixel after scaling), less what clutter alone gives there: the
        same share over the mask's surroundings (its bounding box plus 4 pixels, off the mask),
        rescaled so that clutter everywhere reads 0 and a clean mark 1. The best corner counts.

        Why not the plain share, pooled over the corners: (1) a crowd shot or a busy advert has
        edges next to nearly every pixel, so its "presence" read 0.8 with no logo on screen (an
        advert shot on a pitch, demo data); against its surroundings it reads ~0.1; (2) a
        sports channel's score bug is as static as its logo during play and is learnt with it,
        but studio segments keep the logo and drop the bug: pooled, the larger bug's absence
        put a studio frame (0.22) below an advert (0.44); per corner its logo reads ~1.0.
        Corners with fewer than `min_pixels` mask pixels are not a mark (all pooled if none has).
        """
        mask = self.mask
        if mask is None or mask.shape != edges.shape:
            return 0.0
        near = np.stack([cv2.dilate(e.view(np.uint8), _CROSS) for e in edges]) > 0
        if self._rings is None:
            self._rings = [_surroundings(m) if m.sum() >= self.min_pixels else None for m in mask]
        best = None
        for c, ring in enumerate(self._rings):
            if ring is None:
                continue
            hit = float(near[c][mask[c]].mean())
            clutter = float(near[c][ring].mean()) if ring.any() else 0.0
            score = max(0.0, (hit - clutter) / (1.0 - clutter)) if clutter < 1.0 else 0.0
            best = score if best is None else max(best, score)
        if best is None:
            return float((near & mask).sum() / self._mask_pixels)
        return best


def _surroundings(mask: np.ndarray, pad: int = 4) -> np.ndarray:
    """Pixels of the mask's bounding box (grown by `pad`) that are neither mask nor next to it."""
    ys, xs = np.nonzero(mask)
    box = np.zeros_like(mask)
    box[max(0, ys.min() - pad):ys.max() + pad + 1, max(0, xs.min() - pad):xs.max() + pad + 1] = True
    return box & ~(cv2.dilate(mask.view(np.uint8), _CROSS) > 0)


_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


# ----------------------------------------------------------------------------- cuts

def cut_rate(strengths: list[float] | np.ndarray, fps: float, threshold: float = CUT_THRESHOLD) -> float:
    """Shot cuts per second among the step-to-step cut strengths of a window."""
    n = len(strengths)
    if n == 0:
        return 0.0
    return float(np.count_nonzero(np.asarray(strengths) >= threshold) * fps / n)


# ----------------------------------------------------------------------------- per step

@dataclass
class VisualCueState:
    """What the cues remember per channel: the logo learner, the previous step's stats and the
    last window of cut strengths. Fixed memory; `reset()` at a stream gap keeps the logo."""

    fps: float
    window_frames: int
    logo: LogoLearner
    previous: FrameStats | None = None
    cuts: deque[float] | None = None

    @classmethod
    def create(cls, fps: float, window_frames: int, logo: LogoLearner | None = None) -> "VisualCueState":
        return cls(fps, window_frames, logo or LogoLearner(horizon_frames=max(2, int(600 * fps)),
                                                           min_frames=max(1, int(30 * fps))))

    def reset(self) -> None:
        """A gap in the stream: no cut across it; the logo mask is the channel's and stays."""
        self.previous = None
        self.cuts = None


def visual_cues(image: np.ndarray, stats: FrameStats, state: VisualCueState, source_aspect: float = 16 / 9,
                learn: bool = True) -> np.ndarray:
    """The cue vector of one analysed BGR uint8 frame, float32 [VISUAL_CUE_SIZE] in
    VISUAL_CUE_NAMES order; updates `state` (and learns the logo unless `learn` is False)."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    black = is_black(stats)
    letterbox, pillarbox, aspect = (0.0, 0.0, source_aspect) if black else bar_cues(grey, source_aspect)
    edges = corner_edges(grey, state.logo.corner)
    logo = state.logo.presence(edges)
    ready = state.logo.mask is not None
    if learn and not black:              # a black frame has no logo to learn, only its absence
        state.logo.update(edges)
    cut = cut_strength(state.previous, stats) if state.previous is not None else 0.0
    if state.cuts is None:
        state.cuts = deque(maxlen=max(1, state.window_frames - 1))
    if state.previous is not None:
        state.cuts.append(0.0 if black or is_black(state.previous) else cut)
    state.previous = stats
    rate = cut_rate(list(state.cuts), state.fps)
    return np.array([float(black), logo, float(ready), letterbox, pillarbox, aspect, cut, rate], np.float32)
