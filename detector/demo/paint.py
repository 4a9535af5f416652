"""Drawing primitives the demo's scenes share: colours, text that fits, rounded boxes, noise.

Kept apart from the scenes so that football and commercials are drawn with the same hand
(the same text rendering, the same noise) and differ only in what a model should learn to
tell apart. Everything is deterministic for a given random generator.
"""

from __future__ import annotations

import colorsys

import cv2
import numpy as np

BGR = tuple[int, int, int]
Size = tuple[int, int]


def hsv(h: float, s: float, v: float) -> BGR:
    """A BGR colour from hue/saturation/value in [0, 1] (hue wraps)."""
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return (int(round(b * 255)), int(round(g * 255)), int(round(r * 255)))


def scaled(colour: BGR, gain: float) -> BGR:
    return tuple(int(min(255, max(0, round(c * gain)))) for c in colour)  # type: ignore[return-value]


def frames_for(seconds: float, fps: float) -> int:
    """Frame count for a duration: boundaries always sit on frame times k/fps."""
    return max(1, int(round(seconds * fps)))


def smoothstep(x: float) -> float:
    x = min(1.0, max(0.0, x))
    return x * x * (3.0 - 2.0 * x)


class Noise:
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


def put_text_centered(img: np.ndarray, text: str, center: tuple[float, float], scale: float, colour: BGR,
                       thickness: int, font: int = cv2.FONT_HERSHEY_DUPLEX, outline: BGR | None = None) -> None:
    (tw, th), _ = cv2.getTextSize(text, font, scale, thickness)
    org = (int(round(center[0] - tw / 2)), int(round(center[1] + 0.38 * th)))  # capitals are ~0.76 of th
    if outline is not None:
        cv2.putText(img, text, org, font, scale, outline, thickness + max(2, thickness), cv2.LINE_AA)
    cv2.putText(img, text, org, font, scale, colour, thickness, cv2.LINE_AA)


def fit_scale(text: str, font: int, thickness: int, max_w: float, max_h: float) -> float:
    """The putText scale that makes `text` fit in max_w x max_h pixels."""
    (tw, th), base = cv2.getTextSize(text, font, 1.0, thickness)
    return max(0.2, min(max_w / max(tw, 1), max_h / max(th + base, 1)))


def rounded_rect(img: np.ndarray, x0: float, y0: float, x1: float, y1: float, r: float, colour: BGR) -> None:
    x0, y0, x1, y1 = int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1))
    r = int(max(0, min(r, (x1 - x0) / 2, (y1 - y0) / 2)))
    if x1 <= x0 or y1 <= y0:
        return
    cv2.rectangle(img, (x0 + r, y0), (x1 - r, y1), colour, -1)
    cv2.rectangle(img, (x0, y0 + r), (x1, y1 - r), colour, -1)
    if r > 0:
        for cx, cy in ((x0 + r, y0 + r), (x1 - r, y0 + r), (x0 + r, y1 - r), (x1 - r, y1 - r)):
            cv2.circle(img, (cx, cy), r, colour, -1, cv2.LINE_AA)
