"""The programme class: a drawn football match, as a broadcast camera shows it.

Football has to be learnable but not trivially: a green pitch with players, a score bug and
a channel logo, panned by a camera that cuts between wide, medium and close angles. Play is
a closed-form function of match time, so any instant can be drawn without state and a
broadcast can leave a match for an ad break and come back to where play would be.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from detector.demo.commercials import brand_name
from detector.demo.paint import BGR, Noise, Size, fit_scale, frames_for, hsv, put_text_centered, scaled

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
class Match:
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


def new_match(rng: np.random.Generator) -> Match:
    fams = rng.permutation(len(_KITS))
    home = _KITS[int(fams[0])]
    away = next(_KITS[int(i)] for i in fams[1:] if _KITS[int(i)][2] != home[2])
    keepers = [k for k in _KITS if k[2] not in (home[2], away[2])]
    gk = rng.choice(len(keepers), 2, replace=False)
    codes = rng.choice(len(_TEAM_CODES), 2, replace=False)
    hue = rng.uniform(0.24, 0.34)
    sat = rng.uniform(0.5, 0.75)
    val = rng.uniform(0.45, 0.62)
    g1 = hsv(hue, sat, val)
    g2 = hsv(hue + rng.uniform(-0.01, 0.01), sat * rng.uniform(0.9, 1.0), val * rng.uniform(1.1, 1.2))
    board_colours = tuple(hsv(rng.uniform(0, 1), rng.uniform(0.6, 1.0), rng.uniform(0.5, 1.0)) for _ in range(4))
    board_words = tuple(brand_name(rng) for _ in range(4))
    return Match(
        home=_TEAM_CODES[int(codes[0])], away=_TEAM_CODES[int(codes[1])],
        kits=((home[0], home[1]), (away[0], away[1]), keepers[int(gk[0])][0], keepers[int(gk[1])][0]),
        skins=tuple(_SKIN[int(i)] for i in rng.integers(0, len(_SKIN), 23)),
        grass=(g1, g2),
        bug_right=bool(rng.random() < 0.3),
        bug_bg=hsv(rng.uniform(0, 1), rng.uniform(0.3, 0.8), rng.uniform(0.12, 0.3)),
        bug_accent=hsv(rng.uniform(0, 1), rng.uniform(0.5, 1), 0.95),
        channel=str(rng.choice(_CHANNELS)),
        board_colours=board_colours, board_words=board_words,
        brightness=float(rng.uniform(0.9, 1.08)),
    )


class Play:
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


def _new_camera_shot(rng: np.random.Generator, match: Match, size: Size, frames: int) -> _CameraShot:
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
    scale = fit_scale("WWWW", cv2.FONT_HERSHEY_SIMPLEX, 1, board_w * 0.8, boards_h * 0.8)
    for i, x in enumerate(range(0, cw, board_w)):
        colour = match.board_colours[i % len(match.board_colours)]
        cv2.rectangle(canvas, (x, crowd_h), (x + board_w - 1, grass_top - 1), colour, -1)
        if boards_h >= 6:
            put_text_centered(canvas, match.board_words[i % len(match.board_words)], (x + board_w / 2, crowd_h + boards_h / 2),
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


def _draw_people(frame: np.ndarray, shot: _CameraShot, match: Match, play: Play, t: float, x0: int, y0: int,
                 ball: tuple[float, float]) -> None:
    h, w = frame.shape[:2]
    people = play.people(t)
    pts = _project(shot.hm, np.vstack([people, [ball]]))
    s_all = shot.px_per_m(pts[:, 1]) * 1.15  # a touch larger than life so wide shots stay readable
    pts[:, 0] -= x0
    pts[:, 1] -= y0
    gain = shot.gain
    (home_shirt, home_shorts), (away_shirt, away_shorts), gk_home, gk_away = match.kits
    shadow = scaled(match.grass[0], 0.6 * gain)
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
        shirt, shorts = scaled(shirt, gain), scaled(shorts, gain)
        skin = scaled(match.skins[i], gain)
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
    cv2.circle(frame, (int(bu), int(bv - 0.3 * bs)), r, scaled((245, 245, 245), gain), -1, cv2.LINE_AA)


class _ScoreBug:
    """The on-screen graphics of a football broadcast: score bug with running clock, channel logo."""

    def __init__(self, match: Match, size: Size) -> None:
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
        self.draw_logo(frame)

    def draw_logo(self, frame: np.ndarray) -> None:
        """The channel logo in the top corner the score bug leaves free, as broadcasters show it
        during programmes (and never during ads): the static mark a logo detector learns."""
        m, sc = self.match, self.sc
        w = self.size[0]
        pad = int(round(6 * sc))
        (lw, lh), _ = cv2.getTextSize(m.channel, cv2.FONT_HERSHEY_DUPLEX, 0.55 * sc, self.thick)
        lx = self.margin if m.bug_right else w - self.margin - lw
        cv2.putText(frame, m.channel, (lx, self.margin + lh + pad), cv2.FONT_HERSHEY_DUPLEX, 0.55 * sc, (235, 235, 235),
                    self.thick, cv2.LINE_AA)


def football_frames(rng: np.random.Generator, n: int, size: Size, fps: float, match: Match, play: Play,
                     t0: float, clock0: float, score: tuple[int, int], noise: Noise, graphics: bool = True,
                     shot_seconds: tuple[float, float] = (5.0, 25.0)) -> Iterator[np.ndarray]:
    """n frames of match action starting at match time t0, with camera cuts every 5-25 s.

    `graphics` False leaves out the score bug and the channel logo, and `shot_seconds` sets
    the cut lengths: what an advert shot on a football pitch looks like (detector.demo.traps).
    """
    w, h = size
    bug = _ScoreBug(match, size)
    done = 0
    lo, hi = shot_seconds
    while done < n:
        length = min(n - done, frames_for(rng.uniform(lo, hi), fps))
        if 0 < n - done - length < frames_for(min(2.0, lo), fps):  # no sliver of a last shot
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
            if graphics:
                bug.draw(frame, score, clock0 + i / fps)
            yield noise.apply(frame)
        done += length
