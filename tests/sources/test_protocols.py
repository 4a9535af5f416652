"""Every input the README names, read by the daemon's own capture thread from a real sender.

Each test starts a real sender (tests/senders.py: ffmpeg over UDP, SRT, RTMP, an HLS muxer
served over HTTP; multicast inside a network namespace the test creates) of a small H.264 +
AAC MPEG-TS with a SCTE-35 PID, runs `Capture` on its URL for a few seconds and checks what a
user depends on: frames flow on the source's own clock (90 kHz PTS, media time advancing),
audio arrives, SCTE-35 cues arrive where the transport keeps them. RTSP is tested with the
GStreamer server in tests/live/test_live.py and test_faults.py, files in tests/live/test_capture.py.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from capturekit import Recorder, run_capture
from tests import senders
from tests.tsmedia import make_ts

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def broadcast(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("media") / "broadcast.ts"
    make_ts(path, seconds=6)
    return path


def flowing(rec: Recorder, frames: int = 60) -> bool:
    return len(rec.of("frame_captured")) >= frames


def check_live(rec, ring, audio, cues: bool) -> None:
    metas = [m for m in ring.meta if m is not None]
    assert rec.of("stream_up") and len(metas) >= 8, rec.calls[:20]
    times = [m.media_time for m in metas]
    assert times == sorted(times) and times[-1] - times[0] >= 1.5
    assert all(isinstance(m.pts, int) for m in metas)
    first, last = metas[0], metas[-1]
    assert abs(((last.pts - first.pts) % 2 ** 33) / 90000 - (last.media_time - first.media_time)) < 0.05
    assert rec.of("audio_present")[0] == (True,) and audio.read(times[0], times[-1]) is not None
    if cues:
        got = rec.of("upstream_cue")
        assert got and all(c.command == "splice_insert" and c.pts is not None for c, _ in got), rec.calls[-10:]


@pytest.mark.parametrize("exact", [True, False], ids=["passthrough", "ffmpeg-remux"])
def test_mpegts_over_udp_unicast(broadcast, exact):
    """`exact`: the TS bytes as an injector wrote them (SCTE-35 type 0x86); otherwise remuxed by
    ffmpeg on the way, which rewrites SCTE-35 as private data (0x06): the cues are still read."""
    with senders.udp_sender(broadcast, exact=exact) as s:
        rec, ring, audio = run_capture(s.url, lambda r: flowing(r, 100) and r.of("upstream_cue"), timeout=25)
    check_live(rec, ring, audio, cues=True)


def test_srt_through_the_relay(broadcast):
    with senders.srt_sender(broadcast, exact=True) as s:
        rec, ring, audio = run_capture(s.url, lambda r: flowing(r, 100) and r.of("upstream_cue"), timeout=25)
    check_live(rec, ring, audio, cues=True)


def test_hls_live_playlist_with_6_second_segments(broadcast):
    """The playlist arrives a 6 s segment at a time: frames still flow without a read timeout,
    paced at the media rate (no rate fault, no stall)."""
    with senders.hls_server(broadcast, segment_seconds=6, list_size=4) as s:
        s.wait_ready(segments=2, timeout=20)
        rec, ring, audio = run_capture(s.url, lambda r: flowing(r, 300), timeout=25, read_timeout=3, stall_seconds=20)
    check_live(rec, ring, audio, cues=False)
    faults = {f[0] for f in rec.of("fault")}
    assert not faults & {"stall", "read_error", "silent", "rate_high", "rate_low"}, faults
    assert len(rec.of("stream_up")) == 1


def listening(port: int) -> bool:
    """A TCP port in LISTEN state, seen in /proc (connecting would use up ffmpeg's one RTMP client)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        if any(int(r.split()[1].rsplit(":", 1)[1], 16) == port and r.split()[3] == "0A" for r in rows):
            return True
    return False


def test_rtmp(broadcast):
    with senders.rtmp_sender(broadcast) as s:
        port = int(s.url.split(":")[2].split("/")[0])
        deadline = time.monotonic() + 10
        while not listening(port) and time.monotonic() < deadline:
            time.sleep(0.05)
        rec, ring, audio = run_capture(s.url, lambda r: flowing(r, 100), timeout=25, retry=True)
    check_live(rec, ring, audio, cues=False)


def test_file_paced_in_real_time(broadcast):
    t0 = time.monotonic()
    rec, ring, audio = run_capture(str(broadcast), lambda r: flowing(r, 100), timeout=20, realtime=True)
    assert time.monotonic() - t0 >= 3.5          # 100 frames at 25 fps: about 4 s, not as fast as it decodes
    check_live(rec, ring, audio, cues=True)


@pytest.mark.skipif(not senders.netns_available(), reason="needs `unshare -n` (root or user namespaces) and `ip`")
def test_udp_multicast_inside_a_network_namespace_of_its_own(broadcast):
    reader = f"""
import json, os, sys
sys.path[:0] = {[str(REPO), str(REPO / 'tests')]!r}
from capturekit import run_capture
rec, ring, audio = run_capture(os.environ["MCAST_URL"], lambda r: len(r.of("frame_captured")) >= 100, timeout=15)
metas = [m for m in ring.meta if m is not None]
print(json.dumps({{"netns": os.environ["NETNS_INODE"], "mine": os.stat("/proc/self/ns/net").st_ino,
                  "pts": [m.pts for m in metas], "times": [m.media_time for m in metas],
                  "audio": rec.of("audio_present")[0][0] if rec.of("audio_present") else None,
                  "cues": len(rec.of("upstream_cue"))}}))
"""
    host_ns = os.stat("/proc/self/ns/net").st_ino
    result = senders.in_netns([sys.executable, "-c", reader], broadcast, timeout=40)
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert int(got["netns"]) == got["mine"] != host_ns          # sender and capture in one new namespace
    assert len(got["pts"]) >= 15 and got["times"] == sorted(got["times"]) and got["audio"] is True, got
    assert got["cues"] >= 1, got


def test_a_scheme_this_install_cannot_read_is_refused_by_check_config(tmp_path, monkeypatch):
    """srt:// needs an ffmpeg on PATH for the relay: without one, check-config says so in one line."""
    from conftest import run_cli
    import yaml

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"model": str(tmp_path), "channels": [{"name": "a", "source": "srt://127.0.0.1:9000"}]}))
    env_path = tmp_path / "bin"
    env_path.mkdir()
    os.symlink(sys.executable, env_path / "python")
    proc = run_cli("check-config", "-c", cfg, env={"PATH": str(env_path)})
    assert proc.returncode == 2 and "srt://" in proc.stderr and "ffmpeg" in proc.stderr and "Traceback" not in proc.stderr, \
        proc.stderr


def test_a_short_udp_hiccup_is_not_a_reconnect(broadcast):
    """The sender stops for 1.5 s (shorter than the read timeout) and goes on: the capture waits in
    libav's receive FIFO, no stream.down, no reconnect, and media time carries on."""
    with senders.udp_sender(broadcast, exact=True) as s:
        state: dict = {}

        def until(r: Recorder) -> bool:
            n = len(r.of("frame_captured"))
            if n >= 50 and "paused" not in state:
                state["paused"] = n
                s.pause()
                time.sleep(1.5)
                s.resume()
            return "paused" in state and n >= state["paused"] + 75

        rec, ring, audio = run_capture(s.url, until, timeout=25, read_timeout=4, stall_seconds=8)
    assert "paused" in state and len(rec.of("frame_captured")) >= state["paused"] + 75, rec.calls[-5:]
    assert rec.of("stream_down") == [] and len(rec.of("stream_up")) == 1
    check_live(rec, ring, audio, cues=True)
