"""The SCTE-35 sidecar and the DASH EventStream, read the way their consumers read them:
threefive decodes every cue, ElementTree parses the EventStream. Pure: no video here (the
end-to-end run over a real recording is tests/offline/test_classify_cues.py)."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from threefive import Cue

from detector.analysis.clock import PTS_HZ, PTS_MODULUS, PtsMarks
from detector.analysis.segments import Segment
from detector.offline import formats
from detector.offline.cues import plan_cues

SCTE_NS = "{http://www.scte.org/schemas/35/2016}"
DASH_NS = "{urn:mpeg:dash:schema:mpd:2011}"

# a programme, a break from 2 s (closer to the start than the preroll) to 20 s, programme,
# a second break from 40 s to 55.5 s, and the recording ends 60 s in
SEGMENTS = [Segment(0.0, 2.0, "football", False), Segment(2.0, 20.0, "commercial", True),
            Segment(20.0, 40.0, "football", False), Segment(40.0, 55.5, "commercial", True),
            Segment(55.5, 60.0, "football", False)]


def marks_from(first_pts: int, seconds: float = 60.0, fps: float = 5.0) -> PtsMarks:
    """Analysed frames at `fps` on a clock starting at `first_pts` (wrapping mod 2**33)."""
    marks = PtsMarks(capacity=None)
    for i in range(int(seconds * fps)):
        marks.add(i / fps, (first_pts + round(i / fps * PTS_HZ)) % PTS_MODULUS)
    return marks


def decode(b64: str) -> Cue:
    cue = Cue(b64)
    cue.decode()
    return cue


@pytest.mark.parametrize("first_pts", [900_000, PTS_MODULUS - 10 * PTS_HZ], ids=["plain", "wraps-inside-the-break"])
def test_sidecar_cues_splice_at_the_boundary_pts_and_insert_a_preroll_earlier(first_pts: int) -> None:
    plan = plan_cues(SEGMENTS, marks_from(first_pts).pts_at, first_pts, "show", preroll_seconds=4.0)
    text = formats.scte35_sidecar(plan)
    lines = text.splitlines()
    assert len(lines) == 4 and text.endswith("\n")
    boundaries = [(2.0, True), (20.0, False), (40.0, True), (55.5, False)]
    ids = []
    for line, (t, out) in zip(lines, boundaries):
        insert, b64 = line.split(",")
        cue = decode(b64)
        cmd = cue.command
        splice = (first_pts + round(t * PTS_HZ)) % PTS_MODULUS
        assert cmd.command_type == 5 and cmd.out_of_network_indicator is out
        assert round(cmd.pts_time * PTS_HZ) == splice
        assert cue.info_section.pts_adjustment == 0
        if out:     # the cue-out tells the break's length (auto_return off: the cue-in ends it)
            length = {2.0: 18.0, 40.0: 15.5}[t]
            assert cmd.duration_flag and cmd.break_auto_return is False and cmd.break_duration == length
        else:
            assert not cmd.duration_flag
        # insert PTS: 4 s earlier, except the first cue, which only has 2 s of stream before it
        ahead = min(4.0, t)
        assert round(float(insert) * PTS_HZ) == (splice - round(ahead * PTS_HZ)) % PTS_MODULUS
        ids.append(cmd.splice_event_id)
    assert ids[0] == ids[1] != ids[2] == ids[3]
    # the same recording name gives the same ids again (a re-run replaces, not duplicates)
    again = plan_cues(SEGMENTS, marks_from(first_pts).pts_at, first_pts, "show", 4.0)
    assert [c.cue.event_id for c in again.cues] == ids


def test_zero_preroll_inserts_at_the_splice_point() -> None:
    plan = plan_cues(SEGMENTS, marks_from(0).pts_at, 0, "show", preroll_seconds=0.0)
    assert [c.insert_pts for c in plan.cues] == [c.splice_pts for c in plan.cues]
    with pytest.raises(ValueError):
        plan_cues(SEGMENTS, marks_from(0).pts_at, 0, "show", preroll_seconds=-1.0)


def test_eventstream_parses_and_every_binary_decodes_on_the_unwrapped_clock() -> None:
    first = PTS_MODULUS - 10 * PTS_HZ               # the 33-bit clock wraps 10 s in
    plan = plan_cues(SEGMENTS, marks_from(first).pts_at, first, "show", 4.0)
    root = ET.fromstring(formats.dash_eventstream(plan))
    assert root.tag == f"{DASH_NS}EventStream"
    assert root.get("schemeIdUri") == "urn:scte:scte35:2014:xml+bin"
    assert root.get("timescale") == "90000" and root.get("presentationTimeOffset") == str(first)
    events = root.findall(f"{DASH_NS}Event")
    assert len(events) == 4
    assert len({e.get("id") for e in events}) == 4
    times = [int(e.get("presentationTime")) for e in events]
    assert times == [first + round(t * PTS_HZ) for t in (2.0, 20.0, 40.0, 55.5)]     # keeps increasing past 2**33
    assert int(events[0].get("duration")) == 18 * PTS_HZ and int(events[2].get("duration")) == round(15.5 * PTS_HZ)
    assert events[1].get("duration") is None
    for event, at in zip(events, times):
        binary = event.find(f"{SCTE_NS}Signal/{SCTE_NS}Binary")
        cue = decode(binary.text)
        assert round(cue.command.pts_time * PTS_HZ) == at % PTS_MODULUS
        # threefive also takes the Signal element itself, as a DASH client hands it over
        signal = decode(ET.tostring(event.find(f"{SCTE_NS}Signal"), encoding="unicode"))
        assert signal.command.splice_event_id == cue.command.splice_event_id


def test_no_ads_gives_empty_files_and_no_pts_skips_the_cue_formats(tmp_path: Path, caplog) -> None:
    programme = [Segment(0.0, 60.0, "football", False)]
    plan = plan_cues(programme, marks_from(0).pts_at, 0, "show")
    assert formats.scte35_sidecar(plan) == ""
    assert ET.fromstring(formats.dash_eventstream(plan)).findall(f"{DASH_NS}Event") == []

    no_clock = plan_cues(SEGMENTS, lambda t: None, None, "show")
    assert no_clock.cues == () and "no presentation timestamps" in no_clock.missing
    times = np.arange(10) * 1.0
    probs = np.tile([0.5, 0.5], (10, 1))
    with caplog.at_level(logging.WARNING):
        written = formats.write_outputs(tmp_path, "show", SEGMENTS, times, probs, ["football", "commercial"],
                                        ["commercial"], 25.0, 1500, 60.0, formats=["edl", "scte35", "dash"],
                                        cue_plan=no_clock)
    assert [p.name for p in written] == ["show.edl"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["show.edl"]
    skipped = [r.getMessage() for r in caplog.records if "format skipped" in r.getMessage()]
    assert len(skipped) == 2 and all("no presentation timestamps" in m for m in skipped)


def test_cli_refuses_hls_for_a_non_ts_recording_and_a_negative_preroll(tmp_path: Path) -> None:
    """Checked before any model loads or file is written: one line, exit 2."""
    import subprocess

    from conftest import assert_usage_error, run_cli

    clip = tmp_path / "clip.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=64x48:duration=1", str(clip)],
                   check=True, timeout=60)
    out = tmp_path / "out"
    proc = run_cli("classify", clip, "-m", tmp_path / "no-bundle", "-o", out, "--formats", "hls", "--no-progress")
    assert_usage_error(proc, "clip.mp4", "MPEG-TS", "ffmpeg -i clip.mp4 -c copy -f mpegts")
    proc = run_cli("classify", clip, "-m", tmp_path / "no-bundle", "-o", out, "--formats", "scte35",
                   "--preroll-seconds", "-1", "--no-progress")
    assert_usage_error(proc, "--preroll-seconds")
    assert not out.exists()


def test_hls_cuts_at_the_first_keyframe_after_each_splice_and_closes_a_break_at_the_end() -> None:
    import datetime as dt

    import m3u8

    from detector.offline.hls import Keyframe, hls_playlist, plan_segments

    first = 900_000
    # a break from 2 s to 20 s, and one from 40 s running to the end (60 s)
    segments = SEGMENTS[:3] + [Segment(40.0, 60.0, "commercial", True)]
    plan = plan_cues(segments, marks_from(first, 61.0).pts_at, first, "show")
    keyframes = [Keyframe(t * 1.5, int(t * 1.5 * 1000) * 188) for t in range(40)]      # every 1.5 s
    segs = plan_segments(keyframes, plan, 60.0, 61_000 * 188)
    text = hls_playlist(segs, plan, "show.ts", dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))
    playlist = m3u8.loads(text)
    starts = [s for s in playlist.segments if s.cue_out_start]
    assert len(starts) == 2
    t = lambda seg: sum(s.duration for s in playlist.segments[: playlist.segments.index(seg)])  # noqa: E731
    assert [t(s) for s in starts] == [3.0, 40.5]               # first keyframes at or after 2 s and 40 s
    ins = [s for s in playlist.segments if s.cue_in]
    assert [t(s) for s in ins] == [21.0]
    assert all(s.duration <= 6.0 for s in playlist.segments)
    # the open break is still closed by its DATERANGE (with SCTE35-IN) before the end
    closing = text.strip().splitlines()[-2]
    assert closing.startswith("#EXT-X-DATERANGE:") and "SCTE35-IN=0x" in closing and 'END-DATE="2026-01-01T00:01:00.000Z"' in closing
