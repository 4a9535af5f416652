"""The cluster mode's pure parts (issue 17): grouping, Ray options, the driver's event relay,
the merged Prometheus view, the config section and its refusal without Ray. No Ray runs here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

from detector.cluster.metrics import ClusterMetrics, merge_families
from detector.cluster.relay import WORKER_LOST, ChannelRelay
from detector.config import load_config
from detector.errors import UsageError
from detector.events.scte35 import splice_event_id
from detector.live.metrics import Metrics
from detector.model.backends.ray_serve import retry_delays
from tests.conftest import REPO, assert_usage_error, cli_env

ray_installed = True
try:
    import ray  # noqa: F401
except ImportError:
    ray_installed = False


def test_channel_groups_and_ray_init_options() -> None:
    from detector.cluster.driver import channel_groups, ray_init_kwargs

    assert channel_groups(["a", "b", "c", "d", "e"], 2) == [["a", "b"], ["c", "d"], ["e"]]
    assert channel_groups(["a"], 8) == [["a"]]

    class Local:
        address, num_cpus, node_ip = "local", 2, "127.0.0.1"

    class Remote:
        address = "ray://head.example:10001"

    local = ray_init_kwargs(Local())
    assert local["_node_ip_address"] == "127.0.0.1" and local["include_dashboard"] is False and local["num_cpus"] == 2
    assert "address" not in local
    assert ray_init_kwargs(Remote())["address"] == "ray://head.example:10001"


def test_split_features_gives_each_request_its_rows() -> None:
    pytest.importorskip("ray", reason="the Serve deployment module imports ray (extra [cluster])")
    from detector.cluster.backbone import split_features

    feats = np.arange(12, dtype=np.float32).reshape(6, 2)
    parts = split_features(feats, [1, 3, 2])
    assert [p.shape[0] for p in parts] == [1, 3, 2]
    assert parts[1].tolist() == [[2, 3], [4, 5], [6, 7]]


def test_retry_backoff_doubles_to_a_cap() -> None:
    gen = retry_delays(0.1, 1.0)
    assert [round(next(gen), 3) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def _start(label: str, t: float, **extra) -> dict:
    """A worker's segment event; ad segments carry a cue made from the worker's own (reused) id."""
    fields = {"label": label, "is_ad": label == "commercial", "confidence": 0.9, "segment_id": "x-worker-1",
              "time": "2026-01-01T00:00:00.000Z", "stream_time": t, "pts": 0, "boundary": "cut", **extra}
    if fields["is_ad"]:
        fields["scte35"] = {"event_id": splice_event_id("x-worker-1")}
    return fields


def test_relay_numbers_segments_across_worker_restarts_and_keeps_the_timeline() -> None:
    r = ChannelRelay("a", "0123456789abcdef")
    r.position(0.0, 1000.0)                     # first frame at wall 1000 s, media 0
    assert r.incoming("stream.up", {}) == [("stream.up", "a", {})]
    (_, _, s1), = r.incoming("segment.start", _start("football", 0.0))
    assert s1["segment_id"] == "a-01234567-1"
    r.position(12.0, 1012.0)
    out = r.incoming("segment.end", {**_start("football", 12.0), "duration": 12.0})
    assert out[0][2]["segment_id"] == "a-01234567-1"
    (_, _, s2), = r.incoming("segment.start", _start("commercial", 12.0))
    r.position(20.0, 1020.0)

    lost = r.lost()                             # the worker died: end the open segment, say why
    assert [(t, f.get("reason"), f.get("boundary")) for t, _, f in lost] == [("segment.end", None, "stream_end"),
                                                                             ("stream.down", WORKER_LOST, None)]
    assert lost[0][2]["segment_id"] == s2["segment_id"] and lost[0][2]["stream_time"] == 20.0
    assert lost[0][2]["duration"] == 8.0
    # an ad segment's cue-in pairs with its cue-out: same splice_event_id, from the published id
    assert lost[0][2]["scte35"]["event_id"] == s2["scte35"]["event_id"] == splice_event_id(s2["segment_id"])
    assert s2["scte35"]["out_of_network"] is True and lost[0][2]["scte35"]["out_of_network"] is False
    assert r.incoming("segment.end", _start("commercial", 21.0)) == []     # nothing open any more: not repeated

    # the new incarnation's clock starts at 0 again, 30 s of wall time later
    r.position(0.0, 1050.0)
    (_, _, s3), = r.incoming("segment.start", _start("football", 0.0))
    assert s3["segment_id"] == "a-01234567-3"           # never reused
    assert s3["stream_time"] == 50.0                    # the timeline went on with the wall clock
    (_, _, cue), = r.incoming("cue.upstream", {"stream_time": 1.5, "pts": 5})
    assert cue["stream_time"] == 51.5


def _families(build) -> list:
    reg = CollectorRegistry()
    build(reg)
    return list(reg.collect())


def test_merged_view_takes_worker_series_and_keeps_driver_ones() -> None:
    driver = Metrics(["a", "b"])
    driver.events_published.labels(channel="a", type="segment.start").inc(3)     # only the driver publishes

    w0, w1 = Metrics(["a"]), Metrics(["b"])
    w0.frames_analyzed.labels(channel="a").inc(100)
    w1.frames_analyzed.labels(channel="b").inc(40)
    w0.batch_size.observe(8)
    w1.batch_size.observe(2)
    w0.stream_up.labels(channel="a").set(1)
    w0.events_published.labels(channel="a", type="segment.start").inc(99)       # a worker's own copy is ignored
    extra = _families(lambda r: Counter("ad_detector_backbone_retries", "x", registry=r).inc(2))

    merged = merge_families(list(driver.registry.collect()), [list(w0.registry.collect()), list(w1.registry.collect()), extra])
    text = generate_latest(type("R", (), {"collect": lambda self: merged})()).decode()
    assert 'ad_detector_frames_analyzed_total{channel="a"} 100.0' in text
    assert 'ad_detector_frames_analyzed_total{channel="b"} 40.0' in text
    assert 'ad_detector_stream_up{channel="a"} 1.0' in text and 'ad_detector_stream_up{channel="b"} 0.0' in text
    assert "ad_detector_batch_size_count 2.0" in text and "ad_detector_batch_size_sum 10.0" in text
    assert 'ad_detector_events_published_total{channel="a",type="segment.start"} 3.0' in text
    assert "ad_detector_backbone_retries_total 2.0" in text
    assert text.count("# TYPE ad_detector_frames_analyzed_total counter") == 1


def test_cluster_metrics_drop_a_lost_worker_back_to_zero() -> None:
    m = ClusterMetrics(["a"])
    w = Metrics(["a"])
    w.stream_up.labels(channel="a").set(1)
    m.reports["w0"] = list(w.registry.collect())
    assert 'ad_detector_stream_up{channel="a"} 1.0' in m.exposition().decode()
    del m.reports["w0"]
    assert 'ad_detector_stream_up{channel="a"} 0.0' in m.exposition().decode()


def _config(tmp_path: Path, cluster: object) -> Path:
    video = tmp_path / "in.mp4"
    video.write_bytes(b"")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"model": str(tmp_path), "channels": [{"name": "a", "source": str(video)}],
                                    "cluster": cluster}))
    return path


@pytest.mark.skipif(not ray_installed, reason="the cluster section validates only with Ray installed (extra [cluster])")
def test_cluster_section_defaults_and_bad_values(tmp_path: Path) -> None:
    cfg = load_config(_config(tmp_path, {"address": "local"}))
    assert cfg.cluster is not None and cfg.cluster.backbone.replicas == 1 and cfg.cluster.channels_per_worker == 8
    assert load_config(_config(tmp_path, {"address": "ray://10.0.0.5:10001"})).cluster.address == "ray://10.0.0.5:10001"
    with pytest.raises(UsageError, match=r"cluster\.address.*local, auto or ray://HOST:PORT"):
        load_config(_config(tmp_path, {"address": "http://head:8265"}))
    with pytest.raises(UsageError, match=r"cluster\.backbone\.max_replicas.*below replicas 2"):
        load_config(_config(tmp_path, {"backbone": {"replicas": 2, "max_replicas": 1}}))
    with pytest.raises(UsageError, match=r"cluster\.backbone\.gpu"):
        load_config(_config(tmp_path, {"backbone": {"gpu": 1}}))


def test_without_ray_a_cluster_section_is_one_line_naming_the_extra(tmp_path: Path) -> None:
    """As on an install without `[cluster]`: `import ray` fails (blocked here), exit 2, one line."""
    cfg = _config(tmp_path, {"address": "local"})
    code = ("import sys; sys.modules['ray'] = None\n"
            "from detector.cli import main\n"
            f"sys.exit(main(['run', '-c', {str(cfg)!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=cli_env(),
                          cwd=REPO)
    assert_usage_error(proc, "cluster", "pip install '.[cluster]'")
