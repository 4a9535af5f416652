"""The libav capture on real MPEG-TS files: the source's clock, its audio, its cues, its faults.

The capture thread runs for real on files made with ffmpeg (and tests/cuekit.py for the
SCTE-35 PID); what it reports goes to a recording observer, what it keeps to a real ring.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from cuekit import write_ts_with_cues
from detector.analysis.audio import AudioBuffer
from detector.analysis.clock import PTS_MODULUS
from detector.live.capture import Capture, CaptureSettings
from detector.live.ring import Ring
from capturekit import Recorder, run_capture

SIZE = (299, 299)


def metas(ring: Ring):
    return [m for m in ring.meta if m is not None]


def ended(rec: Recorder) -> bool:
    return bool(rec.of("stream_down"))


def test_frames_carry_the_source_pts_and_audio_lands_on_the_same_timeline(tmp_path):
    path = tmp_path / "a.ts"
    write_ts_with_cues(path, 6, [], audio=True)
    rec, ring, audio = run_capture(path, ended)
    m = metas(ring)
    assert len(m) >= 25 and rec.of("audio_present") == [(True,)]
    assert m[0].media_time == 0.0 and all(isinstance(x.pts, int) for x in m)
    # stream time is the source's own clock: PTS differences == media time differences, to the tick
    for x in m:
        assert round((x.pts - m[0].pts) / 90000, 4) == round(x.media_time, 4)
    # the 440 Hz sine of the file is there, aligned: about -3 dBFS minus the encoder's level
    samples = audio.read(1.0, 5.0)
    assert samples is not None and abs(len(samples) - 4 * 16000) <= 16
    assert 0.05 < float(np.sqrt(np.mean(samples ** 2))) < 0.8


def test_a_source_without_audio_says_so_and_runs(tmp_path):
    path = tmp_path / "silent.ts"
    write_ts_with_cues(path, 4, [], audio=False)
    rec, ring, audio = run_capture(path, ended)
    assert rec.of("audio_present") == [(False,)] and len(metas(ring)) >= 15
    assert audio.read(0, 10) is None


def test_upstream_cues_come_with_their_splice_pts_and_stream_time(tmp_path):
    path = tmp_path / "cues.ts"
    written = write_ts_with_cues(path, 10, [(3.0, True, 11), (7.0, False, 11)])
    rec, ring, _ = run_capture(path, ended)
    cues = rec.of("upstream_cue")
    assert [(c.pts, c.out_of_network, c.event_id, c.command) for c, _ in cues] == \
        [(w.pts, w.out_of_network, w.event_id, "splice_insert") for w in written]
    assert [t for _, t in cues] == pytest.approx([w.time for w in written], abs=0.001)
    assert all(c.base64 == w.base64 for (c, _), w in zip(cues, written))


def test_a_pts_wrap_mid_stream_keeps_the_timeline_continuous(tmp_path):
    path = tmp_path / "wrap.ts"
    start = PTS_MODULUS / 90000 - 4.0             # the 33-bit PTS wraps 4 s in
    written = write_ts_with_cues(path, 10, [(2.0, True, 5), (6.0, False, 5)], start_pts_seconds=start)
    rec, ring, _ = run_capture(path, ended)
    m = metas(ring)
    times = [x.media_time for x in m]
    assert times == sorted(times) and times[-1] > 9.0 and max(np.diff(times)) < 0.5
    assert m[0].pts > PTS_MODULUS - 5 * 90000 and m[-1].pts < 7 * 90000      # it did wrap
    assert len(rec.of("pts_wrapped")) == 1
    assert not [f for f in rec.of("fault") if f[0] in ("timestamp_reset", "timestamp_jump")]
    cues = rec.of("upstream_cue")
    assert [c.pts for c, _ in cues] == [w.pts for w in written]
    assert [t for _, t in cues] == pytest.approx([2.0, 6.0], abs=0.05)


def _encode(path: Path, seconds: float, size: str, offset: float) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25",
                    "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p",
                    "-output_ts_offset", str(offset), "-f", "mpegts", str(path)], check=True, timeout=60)


def test_a_resolution_change_inside_one_connection_is_reported_and_analysed_on(tmp_path):
    a, b, both = tmp_path / "a.ts", tmp_path / "b.ts", tmp_path / "both.ts"
    _encode(a, 3, "640x360", 10.0)
    _encode(b, 3, "960x540", 13.0)                # continues the clock of the first part
    both.write_bytes(a.read_bytes() + b.read_bytes())
    rec, ring, _ = run_capture(both, ended)
    m = metas(ring)
    assert rec.of("fault").count(("resolution_change",)) == 1
    assert len(rec.of("stream_up")) == 1                 # one connection: no reconnect needed
    assert m[-1].media_time > 5.5 and all(x.generation == m[0].generation for x in m)
    # the pictures after the change are the new stream's, scaled whole to the model's input
    assert ring.images[len(m) - 1].std() > 10


def test_a_corrupted_stretch_is_counted_and_survived(tmp_path):
    """Lost TS packets, as a lossy network or a UDP overrun leaves them: every 7th of 300
    packets in the middle is gone (continuity counter gaps, broken pictures)."""
    path = tmp_path / "clean.ts"
    _encode(path, 8, "640x360", 10.0)
    data = path.read_bytes()
    packets = [data[i:i + 188] for i in range(0, len(data), 188)]
    n = len(packets)
    kept = [p for k, p in enumerate(packets) if not (n // 3 <= k < n // 3 + 300 and k % 7 == 0)]
    bad = tmp_path / "bad.ts"
    bad.write_bytes(b"".join(kept))
    rec, ring, _ = run_capture(bad, ended)
    m = metas(ring)
    assert sum(c[0] for c in rec.of("decode_errors")) >= 1 or ("corrupt",) in rec.of("fault")
    assert {"decode_error", "corrupt"} & {f[0] for f in rec.of("fault")}
    assert m[-1].media_time > 7.0                    # decoding went on past the damage
