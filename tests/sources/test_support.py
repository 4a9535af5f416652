"""Which schemes this install reads, and through what."""

from __future__ import annotations

import shutil

import pytest

from detector.sources import support

pytest.importorskip("av")


def test_pyav_is_asked_for_its_protocols_without_the_network():
    protocols = support.libav_input_protocols()
    assert protocols is not None and {"udp", "http", "https", "rtmp", "tcp", "file"} <= protocols
    assert "srt" not in protocols           # the PyAV wheel's libav has no libsrt


@pytest.mark.parametrize("scheme", ["rtsp", "rtsps", "rtmp", "udp", "http", "https"])
def test_libav_reads_the_common_schemes_itself(scheme):
    assert support.libav_reads(scheme) and not support.needs_relay(scheme)
    assert support.unsupported_reason(scheme) is None


def test_the_probe_agrees_with_the_list():
    for scheme in ("srt", "udp", "rtmp", "rist"):
        assert support._probe(scheme) == (scheme in support.libav_input_protocols())


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="no ffmpeg on PATH")
def test_srt_goes_through_the_relay_when_ffmpeg_has_libsrt():
    assert "srt" in support.ffmpeg_input_protocols()
    assert support.needs_relay("srt") and support.needs_relay("SRT")
    assert support.unsupported_reason("srt") is None


def test_without_ffmpeg_srt_is_refused_with_what_to_do():
    reason = support.unsupported_reason("srt", ffmpeg="no-such-ffmpeg-here")
    assert reason and "\n" not in reason and "libsrt" in reason and "apt-get install ffmpeg" in reason
    assert not support.needs_relay("srt", ffmpeg="no-such-ffmpeg-here")


def test_files_and_unknown_schemes():
    assert support.unsupported_reason(None) is None and not support.needs_relay(None)
    assert "foo://" in support.unsupported_reason("foo")


def test_answers_are_cached_and_cheap():
    import time

    support.libav_input_protocols(), support.ffmpeg_input_protocols()
    t = time.monotonic()
    for _ in range(100):
        support.unsupported_reason("srt"), support.unsupported_reason("rtsp")
    assert time.monotonic() - t < 0.5
