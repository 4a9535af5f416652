"""The `output` section as an operator writes it: what check-config refuses (with the key to
change), what it only warns about, and the marker's destination retried when it fails.

Fast: no models; a tiny TS made by ffmpeg where a file source must be MPEG-TS.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from detector.config import ConfigError, parse_config
from detector.events.scte35 import splice_insert
from detector.live.metrics import Metrics
from detector.marker.checks import marker_warnings
from detector.marker.marker import InlineMarker, MarkerSettings
from livekit import metric


@pytest.fixture(scope="module")
def ts_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("mc") / "in.ts"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25", "-t", "3",
                    "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-f", "mpegts", str(path)], check=True, timeout=60)
    return path


def config(source: str, output: str, extra: str = "", realtime: bool = True) -> str:
    pace = "    realtime: true\n" if realtime and not source.startswith(("udp:", "rtsp:", "srt:")) else ""
    return f"model: m\nchannels:\n  - name: tv\n    source: {source}\n{pace}    output:\n{output}{extra}"


def errors(text: str, base: Path) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, origin="cfg.yaml", base_dir=base)
    return {path: msg for path, _, msg in info.value.errors}


def test_a_valid_output_resolves_its_path_and_keeps_its_settings(ts_file, tmp_path):
    cfg = parse_config(config(str(ts_file), "      url: marked.ts\n      delay_seconds: 12\n      preroll_seconds: 3\n"),
                       base_dir=tmp_path)
    out = cfg.channels[0].output
    assert (out.url, out.delay_seconds, out.preroll_seconds, out.max_buffer_mb) == (str(tmp_path / "marked.ts"), 12.0, 3.0, 256.0)
    assert marker_warnings(cfg) == []
    cfg = parse_config(config("udp://127.0.0.1:5000", "      url: udp://239.1.1.1:6000?ttl=4\n"), base_dir=tmp_path)
    assert cfg.channels[0].output.delay_seconds == 10.0


def test_refusals_name_the_key_and_what_to_do(ts_file, tmp_path):
    got = errors(config(str(ts_file), "      url: out.ts\n      delay_seconds: -1\n      preroll_seconds: -0.5\n"), tmp_path)
    assert set(got) == {"channels[0].output.delay_seconds", "channels[0].output.preroll_seconds"}, got
    got = errors(config("rtsp://127.0.0.1:8554/live", "      url: out.ts\n"), tmp_path)
    assert "MPEG-TS input" in got["channels[0].output.url"] and "rtsp" in got["channels[0].output.url"]
    got = errors(config(str(ts_file), "      url: rtp://127.0.0.1:5000\n"), tmp_path)
    assert "unsupported output scheme rtp://" in got["channels[0].output.url"]
    got = errors(config(str(ts_file), f"      url: {ts_file}\n"), tmp_path)
    assert "the channel's own source" in got["channels[0].output.url"]
    got = errors(config(str(ts_file), "      url: /no/such/dir/out.ts\n"), tmp_path)
    assert "/no/such/dir does not exist" in got["channels[0].output.url"]
    mp4 = tmp_path / "clip.mp4"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(ts_file), "-c", "copy", str(mp4)], check=True, timeout=60)
    got = errors(config(str(mp4), "      url: out.ts\n"), tmp_path)
    assert "not an MPEG-TS file" in got["channels[0].output"] and "-f mpegts" in got["channels[0].output"]
    got = errors(config(str(ts_file), "      url: out.ts\n", realtime=False), tmp_path)
    assert "needs realtime: true" in got["channels[0].output"]
    got = errors(config(str(ts_file), "      url: udp://127.0.0.1:5000?pkt_size=1316\n"), tmp_path)
    assert "only ttl" in got["channels[0].output.url"]


def test_a_delay_below_latency_plus_preroll_is_a_warning_naming_the_key(ts_file, tmp_path):
    cfg = parse_config(config(str(ts_file), "      url: out.ts\n      delay_seconds: 5\n      preroll_seconds: 4\n"),
                       base_dir=tmp_path)
    [line] = marker_warnings(cfg)
    assert line.startswith("channels[0].output.delay_seconds: 5 s is less than the expected decision latency")
    assert "ad_detector_marker_late_cues_total" in line and "\n" not in line


def test_a_failing_destination_is_retried_counted_and_recovers(ts_file, tmp_path):
    """The output directory disappears (a full or unmounted disk): the marker counts the errors and
    the bytes it could not write, keeps the capture side unblocked, and resumes once it is back."""
    target = tmp_path / "gone" / "out.ts"
    metrics = Metrics(["tv"], marker_channels=["tv"])
    marker = InlineMarker("tv", MarkerSettings(str(target), 0.2, 0.0, 8 << 20), metrics)
    marker.start()
    data = ts_file.read_bytes()
    try:
        for i in range(0, len(data) // 2, 4096):
            marker.feed(data[i:i + 4096])
        time.sleep(1.0)
        text = metrics.exposition().decode()
        assert metric(text, "ad_detector_marker_output_errors_total", channel="tv") >= 1
        assert metric(text, "ad_detector_marker_dropped_bytes_total", channel="tv", reason="output_down") > 0
        assert metric(text, "ad_detector_marker_output_up", channel="tv") == 0
        health = marker.health()
        assert health.ok and "marker output of tv failing" in health.degraded[0] and str(target) in health.degraded[0]
        target.parent.mkdir()
        marker.cue(splice_insert(1, True, None))
        for i in range(len(data) // 2, len(data), 4096):
            marker.feed(data[i:i + 4096])
        deadline = time.monotonic() + 5
        while not target.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        marker.stop()
    assert target.exists() and target.stat().st_size > 0
    assert marker.health().degraded == []
    text = metrics.exposition().decode()
    assert metric(text, "ad_detector_marker_cues_total", channel="tv") == 1


def test_srt_output_reaches_an_srt_listener_byte_for_byte(ts_file, tmp_path):
    """Through Debian's ffmpeg (libsrt) as a byte relay: the far end gets exactly what was written."""
    from detector.marker.destinations import SrtDestination
    from detector.sources.support import ffmpeg_output_protocols
    from senders import free_udp_port

    if "srt" not in (ffmpeg_output_protocols() or ()):
        pytest.skip("no ffmpeg with libsrt on PATH")
    port = free_udp_port()
    got = tmp_path / "rx.ts"
    rx = subprocess.Popen(["ffmpeg", "-nostdin", "-loglevel", "quiet", "-y", "-f", "data", "-i",
                           f"srt://127.0.0.1:{port}?mode=listener", "-map", "0", "-c", "copy", "-f", "data", str(got)])
    try:
        time.sleep(0.5)
        dest = SrtDestination(f"srt://127.0.0.1:{port}")
        dest.open()
        data = ts_file.read_bytes()
        for i in range(0, len(data), 1316 * 10):
            dest.write(data[i:i + 1316 * 10])
            time.sleep(0.002)
        time.sleep(0.5)
        dest.close()
        rx.wait(10)
    finally:
        if rx.poll() is None:
            rx.kill()
            rx.wait()
    assert got.read_bytes() == data


def test_a_file_output_reopened_after_a_failure_keeps_what_was_written(tmp_path):
    from detector.marker.destinations import FileDestination

    path = tmp_path / "out.ts"
    path.write_bytes(b"old recording")
    dest = FileDestination(str(path))
    dest.open()
    dest.write(b"G" * 188)
    dest.close()                 # a write failed: the marker closes and, later, opens again
    dest.open()
    dest.write(b"G" * 188)
    dest.close()
    assert path.read_bytes() == b"G" * 376      # truncated once, at start; appended after
