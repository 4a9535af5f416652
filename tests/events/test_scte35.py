"""The SCTE-35 cue of ad segment events, read back by threefive (a decoder we did not write).

What a splicer downstream sees: a splice_insert whose out_of_network, splice_event_id and
pts_time are exactly the event's, a cancel for a withdrawn start, and the event schema that
subscribers validate accepting the object and refusing a broken one.
"""

from __future__ import annotations

import base64

import pytest
from threefive import Cue

from detector.events.schema import EventError, decode, encode, make_event
from detector.events.scte35 import splice_event_id, splice_insert
from detector.live.inference_loop import segment_cue

WRAP = 2 ** 33


def read_back(b64: str) -> Cue:
    cue = Cue(b64)
    cue.decode()
    return cue


@pytest.mark.parametrize("pts", [0, 1, 90000 * 3600 + 17, WRAP - 1])
@pytest.mark.parametrize("out", [True, False])
def test_splice_insert_reads_back_exactly_to_the_tick(pts: int, out: bool):
    cue = splice_insert(0xDEADBEEF, out, pts)
    cmd = read_back(cue.base64).command
    assert cmd.command_type == 5 and cmd.name == "Splice Insert"
    assert cmd.splice_event_id == 0xDEADBEEF
    assert cmd.out_of_network_indicator is out
    assert cmd.splice_event_cancel_indicator is False
    assert cmd.time_specified_flag is True and cmd.splice_immediate_flag is False
    assert round(cmd.pts_time * 90000) == pts
    assert cue.pts == pts and cue.hex == "0x" + base64.b64decode(cue.base64).hex()


def test_pts_is_taken_modulo_2_pow_33_and_none_is_an_immediate_splice():
    assert splice_insert(7, True, WRAP + 5).pts == 5
    cmd = read_back(splice_insert(7, True, None).base64).command
    assert cmd.splice_immediate_flag is True and not cmd.time_specified_flag and cmd.pts_time is None
    with pytest.raises(ValueError):
        splice_insert(2 ** 32, True, 0)


def test_an_ad_segment_events_cues_pair_up_and_a_withdrawn_start_is_cancelled():
    seg = "tv-0123abcd-7"
    start, end = segment_cue("segment.start", seg, 1000), segment_cue("segment.end", seg, 91000)
    assert start.event_id == end.event_id == splice_event_id(seg)
    assert splice_event_id("tv-0123abcd-8") != splice_event_id(seg)
    assert (start.out_of_network, end.out_of_network) == (True, False)
    cancel = segment_cue("segment.end", seg, 91000, withdrawn=True)
    cmd = read_back(cancel.base64).command
    assert cmd.splice_event_cancel_indicator is True and cmd.splice_event_id == start.event_id
    assert cancel.as_event()["cancel"] is True and "cancel" not in start.as_event()


def _segment(**extra):
    fields = dict(label="ad", is_ad=True, confidence=0.9, segment_id="tv-1", time="2026-12-05T00:00:00.000Z",
                  stream_time=12.5, pts=1000, boundary="cut")
    fields.update(extra)
    return make_event("segment.start", "tv", 3, "run", 1_780_000_000.0, **fields)


def test_the_event_schema_carries_the_cue_and_refuses_a_broken_one():
    cue = splice_insert(splice_event_id("tv-1"), True, 1000).as_event()
    event = decode(encode(_segment(scte35=cue)))
    assert event["scte35"] == cue
    assert read_back(event["scte35"]["base64"]).command.splice_event_id == cue["event_id"]
    for broken in ({**cue, "pts": WRAP}, {**cue, "hex": "deadbeef"}, {k: v for k, v in cue.items() if k != "event_id"}, "x"):
        with pytest.raises((ValueError, EventError)):
            _segment(scte35=broken)
