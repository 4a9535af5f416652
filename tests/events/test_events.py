"""The event schema (CONTRACT.md "Events") without sockets: building, encoding, decoding."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.events import schema as events
from detector.events.schema import EventError, decode, encode, make_event, rfc3339

RUN = "0123456789abcdef"
T0 = 1795888800.123456  # 2026-11-28T18:00:00.123Z
RFC3339_MS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z\Z")

SEGMENT = dict(label="commercial", is_ad=True, confidence=0.93, segment_id="demo-7", time=T0 - 2.5, stream_time=1234.5,
               pts=8_589_900_000, boundary="black")
HEARTBEAT = dict(state="football", p_ad=0.12, stream_up=True, fps_in=25.0, fps_analyzed=5.0)
CUE = dict(pts=1_234_567, packet_pts=1_000_000, command="splice_insert", out_of_network=True, event_id=42,
           base64="/DAlAAAAAAAAAP/wFAUAAAAqf+/+ABLWh34AApJ8AAAAAAAAOQqkVw==")
FIELDS = {
    "segment.start": SEGMENT,
    "segment.end": {**SEGMENT, "duration": 31.5},
    "heartbeat": HEARTBEAT,
    "stream.up": {"source": "rtsp://user:***@cam/live"},
    "stream.down": {"reason": "stalled"},
    "cue.upstream": CUE,
}
ENVELOPE = {"schema", "type", "channel", "seq", "run_id", "emitted"}


def build(kind: str, seq: int = 1, channel: str = "demo", **override) -> dict:
    return make_event(kind, channel, seq, RUN, T0, **{**FIELDS[kind], **override})


# -- rfc3339 ------------------------------------------------------------------------------------

def test_rfc3339_is_utc_with_milliseconds():
    assert rfc3339(T0) == "2026-11-28T18:00:00.123Z"
    assert rfc3339(0) == "1970-01-01T00:00:00.000Z"
    # truncated, never rounded up into the next second
    assert rfc3339(1795888800.9999) == "2026-11-28T18:00:00.999Z"


def test_rfc3339_accepts_aware_datetimes_in_any_zone():
    paris = timezone(timedelta(hours=1))
    assert rfc3339(datetime(2026, 11, 28, 19, 0, 0, 123999, tzinfo=paris)) == "2026-11-28T18:00:00.123Z"


def test_rfc3339_refuses_naive_datetimes_and_non_finite_numbers():
    with pytest.raises(ValueError, match="naive"):
        rfc3339(datetime(2026, 11, 28, 18, 0, 0))
    for bad in (float("nan"), float("inf"), True, "2026"):
        with pytest.raises(ValueError):
            rfc3339(bad)


@given(st.floats(min_value=0, max_value=4e9, allow_nan=False))
def test_rfc3339_format_property(ts):
    text = rfc3339(ts)
    assert RFC3339_MS.match(text), text
    parsed = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()
    assert -1e-6 <= ts - parsed < 0.001 + 1e-6  # truncated (1e-6: float noise of the check itself)


# -- make_event ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", events.TYPES)
def test_every_type_carries_the_envelope(kind):
    event = build(kind, seq=3)
    assert event["schema"] == 1 == events.SCHEMA
    assert event["type"] == kind and event["channel"] == "demo"
    assert event["seq"] == 3 and event["run_id"] == RUN
    assert RFC3339_MS.match(event["emitted"])
    assert list(event)[:6] == ["schema", "type", "channel", "seq", "run_id", "emitted"]


@pytest.mark.parametrize("kind", ["segment.start", "segment.end"])
def test_segment_fields(kind):
    event = build(kind)
    assert event["label"] == "commercial" and event["is_ad"] is True
    assert event["confidence"] == 0.93 and event["segment_id"] == "demo-7"
    assert event["time"] == "2026-11-28T17:59:57.623Z"  # the boundary, not the decision
    assert event["stream_time"] == 1234.5
    assert event["pts"] == 8_589_900_000 and event["boundary"] == "black"
    assert ("duration" in event) == (kind == "segment.end")
    expected = set(events.SEGMENT_FIELDS) | ENVELOPE | ({"duration"} if kind == "segment.end" else set())
    assert set(event) == expected


def test_event_types_and_boundary_kinds_are_defined_once_as_the_contract_names_them():
    assert events.TYPES == ("segment.start", "segment.end", "heartbeat", "stream.up", "stream.down", "cue.upstream")
    # the contract's five, plus `stream_end` (segment.end when the stream or the daemon stops)
    assert events.BOUNDARIES == ("stream_start", "cut", "black", "silence", "model", "stream_end")
    from detector.analysis.boundary import BOUNDARY_KINDS

    assert events.BOUNDARIES is BOUNDARY_KINDS
    assert {"pts", "boundary"} <= set(events.SEGMENT_FIELDS)
    assert events.PTS_MODULUS == 2 ** 33


@pytest.mark.parametrize("pts", [0, 1, 2 ** 33 - 1, None])
@pytest.mark.parametrize("boundary", ["stream_start", "cut", "black", "silence", "model", "stream_end"])
def test_segment_pts_and_boundary(pts, boundary):
    event = build("segment.start", pts=pts, boundary=boundary)
    assert event["pts"] == pts and type(event["pts"]) is type(pts) and event["boundary"] == boundary
    assert decode(encode(event)) == event


def test_segment_end_extensions_flags_and_loudness_roundtrip():
    event = build("segment.end", flags=["long_break"], integrated_lufs=-23.4)
    assert event["flags"] == ["long_break"] and event["integrated_lufs"] == -23.4
    assert build("segment.end", integrated_lufs=None)["integrated_lufs"] is None    # nothing measured


def test_segment_pts_may_be_a_numpy_integer():
    np = pytest.importorskip("numpy")
    event = build("segment.end", pts=np.int64(90_000), boundary="cut")
    assert event["pts"] == 90_000 and type(event["pts"]) is int


@pytest.mark.parametrize("override, message", [
    ({"pts": -1}, "pts"),
    ({"pts": 2 ** 33}, "pts"),
    ({"pts": 90000.0}, "pts"),
    ({"pts": True}, "pts"),
    ({"pts": "90000"}, "pts"),
    ({"boundary": "scene"}, "boundary.*stream_start, cut, black, silence, model"),
    ({"boundary": None}, "boundary"),
    ({"boundary": "start"}, "boundary"),
    ({"flags": "long_break"}, "flags"),
    ({"flags": [1]}, "flags"),
    ({"integrated_lufs": "loud"}, "integrated_lufs"),
    ({"integrated_lufs": 1e9}, "integrated_lufs"),
])
def test_segment_pts_and_boundary_violations(override, message):
    for kind in ("segment.start", "segment.end"):
        with pytest.raises(ValueError, match=message):
            build(kind, **override)
        bad = {**build(kind), **override}
        with pytest.raises(EventError, match=message.split(".")[0]):
            decode([f"{kind}/demo".encode(), json.dumps(bad).encode()])


def test_decode_accepts_segment_events_journaled_before_pts_and_boundary():
    """A replay after an upgrade hands out events written before the fields existed: they decode
    (without inventing values); new events must carry both."""
    old = {k: v for k, v in build("segment.end").items() if k not in ("pts", "boundary")}
    assert decode([b"segment.end/demo", json.dumps(old).encode()]) == old


def test_cue_upstream_fields():
    event = build("cue.upstream")
    assert {k: event[k] for k in CUE} == CUE
    immediate = build("cue.upstream", pts=None, out_of_network=None, event_id=None, command="time_signal")
    assert immediate["pts"] is None and immediate["out_of_network"] is None and immediate["event_id"] is None
    for override, message in (({"pts": 2 ** 33}, "pts"), ({"packet_pts": -5}, "packet_pts"), ({"command": ""}, "command"),
                              ({"out_of_network": "yes"}, "out_of_network"), ({"event_id": 1.5}, "event_id"),
                              ({"base64": ""}, "base64")):
        with pytest.raises(ValueError, match=message):
            build("cue.upstream", **override)


def test_heartbeat_fields_and_unknown_state():
    event = build("heartbeat")
    assert set(event) == ENVELOPE | set(events.HEARTBEAT_FIELDS)
    assert (event["state"], event["p_ad"], event["stream_up"], event["fps_in"], event["fps_analyzed"]) == \
        ("football", 0.12, True, 25.0, 5.0)
    idle = build("heartbeat", state="unknown", p_ad=None, stream_up=False, fps_in=0, fps_analyzed=0)
    assert idle["p_ad"] is None and idle["state"] == "unknown" and idle["fps_in"] == 0.0


def test_stream_events_take_optional_extras():
    assert build("stream.down")["reason"] == "stalled"
    assert set(make_event("stream.up", "demo", 1, RUN, T0)) == ENVELOPE


def test_time_may_be_given_as_datetime_or_string():
    when = datetime(2026, 11, 28, 18, 0, 0, 500000, tzinfo=timezone.utc)
    assert build("segment.start", time=when)["time"] == "2026-11-28T18:00:00.500Z"
    assert build("segment.start", time="2026-11-28T18:00:00.500Z")["time"] == "2026-11-28T18:00:00.500Z"


def test_numpy_scalars_become_plain_json():
    np = pytest.importorskip("numpy")
    event = build("segment.end", confidence=np.float32(0.5), is_ad=np.bool_(False), stream_time=np.float64(3.0),
                  duration=np.float32(2.0), segment_id=np.int64(4))
    assert json.loads(encode(event)[1]) == event
    assert type(event["confidence"]) is float and event["is_ad"] is False and event["segment_id"] == 4


@pytest.mark.parametrize("kind, override, message", [
    ("segment.start", {"label": ""}, "label"),
    ("segment.start", {"is_ad": "yes"}, "is_ad"),
    ("segment.start", {"confidence": 1.5}, "confidence"),
    ("segment.start", {"confidence": float("nan")}, "confidence"),
    ("segment.start", {"segment_id": None}, "segment_id"),
    ("segment.start", {"time": "yesterday"}, "time"),
    ("segment.start", {"stream_time": "12"}, "stream_time"),
    ("segment.end", {"duration": -1}, "duration"),
    ("heartbeat", {"p_ad": 2}, "p_ad"),
    ("heartbeat", {"stream_up": 1}, "stream_up"),
    ("heartbeat", {"fps_in": -5}, "fps_in"),
    ("heartbeat", {"state": None}, "state"),
    ("stream.up", {"schema": 2}, "set by the publisher"),
    ("stream.up", {"blob": object()}, "JSON"),
])
def test_make_event_rejects_contract_violations(kind, override, message):
    with pytest.raises(ValueError, match=message):
        build(kind, **override)


@pytest.mark.parametrize("kind", ["segment.start", "segment.end", "heartbeat", "cue.upstream"])
def test_make_event_requires_every_field(kind):
    for name in FIELDS[kind]:
        fields = {k: v for k, v in FIELDS[kind].items() if k != name}
        with pytest.raises(ValueError, match=f"missing field.*{name}"):
            make_event(kind, "demo", 1, RUN, T0, **fields)


@pytest.mark.parametrize("kind, channel, seq, run_id", [
    ("segment.middle", "demo", 1, RUN),
    ("stream.up", "a/b", 1, RUN),
    ("stream.up", "", 1, RUN),
    ("stream.up", "demo", 0, RUN),
    ("stream.up", "demo", True, RUN),
    ("stream.up", "demo", 1, ""),
])
def test_make_event_rejects_bad_envelopes(kind, channel, seq, run_id):
    with pytest.raises(ValueError):
        make_event(kind, channel, seq, run_id, T0)


# -- encode / decode ----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", events.TYPES)
def test_two_frames_topic_and_compact_json(kind):
    event = build(kind, channel="news_1")
    frames = encode(event)
    assert len(frames) == 2 and all(isinstance(f, bytes) for f in frames)
    assert frames[0] == f"{kind}/news_1".encode()
    assert b" " not in frames[1].replace(b"commercial", b"")  # compact separators
    assert json.loads(frames[1].decode("utf-8")) == event
    assert decode(frames) == event


def test_non_ascii_stays_utf8():
    event = build("stream.down", reason="flux coupé")
    assert "coupé".encode() in encode(event)[1]
    assert decode(encode(event))["reason"] == "flux coupé"


def test_seq_strictly_increasing_from_one_roundtrips():
    seqs = [decode(encode(build("heartbeat", seq=n)))["seq"] for n in range(1, 6)]
    assert seqs == [1, 2, 3, 4, 5]


def _frames(obj, topic: str | None = None) -> list[bytes]:
    topic = topic if topic is not None else f"{obj.get('type')}/{obj.get('channel')}"
    return [topic.encode(), json.dumps(obj).encode()]


GOOD = build("segment.end")


@pytest.mark.parametrize("frames, message", [
    ([b"segment.end/demo"], "expected 2 frames"),
    ([b"a", b"b", b"c"], "expected 2 frames"),
    ([b"\xff\xfe", b"{}"], "topic frame is not UTF-8"),
    ([b"segment.end/demo", b"\xc3\x28"], "not UTF-8"),
    ([b"segment.end/demo", b"{nope"], "not valid JSON"),
    ([b"segment.end/demo", b"[1, 2]"], "not an object"),
    ([b"segment.end/demo", b'{"schema": NaN}'], "not valid JSON"),
    (_frames({**GOOD, "schema": 2}), "schema"),
    (_frames({**GOOD, "schema": True}), "schema"),
    (_frames({k: v for k, v in GOOD.items() if k != "schema"}), "schema"),
    (_frames(GOOD, topic="segment.start/demo"), "does not match"),
    (_frames(GOOD, topic="segment.end/other"), "does not match"),
    (_frames({**GOOD, "seq": 0}), "seq"),
    (_frames({**GOOD, "seq": "7"}), "seq"),
    (_frames({**GOOD, "seq": 1.0}), "seq"),
    (_frames({**GOOD, "run_id": 5}), "run_id"),
    (_frames({**GOOD, "emitted": "now"}), "emitted"),
    (_frames({**GOOD, "type": "segment.middle"}), "unknown event type"),
    (_frames({k: v for k, v in GOOD.items() if k != "duration"}), "duration"),
    (_frames({**GOOD, "confidence": 10 ** 400}), "confidence"),
    ([b"heartbeat/demo", b"[" * 100000 + b"]" * 100000], "nested|JSON"),
])
def test_decode_rejects_bad_frames_with_one_line(frames, message):
    with pytest.raises(EventError, match=message) as info:
        decode(frames)
    assert "\n" not in str(info.value)


def test_decode_accepts_zmq_frames_and_extra_fields():
    zmq = pytest.importorskip("zmq")
    frames = [zmq.Frame(f) for f in _frames({**GOOD, "future_field": [1, 2]})]
    assert decode(frames)["future_field"] == [1, 2]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=4))
def test_decode_fuzz_random_frames_only_raise_event_error(frames):
    try:
        decode(frames)
    except EventError as exc:
        assert "\n" not in str(exc)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(events.TYPES), st.dictionaries(st.sampled_from(sorted(ENVELOPE | {"label", "is_ad", "confidence",
       "segment_id", "time", "stream_time", "duration", "pts", "boundary", *events.HEARTBEAT_FIELDS, *CUE})), _json,
       max_size=6),
       st.booleans())
def test_decode_fuzz_mutated_events_only_raise_event_error(kind, mutation, keep_topic):
    base = build(kind)
    obj = {**base, **mutation}
    topic = f"{kind}/demo" if keep_topic else f"{obj.get('type')}/{obj.get('channel')}"
    try:
        decoded = decode([topic.encode(), json.dumps(obj).encode()])
    except EventError:
        return
    # whatever got through is a valid event: it can be re-encoded and decoded again
    assert decode(encode(decoded)) == decoded
