"""`evaluate`'s figures: hand-checkable cases and a property test."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from detector.offline.scoring import score, table
from detector.analysis.segments import Segment

DURATION = 300.0
RATIOS = ("frame_accuracy", "ad_precision", "ad_recall", "ad_f1", "boundary_recall_1s", "boundary_recall_2s")


def ads(*spans: tuple[float, float], label: str = "commercial") -> list[Segment]:
    return [Segment(s, e, label, True) for s, e in spans]


def covering(*spans: tuple[float, float]) -> list[Segment]:
    """Programme and ads alternating over the whole recording, as `classify` produces."""
    out, t = [], 0.0
    for s, e in spans:
        if s > t:
            out.append(Segment(t, s, "programme", False))
        out.append(Segment(s, e, "commercial", True))
        t = e
    if t < DURATION:
        out.append(Segment(t, DURATION, "programme", False))
    return out


TRUTH = ads((60.0, 120.0), (200.0, 230.0))


def test_perfect_prediction_scores_one() -> None:
    r = score(covering((60.0, 120.0), (200.0, 230.0)), TRUTH, DURATION)
    for key in RATIOS:
        assert r[key] == 1.0, key
    assert r["boundary_error_median_s"] == 0.0
    assert r["boundaries_true"] == 4 and r["boundaries_found"] == 4
    assert r["boundary_errors_s"] == [0.0, 0.0, 0.0, 0.0]
    assert r["ad_breaks_true"] == 2 and r["ad_breaks_detected"] == 2
    json.dumps(r)  # evaluate prints it


def test_boundaries_shifted_half_a_second() -> None:
    r = score(covering((60.5, 120.5), (200.5, 230.5)), TRUTH, DURATION)
    assert r["boundary_recall_1s"] == 1.0
    assert r["boundary_recall_2s"] == 1.0
    assert r["boundary_error_median_s"] == 0.5
    assert r["boundary_errors_s"] == [0.5, 0.5, 0.5, 0.5]  # predicted minus true: late
    assert r["ad_precision"] < 1.0 and r["ad_recall"] < 1.0
    assert abs(r["frame_accuracy"] - (1 - 2.0 / DURATION)) < 1e-3


def test_shift_between_tolerances() -> None:
    r = score(covering((58.5, 120.0), (200.0, 230.0)), TRUTH, DURATION)
    assert r["boundary_recall_1s"] == 0.75
    assert r["boundary_recall_2s"] == 1.0
    assert r["boundary_errors_s"][0] == -1.5


def test_missing_break_lowers_recall() -> None:
    r = score(covering((60.0, 120.0)), TRUTH, DURATION)
    assert r["ad_breaks_true"] == 2 and r["ad_breaks_detected"] == 1
    assert r["ad_precision"] == 1.0
    assert abs(r["ad_recall"] - 60 / 90) < 1e-3
    assert r["boundary_recall_1s"] == 0.5 and r["boundary_recall_2s"] == 0.5
    assert r["boundary_errors_s"] == [0.0, 0.0, None, None]
    assert r["boundary_error_median_s"] == 0.0


def test_adjacent_ads_are_one_break() -> None:
    truth = ads((60.0, 90.0), (90.0, 120.0))
    r = score(covering((60.0, 120.0)), truth, DURATION)
    assert r["ad_breaks_true"] == 1 and r["boundaries_true"] == 2
    assert r["boundary_recall_1s"] == 1.0


def test_ad_at_start_and_end_has_no_boundary_there() -> None:
    truth = ads((0.0, 30.0), (280.0, 300.0))
    r = score(covering((0.0, 30.0), (280.0, 300.0)), truth, DURATION)
    assert r["boundaries_true"] == 2  # the end of the first break and the start of the last
    assert r["boundary_recall_1s"] == 1.0


def test_all_programme_recording() -> None:
    programme = [Segment(0.0, DURATION, "programme", False)]
    r = score(programme, [], DURATION)
    for key in RATIOS:
        assert r[key] == 1.0, key
    assert r["boundary_error_median_s"] is None
    assert r["boundaries_true"] == 0 and r["ad_breaks_true"] == 0 and r["ad_breaks_detected"] == 0

    false_alarm = score(covering((100.0, 130.0)), programme, DURATION)
    assert false_alarm["ad_precision"] == 0.0
    assert false_alarm["ad_recall"] == 0.0
    assert false_alarm["ad_f1"] == 0.0
    assert false_alarm["boundary_recall_1s"] == 1.0  # nothing to find
    assert false_alarm["ad_breaks_predicted"] == 1


def test_nothing_predicted_with_true_ads() -> None:
    r = score([Segment(0.0, DURATION, "programme", False)], TRUTH, DURATION)
    assert r["ad_precision"] == 0.0 and r["ad_recall"] == 0.0 and r["ad_f1"] == 0.0
    assert r["boundary_recall_2s"] == 0.0 and r["boundary_error_median_s"] is None


def test_matching_is_one_to_one_and_by_kind() -> None:
    # one predicted break starting near both true starts: only one true start can claim it
    truth = ads((100.0, 101.0), (101.5, 150.0))
    r = score(covering((100.2, 150.0)), truth, DURATION)
    starts = [b for b in r["boundaries"] if b["kind"] == "ad_start"]
    assert len(starts) == 2
    assert sorted(x["error_s"] is None for x in starts) == [False, True]


def test_table_shows_main_figures() -> None:
    text = table(score(covering((60.5, 120.5)), TRUTH, DURATION))
    for words in ("frame accuracy", "ad precision", "ad recall", "ad F1", "within 1 s", "within 2 s", "median boundary error", "1 of 2"):
        assert words in text
    rows = text.splitlines()[2:]
    value_columns = {len(line) - len(line.split("  ", 1)[1].lstrip()) for line in rows}
    assert len(value_columns) == 1, text  # values line up in one column


@st.composite
def segment_lists(draw: st.DrawFn, duration: float) -> list[Segment]:
    cuts = sorted(set(draw(st.lists(st.floats(0.0, duration, allow_nan=False), max_size=12))))
    segs = []
    for start, end in zip(cuts, cuts[1:]):
        if end - start > 1e-3:
            segs.append(Segment(start, end, draw(st.sampled_from(["commercial", "promo", "programme"])), draw(st.booleans())))
    return segs


@settings(max_examples=150, deadline=None)
@given(data=st.data(), duration=st.floats(0.05, 500.0, allow_nan=False))
def test_score_never_raises_and_ratios_stay_in_range(data: st.DataObject, duration: float) -> None:
    pred = data.draw(segment_lists(duration))
    truth = data.draw(segment_lists(duration))
    r = score(pred, truth, duration)
    for key in RATIOS:
        assert 0.0 <= r[key] <= 1.0, (key, r[key])
    assert 0 <= r["ad_breaks_detected"] <= r["ad_breaks_true"]
    assert len(r["boundary_errors_s"]) == r["boundaries_true"]
    if r["boundary_error_median_s"] is not None:
        assert r["boundary_error_median_s"] >= 0.0
    json.dumps(r)
    table(r)


# ----------------------------------------------------------------------------- trap spans

def test_span_scores_count_agreement_inside_each_span_and_per_kind() -> None:
    from detector.offline.scoring import span_scores

    truth = covering((100.0, 150.0))
    pred = covering((110.0, 150.0))                # misses the first 10 s of the break
    spans = [(100.0, 120.0, "ad_on_pitch"), (200.0, 210.0, "studio_programme"), (105.0, 115.0, "ad_on_pitch")]
    out = span_scores(pred, truth, spans, DURATION)
    assert out["count"] == 3
    assert [s["accuracy"] for s in out["spans"]] == [0.5, 1.0, 0.5]
    pitch = out["by_kind"]["ad_on_pitch"]
    assert (pitch["spans"], pitch["points"], pitch["seconds"], pitch["accuracy"]) == (2, 200, 20.0, 0.5)  # overlap counted once
    assert out["by_kind"]["studio_programme"]["accuracy"] == 1.0
    assert out["accuracy"] == round((100 + 100) / 300, 4)     # pooled: 10 s wrong out of 30 s
    assert span_scores(pred, truth, [], DURATION) == {"count": 0, "accuracy": None, "by_kind": {}, "spans": []}
    assert span_scores(pred, truth, [(400.0, 410.0, "late")], DURATION)["accuracy"] is None   # past the end: no point
    text = table({**score(pred, truth, DURATION), "trap_spans": out})
    assert "accuracy on trap spans (3)" in text and "ad_on_pitch (2, 20 s)" in text


def test_json_truth_gives_segments_and_spans_and_names_what_is_wrong(tmp_path) -> None:
    import pytest

    from detector.errors import UsageError
    from detector.offline.truth import read_truth

    good = {"segments": [{"start": 0, "end": 30, "label": "football"}, {"start": 30, "end": 45.5, "label": "commercial"}],
            "traps": [[31.0, 36.0, "ad_on_pitch"]]}
    path = tmp_path / "t.truth.json"
    path.write_text(json.dumps(good))
    truth = read_truth(path, {"commercial"})
    assert [(s.start, s.end, s.is_ad) for s in truth.segments] == [(0.0, 30.0, False), (30.0, 45.5, True)]
    assert truth.spans == [(31.0, 36.0, "ad_on_pitch")]
    for bad, needle in [({"traps": []}, "'segments' list"),
                        ({**good, "traps": [[36.0, 31.0, "x"]]}, "traps[0]: ends (31.0) at or before it starts"),
                        ({**good, "traps": [[1, 2]]}, "traps[0]: expected [start, end, kind]"),
                        ({"segments": [{"start": 0, "end": 30, "label": "football"}, {"start": 20, "end": 40, "label": "x"}]},
                         "overlaps"),
                        ({"segments": [{"start": "a", "end": 3, "label": "x"}]}, "segments[0]: 'a' is not a number")]:
        path.write_text(json.dumps(bad))
        with pytest.raises(UsageError, match=re_escape(needle)):
            read_truth(path, {"commercial"})
    path.write_text("{not json")
    with pytest.raises(UsageError, match="not valid JSON"):
        read_truth(path, {"commercial"})


def re_escape(text: str) -> str:
    import re

    return re.escape(text)
