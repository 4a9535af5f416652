"""Training windows from feature tracks: pure numpy, tested without video.

Windows are kept as recipes (which track, which frames) and only materialised a batch at
a time: overlapping windows of T x 2048 floats would otherwise take T times the memory of
the features themselves (hours of recordings would not fit).

Three kinds, mixed:
- clip windows: every T consecutive frames of a single-class clip, labelled with its class;
- recording windows: every window of a labelled recording, labelled with what is on air at
  its newest frame, so windows cut across a real boundary teach the LSTM to switch within a
  second or two of the cut (DESIGN.md, Training and export 3);
- transition windows: the tail of one clip followed by the head of a clip of another class,
  labelled with the newest frame's class: the same lesson when only clips exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from detector.analysis.segments import Segment, label_at
from detector.analysis.window import pad_front

CLIP, RECORDING, TRANSITION, PADDED, CHAIN = 0, 1, 2, 3, 4
KIND_NAMES = {CLIP: "clip", RECORDING: "recording", TRANSITION: "transition", PADDED: "padded", CHAIN: "chain"}


@dataclass
class Recipes:
    """n windows: frames [end-T+k, end) of track `a` followed by frames [0, k) of track `b`.

    k == 0 (and b == -1) is a plain window of one track. When `a` has fewer than T-k frames
    before `end`, they are padded in front by `pad_front` (a stream-start window).
    """

    a: np.ndarray       # int32 [n]
    end: np.ndarray     # int32 [n] exclusive end index in track a
    b: np.ndarray       # int32 [n]
    k: np.ndarray       # int32 [n]
    y: np.ndarray       # int64 [n] class index
    kind: np.ndarray    # int8 [n]

    @staticmethod
    def empty() -> "Recipes":
        z = np.zeros(0, np.int32)
        return Recipes(z, z, z, z, np.zeros(0, np.int64), np.zeros(0, np.int8))

    def __len__(self) -> int:
        return len(self.y)

    def take(self, idx: np.ndarray) -> "Recipes":
        return Recipes(self.a[idx], self.end[idx], self.b[idx], self.k[idx], self.y[idx], self.kind[idx])


def concat(parts: Sequence[Recipes]) -> Recipes:
    parts = [p for p in parts if len(p)]
    if not parts:
        return Recipes.empty()
    return Recipes(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("a", "end", "b", "k", "y", "kind")))


def _plain(track: int, ends: np.ndarray, labels: np.ndarray, kind: int) -> Recipes:
    n = len(ends)
    return Recipes(np.full(n, track, np.int32), ends.astype(np.int32), np.full(n, -1, np.int32), np.zeros(n, np.int32),
                   labels.astype(np.int64), np.full(n, kind, np.int8))


def clip_windows(track: int, length: int, class_index: int, t: int, stride: int = 1) -> Recipes:
    """Every window of a clip of `length` frames (none if it is shorter than t)."""
    ends = np.arange(t, length + 1, stride)
    return _plain(track, ends, np.full(len(ends), class_index), CLIP)


def padded_windows(track: int, length: int, class_index: int, t: int, min_frames: int) -> Recipes:
    """The stream-start windows of a clip: its first e frames padded in front, e = min_frames .. min(length, t-1)."""
    ends = np.arange(min_frames, min(length, t - 1) + 1)
    return _plain(track, ends, np.full(len(ends), class_index), PADDED)


def recording_windows(track: int, times: np.ndarray, segments: list[Segment], class_index: dict[str, int], t: int,
                      gap_label: str | None = None, stride: int = 1, min_frames: int | None = None) -> Recipes:
    """Windows labelled by what is on air at their newest frame; unlabelled ones are skipped.

    With `min_frames` < t the recording's first windows are padded ones (kind PADDED), from
    min_frames frames on, as the live window at stream start.
    """
    ends, labels, kinds = [], [], []
    first = t if min_frames is None else min(t, min_frames)
    for end in range(first, len(times) + 1, stride):
        seg = label_at(segments, float(times[end - 1]))
        label = seg.label if seg is not None else gap_label
        if label is not None and label in class_index:
            ends.append(end)
            labels.append(class_index[label])
            kinds.append(RECORDING if end >= t else PADDED)
    r = _plain(track, np.asarray(ends, np.int32), np.asarray(labels, np.int64), RECORDING)
    r.kind = np.asarray(kinds, np.int8)
    return r


def joined_windows(a: int, a_len: int, b: int, b_len: int, y: int, t: int, rng: np.random.Generator, count: int,
                   kind: int) -> Recipes:
    """`count` windows: the last t-k frames of clip a, then the first k frames of clip b, labelled y.

    k is drawn from what both clips can give: at least 1 frame of b and at most t-1, with
    no padding (a supplies t-k real frames).
    """
    lo, hi = max(1, t - a_len), min(t - 1, b_len)
    if lo > hi or count <= 0:
        return Recipes.empty()
    ks = rng.integers(lo, hi + 1, size=count)
    return Recipes(np.full(count, a, np.int32), np.full(count, a_len, np.int32), np.full(count, b, np.int32),
                   ks.astype(np.int32), np.full(count, y, np.int64), np.full(count, kind, np.int8))


def transition_windows(a: int, a_len: int, b: int, b_len: int, b_class: int, t: int, rng: np.random.Generator, count: int) -> Recipes:
    """`count` windows: the last t-k frames of clip a (at least t-1 frames long), then the first k frames of clip b, labelled b."""
    if a_len < t - 1 or b_len < 1 or count <= 0:
        return Recipes.empty()
    return joined_windows(a, a_len, b, b_len, b_class, t, rng, count, TRANSITION)


def materialize(tracks: Sequence[np.ndarray], r: Recipes, t: int) -> np.ndarray:
    """float32 [n, t, D] for the recipes."""
    d = tracks[0].shape[1]
    out = np.empty((len(r), t, d), np.float32)
    for i in range(len(r)):
        k = int(r.k[i])
        end = int(r.end[i])
        if end >= t - k:
            out[i, : t - k] = tracks[r.a[i]][end - (t - k):end]
        else:
            out[i, : t - k] = pad_front(tracks[r.a[i]][:end], t - k)
        if k:
            out[i, t - k:] = tracks[r.b[i]][:k]
    return out


def class_weights(y: np.ndarray, n_classes: int) -> dict[int, float]:
    """Balanced weights n / (C * n_c), so a minority class is not ignored."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    total = counts.sum()
    return {c: float(total / (n_classes * counts[c])) if counts[c] else 0.0 for c in range(n_classes)}
