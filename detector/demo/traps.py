"""Visual traps: parts of the demo whose PICTURE misleads while the sound and the classic cues tell the truth.

Why: on real channels the cases a picture model gets wrong are adverts that look like the
programme (a sports drink shot on a football pitch) and programme that looks like an advert
(the studio's half-time graphics, a sponsor's "player of the match" card with a product).
The station logo and the sound separate them where the picture does not, which is what the
cue blocks (detector.analysis.blocks) are for; the demo has to contain such parts, or an
ablation (bench/ablation.py) cannot show what the blocks buy. Each trap keeps every cue but
the picture consistent with its TRUE label:

- `AD_ON_PITCH`: an advert on a pitch (players, grass, boards) with the advert's sound (music
  bed and voice-over, as `sound.ad_sound`), WITHOUT the station logo and score bug, cut faster
  than the match (0.8-2.5 s shots), letterboxed about half of the time, with a brand super.
- `STUDIO_PROGRAMME`: programme drawn like an advert (colourful cards, big text, a product on
  a sponsor card) with the programme's sound (crowd and commentary) and WITH the station
  logo exactly where the match shows it.

The audio traps of `detector.demo.sound` (the sound of the other class, the picture and logo
right) are named here too, so the ground truth can list every kind of trap span.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import cv2
import numpy as np

from detector.demo.commercials import _ad_background, _draw_product, brand_name
from detector.demo.football import Match, Play, _ScoreBug, football_frames, new_match
from detector.demo.paint import Noise, Size, fit_scale, frames_for, hsv, put_text_centered, rounded_rect, smoothstep

AD_ON_PITCH = "ad_on_pitch"                          # picture says programme; sound and missing logo say ad
STUDIO_PROGRAMME = "studio_programme"                # picture says ad; sound and logo say programme
AD_SOUNDS_LIKE_PROGRAMME = "ad_sounds_like_programme"        # audio trap (sound.py): picture and logo right
PROGRAMME_SOUNDS_LIKE_AD = "programme_sounds_like_ad"        # audio trap (sound.py): picture and logo right
VISUAL_TRAPS = (AD_ON_PITCH, STUDIO_PROGRAMME)
AUDIO_TRAPS = (AD_SOUNDS_LIKE_PROGRAMME, PROGRAMME_SOUNDS_LIKE_AD)
TRAP_KINDS = VISUAL_TRAPS + AUDIO_TRAPS

PITCH_SHOT_SECONDS = (0.8, 2.5)     # adverts cut faster than the match camera (5-25 s)
LETTERBOX_SHARE = 0.12              # each bar: 12% of the height (a ~2.35:1 spot inside 16:9)
STUDIO_CARD_SECONDS = (1.5, 4.0)

_STUDIO_TITLES = ("HALF TIME", "TEAM NEWS", "MATCH STATS", "GOAL OF THE MONTH", "FULL TIME", "HIGHLIGHTS", "LINE-UPS",
                  "PLAYER OF THE MATCH", "TABLE", "NEXT UP")
_AD_SUPERS = ("OFFICIAL DRINK", "PLAY HARDER", "FEEL THE GAME", "GAME ON", "BUILT FOR SPEED", "NEW BOOTS", "JOIN NOW")


def pitch_spot_frames(rng: np.random.Generator, n: int, size: Size, fps: float, noise: Noise) -> Iterator[np.ndarray]:
    """n frames of an advert shot on a football pitch (kind `AD_ON_PITCH`).

    Its own teams, kits and grass (a brand's shoot, not the broadcast's match), no score bug
    and no channel logo, fast cuts, black letterbox bars in about half of the spots, and the
    brand's super in the lower third from a third of the way in (adverts name their brand;
    the super stays off the corners, where logos are learnt).
    """
    w, h = size
    match = new_match(rng)
    play = Play(rng)
    letterbox = bool(rng.random() < 0.5)
    bar = int(round(LETTERBOX_SHARE * h))
    brand = brand_name(rng)
    line = f"{brand}  {rng.choice(_AD_SUPERS)}"
    thick = max(1, int(round(2 * w / 640)))
    scale = fit_scale(line, cv2.FONT_HERSHEY_DUPLEX, thick, 0.5 * w, 0.07 * h)
    super_from = int(n * rng.uniform(0.25, 0.45))
    frames = football_frames(rng, n, size, fps, match, play, float(rng.uniform(0, 5000)), 0.0, (0, 0), noise,
                             graphics=False, shot_seconds=PITCH_SHOT_SECONDS)
    for i, frame in enumerate(frames):
        if i >= super_from:
            slide = 1.0 - smoothstep((i - super_from) / max(1.0, 0.4 * fps))
            y = (1.0 - LETTERBOX_SHARE - 0.1) * h if letterbox else 0.82 * h
            put_text_centered(frame, line, (0.5 * w + slide * 0.6 * w, y), scale, (250, 250, 250), thick,
                              cv2.FONT_HERSHEY_DUPLEX, outline=(20, 20, 20))
        if letterbox:
            frame[:bar] = 0
            frame[h - bar:] = 0
        yield frame


def _studio_card(rng: np.random.Generator, match: Match, score: tuple[int, int], size: Size) -> tuple[np.ndarray, dict]:
    """A static background and what moves on it for one studio card (title, stats or sponsor card)."""
    hue = rng.uniform(0, 1)
    c1 = hsv(hue, rng.uniform(0.65, 1.0), rng.uniform(0.55, 0.95))
    c2 = hsv(hue + rng.choice([-1, 1]) * rng.uniform(0.05, 0.15), rng.uniform(0.5, 1.0), rng.uniform(0.35, 0.9))
    background = _ad_background(rng, str(rng.choice(["gradient", "radial", "rays", "bokeh", "split", "stripes"])), c1, c2, size)
    kind = str(rng.choice(["title", "stats", "sponsor"], p=[0.4, 0.3, 0.3]))
    card = {"kind": kind, "title": str(rng.choice(_STUDIO_TITLES)), "accent": hsv(hue + 0.5, 0.9, 1.0),
            "score": f"{match.home} {score[0]}-{score[1]} {match.away}", "font": int(rng.choice(
                [cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_COMPLEX])),
            "stats": [(str(name), float(rng.uniform(0.2, 0.8))) for name in
                      rng.choice(["POSSESSION", "SHOTS", "CORNERS", "FOULS", "PASSES"], 3, replace=False)],
            "brand": brand_name(rng), "product": str(rng.choice(["bottle", "can", "box", "phone"])),
            "body": hsv(hue + rng.uniform(-0.1, 0.1), rng.uniform(0.7, 1.0), rng.uniform(0.55, 0.95))}
    return background, card


def _draw_card(frame: np.ndarray, card: dict, p: float, t: float, size: Size) -> None:
    w, h = size
    sc = w / 640.0
    thick = max(1, int(round(3 * sc)))
    font = card["font"]
    title = card["title"]
    tx = 0.5 * w + (1.0 - smoothstep(t / 0.4)) * w
    put_text_centered(frame, title, (tx, 0.3 * h), fit_scale(title, font, thick, 0.8 * w, 0.16 * h) * (1 + 0.04 * p),
                      (255, 255, 255), thick, font, outline=(20, 20, 20))
    if card["kind"] == "title":
        rounded_rect(frame, 0.22 * w, 0.55 * h, 0.78 * w, 0.72 * h, 0.05 * h, card["accent"])
        put_text_centered(frame, card["score"], (0.5 * w, 0.635 * h), fit_scale(card["score"], font, thick, 0.5 * w, 0.12 * h),
                          (20, 20, 20), thick, font)
    elif card["kind"] == "stats":
        for j, (name, share) in enumerate(card["stats"]):
            y = (0.5 + 0.13 * j) * h
            grow = smoothstep((t - 0.2 * j) / 0.6)
            cv2.rectangle(frame, (int(0.2 * w), int(y)), (int(0.2 * w + 0.6 * w * share * grow), int(y + 0.07 * h)),
                          card["accent"], -1)
            cv2.putText(frame, name, (int(0.2 * w), int(y - 0.01 * h)), cv2.FONT_HERSHEY_SIMPLEX, 0.45 * sc, (250, 250, 250),
                        max(1, int(round(sc))), cv2.LINE_AA)
    else:   # a sponsor's card: a product and a brand, inside the programme
        s = 0.42 * h * (0.9 + 0.15 * p)
        _draw_product(frame, card["product"], 0.3 * w, 0.65 * h + 0.02 * h * math.sin(2 * math.pi * t / 1.3), s, card["body"],
                      card["accent"], card["brand"])
        text = f"presented by {card['brand']}"
        put_text_centered(frame, text, (0.66 * w, 0.65 * h), fit_scale(text, font, max(1, thick - 1), 0.5 * w, 0.09 * h),
                          (255, 255, 255), max(1, thick - 1), font, outline=(20, 20, 20))


def studio_frames(rng: np.random.Generator, n: int, size: Size, fps: float, match: Match, score: tuple[int, int],
                  noise: Noise) -> Iterator[np.ndarray]:
    """n frames of programme drawn like an advert (kind `STUDIO_PROGRAMME`): colourful studio cards
    of 1.5-4 s (title and score, statistics, a sponsor's product card), with the channel logo
    of `match` in the same corner and pixels as during play (the programme's static mark)."""
    bug = _ScoreBug(match, size)
    done = 0
    lo, hi = STUDIO_CARD_SECONDS
    while done < n:
        length = min(n - done, frames_for(rng.uniform(lo, hi), fps))
        if 0 < n - done - length < frames_for(lo, fps):
            length = n - done
        background, card = _studio_card(rng, match, score, size)
        for k in range(length):
            frame = background.copy()
            _draw_card(frame, card, k / max(length - 1, 1), k / fps, size)
            bug.draw_logo(frame)
            yield noise.apply(frame)
        done += length
