"""The inline marker in a real daemon run: what a packager or splicer downstream receives.

One `ad-detector run` with two channels fed the same broadcast (programme, one ad break,
programme) as MPEG-TS: `ontime` reads the .ts file paced like live and writes a file with a
delay long enough for every decision; `late` receives the TS over UDP (the exact bytes, from
tests/senders.py) and sends its output over UDP with a delay far below the decision latency.
Read back: threefive decodes the cues, a packet scan says where each sits, ffprobe names the
PID, ffmpeg decodes the video, and the metrics count the late cues.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from threefive import Cue

from tests.conftest import CLI, cli_env
from livekit import Daemon, Listener, metric, scrape, write_config
from markerkit import PTS_HZ, cue_places, from_first_pat, packets, pes_pts, pid_of, program_map, without, write_broadcast_ts
from senders import udp_sender

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
                                reason="needs ffmpeg and ffprobe")

PLAN = [("football", 10.0, 1), ("commercial", 8.0, 2), ("football", 14.0, 3)]
PREROLL = 2.0


class UdpCollector:
    """A UDP receiver on 127.0.0.1 writing every datagram to memory (what a packager would read)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.data = bytearray()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.data += self.sock.recv(65536)
            except socket.timeout:
                continue

    def close(self) -> bytes:
        time.sleep(0.5)
        self._stop.set()
        self.thread.join(2)
        self.sock.close()
        return bytes(self.data)


def first_play(data: bytes) -> bytes:
    """The output up to where the looping file source started over: its video PTS jumps back,
    and the second play begins at the PAT before that video packet (the file starts with its
    PAT, which ffmpeg's muxer precedes with its SDT), so they and any packet up to the jump
    belong to the second play. A PAT repeated inside the first play's tail cuts a few packets
    early, which is still a prefix."""
    pkts = packets(data)
    _, _, streams = program_map(pkts)
    video = next(pid for st, pid, _ in streams if st == 0x1B)
    last = None
    last_pat = 0
    for i, p in enumerate(pkts):
        if pid_of(p) == 0:
            last_pat = i
        if pid_of(p) == video and (pts := pes_pts(p)) is not None:
            if last is not None and pts < last - PTS_HZ:
                while last_pat > 0 and pid_of(pkts[last_pat - 1]) in (0x11, 0x12, 0x14):    # SDT, EIT, TDT
                    last_pat -= 1
                return b"".join(pkts[:last_pat])
            last = pts
    return data


def ad_cues(journal: Path, channel: str) -> list[dict]:
    events = [json.loads(line) for line in journal.read_text().splitlines()]
    return [e for e in events if e["channel"] == channel and e["type"].startswith("segment.") and e.get("is_ad")]


@pytest.fixture(scope="module")
def marked(tmp_path_factory, bundle_dir: Path) -> dict:
    work = tmp_path_factory.mktemp("marker")
    source = write_broadcast_ts(work / "media", PLAN)
    collector = UdpCollector()
    with udp_sender(source, exact=True) as sender:
        cfg = work / "config.yaml"
        channels = [
            {"name": "ontime", "source": str(source), "realtime": True,
             "output": {"url": str(work / "ontime.ts"), "delay_seconds": 60, "preroll_seconds": PREROLL}},
            {"name": "late", "source": sender.url,
             "output": {"url": f"udp://127.0.0.1:{collector.port}", "delay_seconds": 0.5, "preroll_seconds": PREROLL}},
        ]
        ep = write_config(cfg, bundle_dir, channels, inference={"batch_size": 16, "max_batch_delay_ms": 200})
        check = subprocess.run([*CLI, "check-config", "-c", str(cfg)], capture_output=True, text=True, env=cli_env(),
                               timeout=60)
        listener = Listener(ep["events"])
        daemon = Daemon(cfg)
        try:
            def ended(ch: str) -> bool:
                return any(e["channel"] == ch and e["is_ad"] for e in listener.of_type("segment.end"))
            done = listener.wait_for(lambda: ended("ontime") and ended("late"), timeout=120)
            time.sleep(0.5)
            text = scrape(ep["metrics"])
            seen = {ch: len([e for e in listener.of_type("segment.start", "segment.end") if e["channel"] == ch and e["is_ad"]])
                    for ch in ("ontime", "late")}
        finally:
            rc = daemon.stop(timeout=15)
            listener.close()
    log = daemon.log()
    assert done, log[-4000:]
    assert rc == 0, log[-4000:]
    return {"work": work, "source": source, "ontime": (work / "ontime.ts").read_bytes(), "late": collector.close(),
            "journal": Path(ep["journal"]), "metrics": text, "seen": seen, "log": log, "check": check}


def decoded(section: bytes) -> Cue:
    cue = Cue(section)
    cue.decode()
    return cue


@pytest.mark.parametrize("channel", ["ontime", "late"])
def test_the_output_carries_one_cue_per_boundary_at_the_event_pts(marked, channel):
    events = ad_cues(marked["journal"], channel)
    assert [e["type"] for e in events[:2]] == ["segment.start", "segment.end"], events
    places = cue_places(marked[channel][:len(marked[channel]) // 188 * 188])
    assert [s for s, _, _ in places] == [base64.b64decode(e["scte35"]["base64"]) for e in events]
    for (section, _, _), e in zip(places, events):
        cmd = decoded(section).command
        assert cmd.out_of_network_indicator is (e["type"] == "segment.start")
        assert round(cmd.pts_time * PTS_HZ) == e["pts"]
        assert cmd.splice_event_id == e["scte35"]["event_id"]


def test_with_enough_delay_every_cue_arrives_preroll_ahead_of_its_splice_point(marked):
    for section, before, after in cue_places(marked["ontime"]):
        splice = round(decoded(section).command.pts_time * PTS_HZ)
        # the programme had not reached splice - preroll when the cue arrived, and it is not a frame earlier than needed
        assert splice - before > PREROLL * PTS_HZ, (splice, before)
        assert splice - after <= PREROLL * PTS_HZ, (splice, after)
    text = marked["metrics"]
    assert metric(text, "ad_detector_marker_cues_total", channel="ontime") == marked["seen"]["ontime"] >= 2
    assert metric(text, "ad_detector_marker_late_cues_total", channel="ontime") == 0


def test_a_short_delay_makes_late_cues_that_are_counted_and_logged(marked):
    text = marked["metrics"]
    assert metric(text, "ad_detector_marker_late_cues_total", channel="late") == marked["seen"]["late"] >= 2
    assert metric(text, "ad_detector_marker_cues_total", channel="late") == marked["seen"]["late"]
    assert "marker cue late channel=late" in marked["log"]
    assert "channels[1].output.delay_seconds: 0.5 s is less than the expected decision latency" in marked["check"].stderr
    assert marked["check"].returncode == 0
    for section, before, _ in cue_places(marked["late"][:len(marked["late"]) // 188 * 188]):
        splice = round(decoded(section).command.pts_time * PTS_HZ)
        assert splice - before < PREROLL * PTS_HZ                 # really late: less than the preroll ahead


def test_packets_are_copied_and_ffmpeg_sees_a_scte35_pid_and_clean_video(marked):
    out = first_play(marked["ontime"])
    pkts = packets(out)
    pmt_pid, info, streams = program_map(pkts)
    cue_pid = next(pid for st, pid, es in streams if st == 0x86 and es == b"\x05\x04CUEI")
    assert b"\x05\x04CUEI" in info
    src = without(from_first_pat(marked["source"].read_bytes()), {pmt_pid})
    body = without(out, {pmt_pid, cue_pid})
    assert src.startswith(body)                                         # byte for byte, up to where the daemon stopped
    # ... which is past the break: the output holds the programme up to the last whole frame read
    splices = [round(decoded(s).command.pts_time * PTS_HZ) for s, _, _ in cue_places(out)]
    assert splices and max(pes_pts(p) or 0 for p in pkts) > max(splices)
    path = marked["work"] / "first_play.ts"
    path.write_bytes(out)
    probe = json.loads(subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(path)],
                                      capture_output=True, text=True, check=True, timeout=60).stdout)
    assert sorted(s["codec_name"] for s in probe["streams"]) == ["aac", "h264", "scte_35"]
    dec = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v", "-f", "null", "-"],
                         capture_output=True, text=True, timeout=120)
    assert dec.returncode == 0 and dec.stderr.strip() == "", dec.stderr
