"""The ffmpeg relay for schemes PyAV's libav lacks, against a real SRT sender."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from detector.sources.relay import FfmpegRelay
from tests import senders
from tests.senders import advancing, free_udp_port, read_av
from tests.tsmedia import make_ts

av = pytest.importorskip("av")


@pytest.fixture(scope="module")
def broadcast(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("media") / "broadcast.ts"
    make_ts(path, seconds=6)
    return path


def ffmpeg_children_of(relay: FfmpegRelay) -> bool:
    return relay.proc is not None and relay.proc.poll() is None


def test_the_relay_keeps_pts_audio_and_the_scte35_pid_as_sent(broadcast):
    with senders.srt_sender(broadcast, exact=True) as s:
        relay = FfmpegRelay(s.url, open_timeout=5, read_timeout=3)
        try:
            seen = read_av(relay.start(), format="mpegts")
        finally:
            relay.close()
    assert seen.streams == [("video", "h264"), ("audio", "aac"), ("data", "scte_35")]
    assert len(seen.video_pts) >= 50 and advancing(seen.video_pts) and seen.audio_frames >= 50
    assert seen.video_pts[0] == 127920            # the sender's own PTS (ffmpeg starts the file at 1.4 s)
    assert relay.proc.returncode is not None and relay.failure() is None


def test_remuxing_keeps_pts_and_data_but_renames_scte35(broadcast):
    """`passthrough=False` (for non-TS payloads): ffmpeg's MPEG-TS muxer writes 0x86 as 0x06."""
    with senders.srt_sender(broadcast, exact=True) as s:
        relay = FfmpegRelay(s.url, open_timeout=8, read_timeout=3, passthrough=False)
        try:
            # a 0x06 stream libav cannot name keeps find_stream_info reading up to probesize:
            # bound it, or the open takes ~45 s at this bitrate
            seen = read_av(relay.start(), {"probesize": "200000", "analyzeduration": "1000000"}, format="mpegts",
                           timeout=(8, 3))
        finally:
            relay.close()
    assert seen.streams == [("video", "h264"), ("audio", "aac"), ("data", "bin_data")]
    assert advancing(seen.video_pts) and seen.audio_frames >= 50


def test_a_stall_raises_timeout_within_the_read_timeout(broadcast):
    with senders.srt_sender(broadcast, exact=True) as s:
        relay = FfmpegRelay(s.url, open_timeout=5, read_timeout=1.5)
        try:
            c = av.open(relay.start(), format="mpegts", timeout=(5, 3))
            try:
                next(c.demux(video=0))
                s.pause()
                t = time.monotonic()
                with pytest.raises(TimeoutError):
                    for _ in c.demux():
                        pass
                assert time.monotonic() - t < 1.5 + 1
            finally:
                c.close()
        finally:
            relay.close()
        assert not ffmpeg_children_of(relay)


def test_an_unreachable_source_gives_one_clear_redacted_line():
    url = f"srt://127.0.0.1:{free_udp_port()}?passphrase=verysecret123"
    relay = FfmpegRelay(url, open_timeout=5, read_timeout=2)
    try:
        reader = relay.start()
        t = time.monotonic()
        with pytest.raises((TimeoutError, av.error.FFmpegError)):
            av.open(reader, format="mpegts", timeout=(5, 3))
        assert time.monotonic() - t < 5 + 1
        relay.proc.wait(5)
        line = relay.failure()
    finally:
        relay.close()
    assert line and line.startswith("ffmpeg relay exited 1: ") and "verysecret" not in line, line
    assert "passphrase=***" in line


def test_close_reaps_ffmpeg_and_is_safe_twice(broadcast):
    with senders.srt_sender(broadcast, exact=True) as s:
        relay = FfmpegRelay(s.url, open_timeout=5, read_timeout=3)
        reader = relay.start()
        assert reader.read(188)
        pid = relay.proc.pid
        relay.close()
        relay.close()
    assert relay.proc.returncode is not None and relay.failure() is None
    assert reader.read(10) == b""
    assert subprocess.run(["ps", "-p", str(pid)], capture_output=True).returncode == 1     # reaped: gone


def test_a_missing_ffmpeg_is_an_oserror():
    relay = FfmpegRelay("srt://127.0.0.1:9", 1, 1, ffmpeg="/nonexistent/ffmpeg")
    with pytest.raises(OSError):
        relay.start()
    relay.close()
