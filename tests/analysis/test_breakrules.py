"""Break-structure rules (Comskip's break / spot / programme lengths): offline rewrite of the
closed segments, and the live form in the engine (withdrawn breaks, held ad ends, flags),
driven by synthetic probability sequences through the real engine."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from detector.analysis.breakrules import BreakRules, apply_offline, spot_lengths
from detector.analysis.decision import DecisionSettings
from detector.analysis.engine import ChannelEngine
from detector.analysis.framestats import frame_stats
from detector.analysis.segments import Segment
from detector.model.bundle import Bundle

FPS = 5.0
GREY = frame_stats(np.full((36, 64, 3), 90, np.uint8))
BLACK = frame_stats(np.zeros((36, 64, 3), np.uint8))


def seg(start: float, end: float, ad: bool, conf: float = 0.9) -> Segment:
    return Segment(start, end, "commercial" if ad else "football", ad, conf)


def shape(segments: list[Segment]) -> list[tuple[float, float, bool]]:
    return [(round(s.start, 2), round(s.end, 2), s.is_ad) for s in segments]


# ----------------------------------------------------------------------------- offline (whole recording)

RECORDING = [seg(0, 100, False), seg(100, 108, True), seg(108, 300, False), seg(300, 340, True, 0.8),
             seg(340, 345, False, 0.6), seg(345, 400, True, 0.9), seg(400, 600, False)]


def test_default_rules_change_nothing() -> None:
    out, actions = apply_offline(RECORDING, BreakRules(), "football", [320.0])
    assert out == RECORDING and actions == []


def test_a_break_shorter_than_min_break_becomes_programme_and_joins_its_neighbours() -> None:
    out, actions = apply_offline(RECORDING, BreakRules(min_break_seconds=30), "football")
    assert shape(out)[:1] == [(0, 300, False)]                   # 0-100, the 8 s "break", 108-300: one programme
    assert out[0].label == "football"
    assert [(a.rule, a.action, a.start, a.end) for a in actions] == [("min_break", "relabelled", 100, 108)]
    # min_spot: an ad run shorter than one spot is no break either
    out, actions = apply_offline(RECORDING, BreakRules(min_spot_seconds=10), "football")
    assert shape(out)[0] == (0, 300, False) and actions[0].rule == "min_spot"


def test_a_short_programme_gap_between_two_ad_runs_is_merged_into_the_break() -> None:
    out, actions = apply_offline(RECORDING, BreakRules(min_programme_seconds=20), "football")
    assert shape(out) == [(0, 100, False), (100, 108, True), (108, 300, False), (300, 400, True), (400, 600, False)]
    merged = out[3]
    # confidence in the ad, weighted by duration: 40 s at 0.8, 5 s of programme at 0.6 (= 0.4 ad), 55 s at 0.9
    assert merged.confidence == pytest.approx((40 * 0.8 + 5 * 0.4 + 55 * 0.9) / 100, abs=1e-4)
    assert [(a.rule, a.action, a.start, a.end) for a in actions] == [("min_programme", "merged", 340, 345)]
    # the gap at the recording's edges or between programme parts is never merged
    edge = [seg(0, 5, False), seg(5, 60, True), seg(60, 70, False)]
    assert apply_offline(edge, BreakRules(min_programme_seconds=20), "football")[0] == edge


def test_merging_comes_first_so_two_halves_of_a_split_break_survive_min_break() -> None:
    halves = [seg(0, 100, False), seg(100, 115, True), seg(115, 118, False), seg(118, 135, True), seg(135, 200, False)]
    out, _ = apply_offline(halves, BreakRules(min_break_seconds=30, min_programme_seconds=10), "football")
    assert shape(out) == [(0, 100, False), (100, 135, True), (135, 200, False)]
    # without the merge each half is too short and the whole break is gone
    out, _ = apply_offline(halves, BreakRules(min_break_seconds=30), "football")
    assert shape(out) == [(0, 200, False)]


def test_maxima_flag_and_log_but_never_cut() -> None:
    out, actions = apply_offline(RECORDING, BreakRules(max_break_seconds=50), "football")
    assert shape(out) == shape(RECORDING)
    assert [s.flags for s in out if s.is_ad] == [(), (), ("long_break",)]
    assert [(a.rule, a.action) for a in actions] == [("max_break", "flagged")]
    # max_spot: black runs split a break into spots; the 300-340 break has one at 320 (two 20 s spots)
    out, actions = apply_offline(RECORDING, BreakRules(max_spot_seconds=30), "football", spot_marks=[320.0, 360.0, 380.0])
    assert [s.flags for s in out if s.is_ad] == [(), (), ()]
    out, actions = apply_offline(RECORDING, BreakRules(max_spot_seconds=30), "football", spot_marks=[320.0])
    assert [s.flags for s in out if s.is_ad] == [(), (), ("long_spot",)]      # 345-400: 55 s without black
    assert "longest_spot=55.00" in actions[0].log_line("demo")


def test_spots_shorter_than_min_spot_do_not_split() -> None:
    assert spot_lengths(0, 60, [20, 40]) == [20, 20, 20]
    assert spot_lengths(0, 60, [20, 21, 40, 59]) == [20, 1, 19, 19, 1]
    assert spot_lengths(0, 60, [20, 21, 40, 59], min_spot=5) == [20, 20, 20]
    assert spot_lengths(0, 60, [-3, 75]) == [60]


# ----------------------------------------------------------------------------- live (the engine)

def fake_bundle() -> Bundle:
    return Bundle(root=Path("."), manifest={}, backbone_path=Path("backbone.onnx"), sequence_path=Path("sequence.onnx"),
                  classes=("commercial", "football"), ad_classes=("commercial",), analysis_fps=FPS, window_frames=5)


def newest_frame_model(windows: np.ndarray) -> np.ndarray:
    """p(ad) = feature 0 of the newest frame: the model switches at once, as the demo model nearly does."""
    p = windows[:, -1, 0]
    return np.stack([p, 1.0 - p], axis=1).astype(np.float32)


def drive(engine: ChannelEngine, plan: list[tuple[float, bool]], black_at: tuple[float, ...] = ()):
    """plan: (seconds, is_ad) runs of frames; black frames at the given times. Returns transitions, end time."""
    transitions = []
    t = 0.0
    for seconds, ad in plan:
        for _ in range(int(round(seconds * FPS))):
            stats = BLACK if any(abs(t - b) < 0.5 / FPS for b in black_at) else GREY
            _, tr = engine.push(t, np.array([1.0 if ad else 0.0, 0, 0, 0], np.float32), stats)
            if tr is not None:
                transitions.append(tr)
            t += 1.0 / FPS
    return transitions, t


def engine(**rules: float) -> ChannelEngine:
    return ChannelEngine(fake_bundle(), newest_frame_model, replace(DecisionSettings(), rules=BreakRules(**rules)), channel="demo")


def test_live_a_break_ending_before_min_break_is_withdrawn(caplog) -> None:
    plan = [(30, False), (12, True), (40, False), (60, True), (30, False)]
    plain = engine()
    transitions, _ = drive(plain, plan)
    assert [tr.is_ad for tr in transitions] == [False, True, False, True, False]
    assert not any(tr.ended.withdrawn for tr in transitions if tr.ended)
    assert plain.take_rule_actions() == []

    ruled = engine(min_break_seconds=30)
    with caplog.at_level(logging.INFO, logger="detector.analysis.engine"):
        transitions, _ = drive(ruled, plan)
    # the same events (a published start cannot be taken back), but the short break's end withdraws it
    assert [tr.is_ad for tr in transitions] == [False, True, False, True, False]
    ended = [tr.ended for tr in transitions if tr.ended is not None and tr.ended.is_ad]
    assert [s.withdrawn for s in ended] == [True, False]
    assert ended[0].duration == pytest.approx(12, abs=1.5)
    actions = ruled.take_rule_actions()
    assert [(a.rule, a.action) for a in actions] == [("min_break", "withdrawn")]
    assert ruled.take_rule_actions() == []                      # drained
    assert "break rule channel=demo rule=min_break action=withdrawn" in caplog.text


def test_live_a_break_cut_short_by_the_end_of_the_stream_is_not_withdrawn() -> None:
    e = engine(min_break_seconds=30)
    _, t = drive(e, [(30, False), (10, True)])
    assert e.finish(t).withdrawn is False


def test_live_min_programme_holds_the_ad_end_and_a_short_gap_continues_the_break() -> None:
    plan = [(30, False), (40, True), (8, False), (40, True), (40, False)]
    transitions, _ = drive(engine(), plan)
    assert [tr.is_ad for tr in transitions] == [False, True, False, True, False]     # the gap splits the break

    e = engine(min_programme_seconds=20)
    transitions, t = drive(e, plan)
    assert [tr.is_ad for tr in transitions] == [False, True, False]                   # one break
    end = transitions[-1]
    assert end.boundary == pytest.approx(30 + 40 + 8 + 40, abs=1.5)
    assert 20 <= end.decided_at - end.boundary < 21      # the latency it costs: min_programme, to the next window (1 s hop)
    assert end.ended.duration == pytest.approx(88, abs=1.5)
    assert [(a.rule, a.action) for a in e.take_rule_actions()] == [("min_programme", "merged")]
    assert e.finish(t).is_ad is False


def test_live_held_ad_end_at_shutdown_closes_the_break_where_it_ended() -> None:
    e = engine(min_programme_seconds=60)
    transitions, t = drive(e, [(30, False), (40, True), (20, False)])
    assert [tr.is_ad for tr in transitions] == [False, True]       # the end is still held
    assert e.current[1] is True
    last = e.finish(t)
    assert last.is_ad and last.end == pytest.approx(70, abs=1.5)


def test_live_maxima_are_flagged_once_while_the_break_runs(caplog) -> None:
    e = engine(max_break_seconds=60, max_spot_seconds=30)
    with caplog.at_level(logging.WARNING, logger="detector.analysis.engine"):
        transitions, _ = drive(e, [(30, False), (90, True), (30, False)], black_at=(50.0, 75.0, 100.0))
    actions = e.take_rule_actions()
    assert sorted(a.rule for a in actions) == ["max_break"]       # spots of 20-25 s: none too long
    assert transitions[-1].ended.flags == ("long_break",)
    assert caplog.text.count("rule=max_break") == 1

    e = engine(max_spot_seconds=30)
    transitions, _ = drive(e, [(30, False), (90, True), (30, False)], black_at=(50.0,))
    assert [a.rule for a in e.take_rule_actions()] == ["max_spot"]      # 50-120 without black
    assert transitions[-1].ended.flags == ("long_spot",)


# ----------------------------------------------------------------------------- config

def test_config_carries_the_rules_and_check_config_names_the_key() -> None:
    from detector.config import ConfigError, parse_config

    base = "model: models/demo\nchannels:\n  - name: demo\n    source: rtsp://127.0.0.1:8554/live\n"
    cfg = parse_config(base + "decision:\n  min_break_seconds: 20\n  max_break_seconds: 600\n  min_programme_seconds: 60\n")
    assert cfg.decision.to_settings().rules == BreakRules(min_break_seconds=20, max_break_seconds=600, min_programme_seconds=60)
    assert parse_config(base).decision.to_settings().rules == BreakRules()        # default: off
    with pytest.raises(ConfigError) as info:
        parse_config(base + "decision:\n  min_break_seconds: 30\n  max_break_seconds: 10\n  min_spot_seconds: -1\n",
                     origin="cfg.yaml")
    errors = {path: msg for path, _, msg in info.value.errors}
    assert set(errors) == {"decision.max_break_seconds", "decision.min_spot_seconds"}
    assert "must be >= min_break_seconds (30)" in errors["decision.max_break_seconds"]


# ----------------------------------------------------------------------------- what subscribers see

def test_live_segment_end_of_a_withdrawn_break_says_withdrawn_and_the_metric_counts_it() -> None:
    """The inference loop's per-frame path with the real metrics and the real event schema."""
    import time

    from detector.events.schema import make_event
    from detector.live.channel import Channel
    from detector.live.inference_loop import InferenceLoop
    from detector.live.metrics import Metrics
    from detector.live.ring import FrameMeta, Ring

    events: list[dict] = []

    class Recorder:
        def publish(self, type: str, channel: str, **fields) -> None:
            events.append(make_event(type, channel, len(events) + 1, "0" * 32, time.time(), **fields))

    metrics = Metrics(["demo"])
    ch = Channel("demo", Ring(1, (8, 8, 3)), engine(min_break_seconds=30))
    loop = InferenceLoop([ch], fake_bundle(), None, 1, 0, metrics, Recorder(), "0" * 32, make_engine=lambda *a: None)  # type: ignore[arg-type]
    t, now = 0.0, time.time()
    for seconds, ad in [(30, False), (12, True), (40, False), (60, True), (30, False)]:
        for _ in range(int(seconds * FPS)):
            meta = FrameMeta(int(t * FPS), t, now + t, time.monotonic(), GREY, 0, int(t * 90000))
            loop._analyse(ch, meta, np.array([1.0 if ad else 0.0, 0, 0, 0], np.float32))
            t += 1.0 / FPS
    ends = [e for e in events if e["type"] == "segment.end" and e["is_ad"]]
    assert [e.get("withdrawn") for e in ends] == [True, None]       # only the short break; the key only when true
    assert [e["scte35"].get("cancel") for e in ends] == [True, None]    # its cue cancels the event instead of a cue-in
    assert ends[0]["duration"] == pytest.approx(12, abs=1.5)
    sample = metrics.registry.get_sample_value
    assert sample("ad_detector_break_rule_actions_total", {"channel": "demo", "rule": "min_break"}) == 1
    assert sample("ad_detector_break_rule_actions_total", {"channel": "demo", "rule": "max_break"}) == 0
