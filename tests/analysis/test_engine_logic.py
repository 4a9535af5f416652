"""The engine's pure parts, without video or models: decision, window, sampler, boundary
refinement, and the training windows built from feature tracks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from detector.analysis.boundary import BoundarySettings, Cue, History, choose_boundary, fine_crossing, find_cues, locate
from detector.analysis.decision import Decider, DecisionSettings
from detector.analysis.framestats import frame_stats
from detector.analysis.sampler import Sampler
from detector.analysis.segments import Segment
from detector.analysis.window import Window
from ad_detector_train import windows as W

CLASSES = ["commercial", "football"]
ADS = ["commercial"]
HOP = 1.0   # seconds between windows, as the engine runs by default


def probs(p_ad: float) -> np.ndarray:
    """Class probabilities in CLASSES order for a given p(ad)."""
    return np.array([p_ad, 1.0 - p_ad], np.float32)


def run_decider(p_ads, settings: DecisionSettings | None = None, t0: float = 8.0, hop: float = HOP):
    """Feed p(ad) per window as the engine does (it reports each boundary back with started()).

    Returns [(decided_at, is_ad, search_from)]. The boundary is placed at the decision time
    (the engine refines it earlier; the decider's guarantees are about its own decisions).
    """
    d = Decider(CLASSES, ADS, settings or DecisionSettings())
    changes = []
    for i, p in enumerate(p_ads):
        t = t0 + i * hop
        ch = d.push(probs(float(p)), t)
        if ch is not None:
            changes.append((ch.decided_at, ch.is_ad, ch.search_from))
            d.started(0.0 if not changes[:-1] else t)   # the first segment starts at the stream's start
    return changes


# ----------------------------------------------------------------------------- decision

def test_first_window_decides_the_initial_state_either_way() -> None:
    assert run_decider([0.1, 0.1]) == [(8.0, False, 8.0)]
    assert run_decider([0.9, 0.9]) == [(8.0, True, 8.0)]


def test_all_programme_and_all_ads_give_one_segment() -> None:
    rng = np.random.default_rng(1)
    programme = rng.uniform(0.0, 0.45, 600)
    ads = rng.uniform(0.55, 1.0, 600)
    assert [c[1] for c in run_decider(programme)] == [False]
    assert [c[1] for c in run_decider(ads)] == [True]


def test_hysteresis_enter_and_exit_thresholds() -> None:
    # thresholds alone: no minimum segment, no smoothing, no exit confirmation (test_engine.py tests that)
    s = DecisionSettings(enter_threshold=0.7, exit_threshold=0.3, min_segment_seconds=0.0, smoothing_windows=1, exit_confirm_seconds=0.0)
    # 0.65 is above 0.5 but below the enter threshold: still programme
    assert [c[1] for c in run_decider([0.1] * 5 + [0.65] * 10, s)] == [False]
    # entering at 0.7 (0.71: float32 probabilities); then 0.35 (below 0.5, above exit) keeps the ad
    ch = run_decider([0.1] * 5 + [0.71] * 5 + [0.35] * 10, s)
    assert [c[1] for c in ch] == [False, True]
    assert ch[1][0] == pytest.approx(8.0 + 5)
    # and 0.3 leaves it
    ch = run_decider([0.1] * 5 + [0.71] * 5 + [0.29] * 3, s)
    assert [c[1] for c in ch] == [False, True, False]
    assert ch[2][0] == pytest.approx(8.0 + 10)


def test_search_from_is_the_last_window_clearly_on_the_old_side() -> None:
    s = DecisionSettings(min_segment_seconds=0.0, smoothing_windows=1)
    ch = run_decider([0.1, 0.1, 0.2, 0.55, 0.6, 0.8], s)
    assert ch[-1][1] is True
    assert ch[-1][0] == pytest.approx(13.0)
    assert ch[-1][2] == pytest.approx(10.0)   # the 0.2 window; 0.55 and 0.6 were already past 0.5


def test_minimum_segment_length_delays_the_opposite_change() -> None:
    s = DecisionSettings(min_segment_seconds=5.0, smoothing_windows=1, exit_confirm_seconds=0.0)
    # ad entered at 13 s; exit evidence from 14 s on, but the ad must last 5 s first
    ch = run_decider([0.1] * 5 + [0.9] + [0.0] * 10, s)
    assert [c[1] for c in ch] == [False, True, False]
    assert ch[1][0] == pytest.approx(13.0)
    assert ch[2][0] == pytest.approx(18.0), ch
    # with no minimum the exit comes at the first low window
    ch = run_decider([0.1] * 5 + [0.9] + [0.0] * 10, DecisionSettings(min_segment_seconds=0.0, smoothing_windows=1, exit_confirm_seconds=0.0))
    assert ch[2][0] == pytest.approx(14.0)


def test_boundary_at_the_very_start_and_at_the_very_end() -> None:
    # an ad from the first window on, programme only in the very last windows (without the exit confirmation)
    ch = run_decider([0.95] * 20 + [0.02, 0.02], DecisionSettings(exit_confirm_seconds=0.0))
    assert [c[1] for c in ch] == [True, False]
    assert ch[-1][0] == pytest.approx(8.0 + 21)
    # with the default confirmation the programme side (smoothed p < 0.5) must hold exit_confirm_seconds (3 s) first
    assert [c[1] for c in run_decider([0.95] * 20 + [0.02] * 2)] == [True]
    ch = run_decider([0.95] * 20 + [0.02] * 3)
    assert [c[1] for c in ch] == [True, False] and ch[-1][0] == pytest.approx(8.0 + 22)
    # the last window alone is not enough (smoothing over two windows) ...
    assert [c[1] for c in run_decider([0.02] * 20 + [0.95])] == [False]
    # ... two are
    ch = run_decider([0.02] * 20 + [0.95, 0.95])
    assert [c[1] for c in ch] == [False, True] and ch[-1][0] == pytest.approx(8.0 + 21)


def test_single_window_spikes_do_not_switch() -> None:
    p = np.full(300, 0.05)
    p[10::17] = 0.99          # isolated spikes in clear programme
    assert len(run_decider(p)) == 1
    p = np.full(300, 0.95)
    p[10::17] = 0.01          # isolated dips in a clear ad
    assert len(run_decider(p)) == 1


def test_flickering_probability_does_not_flood_segments() -> None:
    # alternating around 0.5 every window: the smoothed value never crosses a threshold
    p = np.where(np.arange(600) % 2 == 0, 0.9, 0.1)
    assert len(run_decider(p)) == 1
    # pure noise: changes are possible, but never closer than the minimum segment length
    rng = np.random.default_rng(7)
    settings = DecisionSettings(min_segment_seconds=3.0)
    ch = run_decider(rng.uniform(0, 1, 600), settings)
    times = [c[0] for c in ch]
    gaps = np.diff(times)
    assert len(gaps) == 0 or gaps.min() >= settings.min_segment_seconds - 1e-9, gaps.min()
    assert len(ch) <= 600 * HOP / settings.min_segment_seconds + 1
    # states strictly alternate: no "change" into the state we are already in
    states = [c[1] for c in ch]
    assert all(a != b for a, b in zip(states, states[1:]))


def test_reset_forgets_the_state() -> None:
    d = Decider(CLASSES, ADS, DecisionSettings())
    assert d.push(probs(0.9), 8.0).is_ad is True
    d.started(0.0)
    d.reset()
    assert d.state is None
    ch = d.push(probs(0.1), 20.0)
    assert ch is not None and ch.is_ad is False


def test_decision_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        Decider(CLASSES, ADS, DecisionSettings(enter_threshold=0.3, exit_threshold=0.7))


def test_label_is_the_most_likely_class_of_the_new_side() -> None:
    d = Decider(["football", "news", "commercial", "promo"], ["commercial", "promo"], DecisionSettings(min_segment_seconds=0))
    ch = d.push(np.array([0.1, 0.5, 0.1, 0.3]), 8.0)
    assert (ch.is_ad, ch.label) == (False, "news")
    d.started(0.0)
    d.push(np.array([0.0, 0.05, 0.15, 0.8]), 9.0)
    ch = d.push(np.array([0.0, 0.05, 0.15, 0.8]), 10.0)
    assert (ch.is_ad, ch.label) == (True, "promo")


# ----------------------------------------------------------------------------- window

def test_window_is_due_when_full_then_every_hop_in_time_order() -> None:
    w = Window(frames=4, hop=2)
    due = []
    for i in range(12):
        if w.push(np.full(3, i, np.float32), i * 0.2):
            due.append(i)
            cur = w.current()
            assert cur.shape == (4, 3)
            assert cur[:, 0].tolist() == [i - 3, i - 2, i - 1, i]      # oldest first
            assert w.newest_time == pytest.approx(i * 0.2)
    assert due == [3, 5, 7, 9, 11]


def test_window_current_is_a_copy() -> None:
    w = Window(frames=2, hop=1)
    w.push(np.zeros(2, np.float32), 0.0)
    w.push(np.ones(2, np.float32), 0.2)
    cur = w.current()
    w.push(np.full(2, 5, np.float32), 0.4)
    assert cur[:, 0].tolist() == [0, 1]


def test_window_reset_needs_a_full_window_again() -> None:
    w = Window(frames=3, hop=1)
    for i in range(5):
        w.push(np.full(2, i, np.float32), float(i))
    w.reset()
    with pytest.raises(ValueError):
        w.current()
    assert not w.push(np.full(2, 10, np.float32), 10.0)
    assert not w.push(np.full(2, 11, np.float32), 11.0)
    assert w.push(np.full(2, 12, np.float32), 12.0)
    assert w.current()[:, 0].tolist() == [10, 11, 12]    # nothing from before the reset


def test_window_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError):
        Window(0, 1)
    with pytest.raises(ValueError):
        Window(4, 0)


# ----------------------------------------------------------------------------- sampler

def kept(times, fps: float = 5.0) -> list[int]:
    s = Sampler(fps)
    return [i for i, t in enumerate(times) if s.keep(t)]


def test_sampler_25_to_5_keeps_every_fifth_frame() -> None:
    idx = kept([i / 25.0 for i in range(250)])
    assert idx == list(range(0, 250, 5))


def test_sampler_29_97_keeps_frames_spaced_a_fifth_of_a_second() -> None:
    fps = 30000 / 1001
    times = [i / fps for i in range(int(60 * fps))]
    idx = kept(times)
    assert abs(len(idx) - 300) <= 1
    gaps = np.diff([times[i] for i in idx])
    # 6 frames apart mostly, 5 when the ticks catch up with the 1001/1000 drift
    assert gaps.min() > 0.2 - 1 / fps and gaps.max() < 0.2 + 1 / fps
    assert np.mean(gaps) == pytest.approx(0.2, abs=1e-3)
    # each kept frame is the first at or after its tick
    for k, i in enumerate(idx[:50]):
        assert times[i] >= k * 0.2 - 1e-6 and (i == 0 or times[i - 1] < k * 0.2 - 1e-6)


def test_sampler_variable_frame_rate_uses_media_time() -> None:
    rng = np.random.default_rng(3)
    # bursts of 50 fps and stretches of 10 fps
    dt = np.where(rng.random(1000) < 0.5, 0.02, 0.1)
    times = np.concatenate([[0.0], np.cumsum(dt)])
    idx = kept(times)
    slots = np.floor(times * 5 + 1e-6)
    assert len(idx) == len(np.unique(slots))          # one frame per 0.2 s slot that has frames
    assert np.all(np.diff(times[idx]) > 0.1 - 1e-9)


def test_sampler_time_going_backwards_starts_again() -> None:
    s = Sampler(5.0)
    assert [s.keep(t) for t in (0.0, 0.1, 0.2, 0.3, 0.4)] == [True, False, True, False, True]
    # encoder restart: time goes back to 0
    assert [s.keep(t) for t in (0.0, 0.1, 0.2)] == [True, False, True]


def test_sampler_exact_ticks_survive_floating_point() -> None:
    # k/5 computed as k * 0.2 can land a hair below the tick
    times = [k * 0.2 for k in range(100)]
    assert kept(times) == list(range(100))
    with pytest.raises(ValueError):
        Sampler(0)


# ----------------------------------------------------------------------------- boundary

def _stats(kind: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    img = np.zeros((72, 128, 3), np.uint8)
    if kind == "black":
        img[:] = 6
    elif kind == "green":
        img[:] = (40, 150, 40)
        img[30:40] = (230, 230, 230)
    elif kind == "red":
        img[:] = (30, 30, 220)
        img[:, 60:] = (250, 200, 20)
    else:
        img[:] = rng.integers(0, 255, 3)
    return frame_stats(img)


def test_fine_crossing() -> None:
    times = np.arange(10) * 0.2
    p = np.array([0.1, 0.2, 0.6, 0.3, 0.4, 0.7, 0.8, 0.9, 0.9, 0.95])
    assert fine_crossing(times, p, to_ad=True) == pytest.approx(1.0)      # from index 5 on
    assert fine_crossing(times, 1 - p, to_ad=False) == pytest.approx(1.0)
    assert fine_crossing(times, np.full(10, 0.9), to_ad=True) == pytest.approx(0.0)   # all new: the first


def test_find_cues_black_runs_and_cuts() -> None:
    fps = 5.0
    kinds = ["green"] * 5 + ["black"] * 2 + ["red"] * 5
    stats = [_stats(k) for k in kinds]
    times = np.arange(len(kinds)) / fps
    s = BoundarySettings()
    cues = find_cues(times, stats, 0.0, 10.0, to_ad=True, fps=fps, settings=s)
    black = [c for c in cues if c.kind == "black"]
    cuts = [c for c in cues if c.kind == "cut"]
    # going into an ad the black run belongs to the break: its start (half a sample before it)
    assert [c.time for c in black] == [pytest.approx(1.0 - 0.1)]
    assert cuts == []          # no cut is counted next to black frames
    cues = find_cues(times, stats, 0.0, 10.0, to_ad=False, fps=fps, settings=s)
    assert [c.time for c in cues if c.kind == "black"] == [pytest.approx(1.4 - 0.1)]   # its end when the break ends
    # a direct cut between two different pictures
    kinds = ["green"] * 5 + ["red"] * 5
    stats = [_stats(k) for k in kinds]
    times = np.arange(len(kinds)) / fps
    cues = find_cues(times, stats, 0.0, 10.0, to_ad=True, fps=fps, settings=s)
    assert [(c.kind, round(c.time, 3)) for c in cues] == [("cut", 0.9)]
    # outside [lo, hi]: not a cue
    assert find_cues(times, stats, 1.0, 10.0, to_ad=True, fps=fps, settings=s) == []


def test_choose_boundary_prefers_black_then_cut_then_model() -> None:
    cues = [Cue(10.0, "cut", 0.9), Cue(11.9, "cut", 0.5), Cue(8.0, "black", 1.0)]
    assert choose_boundary(cues, crossing=12.6, lag=0.6, floor=0.0) == (8.0, "black")
    assert choose_boundary(cues[:2], crossing=12.6, lag=0.6, floor=0.0) == (11.9, "cut")   # nearest to 12.0
    assert choose_boundary([], crossing=12.6, lag=0.6, floor=0.0) == (pytest.approx(12.0), "model")
    assert choose_boundary([], crossing=12.6, lag=0.6, floor=12.3) == (12.3, "model")     # never before the floor


def test_locate_snaps_to_the_black_frame_before_the_model_crossing() -> None:
    fps, t_frames = 5.0, 10
    n = 60
    kinds = ["green"] * 30 + ["black"] * 2 + ["red"] * 28
    hist = History(n)
    for i, k in enumerate(kinds):
        hist.push(i / fps, _stats(k, i), np.full(4, 1.0 if k == "red" else 0.0, np.float32))

    def p_ad(windows: np.ndarray) -> np.ndarray:
        # a model that needs half its window of ad frames: crossing 1 s after the boundary
        return (windows[:, :, 0].mean(axis=1) >= 0.5).astype(np.float32)

    t, how = locate(hist, decided_at=11.0, search_from=6.0, to_ad=True, window_frames=t_frames, fps=fps,
                    ad_probability=p_ad, settings=BoundarySettings(), floor=0.2)
    assert how == "black"
    assert t == pytest.approx(6.0 - 0.1)       # the black run starts at frame 30 (6.0 s)


def test_locate_without_cues_uses_the_crossing_minus_lag() -> None:
    fps = 5.0
    hist = History(60)
    for i in range(60):
        hist.push(i / fps, _stats("green"), np.full(4, 1.0 if i >= 30 else 0.0, np.float32))

    def p_ad(windows: np.ndarray) -> np.ndarray:
        return (windows[:, :, 0].mean(axis=1) >= 0.5).astype(np.float32)

    t, how = locate(hist, decided_at=11.0, search_from=6.0, to_ad=True, window_frames=10, fps=fps,
                    ad_probability=p_ad, settings=BoundarySettings(expected_lag_seconds=0.8), floor=0.2)
    assert how == "model"
    # window of 10 is half new at frame 34 (6.8 s); minus the 0.8 s lag
    assert t == pytest.approx(6.0)


# ----------------------------------------------------------------------------- training windows

def test_clip_windows_cover_every_window_of_a_clip() -> None:
    r = W.clip_windows(track=3, length=12, class_index=1, t=5)
    assert r.end.tolist() == list(range(5, 13))
    assert set(r.a.tolist()) == {3} and set(r.y.tolist()) == {1} and set(r.kind.tolist()) == {W.CLIP}
    assert len(W.clip_windows(0, 4, 0, 5)) == 0                # shorter than a window: none


def test_recording_windows_are_labelled_by_their_newest_frame() -> None:
    times = np.arange(20) * 0.5                       # 0 .. 9.5 s
    segs = [Segment(0, 4.0, "football", False), Segment(4.0, 6.0, "commercial", True), Segment(7.0, 10.0, "football", False)]
    cidx = {"commercial": 0, "football": 1}
    r = W.recording_windows(0, times, segs, cidx, t=4)
    newest = times[r.end - 1]
    for tn, y in zip(newest, r.y):
        assert y == (0 if 4.0 <= tn < 6.0 else 1)
    assert not np.any((newest >= 6.0) & (newest < 7.0))   # an unlabelled gap gives no window
    # with a gap label (EDL: the gaps are programme) they are kept
    r2 = W.recording_windows(0, times, segs, cidx, t=4, gap_label="football")
    assert len(r2) == 20 - 4 + 1


def test_transition_windows_and_materialize() -> None:
    t, d = 6, 2
    a = np.stack([np.full(d, 100 + i, np.float32) for i in range(10)])
    b = np.stack([np.full(d, 200 + i, np.float32) for i in range(8)])
    rng = np.random.default_rng(0)
    r = W.transition_windows(0, len(a), 1, len(b), b_class=1, t=t, rng=rng, count=20)
    assert len(r) == 20
    assert set(r.kind.tolist()) == {W.TRANSITION} and set(r.y.tolist()) == {1}
    assert r.k.min() >= 1 and r.k.max() <= t - 1
    x = W.materialize([a, b], r, t)
    assert x.shape == (20, t, d) and x.dtype == np.float32
    for i in range(len(r)):
        k = int(r.k[i])
        assert x[i, :, 0].tolist() == [100 + j for j in range(10 - (t - k), 10)] + [200 + j for j in range(k)]
    plain = W.clip_windows(0, 10, 0, t)
    xp = W.materialize([a, b], plain, t)
    assert xp[0, :, 0].tolist() == [100, 101, 102, 103, 104, 105]
    assert xp[-1, :, 0].tolist() == [104, 105, 106, 107, 108, 109]
    # too short to make one
    assert len(W.transition_windows(0, 3, 1, 8, 1, t, rng, 5)) == 0


def test_concat_and_take() -> None:
    r = W.concat([W.clip_windows(0, 8, 0, 4), W.Recipes.empty(), W.clip_windows(1, 6, 1, 4)])
    assert len(r) == 5 + 3
    assert r.take(np.array([0, 7])).y.tolist() == [0, 1]
    assert len(W.concat([])) == 0


def test_class_weights_balance_the_classes() -> None:
    y = np.array([0] * 30 + [1] * 10)
    w = W.class_weights(y, 2)
    assert w[0] == pytest.approx(40 / (2 * 30)) and w[1] == pytest.approx(40 / (2 * 10))
    assert sum(w[c] * np.sum(y == c) for c in range(2)) == pytest.approx(len(y))
    assert W.class_weights(np.array([0, 0]), 2)[1] == 0.0
    assert math.isfinite(W.class_weights(np.array([0, 1]), 2)[0])
