"""Labelled video files from the drawings: one-class clips, and broadcasts with exact truth.

The ground truth is known exactly because the broadcast is planned (programme, breaks, spots,
black gaps) in frames before a pixel is drawn, so every boundary falls on a frame time. A file
is written through a temporary name and renamed only once it decodes with the expected frame
count, so an interrupted run never leaves something that looks finished. Seeds derive from
the item's identity, so an item is the same whether drawn alone, in a worker or in any order.
"""

from __future__ import annotations

import json
import math
import sys
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from detector.analysis.segments import Segment, edl_text, labels_csv_text
from detector.demo.commercials import Spot, black_frames, commercial_frames, new_spot, spot_frames
from detector.demo.football import Play, football_frames, new_match
from detector.demo.paint import Noise, Size, frames_for
from detector.demo.sound import RATE, TRAP_PROBABILITY, add_sound, ad_sound, part_sound, programme_sound, silence_edges
from detector.demo.traps import (AD_ON_PITCH, AD_SOUNDS_LIKE_PROGRAMME, PROGRAMME_SOUNDS_LIKE_AD, STUDIO_PROGRAMME,
                                 pitch_spot_frames, studio_frames)
from detector.errors import RuntimeFailure, UsageError
from detector.util.fsutil import atomic_path, atomic_write_text

CLASSES = ("football", "commercial")
PROGRAMME_CLASS = "football"
AD_CLASS = "commercial"

_FOURCC = "mp4v"

# Bump when the drawing changes, so that `generate_demo_set` regenerates old demo sets.
# 2: sound (music beds, voice-over, crowd, commentary, edge silences, audio traps);
# 3: visual traps (adverts on a pitch, studio programme; detector.demo.traps) and the `.truth.json` beside a broadcast.
GENERATOR_VERSION = 3
TRUTH_SUFFIX = ".truth.json"


def derive_seed(seed: int, *parts: str | int) -> int:
    """A 32-bit seed for one item, from the user's seed and the item's identity.

    Stable across runs and processes (crc32, not Python's salted `hash`), so an item is
    the same whether it is drawn alone, in a worker, or in a different order.
    """
    words = [seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF]
    words += [p & 0xFFFFFFFF if isinstance(p, int) else zlib.crc32(p.encode("utf-8")) for p in parts]
    return int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint32)[0])


def check_args(seconds: float, size: Size, fps: float, what: str) -> Size:
    """(width, height) when the request can be drawn and encoded, else a UsageError naming `what`."""
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


def video_is_valid(path: Path, frames: int, size: Size) -> bool:
    if not path.is_file() or path.stat().st_size == 0:
        return False
    probe = _probe_video(path)
    return probe is not None and probe == (frames, size[0], size[1])


def _write_video(path: Path, frames: Iterator[np.ndarray], n_frames: int, size: Size, fps: float,
                 bar: tqdm | None = None, audio: np.ndarray | None = None) -> None:
    """Encode frames to `path` (mp4v, with `audio` as AAC when given) through a temporary name, then check it decodes.

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
        if audio is not None:
            add_sound(Path(tmp), audio)
        probe = _probe_video(tmp)
        if probe is None:
            raise RuntimeFailure(f"{path}: the written video does not open with cv2.VideoCapture")
        if probe != (n_frames, size[0], size[1]):
            raise RuntimeFailure(f"{path}: the written video has {probe[0]} frames of {probe[1]}x{probe[2]}, "
                                 f"expected {n_frames} of {size[0]}x{size[1]}")


def write_clip(path: Path, label: str, seconds: float, seed: int, size: tuple[int, int] = (640, 360),
               fps: float = 25.0, trap: bool = False) -> None:
    """One single-class clip.

    Training folders hold one class per clip, so a clip is all football (with camera cuts)
    or all commercials (one spot after another, cut wherever the clip ends). It has exactly
    round(seconds * fps) frames; the same (label, seconds, seed, size, fps, trap) gives the same pixels.
    With `trap` the picture misleads (detector.demo.traps): a football clip is studio graphics with
    the channel logo, a commercial clip an advert on a pitch; the sound stays its class's own.
    """
    if label not in CLASSES:
        raise UsageError(f"write_clip: label must be one of {', '.join(CLASSES)}, got '{label}'")
    size = check_args(seconds, size, fps, f"{path}")
    n = frames_for(seconds, fps)
    rng = np.random.default_rng(derive_seed(seed, "clip", label))
    frames: Iterator[np.ndarray]
    if label == PROGRAMME_CLASS:
        noise = Noise(rng, size, 4)
        match = new_match(rng)
        play = Play(rng)
        score = (int(rng.integers(0, 4)), int(rng.integers(0, 3)))
        if trap:
            frames = studio_frames(rng, n, size, fps, match, score, noise)
        else:
            frames = football_frames(rng, n, size, fps, match, play, float(rng.uniform(0, 5000)),
                                      float(rng.uniform(0, 85 * 60)), score, noise)
    elif trap:
        frames = pitch_spot_frames(rng, n, size, fps, Noise(rng, size, 3))
    else:
        frames = commercial_frames(rng, n, size, fps)
    # the sound has its own random stream, so the pictures stay what they were before the demo had sound
    srng = np.random.default_rng(derive_seed(seed, "clip-sound", label))
    swapped = srng.random() < TRAP_PROBABILITY and not trap    # a picture trap keeps its true sound
    samples = (ad_sound if (label == AD_CLASS) != swapped else programme_sound)(srng, int(round(n / fps * RATE)))
    _write_video(Path(path), frames, n, size, fps, audio=samples)


@dataclass(frozen=True)
class _Part:
    """A run of frames in a broadcast: 'football', 'spot' or 'black' (black belongs to its break);
    `trap` names a visual trap (detector.demo.traps) drawn instead of the kind's usual picture."""

    kind: str
    frames: int
    trap: str | None = None

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
        spots = [frames_for(5.0 if short else rng.uniform(5.0, 15.0), fps) for _ in range(k)]
        gaps = [frames_for(rng.uniform(0.2, 0.6), fps) for _ in range(k + 1)] if rng.random() < 0.5 else None
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


def trap_count(traps: float, candidates: int) -> int:
    """How many trap parts `traps` asks for: a fraction in [0, 1) of the candidates (rounded, half
    up), or a whole number >= 1 of them (at most all)."""
    if not (math.isfinite(traps) and traps >= 0) or (traps >= 1 and int(traps) != traps):
        raise UsageError(f"traps must be a fraction in [0, 1) or a whole number of trap parts, got {traps}")
    return min(candidates, int(math.floor(traps * candidates + 0.5)) if traps < 1 else int(traps))   # half rounds up


STUDIO_SECONDS = (8.0, 16.0)       # a studio insert inside a programme stretch
REPLAY_SECONDS = (8.0, 20.0)       # music over a replay: an audio trap inside a programme stretch
STUDIO_MARGIN_SECONDS = 4.0        # of match on either side of it


def _place_traps(rng: np.random.Generator, parts: list[_Part], fps: float, traps: float) -> list[_Part]:
    """Turn some parts of a planned broadcast into visual traps; the truth (labels, boundaries) is unchanged.

    Candidates are every spot (it becomes an advert on a pitch) and every programme stretch
    long enough for a studio insert of 8-16 s with 4 s of match either side (it is split
    around one). The count comes from `trap_count`; when there are at least two traps both
    kinds are present. The rng is the traps' own, so the plan of breaks and spots does not
    depend on `traps`.
    """
    margin = frames_for(STUDIO_MARGIN_SECONDS, fps)
    spots = [i for i, p in enumerate(parts) if p.kind == "spot"]
    stretches = [i for i, p in enumerate(parts) if p.kind == "football" and p.frames >= frames_for(STUDIO_SECONDS[0], fps) + 2 * margin]
    k = trap_count(traps, len(spots) + len(stretches))
    if k == 0:
        return parts
    first: list[int] = []
    if k >= 2 and spots and stretches:   # both kinds, then the rest at random
        first = [int(rng.choice(spots)), int(rng.choice(stretches))]
    rest = [i for i in rng.permutation(spots + stretches).tolist() if i not in first]
    chosen = set(first + rest[:k - len(first)])
    out: list[_Part] = []
    for i, part in enumerate(parts):
        if i not in chosen:
            out.append(part)
        elif part.kind == "spot":
            out.append(_Part("spot", part.frames, AD_ON_PITCH))
        else:
            studio = min(frames_for(rng.uniform(*STUDIO_SECONDS), fps), part.frames - 2 * margin)
            before = int(rng.integers(margin, part.frames - studio - margin + 1))
            out += [_Part("football", before), _Part("football", studio, STUDIO_PROGRAMME),
                    _Part("football", part.frames - studio - before)]
    assert sum(p.frames for p in out) == sum(p.frames for p in parts)
    return out


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
    match = new_match(rng)
    play = Play(rng)
    football_noise = Noise(rng, size, 4)
    ad_noise = Noise(rng, size, 3)
    t_match = float(rng.uniform(0, 5000))
    clock0 = float(rng.uniform(0, 40 * 60))
    score = (int(rng.integers(0, 2)), int(rng.integers(0, 2)))
    spot: Spot | None = None
    pos = 0
    for part in parts:
        if part.trap == STUDIO_PROGRAMME:
            yield from studio_frames(rng, part.frames, size, fps, match, score, football_noise)
        elif part.trap == AD_ON_PITCH:
            spot = None     # the next spot is free to look like anything
            yield from pitch_spot_frames(rng, part.frames, size, fps, ad_noise)
        elif part.kind == "football":
            if pos and rng.random() < 0.3:  # a goal happened while we were away
                score = (score[0] + 1, score[1]) if rng.random() < 0.5 else (score[0], score[1] + 1)
            yield from football_frames(rng, part.frames, size, fps, match, play, t_match + pos / fps,
                                        clock0 + pos / fps, score, football_noise)
        elif part.kind == "spot":
            spot = new_spot(rng, spot)
            yield from spot_frames(rng, spot, part.frames, size, fps, ad_noise)
        else:
            yield from black_frames(rng, part.frames, size, ad_noise)
        pos += part.frames


def _broadcast_sound(rng: np.random.Generator, parts: list[_Part], fps: float) -> tuple[np.ndarray, list[tuple[int, int, str]]]:
    """The broadcast's sound, part by part (see detector.demo.sound), and the audio traps as
    (first frame, end frame, kind): black gaps are silent; where a break cuts without black, half
    of its edges get ~0.3 s of silence anyway (audio-only edge); about one part in five is an
    audio trap, except a visual trap, whose sound is its own. An audio-trap spot sounds like the
    match from start to end (a spot recorded in a stadium); an audio-trap programme stretch has
    8-20 s of music and voice-over somewhere in it (music over a replay), not for the whole
    30-70 s: no channel plays a jingle under a whole half of the match."""
    pieces, silences = [], []
    audio_traps: list[tuple[int, int, str]] = []
    pos = 0
    longest = frames_for(REPLAY_SECONDS[1], fps)
    for i, part in enumerate(parts):
        trap = part.kind != "black" and rng.random() < TRAP_PROBABILITY and part.trap is None
        if trap and part.kind == "football" and part.frames > longest:
            span = frames_for(rng.uniform(*REPLAY_SECONDS), fps)
            first = int(rng.integers(0, part.frames - span + 1))
            piece = part_sound(rng, part.kind, part.frames / fps, False)
            a, b = int(round(first / fps * RATE)), int(round((first + span) / fps * RATE))
            piece[a:b] = part_sound(rng, part.kind, (b - a) / RATE, True)[:b - a]
            audio_traps.append((pos + first, pos + first + span, PROGRAMME_SOUNDS_LIKE_AD))
            pieces.append(piece)
        else:
            if trap:
                audio_traps.append((pos, pos + part.frames,
                                    AD_SOUNDS_LIKE_PROGRAMME if part.kind == "spot" else PROGRAMME_SOUNDS_LIKE_AD))
            pieces.append(part_sound(rng, part.kind, part.frames / fps, trap))
        before = parts[i - 1] if i else None
        if before is not None and before.label != part.label and "black" not in (before.kind, part.kind) and rng.random() < 0.5:
            silences.append(pos / fps)
        pos += part.frames
    return silence_edges(np.concatenate(pieces), silences), audio_traps


def trap_spans(parts: list[_Part], audio_traps: list[tuple[int, int, str]], fps: float) -> list[list[float | str]]:
    """[start, end, kind] of every trap (visual and audio) in time order; seconds on frame times."""
    spans: list[tuple[int, int, str]] = list(audio_traps)
    pos = 0
    for part in parts:
        if part.trap is not None:
            spans.append((pos, pos + part.frames, part.trap))
        pos += part.frames
    return [[round(a / fps, 3), round(b / fps, 3), kind] for a, b, kind in sorted(spans)]


def truth_json_text(segments: list[Segment], traps: list[list[float | str]], seed: int, fps: float, duration: float,
                    trap_setting: float) -> str:
    """`NAME.truth.json`: the merged segments (as the CSV) plus the trap spans, for `evaluate --truth`."""
    head = {"generator_version": GENERATOR_VERSION, "seed": int(seed), "fps": float(fps), "duration": round(float(duration), 3),
            "traps_setting": float(trap_setting)}
    rows = [json.dumps({"start": round(s.start, 3), "end": round(s.end, 3), "label": s.label, "is_ad": s.is_ad}) for s in segments]
    spans = [json.dumps(t) for t in traps]
    # one segment or trap per line: readable, and diffs show which one changed
    return (json.dumps(head, indent=2)[:-2] + ',\n  "segments": [\n    ' + ",\n    ".join(rows) + '\n  ],\n  "traps": ['
            + ("\n    " + ",\n    ".join(spans) + "\n  " if spans else "") + "]\n}\n")


def write_broadcast(path: Path, seed: int, duration: float = 240.0, size: tuple[int, int] = (640, 360),
                    fps: float = 25.0, progress: bool = True, traps: float = 0.0) -> list[Segment]:
    """A long broadcast with exact ground truth, as a labelled recording or for evaluation.

    Programme segments (football, 30-70 s each, usually with internal camera cuts) alternate
    with ad breaks of 2-5 spots (5-15 s each). Some breaks have short black gaps (0.2-0.6 s of
    near-black frames) at their edges and between spots, others cut directly, because real
    channels do both and the detector must not rely on either. It starts and ends with
    programme and has at least two breaks at the default duration. Its sound (AAC) is made by
    `_broadcast_sound`: music and voice-over in the ads, crowd and commentary in the programme,
    silent black gaps, some silent edges, some audio traps. `traps` (a fraction of the spots and
    programme stretches, or a count; `_place_traps`) makes visual traps: adverts on a pitch and
    studio programme (detector.demo.traps); 0 draws the broadcast as without them.

    Writes `path` (mp4) plus the truth beside it: `path.with_suffix('.csv')` with one row per
    *merged* segment (a whole break is one 'commercial' row; black at its edges belongs to it),
    `path.with_suffix('.edl')` with the breaks, and `NAME.truth.json` with the segments and the
    trap spans ([start, end, kind], visual and audio; `evaluate --truth` scores them apart).
    Boundaries are frame times k/fps; the video has exactly round(duration * fps) frames.
    Returns the merged segments.
    """
    path = Path(path)
    size = check_args(duration, size, fps, f"{path}")
    n_total = frames_for(duration, fps)
    rng = np.random.default_rng(derive_seed(seed, "broadcast"))
    trap_count(traps, 0)    # a bad value is refused before anything is drawn
    parts = _place_traps(np.random.default_rng(derive_seed(seed, "broadcast-traps")), _plan_broadcast(rng, n_total, fps), fps,
                         traps)
    segments = _merged_segments(parts, fps)
    audio, audio_traps = _broadcast_sound(np.random.default_rng(derive_seed(seed, "broadcast-sound")), parts, fps)
    with tqdm(total=n_total, unit="frame", desc=path.name, disable=not progress, file=sys.stderr, leave=False) as bar:
        _write_video(path, _broadcast_frames(rng, parts, size, fps), n_total, size, fps, bar, audio)
    atomic_write_text(path.with_suffix(".csv"), labels_csv_text(segments))
    atomic_write_text(path.with_suffix(".edl"), edl_text(segments))
    atomic_write_text(truth_json_path(path), truth_json_text(segments, trap_spans(parts, audio_traps, fps), seed, fps,
                                                             n_total / fps, traps))
    return segments


def truth_json_path(video: Path) -> Path:
    """Where `write_broadcast` puts the JSON truth (segments and trap spans) of `video`."""
    return Path(video).with_name(Path(video).stem + TRUTH_SUFFIX)
