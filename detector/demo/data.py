"""Deterministic, labelled demo video: drawn football (programme) and drawn commercials (ads).

Why this exists: the detector has to be demonstrable (`ad-detector demo`), testable and
benchmarkable without shipping real TV recordings (size, copyright). Everything here is
drawn with OpenCV on numpy frames from a seed, so the same seed always gives the same
pixels, and the ground truth is known exactly because we drew it.

The two classes are made to be *learnable but not trivially*: football is a green pitch
with players, a score bug and a channel logo, panned by a camera that cuts between angles;
commercials are fast-cut colourful shots of products and slogans, and some of them are
green too, so a model cannot get away with "green means football".

Only numpy, OpenCV and tqdm are used (no TensorFlow): the runtime package must install
without the training stack.
"""

from __future__ import annotations

import argparse
import colorsys
import json
import logging
import math
import multiprocessing
import os
import re
import sys
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from detector.errors import RuntimeFailure, UsageError
from detector.util.fsutil import atomic_path, atomic_write_text
from detector.analysis.segments import Segment, edl_text, labels_csv_text

log = logging.getLogger(__name__)

CLASSES = ("football", "commercial")
PROGRAMME_CLASS = "football"
AD_CLASS = "commercial"

# Bump when the drawing changes, so that `generate_demo_set` regenerates old demo sets.
GENERATOR_VERSION = 1

# Smaller/shorter items for tests and quick looks (`python -m detector.demo.data --quick`).
QUICK_SETTINGS: dict[str, int | float] = {
    "train_clips": 4,
    "test_clips": 2,
    "clip_seconds": 8.0,
    "train_recordings": 1,
    "recording_seconds": 90.0,
    "broadcast_seconds": 120.0,
}

BGR = tuple[int, int, int]
Size = tuple[int, int]

_FOURCC = "mp4v"
_MARKER = ".complete"
_IN_PROGRESS = ".generating"


# --------------------------------------------------------------------------- helpers


def _derive_seed(seed: int, *parts: str | int) -> int:
    """A 32-bit seed for one item, from the user's seed and the item's identity.

    Stable across runs and processes (crc32, not Python's salted `hash`), so an item is
    the same whether it is drawn alone, in a worker, or in a different order.
    """
    words = [seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF]
    words += [p & 0xFFFFFFFF if isinstance(p, int) else zlib.crc32(p.encode("utf-8")) for p in parts]
    return int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint32)[0])


def _hsv(h: float, s: float, v: float) -> BGR:
    """A BGR colour from hue/saturation/value in [0, 1] (hue wraps)."""
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return (int(round(b * 255)), int(round(g * 255)), int(round(r * 255)))


def _scaled(colour: BGR, gain: float) -> BGR:
    return tuple(int(min(255, max(0, round(c * gain)))) for c in colour)  # type: ignore[return-value]


def _frames_for(seconds: float, fps: float) -> int:
    """Frame count for a duration: boundaries always sit on frame times k/fps."""
    return max(1, int(round(seconds * fps)))


def _check_args(seconds: float, size: Size, fps: float, what: str) -> Size:
    if not (isinstance(size, Sequence) and len(size) == 2):
        raise UsageError(f"{what}: size must be (width, height), got {size!r}")
    w, h = int(size[0]), int(size[1])
    if w < 32 or h < 32 or w % 2 or h % 2:
        raise UsageError(f"{what}: size must be even and at least 32x32 (the mp4v encoder needs even sizes), got {w}x{h}")
    if not (math.isfinite(fps) and fps >= 5.0):
        raise UsageError(f"{what}: fps must be a number >= 5, got {fps}")
    if not (math.isfinite(seconds) and seconds > 0):
        raise UsageError(f"{what}: duration must be > 0 seconds, got {seconds}")
    return (w, h)


def _smoothstep(x: float) -> float:
    x = min(1.0, max(0.0, x))
    return x * x * (3.0 - 2.0 * x)


class _Noise:
    """Light sensor/compression-like noise from a few precomputed patterns.

    Drawing fresh noise per frame is the slowest thing one could do here; cycling a few
    patterns with saturating cv2.add/subtract costs well under a millisecond per frame.
    """

    def __init__(self, rng: np.random.Generator, size: Size, amplitude: int, count: int = 4) -> None:
        w, h = size
        self._plus = [rng.integers(0, amplitude + 1, (h, w, 3), dtype=np.uint8) for _ in range(count)]
        self._minus = [rng.integers(0, amplitude + 1, (h, w, 3), dtype=np.uint8) for _ in range(count)]
        self._i = 0

    def apply(self, frame: np.ndarray) -> np.ndarray:
        n = len(self._plus)
        cv2.add(frame, self._plus[self._i % n], dst=frame)
        cv2.subtract(frame, self._minus[(self._i + 1) % n], dst=frame)
        self._i += 1
        return frame


def _put_text_centered(img: np.ndarray, text: str, center: tuple[float, float], scale: float, colour: BGR,
                       thickness: int, font: int = cv2.FONT_HERSHEY_DUPLEX, outline: BGR | None = None) -> None:
    (tw, th), _ = cv2.getTextSize(text, font, scale, thickness)
    org = (int(round(center[0] - tw / 2)), int(round(center[1] + 0.38 * th)))  # capitals are ~0.76 of th
    if outline is not None:
        cv2.putText(img, text, org, font, scale, outline, thickness + max(2, thickness), cv2.LINE_AA)
    cv2.putText(img, text, org, font, scale, colour, thickness, cv2.LINE_AA)


def _fit_scale(text: str, font: int, thickness: int, max_w: float, max_h: float) -> float:
    """The putText scale that makes `text` fit in max_w x max_h pixels."""
    (tw, th), base = cv2.getTextSize(text, font, 1.0, thickness)
    return max(0.2, min(max_w / max(tw, 1), max_h / max(th + base, 1)))


def _rounded_rect(img: np.ndarray, x0: float, y0: float, x1: float, y1: float, r: float, colour: BGR) -> None:
    x0, y0, x1, y1 = int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1))
    r = int(max(0, min(r, (x1 - x0) / 2, (y1 - y0) / 2)))
    if x1 <= x0 or y1 <= y0:
        return
    cv2.rectangle(img, (x0 + r, y0), (x1 - r, y1), colour, -1)
    cv2.rectangle(img, (x0, y0 + r), (x1, y1 - r), colour, -1)
    if r > 0:
        for cx, cy in ((x0 + r, y0 + r), (x1 - r, y0 + r), (x0 + r, y1 - r), (x1 - r, y1 - r)):
            cv2.circle(img, (cx, cy), r, colour, -1, cv2.LINE_AA)


# --------------------------------------------------------------------------- writing


def _probe_video(path: Path) -> tuple[int, int, int] | None:
    """(frame count, width, height) if OpenCV opens the file and decodes a first frame."""
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return None
        ok, frame = cap.read()
        if not ok or frame is None:
            return None
        count = int(round(cap.get(cv2.CAP_PROP_FRAME_COUNT)))
        return count, frame.shape[1], frame.shape[0]
    finally:
        cap.release()


def _video_is_valid(path: Path, frames: int, size: Size) -> bool:
    if not path.is_file() or path.stat().st_size == 0:
        return False
    probe = _probe_video(path)
    return probe is not None and probe == (frames, size[0], size[1])


def _write_video(path: Path, frames: Iterator[np.ndarray], n_frames: int, size: Size, fps: float,
                 bar: tqdm | None = None) -> None:
    """Encode frames to `path` (mp4v) through a temporary name, then check it decodes.

    The rename happens only after the check, so an interrupted or broken run never leaves
    a file that looks like a finished video.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*_FOURCC), float(fps), size)
        if not writer.isOpened():
            raise RuntimeFailure(f"{path}: OpenCV cannot open an '{_FOURCC}' video writer (is FFmpeg support missing?)")
        written = 0
        try:
            for frame in frames:
                writer.write(frame)
                written += 1
                if bar is not None:
                    bar.update(1)
        finally:
            writer.release()
        if written != n_frames:
            raise RuntimeFailure(f"{path}: drew {written} frames, expected {n_frames}")
        probe = _probe_video(tmp)
        if probe is None:
            raise RuntimeFailure(f"{path}: the written video does not open with cv2.VideoCapture")
        if probe != (n_frames, size[0], size[1]):
            raise RuntimeFailure(f"{path}: the written video has {probe[0]} frames of {probe[1]}x{probe[2]}, "
                                 f"expected {n_frames} of {size[0]}x{size[1]}")


# --------------------------------------------------------------------------- football

# (shirt, shorts, family): two teams never share a family, so they stay distinguishable.
_KITS: tuple[tuple[BGR, BGR, int], ...] = (
    ((40, 40, 215), (245, 245, 245), 0),     # red / white
    ((60, 20, 120), (245, 245, 245), 0),     # claret
    ((240, 240, 240), (40, 40, 40), 1),      # white / black
    ((235, 235, 235), (110, 40, 20), 1),     # white / navy
    ((190, 70, 20), (245, 245, 245), 2),     # blue / white
    ((110, 40, 20), (110, 40, 20), 2),       # navy
    ((30, 215, 240), (150, 60, 20), 3),      # yellow / blue
    ((0, 140, 255), (30, 30, 30), 4),        # orange / black
    ((235, 195, 120), (245, 245, 245), 5),   # sky blue
    ((35, 35, 35), (35, 35, 35), 6),         # black
    ((140, 40, 130), (245, 245, 245), 7),    # purple
)
_TEAM_CODES = ("HOM", "AWY", "UTD", "CTY", "ROV", "ATH", "RAN", "WAN", "ALB", "VIL", "SPO", "DYN", "REA", "INT",
               "OLY", "NOR", "STH", "EST", "WST", "CEL")
_CHANNELS = ("SPORT 1", "TV SPORT", "FOOTY+", "GOAL TV", "ARENA", "S24", "MATCH HD", "PITCH")
_SKIN = ((120, 160, 210), (80, 110, 160), (60, 80, 110), (140, 180, 225))

# 4-4-2 for the home team attacking towards +X; the away team is the mirror image.
_FORMATION = np.array([(5, 34), (20, 10), (18, 26), (18, 42), (20, 58), (35, 12), (33, 28), (33, 40), (35, 56),
                       (46, 26), (46, 42)], dtype=np.float64)


@dataclass(frozen=True)
class _Match:
    """Everything that stays the same for a whole match: teams, graphics, grass."""

    home: str
    away: str
    kits: tuple[tuple[BGR, BGR], tuple[BGR, BGR], BGR, BGR]  # home, away, home keeper shirt, away keeper shirt
    skins: tuple[BGR, ...]
    grass: tuple[BGR, BGR]
    bug_right: bool
    bug_bg: BGR
    bug_accent: BGR
    channel: str
    board_colours: tuple[BGR, ...]
    board_words: tuple[str, ...]
    brightness: float


def _new_match(rng: np.random.Generator) -> _Match:
    fams = rng.permutation(len(_KITS))
    home = _KITS[int(fams[0])]
    away = next(_KITS[int(i)] for i in fams[1:] if _KITS[int(i)][2] != home[2])
    keepers = [k for k in _KITS if k[2] not in (home[2], away[2])]
    gk = rng.choice(len(keepers), 2, replace=False)
    codes = rng.choice(len(_TEAM_CODES), 2, replace=False)
    hue = rng.uniform(0.24, 0.34)
    sat = rng.uniform(0.5, 0.75)
    val = rng.uniform(0.45, 0.62)
    g1 = _hsv(hue, sat, val)
    g2 = _hsv(hue + rng.uniform(-0.01, 0.01), sat * rng.uniform(0.9, 1.0), val * rng.uniform(1.1, 1.2))
    board_colours = tuple(_hsv(rng.uniform(0, 1), rng.uniform(0.6, 1.0), rng.uniform(0.5, 1.0)) for _ in range(4))
    board_words = tuple(_brand_name(rng) for _ in range(4))
    return _Match(
        home=_TEAM_CODES[int(codes[0])], away=_TEAM_CODES[int(codes[1])],
        kits=((home[0], home[1]), (away[0], away[1]), keepers[int(gk[0])][0], keepers[int(gk[1])][0]),
        skins=tuple(_SKIN[int(i)] for i in rng.integers(0, len(_SKIN), 23)),
        grass=(g1, g2),
        bug_right=bool(rng.random() < 0.3),
        bug_bg=_hsv(rng.uniform(0, 1), rng.uniform(0.3, 0.8), rng.uniform(0.12, 0.3)),
        bug_accent=_hsv(rng.uniform(0, 1), rng.uniform(0.5, 1), 0.95),
        channel=str(rng.choice(_CHANNELS)),
        board_colours=board_colours, board_words=board_words,
        brightness=float(rng.uniform(0.9, 1.08)),
    )


class _Play:
    """Ball, 22 players and the referee as smooth closed-form functions of match time.

    Closed form (sums of sinusoids) rather than a simulation: any instant can be drawn
    without state, camera cuts keep the action continuous, and it is cheap.
    """

    def __init__(self, rng: np.random.Generator) -> None:
        self.bx = (rng.uniform([17, 8, 1.5], [25, 14, 3]), rng.uniform([0.04, 0.15, 0.7], [0.1, 0.3, 1.3]),
                   rng.uniform(0, 2 * math.pi, 3))
        self.by = (rng.uniform([10, 4, 1], [15, 8, 2]), rng.uniform([0.05, 0.15, 0.6], [0.12, 0.35, 1.2]),
                   rng.uniform(0, 2 * math.pi, 3))
        base = np.concatenate([_FORMATION, np.column_stack([105 - _FORMATION[:, 0], _FORMATION[:, 1]])])
        self.base = base + rng.uniform(-2, 2, base.shape)
        self.follow = np.full(22, 0.45)
        self.follow[[0, 11]] = 0.08  # keepers stay home
        self.wander_a = rng.uniform(1.5, 4.0, (22, 2))
        self.wander_w = rng.uniform(0.15, 0.6, (22, 2))
        self.wander_p = rng.uniform(0, 2 * math.pi, (22, 2))
        self.stride = rng.uniform(9.0, 14.0, 23)  # leg swing, rad/s
        self.ref_p = rng.uniform(0, 2 * math.pi, 2)

    def ball(self, t: float) -> tuple[float, float]:
        ax, wx, px = self.bx
        ay, wy, py = self.by
        return (52.5 + float(np.sum(ax * np.sin(wx * t + px))), 34.0 + float(np.sum(ay * np.sin(wy * t + py))))

    def people(self, t: float) -> np.ndarray:
        """(23, 2) world positions in metres: home 0-10, away 11-21, referee 22."""
        bx, by = self.ball(t)
        pos = self.base.copy()
        pos[:, 0] += self.follow * (bx - 52.5)
        pos[:, 1] += 0.3 * (by - 34.0)
        pos += self.wander_a * np.sin(self.wander_w * t + self.wander_p)
        d = np.array([bx, by]) - pos
        pull = 0.7 * np.exp(-np.sum(d * d, axis=1) / (2 * 9.0**2))
        pull[[0, 11]] *= 0.2
        pos += pull[:, None] * d
        np.clip(pos, [-1.5, -1.0], [106.5, 69.0], out=pos)
        ref = np.array([bx - 7 + 6 * math.sin(0.13 * t + self.ref_p[0]), by + 6 + 5 * math.cos(0.11 * t + self.ref_p[1])])
        return np.vstack([pos, np.clip(ref, [0, 0], [105, 68])])


_PITCH_LINES: list[tuple[np.ndarray, bool]] = []


def _pitch_lines() -> list[tuple[np.ndarray, bool]]:
    """Pitch markings in metres as (points, closed) polylines (FIFA dimensions, 105 x 68)."""
    if _PITCH_LINES:
        return _PITCH_LINES
    a = np.linspace(0, 2 * math.pi, 73)
    circle = np.column_stack([52.5 + 9.15 * np.cos(a), 34 + 9.15 * np.sin(a)])
    lines: list[tuple[np.ndarray, bool]] = [
        (np.array([(0, 0), (105, 0), (105, 68), (0, 68)], float), True),
        (np.array([(52.5, 0), (52.5, 68)], float), False),
        (circle, True),
    ]
    for x0, sign in ((0.0, 1.0), (105.0, -1.0)):
        lines.append((np.array([(x0, 13.84), (x0 + sign * 16.5, 13.84), (x0 + sign * 16.5, 54.16), (x0, 54.16)]), False))
        lines.append((np.array([(x0, 24.84), (x0 + sign * 5.5, 24.84), (x0 + sign * 5.5, 43.16), (x0, 43.16)]), False))
        spot = x0 + sign * 11.0
        arc = np.column_stack([spot + 9.15 * np.cos(a), 34 + 9.15 * np.sin(a)])
        arc = arc[(arc[:, 0] - (x0 + sign * 16.5)) * sign > 0]
        arc = arc[np.argsort(arc[:, 1])]
        lines.append((arc, False))
    _PITCH_LINES.extend(lines)
    return _PITCH_LINES


def _project(hm: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return cv2.perspectiveTransform(np.asarray(pts, np.float64).reshape(-1, 1, 2), hm).reshape(-1, 2)


@dataclass
class _CameraShot:
    """One camera angle: a pre-rendered pitch canvas that the camera pans over by cropping."""

    canvas: np.ndarray
    hm: np.ndarray            # world metres -> canvas pixels
    v_top: float              # canvas row of the far touchline
    v_bot: float              # canvas row of the near touchline
    w_far: float              # pixels per 105 m at the far touchline
    w_near: float
    gain: float
    lag: float                # seconds the camera trails the ball
    follow: float             # how much of the ball's x movement the camera follows
    y_follow: float
    frames: int

    def px_per_m(self, v: np.ndarray) -> np.ndarray:
        """Pixels per metre at canvas row v: linear in v for this trapezoid projection."""
        width = self.w_far + (self.w_near - self.w_far) * (v - self.v_top) / (self.v_bot - self.v_top)
        return np.maximum(width / 105.0, 0.3 * self.w_far / 105.0)


def _new_camera_shot(rng: np.random.Generator, match: _Match, size: Size, frames: int) -> _CameraShot:
    """Draw a camera angle (wide/medium/close, tilt, mirror, exposure) onto a big canvas."""
    w, h = size
    sc = w / 640.0
    kind = rng.choice(3, p=[0.55, 0.3, 0.15])
    zoom = (rng.uniform(7.5, 10.0), rng.uniform(12.0, 16.0), rng.uniform(18.0, 25.0))[kind] * sc
    tilt = rng.uniform(0.38, 0.55) if kind == 0 else rng.uniform(0.45, 0.6)
    ratio = rng.uniform(0.68, 0.85)
    mirror = bool(rng.random() < 0.25)
    gain = match.brightness * rng.uniform(0.92, 1.08)

    w_near = 105.0 * zoom
    w_far = w_near * ratio
    h_pitch = 68.0 * zoom * tilt
    side = 16.0 * zoom
    cw = int(max(w_near + 2 * side, w + 16))
    uc = cw / 2.0
    src = np.array([(0, 0), (105, 0), (105, 68), (0, 68)], np.float32)
    left_far, right_far = uc - w_far / 2, uc + w_far / 2
    left_near, right_near = uc - w_near / 2, uc + w_near / 2
    if mirror:
        dst = np.array([(right_far, 0), (left_far, 0), (left_near, h_pitch), (right_near, h_pitch)], np.float32)
    else:
        dst = np.array([(left_far, 0), (right_far, 0), (right_near, h_pitch), (left_near, h_pitch)], np.float32)
    hm0 = cv2.getPerspectiveTransform(src, dst).astype(np.float64)
    boards_h = max(3, int(round(0.9 * w_far / 105.0)) + 2)
    crowd_h = max(4, int(round(0.2 * h)))
    v_m3 = _project(hm0, [(52.5, -3.0)])[0, 1]  # grass beyond the far touchline (negative)
    top = crowd_h + boards_h - v_m3
    hm = np.array([[1, 0, 0], [0, 1, top], [0, 0, 1]], np.float64) @ hm0
    v_top, v_bot = top, top + h_pitch
    ch = int(max(v_bot + 6.0 * zoom * tilt, h + 8))
    canvas = np.empty((ch, cw, 3), np.uint8)
    g1, g2 = match.grass
    canvas[:] = g1

    # Crowd: coarse random blocks, darker than the pitch; boards: brand colours and words.
    cells_shape = (max(1, crowd_h // 3), max(1, cw // 3))
    grey = rng.integers(25, 110, (*cells_shape, 1)).astype(np.int16)
    tint = rng.integers(-30, 31, (*cells_shape, 3)).astype(np.int16)
    cells = np.clip(grey + tint, 0, 255).astype(np.uint8)
    canvas[:crowd_h] = cv2.resize(cells, (cw, crowd_h), interpolation=cv2.INTER_NEAREST)
    grass_top = crowd_h + boards_h
    board_w = max(8, int(round(9.0 * w_far / 105.0)))
    scale = _fit_scale("WWWW", cv2.FONT_HERSHEY_SIMPLEX, 1, board_w * 0.8, boards_h * 0.8)
    for i, x in enumerate(range(0, cw, board_w)):
        colour = match.board_colours[i % len(match.board_colours)]
        cv2.rectangle(canvas, (x, crowd_h), (x + board_w - 1, grass_top - 1), colour, -1)
        if boards_h >= 6:
            _put_text_centered(canvas, match.board_words[i % len(match.board_words)], (x + board_w / 2, crowd_h + boards_h / 2),
                               scale, (250, 250, 250), 1, cv2.FONT_HERSHEY_SIMPLEX)

    # Mowing stripes over the whole visible grass, as projected quads.
    hinv = np.linalg.inv(hm)
    corners = _project(hinv, [(0, grass_top), (cw, grass_top), (0, ch), (cw, ch)])
    y_min, y_max = corners[:, 1].min(), corners[:, 1].max()
    x_min, x_max = corners[:, 0].min(), corners[:, 0].max()
    stripe = 105.0 / int(rng.choice([14, 16, 18, 20]))
    for i in range(int(math.floor(x_min / stripe)) - 1, int(math.ceil(x_max / stripe)) + 1):
        if i % 2:
            continue
        quad = _project(hm, [(i * stripe, y_min), ((i + 1) * stripe, y_min), ((i + 1) * stripe, y_max), (i * stripe, y_max)])
        cv2.fillConvexPoly(canvas, np.round(quad * 8).astype(np.int32), g2, cv2.LINE_AA, 3)

    white = (235, 240, 240)
    thick = max(1, int(round(0.12 * zoom)))
    for pts, closed in _pitch_lines():
        proj = np.round(_project(hm, pts) * 8).astype(np.int32)
        cv2.polylines(canvas, [proj], closed, white, thick, cv2.LINE_AA, 3)
    for spot in ((52.5, 34.0), (11.0, 34.0), (94.0, 34.0)):
        p = _project(hm, [spot])[0]
        cv2.circle(canvas, (int(p[0]), int(p[1])), max(1, thick), white, -1, cv2.LINE_AA)
    shot = _CameraShot(canvas, hm, v_top, v_bot, w_far, w_near, gain, float(rng.uniform(0.3, 1.2)),
                       float(rng.uniform(0.6, 1.0)), float(rng.uniform(0.3, 0.7)), frames)
    for gx in (0.0, 105.0):  # goals: posts and crossbar stand up from the goal line
        base = _project(hm, [(gx, 30.34), (gx, 37.66)])
        k = float(shot.px_per_m(base[:, 1]).mean())
        (x0, y0), (x1, y1) = base
        top_y0, top_y1 = y0 - 2.44 * k, y1 - 2.44 * k
        cv2.line(canvas, (int(x0), int(y0)), (int(x0), int(top_y0)), white, max(1, thick), cv2.LINE_AA)
        cv2.line(canvas, (int(x1), int(y1)), (int(x1), int(top_y1)), white, max(1, thick), cv2.LINE_AA)
        cv2.line(canvas, (int(x0), int(top_y0)), (int(x1), int(top_y1)), white, max(1, thick), cv2.LINE_AA)
    if abs(gain - 1.0) > 1e-3:
        cv2.convertScaleAbs(canvas, dst=canvas, alpha=gain, beta=0)
    return shot


def _draw_people(frame: np.ndarray, shot: _CameraShot, match: _Match, play: _Play, t: float, x0: int, y0: int,
                 ball: tuple[float, float]) -> None:
    h, w = frame.shape[:2]
    people = play.people(t)
    pts = _project(shot.hm, np.vstack([people, [ball]]))
    s_all = shot.px_per_m(pts[:, 1]) * 1.15  # a touch larger than life so wide shots stay readable
    pts[:, 0] -= x0
    pts[:, 1] -= y0
    gain = shot.gain
    (home_shirt, home_shorts), (away_shirt, away_shorts), gk_home, gk_away = match.kits
    shadow = _scaled(match.grass[0], 0.6 * gain)
    order = np.argsort(pts[:23, 1])
    for i in order:
        u, v = pts[i]
        s = float(s_all[i])
        if u < -2 * s or u > w + 2 * s or v < 0 or v > h + 2.5 * s:
            continue
        if i == 22:
            shirt, shorts = (20, 20, 20), (20, 20, 20)
        elif i < 11:
            shirt, shorts = (gk_home if i == 0 else home_shirt), home_shorts
        else:
            shirt, shorts = (gk_away if i == 11 else away_shirt), away_shorts
        shirt, shorts = _scaled(shirt, gain), _scaled(shorts, gain)
        skin = _scaled(match.skins[i], gain)
        swing = 0.22 * s * math.sin(play.stride[i] * t + i)
        lw = max(1, int(round(0.14 * s)))
        cv2.ellipse(frame, (int(u + 0.25 * s), int(v)), (max(1, int(0.4 * s)), max(1, int(0.1 * s))), 0, 0, 360, shadow, -1)
        hip = (int(u), int(v - 0.85 * s))
        cv2.line(frame, hip, (int(u - swing), int(v)), skin, lw)
        cv2.line(frame, hip, (int(u + swing), int(v)), skin, lw)
        cv2.rectangle(frame, (int(u - 0.22 * s), int(v - 1.0 * s)), (int(u + 0.22 * s), int(v - 0.65 * s)), shorts, -1)
        cv2.rectangle(frame, (int(u - 0.26 * s), int(v - 1.5 * s)), (int(u + 0.26 * s), int(v - 0.98 * s)), shirt, -1)
        cv2.circle(frame, (int(u), int(v - 1.68 * s)), max(1, int(round(0.16 * s))), skin, -1, cv2.LINE_AA)
    bu, bv = pts[23]
    bs = float(s_all[23])
    r = max(1, int(round(0.25 * bs)))
    cv2.circle(frame, (int(bu + 0.2 * bs), int(bv)), r, shadow, -1)
    cv2.circle(frame, (int(bu), int(bv - 0.3 * bs)), r, _scaled((245, 245, 245), gain), -1, cv2.LINE_AA)


class _ScoreBug:
    """The on-screen graphics of a football broadcast: score bug with running clock, channel logo."""

    def __init__(self, match: _Match, size: Size) -> None:
        self.match = match
        w, h = size
        self.sc = w / 640.0
        self.font = cv2.FONT_HERSHEY_SIMPLEX
        self.scale = 0.48 * self.sc
        self.thick = max(1, int(round(self.sc)))
        self.margin = int(round(0.035 * w))
        self.size = size

    def draw(self, frame: np.ndarray, score: tuple[int, int], clock_s: float) -> None:
        m, sc = self.match, self.sc
        w = self.size[0]
        text = f"{m.home} {score[0]}-{score[1]} {m.away}"
        mm, ss = divmod(int(clock_s), 60)
        clock = f"{mm:02d}:{ss:02d}"
        (tw, th), _ = cv2.getTextSize(text, self.font, self.scale, self.thick)
        (cw, _), _ = cv2.getTextSize(clock, self.font, self.scale, self.thick)
        pad = int(round(6 * sc))
        chip = max(2, int(round(4 * sc)))
        box_w = tw + 2 * pad + 2 * chip
        clock_w = cw + 2 * pad
        total = box_w + clock_w
        bh = th + 2 * pad
        x = w - self.margin - total if m.bug_right else self.margin
        y = self.margin
        cv2.rectangle(frame, (x, y), (x + box_w, y + bh), m.bug_bg, -1)
        cv2.rectangle(frame, (x, y), (x + chip, y + bh), m.kits[0][0], -1)
        cv2.rectangle(frame, (x + box_w - chip, y), (x + box_w, y + bh), m.kits[1][0], -1)
        cv2.putText(frame, text, (x + chip + pad, y + pad + th), self.font, self.scale, (245, 245, 245), self.thick, cv2.LINE_AA)
        cv2.rectangle(frame, (x + box_w, y), (x + total, y + bh), m.bug_accent, -1)
        cv2.putText(frame, clock, (x + box_w + pad, y + pad + th), self.font, self.scale, (20, 20, 20), self.thick, cv2.LINE_AA)
        # Channel logo in the other top corner, as broadcasters do during programmes.
        (lw, lh), _ = cv2.getTextSize(m.channel, cv2.FONT_HERSHEY_DUPLEX, 0.55 * sc, self.thick)
        lx = self.margin if m.bug_right else w - self.margin - lw
        cv2.putText(frame, m.channel, (lx, y + lh + pad), cv2.FONT_HERSHEY_DUPLEX, 0.55 * sc, (235, 235, 235), self.thick, cv2.LINE_AA)


def _football_frames(rng: np.random.Generator, n: int, size: Size, fps: float, match: _Match, play: _Play,
                     t0: float, clock0: float, score: tuple[int, int], noise: _Noise) -> Iterator[np.ndarray]:
    """n frames of match action starting at match time t0, with camera cuts every 5-25 s."""
    w, h = size
    bug = _ScoreBug(match, size)
    done = 0
    while done < n:
        length = min(n - done, _frames_for(rng.uniform(5.0, 25.0), fps))
        if 0 < n - done - length < _frames_for(2.0, fps):  # no sliver of a last shot
            length = n - done
        shot = _new_camera_shot(rng, match, size, length)
        ch, cw = shot.canvas.shape[:2]
        for k in range(length):
            i = done + k
            t = t0 + i / fps
            cam_bx, cam_by = play.ball(t - shot.lag)
            target = (52.5 + shot.follow * (cam_bx - 52.5), 34.0 + shot.y_follow * (cam_by - 34.0))
            u, v = _project(shot.hm, [target])[0]
            x0 = int(min(max(round(u - w / 2), 0), cw - w))
            y0 = int(min(max(round(v - 0.5 * h), 0), ch - h))
            frame = shot.canvas[y0:y0 + h, x0:x0 + w].copy()
            _draw_people(frame, shot, match, play, t, x0, y0, play.ball(t))
            bug.draw(frame, score, clock0 + i / fps)
            yield noise.apply(frame)
        done += length


# --------------------------------------------------------------------------- commercials

_SLOGANS = ("BUY NOW", "NEW!", "50% OFF", "FRESH TASTE", "LIMITED TIME", "ONLY TODAY", "SAVE BIG", "TRY IT",
            "BEST EVER", "100% NATURAL", "ORDER NOW", "FREE DELIVERY", "HURRY!", "WOW!", "MEGA SALE", "JUST LAUNCHED",
            "GET YOURS", "SUPER FAST", "2 FOR 1", "CALL NOW", "FEEL GOOD", "ZERO SUGAR", "EXTRA CRISPY",
            "DRIVE TODAY", "UPGRADE NOW", "BIG DEALS", "SO SMOOTH", "TASTE IT", "ALL NEW", "NO.1 CHOICE")
_FINE_PRINT = ("*Terms and conditions apply", "*While stocks last", "Offer ends Sunday", "See store for details",
               "*Selected stores only", "Available online and in stores")
_SYLLABLES = ("ZO", "MA", "XI", "LU", "NO", "VA", "KRI", "SPA", "BO", "TEK", "FLO", "RA", "QUI", "VO", "NEX", "LI",
              "PO", "SU", "DRA", "MI", "KO", "ZEN", "PRI", "TA")
_PRODUCTS = ("bottle", "box", "can", "car", "phone")
_BACKGROUNDS = ("gradient", "radial", "solid", "stripes", "checker", "rays", "split", "bokeh")


def _brand_name(rng: np.random.Generator) -> str:
    name = "".join(str(s) for s in rng.choice(_SYLLABLES, int(rng.integers(2, 4))))
    return name + str(rng.choice(["", "", "", "+", " X", " GO", "CO"]))


@dataclass(frozen=True)
class _Spot:
    """One advert: its brand and palette stay the same for all of its shots."""

    brand: str
    hue: float
    dark: bool
    product: str
    slogans: tuple[str, ...]
    price: str
    font: int


def _new_spot(rng: np.random.Generator, prev: _Spot | None) -> _Spot:
    """A spot that looks different from the previous one (hue at least 0.15 away, other product)."""
    for _ in range(50):
        if rng.random() < 0.18:
            hue = rng.uniform(0.22, 0.42)  # green-ish spots exist, so green alone never means football
        else:
            hue = rng.uniform(0.42, 1.22) % 1.0
        if prev is None or min(abs(hue - prev.hue), 1 - abs(hue - prev.hue)) >= 0.15:
            break
    products = [p for p in _PRODUCTS if prev is None or p != prev.product]
    price = str(rng.choice([f"${int(rng.integers(1, 99))}.99", f"ONLY {int(rng.integers(2, 49))}.99",
                            f"-{int(rng.integers(2, 8)) * 10}%", f"{int(rng.integers(1, 9))}.49"]))
    return _Spot(
        brand=_brand_name(rng), hue=float(hue), dark=bool(rng.random() < 0.15), product=str(rng.choice(products)),
        slogans=tuple(str(s) for s in rng.choice(_SLOGANS, 3, replace=False)), price=price,
        font=int(rng.choice([cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_SIMPLEX,
                             cv2.FONT_HERSHEY_COMPLEX])),
    )


def _spot_colours(rng: np.random.Generator, spot: _Spot) -> tuple[BGR, BGR, BGR]:
    """(background 1, background 2, accent) for one shot of the spot."""
    if spot.dark:
        return (_hsv(spot.hue, 0.6, rng.uniform(0.05, 0.15)), _hsv(spot.hue, 0.7, rng.uniform(0.2, 0.35)),
                _hsv(spot.hue + 0.5, 0.8, 1.0))
    c1 = _hsv(spot.hue + rng.uniform(-0.03, 0.03), rng.uniform(0.65, 1.0), rng.uniform(0.7, 1.0))
    c2 = _hsv(spot.hue + rng.choice([-1, 1]) * rng.uniform(0.04, 0.12), rng.uniform(0.5, 1.0), rng.uniform(0.45, 1.0))
    accent = _hsv(spot.hue + 0.5 + rng.uniform(-0.1, 0.1), rng.uniform(0.8, 1.0), 1.0)
    return c1, c2, accent


def _ad_background(rng: np.random.Generator, style: str, c1: BGR, c2: BGR, size: Size) -> np.ndarray:
    """A static background for one shot, vectorised numpy (drawn once, copied per frame)."""
    w, h = size
    a = np.asarray(c1, np.float32)
    b = np.asarray(c2, np.float32)
    xs = np.linspace(-1.0, 1.0, w, dtype=np.float32)[None, :]
    ys = (np.linspace(-1.0, 1.0, h, dtype=np.float32) * (h / w))[:, None]
    if style == "solid":
        img = np.empty((h, w, 3), np.uint8)
        img[:] = c1
        return img
    if style == "bokeh":
        small = np.empty((h // 4, w // 4, 3), np.uint8)
        small[:] = c1
        for _ in range(int(rng.integers(8, 20))):
            col = _scaled(c2, rng.uniform(0.8, 1.4))
            cv2.circle(small, (int(rng.integers(0, w // 4)), int(rng.integers(0, h // 4))), int(rng.integers(3, max(4, h // 12))),
                       col, -1, cv2.LINE_AA)
        small = cv2.GaussianBlur(small, (0, 0), 2.0)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    ang = rng.uniform(0, 2 * math.pi)
    t: np.ndarray
    if style == "gradient":
        t = xs * math.cos(ang) + ys * math.sin(ang)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    elif style == "radial":
        cx, cy = rng.uniform(-0.5, 0.5), rng.uniform(-0.3, 0.3)
        t = np.sqrt((xs - cx) ** 2 + (ys - cy) ** 2)
        t = np.minimum(t / max(float(t.max()), 1e-6) * 1.3, 1.0)
    elif style == "stripes":
        t = xs * math.cos(ang) + ys * math.sin(ang)
        t = (np.floor(t * rng.uniform(3, 9)) % 2).astype(np.float32)
    elif style == "checker":
        cell = rng.uniform(0.1, 0.3)
        t = ((np.floor(xs / cell) + np.floor(ys / cell)) % 2).astype(np.float32)
    elif style == "rays":
        cx, cy = rng.uniform(-0.4, 0.4), rng.uniform(-0.2, 0.2)
        t = (np.floor((np.arctan2(ys - cy, xs - cx) + math.pi) / (2 * math.pi) * int(rng.integers(8, 20)) + 0.5) % 2)
        t = t.astype(np.float32)
    else:  # split
        t = ((xs * math.cos(ang) + ys * math.sin(ang)) > rng.uniform(-0.3, 0.3)).astype(np.float32)
    img = a + (b - a) * t[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def _draw_product(img: np.ndarray, kind: str, cx: float, cy: float, s: float, body: BGR, accent: BGR, brand: str) -> None:
    """A simple drawn product of height ~s centred on (cx, cy)."""
    dark = (30, 30, 30)
    light = (245, 245, 245)
    font = cv2.FONT_HERSHEY_DUPLEX
    if kind == "bottle":
        bw = 0.36 * s
        _rounded_rect(img, cx - bw / 2, cy - 0.25 * s, cx + bw / 2, cy + 0.5 * s, 0.08 * s, body)
        shoulder = np.array([(cx - bw / 2, cy - 0.2 * s), (cx - 0.07 * s, cy - 0.38 * s), (cx + 0.07 * s, cy - 0.38 * s),
                             (cx + bw / 2, cy - 0.2 * s)])
        cv2.fillConvexPoly(img, np.round(shoulder).astype(np.int32), body, cv2.LINE_AA)
        cv2.rectangle(img, (int(cx - 0.07 * s), int(cy - 0.5 * s)), (int(cx + 0.07 * s), int(cy - 0.36 * s)), body, -1)
        cv2.rectangle(img, (int(cx - 0.08 * s), int(cy - 0.56 * s)), (int(cx + 0.08 * s), int(cy - 0.48 * s)), accent, -1)
        cv2.line(img, (int(cx - bw / 3), int(cy - 0.15 * s)), (int(cx - bw / 3), int(cy + 0.4 * s)),
                 _scaled(body, 1.5), max(1, int(0.03 * s)), cv2.LINE_AA)
        cv2.rectangle(img, (int(cx - bw / 2), int(cy - 0.02 * s)), (int(cx + bw / 2), int(cy + 0.25 * s)), light, -1)
        _put_text_centered(img, brand, (cx, cy + 0.115 * s), _fit_scale(brand, font, 1, bw * 0.9, 0.2 * s), accent, 1, font)
    elif kind == "box":
        bw, bh, d = 0.6 * s, 0.8 * s, 0.15 * s
        x0, y0 = cx - bw / 2 - d / 2, cy - bh / 2 + d / 2
        side = np.array([(x0 + bw, y0), (x0 + bw + d, y0 - d), (x0 + bw + d, y0 + bh - d), (x0 + bw, y0 + bh)])
        top = np.array([(x0, y0), (x0 + d, y0 - d), (x0 + bw + d, y0 - d), (x0 + bw, y0)])
        cv2.fillConvexPoly(img, np.round(side).astype(np.int32), _scaled(body, 0.65), cv2.LINE_AA)
        cv2.fillConvexPoly(img, np.round(top).astype(np.int32), _scaled(body, 1.25), cv2.LINE_AA)
        cv2.rectangle(img, (int(x0), int(y0)), (int(x0 + bw), int(y0 + bh)), body, -1)
        cv2.rectangle(img, (int(x0), int(y0 + 0.35 * bh)), (int(x0 + bw), int(y0 + 0.6 * bh)), accent, -1)
        _put_text_centered(img, brand, (x0 + bw / 2, y0 + 0.475 * bh), _fit_scale(brand, font, 1, bw * 0.9, 0.2 * bh),
                           light, 1, font)
        cv2.circle(img, (int(x0 + bw / 2), int(y0 + 0.8 * bh)), max(2, int(0.1 * bw)), light, -1, cv2.LINE_AA)
    elif kind == "can":
        bw, bh = 0.42 * s, 0.72 * s
        x0, y0 = cx - bw / 2, cy - bh / 2
        ry = max(2, int(0.08 * s))
        cv2.ellipse(img, (int(cx), int(y0 + bh)), (int(bw / 2), ry), 0, 0, 360, (170, 170, 170), -1, cv2.LINE_AA)
        cv2.rectangle(img, (int(x0), int(y0)), (int(x0 + bw), int(y0 + bh)), body, -1)
        cv2.rectangle(img, (int(x0), int(y0 + 0.3 * bh)), (int(x0 + bw), int(y0 + 0.55 * bh)), accent, -1)
        cv2.ellipse(img, (int(cx), int(y0)), (int(bw / 2), ry), 0, 0, 360, (200, 200, 200), -1, cv2.LINE_AA)
        cv2.ellipse(img, (int(cx), int(y0)), (int(bw / 2.6), max(1, ry // 2)), 0, 0, 360, (140, 140, 140), 1, cv2.LINE_AA)
        _put_text_centered(img, brand, (cx, y0 + 0.425 * bh), _fit_scale(brand, font, 1, bw * 0.9, 0.18 * bh), light, 1, font)
    elif kind == "car":
        s *= 0.55  # a car is wide: keep it inside the frame
        body_pts = np.array([(cx - 0.9 * s, cy + 0.22 * s), (cx - 0.92 * s, cy - 0.02 * s), (cx - 0.55 * s, cy - 0.08 * s),
                             (cx - 0.3 * s, cy - 0.34 * s), (cx + 0.35 * s, cy - 0.34 * s), (cx + 0.62 * s, cy - 0.08 * s),
                             (cx + 0.92 * s, cy - 0.02 * s), (cx + 0.9 * s, cy + 0.22 * s)])
        cv2.fillPoly(img, [np.round(body_pts).astype(np.int32)], body, cv2.LINE_AA)
        win = np.array([(cx - 0.24 * s, cy - 0.3 * s), (cx + 0.3 * s, cy - 0.3 * s), (cx + 0.52 * s, cy - 0.09 * s),
                        (cx - 0.45 * s, cy - 0.09 * s)])
        cv2.fillConvexPoly(img, np.round(win).astype(np.int32), (90, 70, 50), cv2.LINE_AA)
        cv2.line(img, (int(cx + 0.05 * s), int(cy - 0.3 * s)), (int(cx + 0.05 * s), int(cy - 0.09 * s)), body,
                 max(1, int(0.03 * s)))
        for wx in (cx - 0.55 * s, cx + 0.55 * s):
            cv2.circle(img, (int(wx), int(cy + 0.22 * s)), max(2, int(0.17 * s)), dark, -1, cv2.LINE_AA)
            cv2.circle(img, (int(wx), int(cy + 0.22 * s)), max(1, int(0.08 * s)), (180, 180, 180), -1, cv2.LINE_AA)
        cv2.ellipse(img, (int(cx + 0.85 * s), int(cy + 0.04 * s)), (max(1, int(0.05 * s)), max(1, int(0.03 * s))),
                    0, 0, 360, (200, 255, 255), -1, cv2.LINE_AA)
        cv2.line(img, (int(cx - 0.85 * s), int(cy + 0.08 * s)), (int(cx + 0.85 * s), int(cy + 0.08 * s)), accent,
                 max(1, int(0.025 * s)), cv2.LINE_AA)
    else:  # phone
        pw, ph = 0.5 * s, 1.0 * s
        x0, y0 = cx - pw / 2, cy - ph / 2
        _rounded_rect(img, x0, y0, x0 + pw, y0 + ph, 0.07 * s, dark)
        m = 0.03 * s
        cv2.rectangle(img, (int(x0 + m), int(y0 + 2.2 * m)), (int(x0 + pw - m), int(y0 + ph - 2.2 * m)), body, -1)
        cv2.rectangle(img, (int(cx - 0.06 * s), int(y0 + 0.6 * m)), (int(cx + 0.06 * s), int(y0 + 1.6 * m)), (10, 10, 10), -1)
        cell = (pw - 2 * m) / 4
        for r in range(3):
            for c in range(4):
                ax = x0 + m + c * cell + 0.15 * cell
                ay = y0 + 4 * m + r * cell + 0.15 * cell
                col = accent if (r + c) % 2 else light
                cv2.rectangle(img, (int(ax), int(ay)), (int(ax + 0.7 * cell), int(ay + 0.7 * cell)), col, -1)


def _star(cx: float, cy: float, r: float, points: int, rot: float) -> np.ndarray:
    a = rot + np.arange(2 * points) * math.pi / points
    rad = np.where(np.arange(2 * points) % 2 == 0, r, 0.72 * r)
    return np.round(np.column_stack([cx + rad * np.cos(a), cy + rad * np.sin(a)])).astype(np.int32)


@dataclass
class _AdShot:
    """One cut of a spot: static background plus the moving product and text."""

    background: np.ndarray
    frames: int
    product: bool
    product_at: tuple[float, float]
    product_size: float
    motion: str
    slogan: str
    slogan_y: float
    slogan_scale: float
    text_motion: str
    text_colour: BGR
    accent: BGR
    body: BGR
    price: bool
    logo: bool
    fine_print: str | None
    end_card: bool


def _new_ad_shot(rng: np.random.Generator, spot: _Spot, size: Size, frames: int, end_card: bool) -> _AdShot:
    w, h = size
    c1, c2, accent = _spot_colours(rng, spot)
    style = "solid" if end_card and rng.random() < 0.5 else str(rng.choice(_BACKGROUNDS))
    background = _ad_background(rng, style, c1, c2, size)
    mean_v = sum(c1) / 3
    text_colour = (255, 255, 255) if mean_v < 150 or rng.random() < 0.5 else (20, 20, 20)
    if rng.random() < 0.3:
        text_colour = (0, 230, 255)  # yellow
    slogan = spot.brand if end_card else str(rng.choice(spot.slogans))
    thick = max(1, int(round(3 * w / 640)))
    slogan_scale = _fit_scale(slogan, spot.font, thick, (0.52 if end_card else 0.85) * w, (0.18 if end_card else 0.16) * h)
    product = end_card or rng.random() < 0.85
    left = rng.random() < 0.5
    px = (0.28 if left else 0.72) * w if not end_card else 0.5 * w
    return _AdShot(
        background=background, frames=frames, product=product,
        product_at=(px + rng.uniform(-0.05, 0.05) * w, rng.uniform(0.5, 0.62) * h),
        product_size=(rng.uniform(0.26, 0.32) if end_card else rng.uniform(0.45, 0.65)) * h,
        motion=str(rng.choice(["zoom", "slide", "float", "static"])),
        slogan=slogan, slogan_y=(0.5 if end_card else float(rng.choice([0.22, 0.85]))) * h, slogan_scale=slogan_scale,
        text_motion=str(rng.choice(["slide", "pulse", "static"])), text_colour=text_colour, accent=accent,
        body=_hsv(spot.hue + rng.uniform(-0.06, 0.06), rng.uniform(0.7, 1.0), rng.uniform(0.55, 0.95)),
        price=not end_card and rng.random() < 0.45, logo=not end_card and rng.random() < 0.7,
        fine_print=str(rng.choice(_FINE_PRINT)) if rng.random() < 0.4 else None, end_card=end_card,
    )


def _draw_ad_frame(shot: _AdShot, spot: _Spot, k: int, fps: float, size: Size) -> np.ndarray:
    w, h = size
    t = k / fps
    p = k / max(shot.frames - 1, 1)
    frame = shot.background.copy()
    sc = w / 640.0
    if shot.end_card:
        y_logo = 0.3 * h
        _rounded_rect(frame, 0.2 * w, y_logo - 0.13 * h, 0.8 * w, y_logo + 0.13 * h, 0.13 * h, shot.accent)
        _put_text_centered(frame, spot.brand, (0.5 * w, y_logo), shot.slogan_scale * (1 + 0.04 * p), (255, 255, 255),
                           max(1, int(round(3 * sc))), spot.font, outline=(20, 20, 20))
        _draw_product(frame, spot.product, 0.5 * w, 0.68 * h, shot.product_size * (1 + 0.1 * p), shot.body, shot.accent,
                      spot.brand)
        tag = spot.slogans[0]
        _put_text_centered(frame, tag, (0.5 * w, 0.93 * h), _fit_scale(tag, spot.font, 1, 0.6 * w, 0.07 * h),
                           shot.text_colour, max(1, int(round(sc))), spot.font)
        return frame
    if shot.product:
        cx, cy = shot.product_at
        s = shot.product_size
        if shot.motion == "zoom":
            s *= 0.8 + 0.35 * p
        elif shot.motion == "slide":
            cx += (1.0 - _smoothstep(t / 0.5)) * (w * 0.7 if cx > w / 2 else -w * 0.7)
        elif shot.motion == "float":
            cy += 0.03 * h * math.sin(2 * math.pi * t / 1.2)
        _draw_product(frame, spot.product, cx, cy, s, shot.body, shot.accent, spot.brand)
    scale = shot.slogan_scale
    tx = 0.5 * w
    if shot.text_motion == "slide":
        tx += (1.0 - _smoothstep(t / 0.35)) * w
    elif shot.text_motion == "pulse":
        scale *= 1.0 + 0.06 * math.sin(2 * math.pi * t * 2.0)
    thick = max(1, int(round(3 * sc)))
    outline = (20, 20, 20) if shot.text_colour != (20, 20, 20) else (250, 250, 250)
    _put_text_centered(frame, shot.slogan, (tx, shot.slogan_y), scale, shot.text_colour, thick, spot.font, outline=outline)
    if shot.price:
        cx = 0.8 * w if shot.product_at[0] < w / 2 else 0.2 * w
        r = 0.13 * h * (1 + 0.05 * math.sin(2 * math.pi * t * 3))
        cv2.fillPoly(frame, [_star(cx, 0.52 * h, r, 12, t)], (0, 30, 230) if shot.accent[2] < 128 else shot.accent, cv2.LINE_AA)
        _put_text_centered(frame, spot.price, (cx, 0.52 * h), _fit_scale(spot.price, spot.font, thick, 1.3 * r, 0.5 * r),
                           (255, 255, 255), max(1, thick - 1), spot.font, outline=(20, 20, 20))
    if shot.logo:
        lw = 0.24 * w
        x0, y0 = w - lw - 0.03 * w, 0.04 * h
        _rounded_rect(frame, x0, y0, x0 + lw, y0 + 0.09 * h, 0.045 * h, (250, 250, 250))
        _put_text_centered(frame, spot.brand, (x0 + lw / 2, y0 + 0.045 * h),
                           _fit_scale(spot.brand, cv2.FONT_HERSHEY_DUPLEX, 1, 0.9 * lw, 0.06 * h), shot.accent
                           if sum(shot.accent) < 600 else (30, 30, 30), max(1, int(round(sc))), cv2.FONT_HERSHEY_DUPLEX)
    if shot.fine_print:
        cv2.putText(frame, shot.fine_print, (int(0.03 * w), int(0.97 * h)), cv2.FONT_HERSHEY_SIMPLEX, 0.35 * sc,
                    (235, 235, 235), 1, cv2.LINE_AA)
    return frame


def _spot_frames(rng: np.random.Generator, spot: _Spot, n: int, size: Size, fps: float, noise: _Noise) -> Iterator[np.ndarray]:
    """n frames of one spot: fast cuts of 0.6-3 s, usually closing on a brand end card."""
    lengths: list[int] = []
    remaining = n
    while remaining > 0:
        length = _frames_for(rng.uniform(0.6, 3.0), fps)
        if remaining - length < _frames_for(0.6, fps):
            length = remaining
        lengths.append(length)
        remaining -= length
    end_card = n >= _frames_for(4.0, fps) and rng.random() < 0.7
    for j, length in enumerate(lengths):
        shot = _new_ad_shot(rng, spot, size, length, end_card and j == len(lengths) - 1 and j > 0)
        for k in range(length):
            yield noise.apply(_draw_ad_frame(shot, spot, k, fps, size))


def _black_frames(rng: np.random.Generator, n: int, size: Size, noise: _Noise) -> Iterator[np.ndarray]:
    """Near-black frames (level 0-8 plus light noise, so at most ~14): the gaps around ad breaks."""
    w, h = size
    level = int(rng.integers(0, 9))
    for _ in range(n):
        frame = np.full((h, w, 3), level, np.uint8)
        yield noise.apply(frame)


# --------------------------------------------------------------------------- clips and broadcasts


def write_clip(path: Path, label: str, seconds: float, seed: int, size: tuple[int, int] = (640, 360),
               fps: float = 25.0) -> None:
    """One single-class clip.

    Training folders hold one class per clip, so a clip is all football (with camera cuts)
    or all commercials (one spot after another, cut wherever the clip ends). It has exactly
    round(seconds * fps) frames; the same (label, seconds, seed, size, fps) gives the same pixels.
    """
    if label not in CLASSES:
        raise UsageError(f"write_clip: label must be one of {', '.join(CLASSES)}, got '{label}'")
    size = _check_args(seconds, size, fps, f"{path}")
    n = _frames_for(seconds, fps)
    rng = np.random.default_rng(_derive_seed(seed, "clip", label))
    if label == PROGRAMME_CLASS:
        noise = _Noise(rng, size, 4)
        match = _new_match(rng)
        play = _Play(rng)
        score = (int(rng.integers(0, 4)), int(rng.integers(0, 3)))
        frames = _football_frames(rng, n, size, fps, match, play, float(rng.uniform(0, 5000)),
                                  float(rng.uniform(0, 85 * 60)), score, noise)
    else:
        frames = _commercial_frames(rng, n, size, fps)
    _write_video(Path(path), frames, n, size, fps)


def _commercial_frames(rng: np.random.Generator, n: int, size: Size, fps: float) -> Iterator[np.ndarray]:
    noise = _Noise(rng, size, 3)
    spot: _Spot | None = None
    done = 0
    first = True
    while done < n:
        spot = _new_spot(rng, spot)
        length = _frames_for(rng.uniform(5.0, 15.0), fps)
        if first:  # a clip starts anywhere inside a spot, not always at its first shot
            length = max(_frames_for(1.0, fps), int(length * rng.uniform(0.3, 1.0)))
            first = False
        length = min(length, n - done)
        yield from _spot_frames(rng, spot, length, size, fps, noise)
        done += length


@dataclass(frozen=True)
class _Part:
    """A run of frames in a broadcast: 'football', 'spot' or 'black' (black belongs to its break)."""

    kind: str
    frames: int

    @property
    def label(self) -> str:
        return PROGRAMME_CLASS if self.kind == "football" else AD_CLASS


def _split_total(rng: np.random.Generator, total: float, count: int, lo: float, hi: float) -> np.ndarray:
    """`count` random lengths in [lo, hi] summing to `total` (equal shares if impossible)."""
    if not lo * count <= total <= hi * count:
        return np.full(count, total / count)
    x = rng.uniform(lo, hi, count)
    for _ in range(100):
        diff = total - x.sum()
        if abs(diff) < 1e-9:
            break
        free = (x < hi - 1e-12) if diff > 0 else (x > lo + 1e-12)
        x[free] += diff / max(int(free.sum()), 1)
        np.clip(x, lo, hi, out=x)
    return x * (total / x.sum())


def _plan_broadcast(rng: np.random.Generator, n_total: int, fps: float) -> list[_Part]:
    """Programme (30-70 s) alternating with ad breaks of 2-5 spots (5-15 s); starts and ends with programme.

    About half of the breaks have 0.2-0.6 s black gaps before, between and after their spots,
    the rest cut directly. Everything is counted in frames so truth falls on frame times.
    """
    duration = n_total / fps
    if duration < 20.0:
        raise UsageError(f"broadcast duration must be at least 20 s (programme, an ad break, programme), got {duration:.3f}")
    n_breaks = max(1, int((duration - 50.0) // 90.0))
    breaks: list[tuple[list[int], list[int] | None]] = []

    def sample_break(short: bool) -> tuple[list[int], list[int] | None]:
        k = 2 if short else int(rng.integers(2, 6))
        spots = [_frames_for(5.0 if short else rng.uniform(5.0, 15.0), fps) for _ in range(k)]
        gaps = [_frames_for(rng.uniform(0.2, 0.6), fps) for _ in range(k + 1)] if rng.random() < 0.5 else None
        return spots, gaps

    def break_frames(b: tuple[list[int], list[int] | None]) -> int:
        return sum(b[0]) + (sum(b[1]) if b[1] else 0)

    for _ in range(200):
        breaks = [sample_break(False) for _ in range(n_breaks)]
        programme = n_total - sum(break_frames(b) for b in breaks)
        if 30.0 * fps * (n_breaks + 1) <= programme <= 70.0 * fps * (n_breaks + 1):
            break
    else:  # short broadcasts: minimal breaks, programme takes what is left
        breaks = [sample_break(True) for _ in range(n_breaks)]
    programme = n_total - sum(break_frames(b) for b in breaks)
    if programme < n_breaks + 1:
        raise UsageError(f"broadcast duration {duration:.3f} s is too short for its ad breaks")
    shares = _split_total(rng, programme / fps, n_breaks + 1, 30.0, 70.0)
    edges = np.round(np.concatenate([[0.0], np.cumsum(shares)]) * (programme / shares.sum())).astype(int)
    edges[-1] = programme
    prog_frames = [max(1, int(e1 - e0)) for e0, e1 in zip(edges[:-1], edges[1:])]
    prog_frames[-1] = programme - sum(prog_frames[:-1])

    parts: list[_Part] = []
    for i, frames in enumerate(prog_frames):
        parts.append(_Part("football", frames))
        if i == len(breaks):
            break
        spots, gaps = breaks[i]
        for j, spot in enumerate(spots):
            if gaps:
                parts.append(_Part("black", gaps[j]))
            parts.append(_Part("spot", spot))
        if gaps:
            parts.append(_Part("black", gaps[-1]))
    assert sum(p.frames for p in parts) == n_total
    return parts


def _merged_segments(parts: list[_Part], fps: float) -> list[Segment]:
    """One segment per programme stretch and one per whole ad break (its black gaps included)."""
    segments: list[Segment] = []
    start = 0
    pos = 0
    for i, part in enumerate(parts):
        pos += part.frames
        if i + 1 == len(parts) or parts[i + 1].label != part.label:
            segments.append(Segment(start / fps, pos / fps, part.label, part.label == AD_CLASS))
            start = pos
    return segments


def _broadcast_frames(rng: np.random.Generator, parts: list[_Part], size: Size, fps: float) -> Iterator[np.ndarray]:
    match = _new_match(rng)
    play = _Play(rng)
    football_noise = _Noise(rng, size, 4)
    ad_noise = _Noise(rng, size, 3)
    t_match = float(rng.uniform(0, 5000))
    clock0 = float(rng.uniform(0, 40 * 60))
    score = (int(rng.integers(0, 2)), int(rng.integers(0, 2)))
    spot: _Spot | None = None
    pos = 0
    for part in parts:
        if part.kind == "football":
            if pos and rng.random() < 0.3:  # a goal happened while we were away
                score = (score[0] + 1, score[1]) if rng.random() < 0.5 else (score[0], score[1] + 1)
            yield from _football_frames(rng, part.frames, size, fps, match, play, t_match + pos / fps,
                                        clock0 + pos / fps, score, football_noise)
        elif part.kind == "spot":
            spot = _new_spot(rng, spot)
            yield from _spot_frames(rng, spot, part.frames, size, fps, ad_noise)
        else:
            yield from _black_frames(rng, part.frames, size, ad_noise)
        pos += part.frames


def write_broadcast(path: Path, seed: int, duration: float = 240.0, size: tuple[int, int] = (640, 360),
                    fps: float = 25.0, progress: bool = True) -> list[Segment]:
    """A long broadcast with exact ground truth, as a labelled recording or for evaluation.

    Programme segments (football, 30-70 s each, usually with internal camera cuts) alternate
    with ad breaks of 2-5 spots (5-15 s each). Some breaks have short black gaps (0.2-0.6 s of
    near-black frames) at their edges and between spots, others cut directly, because real
    channels do both and the detector must not rely on either. It starts and ends with
    programme and has at least two breaks at the default duration.

    Writes `path` (mp4) plus the truth beside it: `path.with_suffix('.csv')` with one row per
    *merged* segment (a whole break is one 'commercial' row; black at its edges belongs to it)
    and `path.with_suffix('.edl')` with the breaks. Boundaries are frame times k/fps; the video
    has exactly round(duration * fps) frames. Returns the merged segments.
    """
    path = Path(path)
    size = _check_args(duration, size, fps, f"{path}")
    n_total = _frames_for(duration, fps)
    rng = np.random.default_rng(_derive_seed(seed, "broadcast"))
    parts = _plan_broadcast(rng, n_total, fps)
    segments = _merged_segments(parts, fps)
    with tqdm(total=n_total, unit="frame", desc=path.name, disable=not progress, file=sys.stderr, leave=False) as bar:
        _write_video(path, _broadcast_frames(rng, parts, size, fps), n_total, size, fps, bar)
    atomic_write_text(path.with_suffix(".csv"), labels_csv_text(segments))
    atomic_write_text(path.with_suffix(".edl"), edl_text(segments))
    return segments


# --------------------------------------------------------------------------- demo set


@dataclass(frozen=True)
class DemoSet:
    """Where a generated demo set lives: training data, and the broadcast to evaluate on."""

    root: Path
    data_dir: Path
    broadcast: Path
    truth_csv: Path
    truth_edl: Path


@dataclass(frozen=True)
class _Item:
    """One file (or broadcast with truth) to make; picklable for worker processes."""

    kind: str  # "clip" | "broadcast"
    path: Path
    label: str
    seconds: float
    seed: int
    size: Size
    fps: float

    @property
    def frames(self) -> int:
        return _frames_for(self.seconds, self.fps)

    def is_done(self) -> bool:
        if self.kind == "broadcast":
            for suffix in (".csv", ".edl"):
                if not self.path.with_suffix(suffix).is_file():
                    return False
        return _video_is_valid(self.path, self.frames, self.size)


def _make_item(item: _Item) -> Path:
    """Draw one item (runs in a worker process)."""
    if item.kind == "clip":
        write_clip(item.path, item.label, item.seconds, item.seed, item.size, item.fps)
    else:
        write_broadcast(item.path, item.seed, item.seconds, item.size, item.fps, progress=False)
    return item.path


_CLIP_NAMES = re.compile(r"^(?:football|commercial)_\d{3}\.mp4$")
_RECORDING_NAMES = re.compile(r"^recording_\d{2}\.(?:mp4|csv|edl)$")
_PARTIAL_NAMES = re.compile(r"^\..+\.partial(?:\.mp4|\.csv|\.edl)?$")  # left behind only by a killed (SIGKILL) run


def _remove_stale(folders: list[tuple[Path, re.Pattern[str] | None]], keep: set[Path]) -> None:
    """Delete files *we* named in our folders that the current parameters no longer produce.

    Only our own naming patterns are touched, so anything a user put there survives; stale
    clips must go, or a trainer reading the class folders would train on them.
    """
    for folder, ours in folders:
        if not folder.is_dir():
            continue
        for f in folder.iterdir():
            if not f.is_file() or f in keep:
                continue
            if _PARTIAL_NAMES.match(f.name) or (ours is not None and ours.match(f.name)):
                log.debug("removing stale demo file %s", f)
                f.unlink()


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def generate_demo_set(root: Path, seed: int = 0, train_clips: int = 12, test_clips: int = 4, clip_seconds: float = 10.0,
                      train_recordings: int = 2, recording_seconds: float = 150.0, broadcast_seconds: float = 240.0,
                      size: tuple[int, int] = (640, 360), fps: float = 25.0, progress: bool = True,
                      workers: int | None = None) -> DemoSet:
    """Everything `ad-detector demo` needs: class folders to train on and a broadcast to test on.

    Layout:
       root/DATA/train/football/*.mp4, root/DATA/train/commercial/*.mp4  (train_clips each)
       root/DATA/test/football/*.mp4,  root/DATA/test/commercial/*.mp4   (test_clips each)
       root/DATA/train/recording_01.mp4 + .csv + .edl ...  (train_recordings labelled broadcasts, directly
            in the split folder: the trainer reads them with the labels file beside them)
       root/broadcast.mp4 + .csv + .edl  (evaluation broadcast, from a seed no training item uses)

    Re-running is cheap: files that exist and are valid are skipped when they were made with
    the same parameters (recorded in root/.generating while working and root/.complete, written
    last). If the parameters differ, everything is regenerated and our stale files removed.
    Items are drawn in up to `workers` processes (default: 2, or 1 on a single core); each has
    its own seed from (seed, split, class, index), so the result does not depend on that.
    """
    root = Path(root)
    size = _check_args(clip_seconds, size, fps, "demo set")
    for name, value in (("train_clips", train_clips), ("test_clips", test_clips), ("train_recordings", train_recordings)):
        if int(value) != value or value < 0:
            raise UsageError(f"demo set: {name} must be a whole number >= 0, got {value}")
    for name, secs in (("recording_seconds", recording_seconds), ("broadcast_seconds", broadcast_seconds)):
        if not (math.isfinite(secs) and secs >= 20.0):
            raise UsageError(f"demo set: {name} must be at least 20 seconds, got {secs}")

    params = {"version": GENERATOR_VERSION, "seed": int(seed), "train_clips": int(train_clips), "test_clips": int(test_clips),
              "clip_seconds": float(clip_seconds), "train_recordings": int(train_recordings),
              "recording_seconds": float(recording_seconds), "broadcast_seconds": float(broadcast_seconds),
              "size": [size[0], size[1]], "fps": float(fps)}
    data_dir = root / "DATA"
    demo = DemoSet(root=root, data_dir=data_dir, broadcast=root / "broadcast.mp4",
                   truth_csv=root / "broadcast.csv", truth_edl=root / "broadcast.edl")

    items: list[_Item] = []
    for split, count in (("train", int(train_clips)), ("test", int(test_clips))):
        for label in CLASSES:
            for i in range(count):
                items.append(_Item("clip", data_dir / split / label / f"{label}_{i + 1:03d}.mp4", label, float(clip_seconds),
                                   _derive_seed(seed, split, label, i), size, float(fps)))
    for i in range(int(train_recordings)):
        items.append(_Item("broadcast", data_dir / "train" / f"recording_{i + 1:02d}.mp4", "", float(recording_seconds),
                           _derive_seed(seed, "train", "recording", i), size, float(fps)))
    items.append(_Item("broadcast", demo.broadcast, "", float(broadcast_seconds),
                       _derive_seed(seed + 1000, "demo", "broadcast", 0), size, float(fps)))

    marker, in_progress = root / _MARKER, root / _IN_PROGRESS
    trusted = _read_json(marker) == params or _read_json(in_progress) == params
    root.mkdir(parents=True, exist_ok=True)
    own_dirs: list[tuple[Path, re.Pattern[str] | None]] = [(data_dir / s / c, _CLIP_NAMES) for s in ("train", "test") for c in CLASSES]
    own_dirs += [(data_dir / "train", _RECORDING_NAMES), (data_dir / "test", _RECORDING_NAMES), (root, None)]
    keep: set[Path] = set()
    for item in items:
        keep.add(item.path)
        if item.kind == "broadcast":
            keep.update({item.path.with_suffix(".csv"), item.path.with_suffix(".edl")})
    _remove_stale(own_dirs, keep)
    todo = [item for item in items if not (trusted and item.is_done())]
    if not todo and _read_json(marker) == params:
        return demo
    marker.unlink(missing_ok=True)
    atomic_write_text(in_progress, json.dumps(params, indent=2) + "\n")
    log.info("demo data: %d of %d items to draw in %s", len(todo), len(items), root)

    todo.sort(key=lambda it: -it.frames)  # longest first keeps both workers busy to the end
    n_workers = workers if workers is not None else min(2, os.cpu_count() or 1)
    with tqdm(total=len(items), initial=len(items) - len(todo), unit="item", desc="demo data", disable=not progress,
              file=sys.stderr) as bar:
        if n_workers <= 1 or len(todo) <= 1:
            for item in todo:
                _make_item(item)
                bar.update(1)
        else:
            ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold OpenCV/FFmpeg threads
            with ProcessPoolExecutor(max_workers=min(n_workers, len(todo)), mp_context=ctx) as pool:
                pending: set[Future[Path]] = {pool.submit(_make_item, item) for item in todo}
                try:
                    while pending:
                        done, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for fut in done:
                            fut.result()
                            bar.update(1)
                except BaseException:
                    pool.shutdown(wait=False, cancel_futures=True)  # don't start queued items after a failure or ^C
                    raise
    atomic_write_text(marker, json.dumps(params, indent=2) + "\n")
    in_progress.unlink(missing_ok=True)
    return demo


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m detector.demo.data OUT_DIR [--seed N] [--quick]`: write a demo set."""
    parser = argparse.ArgumentParser(prog="python -m detector.demo.data",
                                     description="Write a deterministic, labelled demo data set (drawn football and commercials).")
    parser.add_argument("out_dir", type=Path, help="folder to write (created if missing)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter items (for tests and a quick look)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = dict(QUICK_SETTINGS) if args.quick else {}
    try:
        demo = generate_demo_set(args.out_dir, seed=args.seed, progress=not args.no_progress, **settings)  # type: ignore[arg-type]
    except (UsageError, RuntimeFailure) as exc:
        log.error("error: %s", exc)
        return exc.exit_code
    log.info("demo data in %s; broadcast %s (truth %s)", demo.data_dir, demo.broadcast, demo.truth_csv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
