"""The protocol test senders are real: PyAV (the capture's libav) reads each one.

Each test starts a sender of a small H.264 + AAC MPEG-TS (with a SCTE-35 PID), reads about
2 s of video through PyAV with the options that protocol needs, and checks the frames' PTS
advance and audio arrives. Traffic stays on 127.0.0.1; multicast runs in a namespace of its own.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from tests import senders
from tests.senders import advancing, read_av
from tests.tsmedia import make_ts

av = pytest.importorskip("av")

UDP_OPTIONS = {"fifo_size": "1000000", "overrun_nonfatal": "1", "buffer_size": "2000000", "timeout": "2000000"}
# A private-data (0x06) stream libav cannot name keeps avformat_find_stream_info reading until
# probesize (5 MB: ~45 s at this bitrate) or, on a URL, until the open timeout interrupts it.
PROBE = {"probesize": "200000", "analyzeduration": "1000000"}


@pytest.fixture(scope="module")
def broadcast(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("media") / "broadcast.ts"
    assert len(make_ts(path, seconds=6)) == 3
    return path


def assert_live(seen, data: str | None = None) -> None:
    assert len(seen.video_pts) >= 50 and advancing(seen.video_pts), seen
    assert seen.audio_frames >= 50, seen           # AAC at 48 kHz: ~47 frames a second
    if data:
        assert ("data", data) in seen.streams, seen


def test_the_media_carries_scte35_as_injectors_write_it(broadcast):
    seen = read_av(str(broadcast), video_frames=10 ** 6)
    assert seen.streams == [("video", "h264"), ("audio", "aac"), ("data", "scte_35")]
    assert seen.data_packets == 3 and len(seen.video_pts) == 150


@pytest.mark.parametrize("exact", [False, True])
def test_udp_unicast(broadcast, exact):
    with senders.udp_sender(broadcast, exact=exact) as s:
        seen = read_av(s.url, {**UDP_OPTIONS, **PROBE}, timeout=(5, 3))
    assert_live(seen, "scte_35" if exact else "bin_data")   # ffmpeg's muxer makes 0x86 a 0x06


def test_a_silent_udp_source_times_out_within_the_read_timeout(broadcast):
    with senders.udp_sender(broadcast) as s:
        c = av.open(s.url, options={**UDP_OPTIONS, **PROBE}, timeout=(5, 1))
        try:
            next(c.demux(video=0))
            s.pause()
            t = time.monotonic()
            with pytest.raises(av.error.ExitError):        # the interrupt callback: "Immediate exit requested"
                for _ in c.demux(video=0):
                    pass
            assert time.monotonic() - t < 1 + 2 + 1          # read timeout, plus what the fifo still held
        finally:
            c.close()


@pytest.mark.skipif(not senders.netns_available(), reason="needs unshare -n and ip (root or user namespaces)")
def test_udp_multicast_inside_a_namespace_of_its_own(broadcast):
    reader = f"""
import json, os, sys
sys.path[:0] = {[str(Path(__file__).resolve().parents[2])]!r}
from tests.senders import read_av, advancing
seen = read_av(os.environ["MCAST_URL"] + "?fifo_size=1000000&overrun_nonfatal=1&timeout=2000000",
               {{"probesize": "200000", "analyzeduration": "1000000"}}, timeout=(5, 3))
print(json.dumps({{"netns": os.environ["NETNS_INODE"], "mine": os.stat("/proc/self/ns/net").st_ino,
                  "streams": seen.streams, "pts": seen.video_pts, "audio": seen.audio_frames}}))
"""
    host_ns = os.stat("/proc/self/ns/net").st_ino
    result = senders.in_netns([sys.executable, "-c", reader], broadcast, timeout=20)
    assert result.returncode == 0, result.stderr[-2000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert int(got["netns"]) == got["mine"] != host_ns          # sender and reader in one new namespace
    assert len(got["pts"]) >= 50 and advancing(got["pts"]) and got["audio"] >= 50, got
    assert ["data", "bin_data"] in got["streams"]


def test_srt_is_not_in_pyav_but_the_sender_is_real(broadcast):
    from detector.sources.relay import FfmpegRelay

    with senders.srt_sender(broadcast, exact=True) as s:
        with pytest.raises(av.error.ProtocolNotFoundError):
            av.open(s.url, timeout=(1, 1))
        relay = FfmpegRelay(s.url, open_timeout=5, read_timeout=3)
        try:
            seen = read_av(relay.start(), format="mpegts")
        finally:
            relay.close()
    assert_live(seen, "scte_35")


def test_srt_sender_as_caller_to_a_listening_reader(broadcast):
    from detector.sources.relay import FfmpegRelay

    with senders.srt_sender(broadcast, mode="caller", exact=True) as s:
        assert s.url.endswith("?mode=listener")
        relay = FfmpegRelay(s.url, open_timeout=5, read_timeout=3)
        try:
            seen = read_av(relay.start(), format="mpegts")
        finally:
            relay.close()
    assert_live(seen, "scte_35")


def test_hls_live_playlist(broadcast):
    with senders.hls_server(broadcast, segment_seconds=1, list_size=4) as s:
        s.wait_ready(segments=2, timeout=10)
        seen = read_av(s.url, {"live_start_index": "-2", "rw_timeout": "3000000", "http_persistent": "1", **PROBE},
                       timeout=(8, 3))
    assert_live(seen, "bin_data")


def test_rtmp_one_client_server(broadcast):
    with senders.rtmp_sender(broadcast) as s:
        seen = None
        deadline = time.monotonic() + 5
        while seen is None:
            try:
                seen = read_av(s.url, {"rw_timeout": "3000000"}, timeout=(5, 3))
            except av.error.ConnectionRefusedError:          # the server is not listening yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    assert_live(seen)
    assert [t for t, _ in seen.streams] == ["video", "audio"]   # FLV: no data stream, no SCTE-35
