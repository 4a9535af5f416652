"""One module per input kind behind one interface; the registry is where kinds are found."""

from __future__ import annotations

import pytest

from detector.sources import SCHEMES, SOURCE_KINDS, SOURCES, Source, SourceOptions, open_source, source_class


@pytest.mark.parametrize("url,kind", [
    ("rtsp://cam/live", "rtsp"), ("RTSPS://cam/live", "rtsp"), ("rtmp://srv/app", "rtmp"), ("udp://239.1.1.1:5000", "udp"),
    ("srt://h:9000", "srt"), ("https://cdn/x.m3u8", "http"), ("/dev/video2", "device"), ("/data/rec.ts", "file"),
    ("rec.mp4", "file"),
])
def test_each_url_finds_its_kind(url, kind):
    cls = source_class(url)
    assert cls.kind == kind and issubclass(cls, Source)
    src = open_source(url, SourceOptions(open_timeout=1, read_timeout=1))
    assert isinstance(src, cls) and src.url == url


def test_kinds_and_schemes_are_defined_once_by_the_modules():
    assert SOURCE_KINDS == tuple(s.kind for s in SOURCES)
    assert set(SOURCE_KINDS) == {"rtsp", "rtmp", "udp", "srt", "http", "file", "device"}
    assert set(SCHEMES) == {"rtsp", "rtsps", "rtmp", "rtmps", "udp", "srt", "http", "https"}


def test_only_a_file_is_read_at_its_own_pace_and_only_a_device_uses_arrival_time():
    assert [s.kind for s in SOURCES if not s.live] == ["file"]
    assert [s.kind for s in SOURCES if s.clock == "arrival"] == ["device"]


def test_each_kind_passes_its_own_options_to_libav():
    """Options are per container (no process-wide environment variable, no open lock)."""
    rtsp = open_source("rtsp://cam/live", SourceOptions(rtsp_transport="udp", read_timeout=2.5))
    assert rtsp.av_options()["rtsp_transport"] == "udp" and rtsp.av_options()["timeout"] == "2500000"
    udp = open_source("udp://239.1.1.1:5000", SourceOptions(udp_fifo_packets=5000))
    assert udp.av_options()["fifo_size"] == "5000" and udp.av_options()["overrun_nonfatal"] == "1"
    hls = open_source("http://cdn/live.m3u8", SourceOptions(read_timeout=5, hls_read_timeout=25))
    assert hls.av_timeouts() == (10.0, 25.0) and hls.av_options()["live_start_index"] == "-1" and hls.bursty


@pytest.mark.parametrize("url", ["", "  ", "rstp://cam/live", "ftp://x/y"])
def test_unknown_or_empty_sources_are_refused(url):
    with pytest.raises(ValueError):
        source_class(url)


def test_a_missing_file_does_not_open_and_says_so_without_raising(tmp_path):
    src = open_source(str(tmp_path / "missing.mp4"), SourceOptions(open_timeout=1, read_timeout=1))
    try:
        assert src.open() is False
        assert src.grab() is False
    finally:
        src.close()
        src.close()


def test_a_file_reads_frames_with_their_clock(demo_set):
    src = open_source(str(demo_set.broadcast), SourceOptions())
    try:
        assert src.open() and src.fps and src.fps > 0
        times, pts = [], []
        for _ in range(5):
            assert src.grab()
            times.append(src.position())
            pts.append(src.pts())
        frame = src.retrieve()
        assert frame is not None and frame.ndim == 3 and frame.shape[2] == 3
        assert src.retrieve((299, 299)).shape == (299, 299, 3)
        assert times == sorted(times) and times[-1] > times[0]
        # the PTS is the time in 90 kHz ticks (mod 2**33)
        assert all(isinstance(p, int) for p in pts)
        assert [round((p - pts[0]) / 90000, 3) for p in pts] == [round(t - times[0], 3) for t in times]
    finally:
        src.close()
