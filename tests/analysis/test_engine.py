"""The channel engine (window -> sequence -> decision -> boundary) with a fake bundle and a
fake sequence model: non-finite probabilities, bounded segment retention, boundary kinds."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest

from detector.analysis.boundary import Cue, choose_boundary
from detector.analysis.decision import Decider, DecisionSettings
from detector.analysis.engine import ChannelEngine
from detector.analysis.framestats import frame_stats
from detector.model.bundle import Bundle

FPS = 5.0
T = 10                      # 2 s windows: quick to fill


def fake_bundle(window_frames: int = T, manifest: dict | None = None) -> Bundle:
    return Bundle(root=Path("."), manifest=manifest or {}, backbone_path=Path("backbone.onnx"), sequence_path=Path("sequence.onnx"),
                  classes=("commercial", "football"), ad_classes=("commercial",), analysis_fps=FPS, window_frames=window_frames)


def mean_model(windows: np.ndarray) -> np.ndarray:
    """p(ad) = mean of feature 0 over the window; feature 1 set to NaN poisons the window."""
    p = windows[:, :, 0].mean(axis=1) + windows[:, :, 1].sum(axis=1) * 0.0
    return np.stack([p, 1.0 - p], axis=1).astype(np.float32)


STATS = frame_stats(np.full((36, 64, 3), 90, np.uint8))


def feature(ad: bool, nan: bool = False) -> np.ndarray:
    return np.array([1.0 if ad else 0.0, np.nan if nan else 0.0, 0.0, 0.0], np.float32)


def drive(engine: ChannelEngine, plan: list[tuple[float, bool, bool]], t0: float = 0.0):
    """plan: (seconds, is_ad, nan) runs of frames. Returns (results, transitions, end time)."""
    results, transitions = [], []
    t = t0
    for seconds, ad, nan in plan:
        for _ in range(int(round(seconds * FPS))):
            r, tr = engine.push(t, feature(ad, nan), STATS)
            if r is not None:
                results.append(r)
            if tr is not None:
                transitions.append(tr)
            t += 1.0 / FPS
    return results, transitions, t


# ----------------------------------------------------------------------------- non-finite probabilities (issue 6)

def test_nan_windows_are_skipped_counted_and_never_poison_the_segment(caplog) -> None:
    engine = ChannelEngine(fake_bundle(), mean_model, DecisionSettings())
    with caplog.at_level(logging.WARNING, logger="detector.analysis.engine"):
        results, transitions, t = drive(engine, [(20, False, False), (1, False, True), (20, True, False), (20, False, False)])
    # the two windows (hop 5 frames, T = 10) that hold one of the five NaN frames were skipped
    assert engine.nonfinite_windows == 2
    assert all(math.isfinite(r.p_ad) and np.all(np.isfinite(r.probs)) for r in results)
    assert [tr.is_ad for tr in transitions] == [False, True, False]
    for tr in transitions:
        assert math.isfinite(tr.p_ad), tr
        assert tr.ended is None or math.isfinite(tr.ended.confidence), tr
    seg = engine.finish(t)
    assert seg is not None and math.isfinite(seg.confidence)
    assert all(math.isfinite(s.confidence) for s in engine.segments)
    # logged once for the episode, not once per window
    lines = [r.getMessage() for r in caplog.records if "non-finite" in r.getMessage()]
    assert len(lines) == 1, lines


def test_a_stream_of_nan_windows_is_logged_once_per_interval(caplog) -> None:
    engine = ChannelEngine(fake_bundle(), mean_model, DecisionSettings())
    with caplog.at_level(logging.WARNING, logger="detector.analysis.engine"):
        results, transitions, _ = drive(engine, [(60, True, True)])
    assert results == [] and transitions == []
    assert engine.nonfinite_windows == (60 * int(FPS) - T) // 5 + 1
    lines = [r.getMessage() for r in caplog.records if "non-finite" in r.getMessage()]
    assert len(lines) == 1, lines
    assert engine.current is None


def test_first_window_after_a_reset_can_be_nan() -> None:
    engine = ChannelEngine(fake_bundle(), mean_model, DecisionSettings())
    _, transitions, t = drive(engine, [(10, True, False)])
    assert [tr.is_ad for tr in transitions] == [True]
    engine.reset()
    _, transitions, t = drive(engine, [(2, True, True), (10, True, False)], t0=t + 5)
    assert transitions == []                      # still the same ad: nothing changed, nothing NaN published
    assert engine.decider.state is True
    assert all(math.isfinite(v) for v in engine.decider._recent)


def test_decider_ignores_non_finite_probabilities() -> None:
    d = Decider(["commercial", "football"], ["commercial"], DecisionSettings(exit_confirm_seconds=0.0))
    assert d.push(np.array([np.nan, np.nan]), 8.0) is None
    assert d.state is None
    assert d.push(np.array([np.inf, 0.0]), 9.0) is None
    ch = d.push(np.array([0.9, 0.1]), 10.0)
    assert ch is not None and ch.is_ad and math.isfinite(ch.p_ad) and ch.p_ad == pytest.approx(0.9)
    d.started(0.0)
    # NaN in a running stream: ignored, the smoothing is not poisoned
    assert d.push(np.array([np.nan, 0.5]), 11.0) is None
    ch = d.push(np.array([0.1, 0.9]), 14.0)
    assert ch is None                             # smoothing: mean of 0.9 and 0.1, not NaN
    ch = d.push(np.array([0.1, 0.9]), 15.0)
    assert ch is not None and not ch.is_ad and math.isfinite(ch.p_ad)


# ----------------------------------------------------------------------------- bounded segments (issue 14)

def alternating(n_changes: int, seconds: float = 6.0) -> list[tuple[float, bool, bool]]:
    return [(seconds, i % 2 == 1, False) for i in range(n_changes + 1)]


def test_segments_are_kept_in_full_by_default_for_offline_use() -> None:
    engine = ChannelEngine(fake_bundle(), mean_model, DecisionSettings())
    _, transitions, t = drive(engine, alternating(30))
    engine.finish(t)
    assert len(transitions) == 31
    assert len(engine.segments) == 31
    assert engine.segments_closed == 31


def test_live_retention_is_bounded() -> None:
    engine = ChannelEngine(fake_bundle(), mean_model, DecisionSettings(), keep_segments=5)
    _, transitions, t = drive(engine, alternating(30))
    engine.finish(t)
    assert len(transitions) == 31
    assert len(engine.segments) == 5
    assert engine.segments_closed == 31
    # the most recent ones, in order, the last ending where the stream ended
    ends = [s.end for s in engine.segments]
    assert ends == sorted(ends) and ends[-1] == pytest.approx(t)
    assert [s.start for s in engine.segments[1:]] == pytest.approx(ends[:-1])
    none_kept = ChannelEngine(fake_bundle(), mean_model, DecisionSettings(), keep_segments=0)
    _, transitions, t = drive(none_kept, alternating(10))
    assert len(transitions) == 11 and len(none_kept.segments) == 0 and none_kept.segments_closed == 10
    with pytest.raises(ValueError):
        ChannelEngine(fake_bundle(), mean_model, DecisionSettings(), keep_segments=-1)


def test_adopt_keeps_the_retention_bound() -> None:
    old = ChannelEngine(fake_bundle(), mean_model, DecisionSettings(), keep_segments=3)
    _, _, t = drive(old, alternating(6))
    new = ChannelEngine(fake_bundle(), mean_model, DecisionSettings(), keep_segments=3)
    new.adopt(old, keep_window=True)
    _, transitions, t = drive(new, alternating(6), t0=t)
    assert len(new.segments) <= 3


# ----------------------------------------------------------------------------- boundary kinds (issue 13, engine side)

def test_boundary_kinds_are_the_contract_names() -> None:
    from detector.analysis.boundary import BOUNDARY_KINDS

    assert BOUNDARY_KINDS == ("stream_start", "cut", "black", "silence", "model", "stream_end")
    engine = ChannelEngine(fake_bundle(), mean_model, DecisionSettings())
    _, transitions, _ = drive(engine, alternating(4))
    assert transitions[0].boundary_kind == "stream_start"
    assert all(tr.boundary_kind in BOUNDARY_KINDS for tr in transitions)
    assert all(tr.boundary_kind != "stream_start" for tr in transitions[1:])
    # after a reset that re-decides a different state, the new segment is placed by the model, not a stream start
    assert choose_boundary([Cue(1.0, "cut", 0.5)], 2.0, 0.6, 0.0)[1] in BOUNDARY_KINDS
    assert choose_boundary([], 2.0, 0.6, 0.0)[1] in BOUNDARY_KINDS


# ----------------------------------------------------------------------------- short clips: one padding rule (issue 13 item 1)

def test_padded_training_windows_are_what_the_live_window_holds_at_stream_start() -> None:
    from detector.analysis.window import Window, min_frames_for, pad_front
    from ad_detector_train import windows as W

    t, d = 8, 3
    m = min_frames_for(t)
    assert m == 4
    clip = np.random.default_rng(0).normal(size=(6, d)).astype(np.float32)   # shorter than the window
    live = Window(t, hop=1, min_frames=m)
    seen = []
    for i, f in enumerate(clip):
        if live.push(f, i / FPS):
            seen.append(live.current())
    r = W.padded_windows(0, len(clip), 1, t, m)
    assert r.end.tolist() == [4, 5, 6] and set(r.kind.tolist()) == {W.PADDED}
    trained = W.materialize([clip], r, t)
    assert len(seen) == len(trained) == 3
    for a, b in zip(seen, trained):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(trained[0], pad_front(clip[:4], t))
    assert trained[0][:5].tolist() == [clip[0].tolist()] * 5       # the oldest frame repeated in front
    # without min_frames the live window still waits for T frames (bundles without window_min_frames)
    w = Window(t, hop=1)
    assert not any(w.push(f, 0.0) for f in clip)
    with pytest.raises(ValueError):
        Window(t, 1, min_frames=t + 1)


def test_chain_windows_join_a_short_clip_to_another_of_its_class() -> None:
    from ad_detector_train import windows as W

    t = 10
    a = np.stack([np.full(2, 100 + i, np.float32) for i in range(6)])
    b = np.stack([np.full(2, 200 + i, np.float32) for i in range(20)])
    r = W.joined_windows(0, len(a), 1, len(b), 1, t, np.random.default_rng(0), 30, W.CHAIN)
    assert len(r) == 30 and r.k.min() >= t - len(a) and r.k.max() <= t - 1
    x = W.materialize([a, b], r, t)
    for i in range(len(r)):
        k = int(r.k[i])
        assert x[i, :, 0].tolist() == [100 + j for j in range(6 - (t - k), 6)] + [200 + j for j in range(k)]
    assert len(W.joined_windows(0, 3, 1, 4, 1, t, np.random.default_rng(0), 5, W.CHAIN)) == 0    # 3 + 4 < 10: no full window


def test_engine_decides_from_the_bundles_window_min_frames() -> None:
    plain = ChannelEngine(fake_bundle(), mean_model, DecisionSettings())
    early = ChannelEngine(fake_bundle(manifest={"window_min_frames": 5}), mean_model, DecisionSettings())
    bogus = ChannelEngine(fake_bundle(manifest={"window_min_frames": 99}), mean_model, DecisionSettings())
    first = {}
    for name, engine in (("plain", plain), ("early", early), ("bogus", bogus)):
        results, transitions, _ = drive(engine, [(4, True, False)])
        first[name] = results[0].time
        assert transitions[0].boundary_kind == "stream_start" and transitions[0].is_ad
    assert first["plain"] == pytest.approx((T - 1) / FPS)
    assert first["early"] == pytest.approx(4 / FPS)
    assert first["bogus"] == first["plain"]


# ----------------------------------------------------------------------------- programme-like shots inside a break (issue 13 item 2)

def test_a_short_confident_programme_excursion_inside_a_break_does_not_end_it() -> None:
    """What `make demo` showed: 2-3 windows of p(ad) ~ 0 in the middle of a break (a green ad shot the
    model takes for football) ended the ad, and min_segment_seconds then held back the return, so a
    3 s programme segment was published inside the break. An ad now ends only once the programme
    side has held for exit_confirm_seconds."""
    # with the default (3 s at a 1 s hop) up to 2 windows of programme inside a break are absorbed;
    # a longer confirmation absorbs longer ones
    cases = [(DecisionSettings(), n) for n in (1, 2)] + [(DecisionSettings(exit_confirm_seconds=5.0), n) for n in (1, 2, 3, 4)]
    for s, excursion in cases:
        p = [0.02] * 20 + [0.99] * 40 + [0.0] * excursion + [0.99] * 30 + [0.01] * 30
        d = Decider(["commercial", "football"], ["commercial"], s)
        changes = []
        for i, pa in enumerate(p):
            ch = d.push(np.array([pa, 1 - pa]), 8.0 + i)
            if ch is not None:
                changes.append(ch)
                d.started(ch.decided_at)
        assert [c.is_ad for c in changes] == [False, True, False], (s, excursion, changes)
        # the real end of the break is still decided, within the confirmation, and the boundary search starts before it
        real_end = 8.0 + 90 + excursion                     # media time of the first programme window
        end = changes[-1]
        assert real_end < end.decided_at <= real_end + s.exit_confirm_seconds + s.smoothing_windows, end
        assert end.search_from <= real_end


def test_entering_an_ad_is_not_delayed_by_the_exit_confirmation() -> None:
    d = Decider(["commercial", "football"], ["commercial"], DecisionSettings())
    times = []
    for i, pa in enumerate([0.01] * 20 + [0.99] * 10):
        ch = d.push(np.array([pa, 1 - pa]), 8.0 + i)
        if ch is not None:
            times.append((ch.decided_at, ch.is_ad))
            d.started(ch.decided_at)
    assert times == [(8.0, False), (8.0 + 21, True)]        # two windows of ad, as before


def test_engine_publishes_no_segment_for_a_programme_like_shot_inside_a_break() -> None:
    engine = ChannelEngine(fake_bundle(window_frames=5), lambda w: np.stack([w[:, -1, 0], 1 - w[:, -1, 0]], axis=1), DecisionSettings())
    # a model that only looks at the newest frame, as the demo model nearly does: 2.4 s of "football" inside a break
    _, transitions, _ = drive(engine, [(20, False, False), (40, True, False), (2.4, False, False), (30, True, False), (30, False, False)])
    assert [tr.is_ad for tr in transitions] == [False, True, False]
    assert transitions[2].boundary == pytest.approx(20 + 40 + 2.4 + 30, abs=1.0)


def test_exit_confirmation_can_be_turned_off() -> None:
    s = DecisionSettings(exit_confirm_seconds=0.0)
    d = Decider(["commercial", "football"], ["commercial"], s)
    changes = []
    for i, pa in enumerate([0.02] * 20 + [0.99] * 40 + [0.0] * 2 + [0.99] * 30):
        ch = d.push(np.array([pa, 1 - pa]), 8.0 + i)
        if ch is not None:
            changes.append(ch.is_ad)
            d.started(8.0 + i)
    assert changes == [False, True, False, True]            # the old behaviour
