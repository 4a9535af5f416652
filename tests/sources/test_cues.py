"""Upstream SCTE-35 cues (issue 14): sections parse exactly, garbage never raises, and a real
MPEG-TS with a SCTE-35 PID reads back through PyAV with every cue at the PTS it announced,
also when the 33-bit clock wraps mid-file.
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import av
import pytest
from hypothesis import given, settings, strategies as st

from cuekit import PTS_MODULUS, splice_insert_section, time_signal_section, write_ts_with_cues
from detector.analysis.cuebreaks import CueMark, breaks_from_marks
from detector.sources.cues import (UpstreamCue, cue_labels, cue_times, is_in, is_out, is_scte35_stream, packet_ticks,
                                   parse_cue, section_ok)


def test_splice_insert_parses_exactly():
    section = splice_insert_section(8_589_900_000, True, 0xDEAD, duration=30.0)
    cue = parse_cue(section, 8_589_800_000)
    assert cue == UpstreamCue(pts=8_589_900_000, packet_pts=8_589_800_000, command="splice_insert", out_of_network=True,
                              event_id=0xDEAD, duration=30.0, base64=base64.b64encode(section).decode())
    assert is_out(cue) and not is_in(cue)
    back = parse_cue(splice_insert_section(1234, False, 0xDEAD), None)
    assert (back.pts, back.packet_pts, back.out_of_network, back.duration) == (1234, None, False, None)
    assert is_in(back) and not is_out(back)


def test_pts_adjustment_is_added_modulo_2_33():
    section = splice_insert_section(PTS_MODULUS - 100, True, 1, pts_adjustment=250)
    assert parse_cue(section, PTS_MODULUS + 5).pts == 150                 # wrapped past 2**33
    assert parse_cue(section, PTS_MODULUS + 5).packet_pts == 5            # packet pts normalised too


def test_immediate_splice_has_no_pts():
    cue = parse_cue(splice_insert_section(None, True, 3), 900)
    assert cue.pts is None and cue.out_of_network is True and is_out(cue)


def test_payload_has_the_contract_fields_and_is_json():
    cue = parse_cue(splice_insert_section(90_000, True, 42), 0)
    payload = cue.payload()
    for name in ("pts", "packet_pts", "command", "out_of_network", "event_id", "base64"):
        assert name in payload
    assert payload["command"] == "splice_insert" and payload["event_id"] == 42
    json.dumps(payload)
    from detector.events.schema import make_event

    make_event("cue.upstream", "ch1", 1, "run", 0.0, **payload)            # the event schema accepts it


@pytest.mark.parametrize("type_id, out", [(0x22, True), (0x23, False), (0x30, True), (0x31, False), (0x32, True),
                                          (0x33, False), (0x34, True), (0x35, False), (0x10, None)])
def test_time_signal_with_segmentation(type_id: int, out: bool | None):
    cue = parse_cue(time_signal_section(5_000_000, type_id, 77, duration=15.0 if out else None), 4_900_000)
    assert cue.command == "time_signal" and cue.pts == 5_000_000
    assert cue.segmentation[0]["type_id"] == type_id and cue.segmentation[0]["upid_type"] == 0x0F
    assert cue.out_of_network is out and cue.event_id == 77
    assert is_out(cue) is (out is True) and is_in(cue) is (out is False)
    if out:
        assert cue.duration == 15.0


def test_splice_null_and_unknown_commands():
    import threefive

    null = threefive.Cue()
    null.command = threefive.SpliceNull()
    null.encode()
    cue = parse_cue(bytes(null.bytes()), 1)
    assert cue.command == "splice_null" and cue.pts is None and not is_out(cue) and not is_in(cue)


def test_corrupt_sections_are_none():
    good = splice_insert_section(1000, True, 1)
    assert parse_cue(good[:-1], 0) is None                                 # truncated
    assert parse_cue(good[:10] + bytes([good[10] ^ 1]) + good[11:], 0) is None   # CRC fails
    assert parse_cue(b"\x00" + good[1:], 0) is None                        # not table 0xFC
    assert parse_cue(b"", 0) is None and parse_cue(b"123456789012345678901234", 0) is None
    assert parse_cue(good + b"\xff" * 20, 0) is not None                   # stuffing after the section is fine
    assert section_ok(good) == good


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.one_of(st.none(), st.integers(min_value=-2 ** 40, max_value=2 ** 40)))
def test_random_bytes_never_raise(data: bytes, packet_pts: int | None):
    assert parse_cue(data, packet_pts) is None or isinstance(parse_cue(data, packet_pts), UpstreamCue)


def _with_crc(body: bytes) -> bytes:
    from detector.sources.cues import crc32_mpeg2

    return body + crc32_mpeg2(body).to_bytes(4, "big")


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=13, max_size=200), st.sampled_from([0x00, 0x05, 0x06, 0x07, 0xFF, 0x42]))
def test_crc_valid_nonsense_never_raises(tail: bytes, command: int):
    """Past the CRC check, threefive gets bytes only a broken encoder would send."""
    body = bytearray(b"\xfc\x30\x00" + tail)
    body[13] = command
    body[4] &= 0x7F                                        # not encrypted: reach the command parser
    length = len(body) + 4 - 3
    body[1], body[2] = 0x30 | (length >> 8), length & 0xFF
    cue = parse_cue(_with_crc(bytes(body)), 0)
    assert cue is None or isinstance(cue, UpstreamCue)


def test_cue_times_follow_the_arrivals_across_the_wrap():
    first = PTS_MODULUS - 90_000                             # one second before the wrap
    cues = [UpstreamCue((first + 2 * 90_000) % PTS_MODULUS, (first + 90_000) % PTS_MODULUS, "splice_insert", True, 1, None),
            UpstreamCue(None, (first + 3 * 90_000) % PTS_MODULUS, "splice_insert", False, 1, None)]
    assert cue_times(cues, first) == [2.0, 3.0]


def test_breaks_pair_by_event_id_and_report_the_odd_ones():
    marks = [CueMark(10, True, 1), CueMark(12, True, 2, duration=5.0), CueMark(20, False, 1), CueMark(25, False, 9),
             CueMark(40, True, 3), CueMark(45, False, None), CueMark(50, True, 4)]
    segments, notes = breaks_from_marks(marks, 60.0, "ad")
    # 10-20 (id 1) and 12-17 (id 2, closed by its duration) merge; 40-45 pairs in order; 50 closes at the end
    assert [(s.start, s.end, s.label, s.is_ad) for s in segments] == [(10, 20, "ad", True), (40, 45, "ad", True),
                                                                       (50, 60, "ad", True)]
    assert any("25.000" in n and "without a cue-out" in n for n in notes)
    assert any("break_duration" in n for n in notes) and any("recording's end" in n for n in notes)


# -- real files ---------------------------------------------------------------------------

CUES = [(0.5, True, 7), (2.0, False, 7), (3.0, True, 8), (4.0, False, 8)]


@pytest.fixture(scope="module", params=[None, 95_441.5], ids=["plain", "wrap"])
def ts_file(request, tmp_path_factory) -> tuple[Path, list, float | None]:
    path = tmp_path_factory.mktemp("cues") / "cues.ts"
    return path, write_ts_with_cues(path, 5.0, CUES, start_pts_seconds=request.param, preroll=1.0), request.param


def test_ffprobe_sees_a_scte35_data_stream(ts_file):
    path, _, _ = ts_file
    proc = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(path)], capture_output=True, text=True,
                          check=True)
    data = [s for s in json.loads(proc.stdout)["streams"] if s["codec_type"] == "data"]
    assert [(s["codec_name"], s["codec_tag_string"], s["id"]) for s in data] == [("scte_35", "CUEI", "0x1f0")]


def test_pyav_gives_every_cue_back_at_its_pts(ts_file):
    path, written, start = ts_file
    with av.open(str(path)) as container:
        streams = [s for s in container.streams if is_scte35_stream(s)]
        assert len(streams) == 1 and not any(is_scte35_stream(s) for s in container.streams if s not in streams)
        first = container.streams.video[0].start_time % PTS_MODULUS
        got = [parse_cue(bytes(p), packet_ticks(p)) for p in container.demux(streams[0]) if p.size]
    if start is not None:
        assert abs(first - round(start * 90_000)) <= 1
        assert any(c.pts < first for c in got)                               # the clock wrapped mid-file
    assert [(c.pts, c.out_of_network, c.event_id, c.base64) for c in got] == \
        [(w.pts, w.out_of_network, w.event_id, w.base64) for w in written]
    assert [w.time for w in written] == [0.48, 2.0, 3.0, 4.0]
    # libavformat stamps a section with the program clock (PCR) when it arrived: before the splice
    # point, by the preroll plus the mux delay; None before the first PCR
    assert got[0].packet_pts is None
    for cue in got[1:]:
        ahead = (cue.pts - cue.packet_pts) % PTS_MODULUS / 90_000
        assert 1.0 <= ahead <= 2.5, ahead


def test_cue_labels_reads_the_breaks(ts_file):
    path, _, _ = ts_file
    segments, report = cue_labels(path, "commercial")
    assert [(s.start, s.end, s.label) for s in segments] == [(0.48, 2.0, "commercial"), (3.0, 4.0, "commercial")]
    assert report.cues == 4 and report.malformed == 0 and report.notes == []


def test_cue_labels_without_cues(tmp_path: Path):
    path = tmp_path / "plain.ts"
    write_ts_with_cues(path, 1.0, [], audio=False)
    assert cue_labels(path) == ([], cue_labels(path)[1]) and cue_labels(path)[1].cues == 0
