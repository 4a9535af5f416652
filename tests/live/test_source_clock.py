"""The daemon on an MPEG-TS over UDP whose PTS wraps past 2**33 and which carries SCTE-35 cues:
what subscribers and scrapers see (real sender, real daemon, real ZeroMQ, real scrape).

The broadcast is the test's own (tests/cuekit.py): 16 s of H.264 + AAC whose 33-bit PTS wraps
6 s in, with a cue-out and a cue-in at known PTS, sent byte for byte (as the injector wrote
it) by ffmpeg to 127.0.0.1 and looped with its timestamps moved on (tests/senders.py).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from cuekit import write_ts_with_cues
from livekit import Daemon, Listener, metric, scrape, write_config
from tests import senders

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg (make test installs it)")

WRAP = 2 ** 33


def test_upstream_cues_and_segment_pts_across_a_pts_wrap(tmp_path, bundle_dir: Path):
    media = tmp_path / "wrap.ts"
    written = write_ts_with_cues(media, 16, [(3.0, True, 21), (9.0, False, 21)], start_pts_seconds=WRAP / 90000 - 6.0)
    # the sender starts only once the daemon listens: the daemon must read the broadcast from its
    # first packet (the wrap is 6 s in, and the cues are compared with the PTS they were written at;
    # a loop round later every clock is shifted). A daemon that is ready late on a loaded machine
    # would otherwise join mid-loop.
    port = senders.free_udp_port()
    cfg = tmp_path / "config.yaml"
    ep = write_config(cfg, bundle_dir, [{"name": "tv", "source": f"udp://127.0.0.1:{port}"}])
    listener = Listener(ep["events"])
    daemon = Daemon(cfg)
    try:
        assert daemon.wait_log("daemon ready", 120), daemon.log()[-3000:]
        with senders.udp_sender(media, port=port, exact=True):
            assert listener.wait_for(lambda: len(listener.of_type("cue.upstream")) >= 2
                                     and listener.of_type("segment.start")
                                     and metric(scrape(ep["metrics"]), "ad_detector_pts_wraps_total", channel="tv") >= 1,
                                     60), daemon.log()[-4000:]
            text = scrape(ep["metrics"])
            assert daemon.stop(timeout=10) == 0
        listener.wait_for(lambda: listener.of_type("segment.end"), 5)
    finally:
        daemon.stop()
        listener.close()
    cues = listener.of_type("cue.upstream")[:2]
    assert [(c["pts"], c["out_of_network"], c["event_id"], c["command"]) for c in cues] == \
        [(w.pts, w.out_of_network, w.event_id, "splice_insert") for w in written]
    assert [c["base64"] for c in cues] == [w.base64 for w in written]
    # the splice points on the channel's timeline: 6 s apart, across the wrap
    assert abs((cues[1]["stream_time"] - cues[0]["stream_time"]) - 6.0) < 0.05, cues
    assert metric(text, "ad_detector_upstream_cues_total", channel="tv") >= 2
    assert metric(text, "ad_detector_audio_present", channel="tv") == 1
    assert metric(text, "ad_detector_decode_errors_total", channel="tv") == 0
    proc = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # segment events carry the source PTS, on the same clock as stream_time, across the wrap;
    # the channel's timeline never went back (no reset or jump fault at the wrap)
    segs = [e for _, _, e in listener.events if e["type"].startswith("segment.")]
    assert segs and all(isinstance(e["pts"], int) and 0 <= e["pts"] < WRAP for e in segs), segs
    for e in segs:
        elapsed = ((e["pts"] - cues[0]["pts"]) % WRAP) / 90000
        if elapsed > WRAP / 90000 / 2:
            elapsed -= WRAP / 90000
        assert abs(elapsed - (e["stream_time"] - cues[0]["stream_time"])) < 0.05, (e, cues[0])
    for kind in ("timestamp_reset", "timestamp_jump"):
        assert metric(text, "ad_detector_stream_faults_total", channel="tv", kind=kind) == 0, kind
