"""Classic picture cues on frames drawn with OpenCV: a logo in a corner over moving content,
letterboxed and pillarboxed pictures, black frames, shot cuts."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from detector.analysis.framestats import frame_stats
from detector.analysis.visualcues import (VISUAL_CUE_NAMES, VISUAL_CUE_SIZE, LogoLearner, VisualCueState, bar_cues,
                                          corner_edges, cut_rate, visual_cues)

S = 299
IDX = {name: i for i, name in enumerate(VISUAL_CUE_NAMES)}


def scene(rng: np.random.Generator, size: tuple[int, int] = (S, S)) -> np.ndarray:
    """Moving content: a colour gradient with random blurred shapes (never a dark full row)."""
    h, w = size
    base = rng.integers(60, 200, 3)
    img = np.empty((h, w, 3), np.uint8)
    img[:] = base
    img = (img.astype(np.int16) + np.linspace(0, 50, w, dtype=np.int16)[None, :, None]).clip(0, 255).astype(np.uint8)
    for _ in range(12):
        colour = tuple(int(c) for c in rng.integers(40, 255, 3))
        if rng.random() < 0.5:
            cv2.circle(img, (int(rng.integers(0, w)), int(rng.integers(0, h))), int(rng.integers(8, 60)), colour, -1)
        else:
            x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
            cv2.rectangle(img, (x, y), (x + int(rng.integers(10, 90)), y + int(rng.integers(10, 90))), colour, -1)
    return cv2.GaussianBlur(img, (5, 5), 0)


def with_logo(img: np.ndarray) -> np.ndarray:
    """A station logo in the top-right corner: a white outlined box with letters."""
    out = img.copy()
    cv2.rectangle(out, (S - 62, 10), (S - 12, 38), (255, 255, 255), 2)
    cv2.putText(out, "TV1", (S - 58, 32), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2, cv2.LINE_AA)
    return out


def test_the_logo_mask_is_learnt_in_its_corner_and_tells_programme_from_ads() -> None:
    rng = np.random.default_rng(3)
    learner = LogoLearner(horizon_frames=400, persist=0.6, min_frames=60)
    for i in range(120):
        grey = cv2.cvtColor(with_logo(scene(rng)), cv2.COLOR_BGR2GRAY)
        assert (learner.mask is None) == (i < 60)                # nothing claimed before min_frames
        learner.update(corner_edges(grey))
    mask = learner.mask
    assert mask is not None
    per_corner = mask.reshape(4, -1).sum(axis=1)
    assert per_corner[1] > 50 and per_corner[[0, 2, 3]].sum() <= 0.05 * per_corner[1], per_corner   # top-right only
    programme = [learner.presence(corner_edges(cv2.cvtColor(with_logo(scene(rng)), cv2.COLOR_BGR2GRAY))) for _ in range(10)]
    ads = [learner.presence(corner_edges(cv2.cvtColor(scene(rng), cv2.COLOR_BGR2GRAY))) for _ in range(10)]
    assert min(programme) > 0.8 and max(ads) < 0.3, (programme, ads)


def with_bug(img: np.ndarray) -> np.ndarray:
    """A score bug in the top-left corner, larger than the logo: as static as the logo during play."""
    out = img.copy()
    cv2.rectangle(out, (10, 10), (70, 40), (40, 40, 40), -1)
    cv2.rectangle(out, (10, 10), (70, 40), (255, 255, 255), 2)
    cv2.putText(out, "1-0", (18, 33), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2, cv2.LINE_AA)
    return out


def test_the_logo_still_reads_present_when_the_score_bug_learnt_with_it_is_gone() -> None:
    """Studio segments keep the channel logo and drop the score bug; an advert has neither."""
    rng = np.random.default_rng(5)
    learner = LogoLearner(horizon_frames=400, persist=0.6, min_frames=60)
    for _ in range(120):
        learner.update(corner_edges(cv2.cvtColor(with_bug(with_logo(scene(rng))), cv2.COLOR_BGR2GRAY)))
    mask = learner.mask
    assert mask is not None and mask[0].sum() > mask[1].sum() > 50      # both marks learnt, the bug the larger
    studio = [learner.presence(corner_edges(cv2.cvtColor(with_logo(scene(rng)), cv2.COLOR_BGR2GRAY))) for _ in range(10)]
    ads = [learner.presence(corner_edges(cv2.cvtColor(scene(rng), cv2.COLOR_BGR2GRAY))) for _ in range(10)]
    assert min(studio) > 0.8 and max(ads) < 0.3, (studio, ads)
    # a crowd (fine texture everywhere) has edges next to every mask pixel, but no more than around it: no logo
    crowd = cv2.resize(rng.integers(0, 256, (S // 3, S // 3, 3), dtype=np.uint8), (S, S), interpolation=cv2.INTER_NEAREST)
    assert learner.presence(corner_edges(cv2.cvtColor(crowd, cv2.COLOR_BGR2GRAY))) < 0.3
    assert learner.presence(corner_edges(cv2.cvtColor(with_logo(crowd), cv2.COLOR_BGR2GRAY))) > 0.5


def test_the_learner_forgets_a_logo_that_went_away() -> None:
    rng = np.random.default_rng(4)
    learner = LogoLearner(horizon_frames=100, persist=0.6, min_frames=20)
    for _ in range(100):
        learner.update(corner_edges(cv2.cvtColor(with_logo(scene(rng)), cv2.COLOR_BGR2GRAY)))
    assert learner.mask is not None
    memory = learner.counts.nbytes
    for _ in range(300):                                          # the channel dropped its logo
        learner.update(corner_edges(cv2.cvtColor(scene(rng), cv2.COLOR_BGR2GRAY)))
    assert learner.mask is None
    assert learner.counts.nbytes == memory and learner.counts.max() < 100     # fixed memory, halved counts


@pytest.mark.parametrize("content_aspect, letterbox, pillarbox", [(2.35, 1 - (16 / 9) / 2.35, 0.0),   # cinema in 16:9
                                                                  (4 / 3, 0.0, 1 - (4 / 3) / (16 / 9)),  # 4:3 spot in 16:9
                                                                  (16 / 9, 0.0, 0.0)])
def test_letterbox_and_pillarbox_give_the_active_pictures_aspect(content_aspect, letterbox, pillarbox) -> None:
    rng = np.random.default_rng(5)
    frame = np.zeros((S, S, 3), np.uint8)                         # a 16:9 source squeezed to 299x299
    h = round(S * (1 - letterbox))
    w = round(S * (1 - pillarbox))
    y, x = (S - h) // 2, (S - w) // 2
    frame[y:y + h, x:x + w] = scene(rng, (h, w))
    lb, pb, aspect = bar_cues(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
    assert lb == pytest.approx(letterbox, abs=0.03)
    assert pb == pytest.approx(pillarbox, abs=0.03)
    assert aspect == pytest.approx(content_aspect, rel=0.05)


def test_cue_vector_order_black_frames_and_cuts() -> None:
    rng = np.random.default_rng(6)
    fps, window = 5.0, 20
    state = VisualCueState.create(fps, window)
    scenes = [scene(rng) for _ in range(4)]
    black = np.zeros((S, S, 3), np.uint8)
    # 4 shots of 5 steps, one black step between the 2nd and 3rd: 2 hard cuts + a cut to and from black
    frames = [scenes[0]] * 5 + [scenes[1]] * 5 + [black] + [scenes[2]] * 5 + [scenes[3]] * 5
    vectors = np.stack([visual_cues(f, frame_stats(f), state) for f in frames])
    assert vectors.shape == (len(frames), VISUAL_CUE_SIZE) and vectors.dtype == np.float32 and np.isfinite(vectors).all()
    assert list(np.flatnonzero(vectors[:, IDX["black"]])) == [10]
    assert vectors[10, IDX["letterbox"]] == 0 and vectors[10, IDX["pillarbox"]] == 0
    strong = list(np.flatnonzero(vectors[:, IDX["cut"]] >= 0.3))
    assert 5 in strong and 16 in strong and all(vectors[i, IDX["cut"]] < 0.05 for i in (2, 7, 13, 19))
    # cuts to and from black are the black cue's business, not the cut rate's: 2 cuts in the
    # window's last 19 step pairs (20 steps) at 5 steps/s
    assert vectors[-1, IDX["cut_rate"]] == pytest.approx(2 * fps / 19)
    assert vectors[-1, IDX["active_aspect"]] == pytest.approx(16 / 9, rel=0.02)
    assert vectors[:, IDX["logo_ready"]].max() == 0               # 30 s of frames before a logo counts
    state.reset()
    again = visual_cues(scenes[0], frame_stats(scenes[0]), state)
    assert again[IDX["cut"]] == 0 and again[IDX["cut_rate"]] == 0      # no cut across a stream gap


def test_cut_rate_counts_cuts_per_second() -> None:
    assert cut_rate([], 5.0) == 0.0
    assert cut_rate([0.0, 0.9, 0.1, 0.5, 0.0], 5.0) == pytest.approx(2.0)
