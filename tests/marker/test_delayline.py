"""The marker's delay line on real MPEG-TS bytes (ffmpeg-made: H.264 with B-frames + AAC),
without threads or sockets: what goes out, where each cue lands, what is late, what is bounded.

Cue contents are read back by threefive; where a cue sits is read with a packet scan
(tests/marker/markerkit.py); ffprobe checks that FFmpeg names the new PID `scte_35`.
"""

from __future__ import annotations

import json
import random
import subprocess

import pytest
from threefive import Cue

from detector.events.scte35 import splice_insert
from detector.marker.delayline import DelayLine
from markerkit import PTS_HZ, cue_places, from_first_pat, packets, pes_pts, pid_of, program_map, without

FRAME = PTS_HZ // 25


@pytest.fixture(scope="module")
def source_ts(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("dl") / "in.ts"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25",
                    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "6", "-c:v", "libx264",
                    "-preset", "ultrafast", "-g", "25", "-bf", "2", "-c:a", "aac", "-f", "mpegts", str(path)],
                   check=True, timeout=60)
    return path.read_bytes()


def video_pts(data: bytes) -> list[int]:
    pkts = packets(data)
    _, _, streams = program_map(pkts)
    video = next(pid for st, pid, _ in streams if st == 0x1B)
    return [pts for p in pkts if pid_of(p) == video and (pts := pes_pts(p)) is not None]


def run(data: bytes, delay: float, preroll: float, cues_at: dict[int, list] | None = None, chunk=(1, 30000), seed=0,
        max_bytes: int = 64 << 20) -> tuple[bytes, DelayLine, list]:
    """Feed `data` in random chunks (each chunk = 10 ms), adding cues once `at` bytes were fed; flush at the end."""
    rng = random.Random(seed)
    line = DelayLine(delay, preroll, max_bytes)
    out, placements, i, now = bytearray(), [], 0, 0.0
    cues_at = dict(cues_at or {})
    while i < len(data):
        n = rng.randint(*chunk)
        line.feed(data[i:i + n], now)
        i += n
        now += 0.01
        for at in [a for a in cues_at if a <= i]:
            placements += [line.add_cue(c) for c in cues_at.pop(at)]
        out += line.release(now).data
    out += line.release(now, flush=True).data
    return bytes(out), line, placements


def test_everything_is_copied_and_the_pmt_declares_a_scte35_pid(source_ts, tmp_path):
    out, line, _ = run(source_ts, delay=2.0, preroll=1.0)
    pkts = packets(out)
    pmt_pid, info, streams = program_map(pkts)
    cue = [(pid, es) for st, pid, es in streams if st == 0x86]
    assert cue == [(line.cue_pid, b"\x05\x04CUEI")], streams           # stream type 0x86 with CUEI on the stream
    assert b"\x05\x04CUEI" in info                                        # and at programme level (SCTE 35 8.1)
    assert [st for st, _, _ in streams[:2]] == [0x1B, 0x0F]               # upstream streams as they were
    # every packet but the PMT's is the input's, in order; only the unfinished last frame stays behind
    body = without(out, {pmt_pid})
    src = without(from_first_pat(source_ts), {pmt_pid})
    assert len(src) - len(body) == line.held_bytes - line.held_bytes % 188 and src.startswith(body)
    path = tmp_path / "out.ts"
    path.write_bytes(out)
    probe = json.loads(subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(path)],
                                      capture_output=True, text=True, check=True).stdout)
    assert [s["codec_name"] for s in probe["streams"]] == ["h264", "aac", "scte_35"]


def test_the_output_does_not_depend_on_how_the_input_was_split(source_ts):
    cue = splice_insert(7, True, sorted(video_pts(source_ts))[-10])
    a, _, pa = run(source_ts, 2.0, 1.0, {len(source_ts): [cue]}, chunk=(1, 400), seed=1)
    b, _, pb = run(source_ts, 2.0, 1.0, {len(source_ts): [cue]}, chunk=(20_000, 60_000), seed=2)
    assert a == b and pa == pb and pa[0].kind == "scheduled"


def test_a_cue_in_time_goes_preroll_before_its_splice_point(source_ts):
    pts = video_pts(source_ts)
    splice = sorted(pts)[100]                                  # 4 s in; decided at once after it arrives
    cue = splice_insert(42, True, splice)
    out, _, placed = run(source_ts, delay=3.0, preroll=1.5, cues_at={len(source_ts) * 2 // 3: [cue]})
    assert [p.kind for p in placed] == ["scheduled"], placed
    [(section, before, after)] = cue_places(out)
    decoded = Cue(section)
    decoded.decode()
    assert decoded.command.splice_event_id == 42 and round(decoded.command.pts_time * PTS_HZ) == splice
    target = splice - int(1.5 * PTS_HZ)
    # before the first video frame (decode order) whose PTS reaches splice - preroll, after the last that does not
    assert after >= target and before < target, (before, after, target)
    assert placed[0].lead_seconds == pytest.approx((splice - after) / PTS_HZ)


def test_a_cue_whose_place_has_gone_out_is_inserted_at_once_and_reported_late(source_ts):
    pts = sorted(video_pts(source_ts))
    splice = pts[40]
    cue = splice_insert(5, False, splice)
    # the cue is decided when 5 s of input are in: with a 0.5 s delay its place (1.6 s - 1 s) left long ago
    out, line, placed = run(source_ts, delay=0.5, preroll=1.0, cues_at={len(source_ts) * 5 // 6: [cue]})
    [p] = placed
    assert p.kind == "late" and p.late_seconds > 2.0 and p.lead_seconds < 0, p
    [(section, before, after)] = cue_places(out)
    assert section == cue.section and before > splice          # in the output, after its own splice point


def test_a_withdrawn_start_still_in_the_delay_never_reaches_the_output(source_ts):
    pts = sorted(video_pts(source_ts))
    out_cue = splice_insert(9, True, pts[70])
    cancel = splice_insert(9, False, None, cancel=True)
    other = splice_insert(10, True, pts[75])
    out, _, placed = run(source_ts, delay=4.0, preroll=1.0, cues_at={len(source_ts) * 3 // 4: [out_cue, other, cancel]})
    assert [p.kind for p in placed] == ["scheduled", "scheduled", "withdrawn"]
    assert [s for s, _, _ in cue_places(out)] == [other.section]
    # once the cue-out has gone out, a cancel goes out at once instead
    out, _, placed = run(source_ts, delay=0.2, preroll=0.0, cues_at={len(source_ts) // 2: [out_cue],
                                                                      len(source_ts) * 5 // 6: [cancel]})
    assert [p.kind for p in placed] == ["scheduled", "immediate"]
    assert [s for s, _, _ in cue_places(out)] == [out_cue.section, cancel.section]


def test_memory_is_bounded_and_the_overflow_counted(source_ts):
    line = DelayLine(60.0, 4.0, max_bytes=50_000)
    dropped = 0
    for i in range(0, len(source_ts), 5000):
        line.feed(source_ts[i:i + 5000], i / 1e6)
        assert line.held_bytes <= 50_000 + 5000
        dropped += line.release(i / 1e6).dropped_bytes
    assert dropped > len(source_ts) - 60_000


def test_a_source_that_restarts_its_clock_keeps_the_held_programme_on_schedule(source_ts):
    """The file looped (a reconnect, an encoder restart): nothing held jumps the queue."""
    line = DelayLine(15.0, 1.0, 64 << 20)
    line.feed(source_ts, 0.0)
    first = len(line.release(0.1).data)
    line.feed(source_ts, 0.2)                     # PTS back to the start: 6 s more programme, under the 15 s delay
    assert len(line.release(0.3).data) == 0 and first <= 4 * 188
    assert 11.5 < line.held_seconds() < 12.5
    line.feed(source_ts, 0.4)                     # 18 s in: the first play's first 3 s are due, no more
    assert len(source_ts) // 4 < len(line.release(0.5).data) < len(source_ts) * 3 // 4


def test_a_silent_input_lets_what_is_held_go_out(source_ts):
    line = DelayLine(30.0, 1.0, 64 << 20)
    line.feed(source_ts, 100.0)
    assert len(line.release(101.0).data) <= 4 * 188            # the tables before the first frame
    assert len(line.release(130.5).data) > len(source_ts) * 0.9


def test_joining_mid_stream_the_output_starts_at_a_pat_and_every_pmt_declares_the_cues(source_ts):
    """A UDP input joined at any moment: nothing goes out before the first PAT, so no PMT without
    the cue PID reaches a receiver."""
    pkts = packets(source_ts)
    pmt_pid, _, _ = program_map(pkts)
    pat_at = [i for i, p in enumerate(pkts) if pid_of(p) == 0]
    pmt_at = [i for i, p in enumerate(pkts) if pid_of(p) == pmt_pid]
    join = next(i for i in pmt_at if i > pat_at[1]) - 1      # just before a PMT, after a PAT: the PMT comes first
    out, _, _ = run(source_ts[join * 188 + 100:], delay=1.0, preroll=0.0)    # and mid-packet
    got = packets(out)
    assert pid_of(got[0]) == 0
    pmts = [p for p in got if pid_of(p) == pmt_pid]
    assert pmts and all(b"\x05\x04CUEI" in p for p in pmts)


def test_upstream_scte35_passes_through_untouched_beside_ours(tmp_path):
    """A feed that already carries SCTE-35 (PID 0x1F4, 0x86 + CUEI): its cue packets are copied as
    they are, ours go on another PID, and the programme's CUEI is not declared twice."""
    from tests.tsmedia import SCTE35_PID, make_ts

    src = tmp_path / "cued.ts"
    upstream = make_ts(src, seconds=4.0)
    data = src.read_bytes()
    ours = splice_insert(77, True, sorted(video_pts(data))[-5])
    out, line, placed = run(data, 1.0, 0.5, {len(data): [ours]})
    pmt_pid, info, streams = program_map(packets(out))
    assert [(st, pid) for st, pid, _ in streams if st == 0x86] == [(0x86, SCTE35_PID), (0x86, line.cue_pid)]
    assert line.cue_pid != SCTE35_PID and info.count(b"CUEI") == 1
    theirs = [p for p in packets(out) if pid_of(p) == SCTE35_PID]
    assert theirs == [p for p in packets(from_first_pat(data)) if pid_of(p) == SCTE35_PID] and len(theirs) == len(upstream)
    assert [s for s, _, _ in cue_places(out, line.cue_pid)] == [ours.section] and placed[0].kind == "scheduled"


def test_a_pmt_spanning_several_packets_is_reassembled_and_rewritten():
    """Programmes with many streams or descriptors carry PMTs longer than one packet."""
    from detector.marker import ts
    from detector.sources.cues import crc32_mpeg2

    es = b"".join(bytes([0x06, 0xE0 | (0x200 + i) >> 8, (0x200 + i) & 0xFF, 0xF0, 12]) + b"\x0a\x04eng\x00" + b"\x52\x01\x00"
                  + b"\x59\x01\x00" for i in range(20))                       # 20 subtitle-ish streams, 17 bytes each
    body = b"\x00\x01\xc1\x00\x00" + bytes([0xE1, 0x00, 0xF0, 0x00]) + bytes([0x1B, 0xE1, 0x00, 0xF0, 0x00]) + es
    head = bytes([0x02, 0xB0 | (len(body) + 4) >> 8, (len(body) + 4) & 0xFF])
    section = head + body + crc32_mpeg2(head + body).to_bytes(4, "big")
    pkts, _ = ts.section_packets(section, 0x1000, 0)
    assert len(pkts) == 2
    asm = ts.SectionAssembler()
    assert asm.push(pkts[0]) == [] and asm.push(pkts[1]) == [section]
    new = ts.pmt_with_cues(section, 0x1F0)
    assert crc32_mpeg2(new) == 0
    pmt = ts.parse_pmt(new)
    assert pmt.video_pid == 0x100 and pmt.streams[-1] == (0x86, 0x1F0) and len(pmt.streams) == 22
