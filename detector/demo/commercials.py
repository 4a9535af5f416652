"""The ad class: drawn commercials, and the black gaps that often surround ad breaks.

Commercials are fast-cut colourful shots of products and slogans, one brand and palette per
spot, usually closing on an end card. Some spots are green, so a model cannot get away with
"green means football"; consecutive spots differ in hue and product, as real breaks do.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from detector.demo.paint import BGR, Noise, Size, fit_scale, frames_for, hsv, put_text_centered, rounded_rect, scaled, smoothstep

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


def brand_name(rng: np.random.Generator) -> str:
    name = "".join(str(s) for s in rng.choice(_SYLLABLES, int(rng.integers(2, 4))))
    return name + str(rng.choice(["", "", "", "+", " X", " GO", "CO"]))


@dataclass(frozen=True)
class Spot:
    """One advert: its brand and palette stay the same for all of its shots."""

    brand: str
    hue: float
    dark: bool
    product: str
    slogans: tuple[str, ...]
    price: str
    font: int


def new_spot(rng: np.random.Generator, prev: Spot | None) -> Spot:
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
    return Spot(
        brand=brand_name(rng), hue=float(hue), dark=bool(rng.random() < 0.15), product=str(rng.choice(products)),
        slogans=tuple(str(s) for s in rng.choice(_SLOGANS, 3, replace=False)), price=price,
        font=int(rng.choice([cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_SIMPLEX,
                             cv2.FONT_HERSHEY_COMPLEX])),
    )


def _spot_colours(rng: np.random.Generator, spot: Spot) -> tuple[BGR, BGR, BGR]:
    """(background 1, background 2, accent) for one shot of the spot."""
    if spot.dark:
        return (hsv(spot.hue, 0.6, rng.uniform(0.05, 0.15)), hsv(spot.hue, 0.7, rng.uniform(0.2, 0.35)),
                hsv(spot.hue + 0.5, 0.8, 1.0))
    c1 = hsv(spot.hue + rng.uniform(-0.03, 0.03), rng.uniform(0.65, 1.0), rng.uniform(0.7, 1.0))
    c2 = hsv(spot.hue + rng.choice([-1, 1]) * rng.uniform(0.04, 0.12), rng.uniform(0.5, 1.0), rng.uniform(0.45, 1.0))
    accent = hsv(spot.hue + 0.5 + rng.uniform(-0.1, 0.1), rng.uniform(0.8, 1.0), 1.0)
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
            col = scaled(c2, rng.uniform(0.8, 1.4))
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
        rounded_rect(img, cx - bw / 2, cy - 0.25 * s, cx + bw / 2, cy + 0.5 * s, 0.08 * s, body)
        shoulder = np.array([(cx - bw / 2, cy - 0.2 * s), (cx - 0.07 * s, cy - 0.38 * s), (cx + 0.07 * s, cy - 0.38 * s),
                             (cx + bw / 2, cy - 0.2 * s)])
        cv2.fillConvexPoly(img, np.round(shoulder).astype(np.int32), body, cv2.LINE_AA)
        cv2.rectangle(img, (int(cx - 0.07 * s), int(cy - 0.5 * s)), (int(cx + 0.07 * s), int(cy - 0.36 * s)), body, -1)
        cv2.rectangle(img, (int(cx - 0.08 * s), int(cy - 0.56 * s)), (int(cx + 0.08 * s), int(cy - 0.48 * s)), accent, -1)
        cv2.line(img, (int(cx - bw / 3), int(cy - 0.15 * s)), (int(cx - bw / 3), int(cy + 0.4 * s)),
                 scaled(body, 1.5), max(1, int(0.03 * s)), cv2.LINE_AA)
        cv2.rectangle(img, (int(cx - bw / 2), int(cy - 0.02 * s)), (int(cx + bw / 2), int(cy + 0.25 * s)), light, -1)
        put_text_centered(img, brand, (cx, cy + 0.115 * s), fit_scale(brand, font, 1, bw * 0.9, 0.2 * s), accent, 1, font)
    elif kind == "box":
        bw, bh, d = 0.6 * s, 0.8 * s, 0.15 * s
        x0, y0 = cx - bw / 2 - d / 2, cy - bh / 2 + d / 2
        side = np.array([(x0 + bw, y0), (x0 + bw + d, y0 - d), (x0 + bw + d, y0 + bh - d), (x0 + bw, y0 + bh)])
        top = np.array([(x0, y0), (x0 + d, y0 - d), (x0 + bw + d, y0 - d), (x0 + bw, y0)])
        cv2.fillConvexPoly(img, np.round(side).astype(np.int32), scaled(body, 0.65), cv2.LINE_AA)
        cv2.fillConvexPoly(img, np.round(top).astype(np.int32), scaled(body, 1.25), cv2.LINE_AA)
        cv2.rectangle(img, (int(x0), int(y0)), (int(x0 + bw), int(y0 + bh)), body, -1)
        cv2.rectangle(img, (int(x0), int(y0 + 0.35 * bh)), (int(x0 + bw), int(y0 + 0.6 * bh)), accent, -1)
        put_text_centered(img, brand, (x0 + bw / 2, y0 + 0.475 * bh), fit_scale(brand, font, 1, bw * 0.9, 0.2 * bh),
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
        put_text_centered(img, brand, (cx, y0 + 0.425 * bh), fit_scale(brand, font, 1, bw * 0.9, 0.18 * bh), light, 1, font)
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
        rounded_rect(img, x0, y0, x0 + pw, y0 + ph, 0.07 * s, dark)
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


def _new_ad_shot(rng: np.random.Generator, spot: Spot, size: Size, frames: int, end_card: bool) -> _AdShot:
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
    slogan_scale = fit_scale(slogan, spot.font, thick, (0.52 if end_card else 0.85) * w, (0.18 if end_card else 0.16) * h)
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
        body=hsv(spot.hue + rng.uniform(-0.06, 0.06), rng.uniform(0.7, 1.0), rng.uniform(0.55, 0.95)),
        price=not end_card and rng.random() < 0.45, logo=not end_card and rng.random() < 0.7,
        fine_print=str(rng.choice(_FINE_PRINT)) if rng.random() < 0.4 else None, end_card=end_card,
    )


def _draw_ad_frame(shot: _AdShot, spot: Spot, k: int, fps: float, size: Size) -> np.ndarray:
    w, h = size
    t = k / fps
    p = k / max(shot.frames - 1, 1)
    frame = shot.background.copy()
    sc = w / 640.0
    if shot.end_card:
        y_logo = 0.3 * h
        rounded_rect(frame, 0.2 * w, y_logo - 0.13 * h, 0.8 * w, y_logo + 0.13 * h, 0.13 * h, shot.accent)
        put_text_centered(frame, spot.brand, (0.5 * w, y_logo), shot.slogan_scale * (1 + 0.04 * p), (255, 255, 255),
                           max(1, int(round(3 * sc))), spot.font, outline=(20, 20, 20))
        _draw_product(frame, spot.product, 0.5 * w, 0.68 * h, shot.product_size * (1 + 0.1 * p), shot.body, shot.accent,
                      spot.brand)
        tag = spot.slogans[0]
        put_text_centered(frame, tag, (0.5 * w, 0.93 * h), fit_scale(tag, spot.font, 1, 0.6 * w, 0.07 * h),
                           shot.text_colour, max(1, int(round(sc))), spot.font)
        return frame
    if shot.product:
        cx, cy = shot.product_at
        s = shot.product_size
        if shot.motion == "zoom":
            s *= 0.8 + 0.35 * p
        elif shot.motion == "slide":
            cx += (1.0 - smoothstep(t / 0.5)) * (w * 0.7 if cx > w / 2 else -w * 0.7)
        elif shot.motion == "float":
            cy += 0.03 * h * math.sin(2 * math.pi * t / 1.2)
        _draw_product(frame, spot.product, cx, cy, s, shot.body, shot.accent, spot.brand)
    scale = shot.slogan_scale
    tx = 0.5 * w
    if shot.text_motion == "slide":
        tx += (1.0 - smoothstep(t / 0.35)) * w
    elif shot.text_motion == "pulse":
        scale *= 1.0 + 0.06 * math.sin(2 * math.pi * t * 2.0)
    thick = max(1, int(round(3 * sc)))
    outline = (20, 20, 20) if shot.text_colour != (20, 20, 20) else (250, 250, 250)
    put_text_centered(frame, shot.slogan, (tx, shot.slogan_y), scale, shot.text_colour, thick, spot.font, outline=outline)
    if shot.price:
        cx = 0.8 * w if shot.product_at[0] < w / 2 else 0.2 * w
        r = 0.13 * h * (1 + 0.05 * math.sin(2 * math.pi * t * 3))
        cv2.fillPoly(frame, [_star(cx, 0.52 * h, r, 12, t)], (0, 30, 230) if shot.accent[2] < 128 else shot.accent, cv2.LINE_AA)
        put_text_centered(frame, spot.price, (cx, 0.52 * h), fit_scale(spot.price, spot.font, thick, 1.3 * r, 0.5 * r),
                           (255, 255, 255), max(1, thick - 1), spot.font, outline=(20, 20, 20))
    if shot.logo:
        lw = 0.24 * w
        x0, y0 = w - lw - 0.03 * w, 0.04 * h
        rounded_rect(frame, x0, y0, x0 + lw, y0 + 0.09 * h, 0.045 * h, (250, 250, 250))
        put_text_centered(frame, spot.brand, (x0 + lw / 2, y0 + 0.045 * h),
                           fit_scale(spot.brand, cv2.FONT_HERSHEY_DUPLEX, 1, 0.9 * lw, 0.06 * h), shot.accent
                           if sum(shot.accent) < 600 else (30, 30, 30), max(1, int(round(sc))), cv2.FONT_HERSHEY_DUPLEX)
    if shot.fine_print:
        cv2.putText(frame, shot.fine_print, (int(0.03 * w), int(0.97 * h)), cv2.FONT_HERSHEY_SIMPLEX, 0.35 * sc,
                    (235, 235, 235), 1, cv2.LINE_AA)
    return frame


def spot_frames(rng: np.random.Generator, spot: Spot, n: int, size: Size, fps: float, noise: Noise) -> Iterator[np.ndarray]:
    """n frames of one spot: fast cuts of 0.6-3 s, usually closing on a brand end card."""
    lengths: list[int] = []
    remaining = n
    while remaining > 0:
        length = frames_for(rng.uniform(0.6, 3.0), fps)
        if remaining - length < frames_for(0.6, fps):
            length = remaining
        lengths.append(length)
        remaining -= length
    end_card = n >= frames_for(4.0, fps) and rng.random() < 0.7
    for j, length in enumerate(lengths):
        shot = _new_ad_shot(rng, spot, size, length, end_card and j == len(lengths) - 1 and j > 0)
        for k in range(length):
            yield noise.apply(_draw_ad_frame(shot, spot, k, fps, size))


def commercial_frames(rng: np.random.Generator, n: int, size: Size, fps: float) -> Iterator[np.ndarray]:
    """n frames of a one-class clip: spots back to back, the first one entered part-way through."""
    noise = Noise(rng, size, 3)
    spot: Spot | None = None
    done = 0
    first = True
    while done < n:
        spot = new_spot(rng, spot)
        length = frames_for(rng.uniform(5.0, 15.0), fps)
        if first:  # a clip starts anywhere inside a spot, not always at its first shot
            length = max(frames_for(1.0, fps), int(length * rng.uniform(0.3, 1.0)))
            first = False
        length = min(length, n - done)
        yield from spot_frames(rng, spot, length, size, fps, noise)
        done += length


def black_frames(rng: np.random.Generator, n: int, size: Size, noise: Noise) -> Iterator[np.ndarray]:
    """Near-black frames (level 0-8 plus light noise, so at most ~14): the gaps around ad breaks."""
    w, h = size
    level = int(rng.integers(0, 9))
    for _ in range(n):
        frame = np.full((h, w, 3), level, np.uint8)
        yield noise.apply(frame)
