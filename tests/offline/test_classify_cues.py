"""`classify --formats scte35 dash hls` over a real MPEG-TS recording, checked by the real consumers:
threefive decodes every cue at the boundary frame's PTS (ffprobe's), threefive's injector
(`scte35inject`) takes the sidecar with the recording and its output carries the cues on a SCTE-35
PID (ffprobe sees it, threefive reads them back), the DASH EventStream parses and decodes, the
HLS playlist reads back with the `m3u8` parser and FFmpeg plays it, and x9k3 segments the
recording with the break tagged from our sidecar.

One 24 s generated broadcast (programme, one break from 6.48 s to 17.48 s, programme), encoded
twice: on a plain clock, and on one that crosses the 33-bit PTS wrap 12 s in. The test model is
weak (random backbone weights), so the tests take the breaks it finds, checking each cue
against the frame its boundary is on rather than against the generated truth.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import m3u8
import pytest
from threefive import Cue, Stream

from conftest import run_cli
from detector.analysis.clock import PTS_HZ, PTS_MODULUS, signed_delta

FRAME = PTS_HZ // 25                      # one frame at 25 fps, in ticks
PREROLL = 4.0
SCTE_NS = "{http://www.scte.org/schemas/35/2016}"
DASH_NS = "{urn:mpeg:dash:schema:mpd:2011}"
WRAP_OFFSET = PTS_MODULUS / PTS_HZ - 12.0   # output_ts_offset: the clock wraps 12 s in, inside the break


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> dict[str, Path]:
    from detector.demo.write import write_broadcast

    root = tmp_path_factory.mktemp("cues")
    mp4 = root / "source.mp4"
    write_broadcast(mp4, seed=11, duration=24.0, size=(320, 180), progress=False)
    out = {}
    for name, extra in (("plain", []), ("wrap", ["-output_ts_offset", f"{WRAP_OFFSET:.3f}"])):
        out[name] = root / f"{name}.ts"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(mp4), "-c:v", "libx264", "-preset", "veryfast", "-g", "25",
                        "-bf", "0", *extra, "-f", "mpegts", str(out[name])], check=True, timeout=120)
    return out


@pytest.fixture(scope="module")
def classified(recordings, bundle_dir: Path, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("classified-cues")
    for name, formats in (("plain", ["json", "scte35", "dash", "hls"]), ("wrap", ["json", "scte35", "dash"])):
        proc = run_cli("classify", recordings[name], "-m", bundle_dir, "-o", out, "--formats", *formats,
                       "--preroll-seconds", PREROLL, "--no-progress")
        assert proc.returncode == 0, proc.stderr[-3000:]
    return {"out": out, **recordings}


def frame_pts(path: Path) -> list[int]:
    """ffprobe's video frame PTS (FFmpeg unwraps them from the start; taken back mod 2**33 here)."""
    text = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "frame=pts", "-of", "csv=p=0",
                           str(path)], capture_output=True, text=True, check=True, timeout=60).stdout
    return [int(v.strip(",")) for v in text.split() if v.strip(",")]


def decode(data: str) -> Cue:
    cue = Cue(data)
    cue.decode()
    return cue


def ad_boundaries(out: Path, name: str) -> list[tuple[float, bool]]:
    import json

    segs = json.loads((out / f"{name}.segments.json").read_text())
    ads = [s for s in segs if s["is_ad"]]
    assert ads and any(s["start"] <= 12.0 < s["end"] for s in ads), segs     # the wrap falls inside a break
    return [(b, out_) for s in ads for b, out_ in ((s["start"], True), (s["end"], False))]


@pytest.mark.parametrize("name", ["plain", "wrap"])
def test_every_cue_splices_at_the_boundary_frames_pts(classified, name: str) -> None:
    out = classified["out"]
    frames = frame_pts(classified[name])
    first = frames[0]
    boundaries = ad_boundaries(out, name)
    lines = (out / f"{name}.scte35.txt").read_text().splitlines()
    assert len(lines) == len(boundaries)
    events = ET.fromstring((out / f"{name}.eventstream.xml").read_text()).findall(f"{DASH_NS}Event")
    assert len(events) == len(boundaries)
    ids = []
    for line, event, (time, out_of_network) in zip(lines, events, boundaries):
        insert, b64 = line.split(",")
        cmd = decode(b64).command
        assert cmd.name == "Splice Insert" and cmd.out_of_network_indicator is out_of_network
        ids.append(cmd.splice_event_id)
        splice = round(cmd.pts_time * PTS_HZ)
        # the frame segments.json puts the boundary on, by ffprobe's clock
        boundary_frame = min(frames, key=lambda p: abs((p - first) / PTS_HZ - time)) % PTS_MODULUS
        assert abs(signed_delta(splice, boundary_frame)) <= FRAME, (name, time, splice, boundary_frame)
        # the preroll earlier, but not before the recording's first frame
        ahead = min(round(PREROLL * PTS_HZ), signed_delta(splice, first % PTS_MODULUS))
        assert round(float(insert) * PTS_HZ) == (splice - ahead) % PTS_MODULUS
        # the DASH Event: the same cue, at the same PTS (unwrapped: it keeps rising across the wrap)
        binary = decode(event.find(f"{SCTE_NS}Signal/{SCTE_NS}Binary").text)
        assert binary.encode() == b64
        assert int(event.get("presentationTime")) % PTS_MODULUS == splice
    assert ids[0::2] == ids[1::2] and len(set(ids)) == len(ids) // 2     # out and in of a break share the id
    times = [int(e.get("presentationTime")) for e in events]
    assert times == sorted(times)
    if name == "wrap":
        assert times[-1] > PTS_MODULUS     # the last break ends past the wrap, and the clock kept rising


def test_threefive_injector_takes_the_sidecar_and_its_output_carries_the_cues(classified, tmp_path: Path) -> None:
    out, video = classified["out"], classified["plain"]
    sidecar = tmp_path / "sidecar.txt"
    shutil.copy(out / "plain.scte35.txt", sidecar)      # scte35inject empties the sidecar it reads
    wanted = [line.split(",") for line in (out / "plain.scte35.txt").read_text().splitlines()]
    injected = tmp_path / "injected.ts"
    inject = Path(sys.executable).with_name("scte35inject")
    proc = subprocess.run([str(inject), "-i", str(video), "-o", str(injected), "-s", str(sidecar)], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    streams = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,codec_type", "-of", "csv=p=0",
                              str(injected)], capture_output=True, text=True, check=True, timeout=60).stdout
    assert "scte_35,data" in streams, streams
    found: list[Cue] = []
    Stream(str(injected)).decode(func=found.append)
    assert [c.encode() for c in found] == [b64 for _, b64 in wanted]
    first = frame_pts(video)[0]
    for cue, (insert, _) in zip(found, wanted):
        # the programme's PTS where the cue packet sits (none read yet: it is before the first picture)
        arrived = round(cue.packet_data.pts * PTS_HZ) if cue.packet_data.pts is not None else first
        splice = round(cue.command.pts_time * PTS_HZ)
        # at the first keyframe at or after the insert point (GOP of 1 s at most), ahead of the splice
        assert round(float(insert) * PTS_HZ) <= arrived <= splice, (insert, arrived, splice)
        assert arrived - round(float(insert) * PTS_HZ) <= PTS_HZ
    # the programme is untouched: apart from the PMT and the new PID, the packets are the input's, in
    # order. (threefive 3.1.5's injector writes in chunks of 530 packets and never flushes the
    # last one, so its output lacks the recording's last < 530 packets: a prefix, see README.)
    def packets(path: Path, skip: set[int]) -> list[bytes]:
        data = path.read_bytes()
        pkts = [data[i:i + 188] for i in range(0, len(data), 188)]
        return [p for p in pkts if ((p[1] & 0x1F) << 8 | p[2]) not in skip]

    pmt_pid, cue_pid = 0x1000, 0x86
    original, copied = packets(video, {pmt_pid}), packets(injected, {pmt_pid, cue_pid})
    assert copied == original[: len(copied)] and len(original) - len(copied) < 530


def test_hls_playlist_carries_the_break_in_both_tag_families_and_plays(classified) -> None:
    out, video = classified["out"], classified["plain"]
    cues = [decode(line.split(",")[1]) for line in (out / "plain.scte35.txt").read_text().splitlines()]
    playlist = m3u8.load(str(out / "plain.m3u8"))
    assert playlist.is_endlist and playlist.program_date_time is not None
    segs = playlist.segments
    # the byte ranges tile the recording: nothing skipped, nothing twice
    offsets = [(int(s.byterange.split("@")[1]), int(s.byterange.split("@")[0])) for s in segs]
    assert offsets[0][0] == 0 and all(a + n == b for (a, n), (b, _) in zip(offsets, offsets[1:]))
    assert offsets[-1][0] + offsets[-1][1] == video.stat().st_size
    assert {s.uri for s in segs} == {os.path.relpath(video, out)}     # relative to the playlist
    starts = [s for s in segs if s.cue_out_start]
    ends = [s for s in segs if s.cue_in]
    assert len(starts) == len(cues) // 2 >= 1 and len(ends) == len(starts)
    out_range = starts[0].dateranges[0]
    in_range = ends[0].dateranges[0]
    assert out_range.id == in_range.id and out_range.start_date == in_range.start_date
    assert decode(out_range.scte35_out).encode() == cues[0].encode()
    assert decode(in_range.scte35_in).encode() == cues[1].encode()
    planned = float(starts[0].scte35_duration)
    assert abs(planned - (cues[1].command.pts_time - cues[0].command.pts_time)) < 0.01
    inside = segs[segs.index(starts[0]) + 1: segs.index(ends[0])]
    assert all(s.cue_out and not s.cue_out_start for s in inside)
    # the break's segments span the break, up to the keyframe where each cut could fall
    t0 = sum(s.duration for s in segs[: segs.index(starts[0])])
    t1 = sum(s.duration for s in segs[: segs.index(ends[0])])
    frames = frame_pts(video)
    at = [(round(c.command.pts_time * PTS_HZ) - frames[0]) / PTS_HZ for c in cues]
    assert -0.001 <= t0 - at[0] < 1.05 and -0.001 <= t1 - at[1] < 1.05, (t0, t1, at)
    play = subprocess.run(["ffmpeg", "-v", "error", "-i", str(out / "plain.m3u8"), "-f", "null", "-"], capture_output=True,
                          text=True, timeout=120)
    assert play.returncode == 0 and not play.stderr.strip(), play.stderr[-2000:]


def test_x9k3_takes_the_sidecar_and_tags_the_break_in_its_hls(classified, tmp_path: Path) -> None:
    """x9k3 segments the recording and tags the break from our sidecar (it needs the cue-out's
    break_duration: 1.0.39 fails on a splice_insert without one)."""
    out, video = classified["out"], classified["plain"]
    sidecar = tmp_path / "sidecar.txt"
    shutil.copy(out / "plain.scte35.txt", sidecar)          # x9k3 empties the sidecar it reads too
    cues = [decode(line.split(",")[1]) for line in (out / "plain.scte35.txt").read_text().splitlines()]
    x9k3 = Path(sys.executable).with_name("x9k3")
    proc = subprocess.run([str(x9k3), "-i", str(video), "-s", str(sidecar), "-o", str(tmp_path / "hls")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, (proc.stdout[-1500:], proc.stderr[-1500:])
    segs = m3u8.load(str(tmp_path / "hls" / "index.m3u8")).segments
    starts = [s for s in segs if s.cue_out_start]
    assert len(starts) == len(cues) // 2 == len([s for s in segs if s.cue_in]) >= 1
    assert abs(float(starts[0].scte35_duration) - cues[0].command.break_duration) < 0.01
