"""The metrics endpoint as Prometheus and an operator see it: real HTTP, real promtool."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from detector.errors import UsageError
from detector.live.metrics import DROP_REASONS, EVENT_TYPES, Metrics
from detector.live.server import MetricsServer

CHANNELS = ["news", "sport-1"]
MODELS = ("backbone", "sequence")

# Straight from docs/CONTRACT.md "Metrics": sample name -> label names that must be present.
CONTRACT_CHANNEL_SERIES = [
    "ad_detector_frames_captured_total",
    "ad_detector_frames_analyzed_total",
    "ad_detector_stream_up",
    "ad_detector_capture_reconnects_total",
    "ad_detector_ad_probability",
    "ad_detector_last_frame_timestamp_seconds",
]


class Health:
    """A switchable health callback."""

    def __init__(self) -> None:
        self.ok = True
        self.fail = False

    def __call__(self) -> tuple[bool, dict[str, Any]]:
        if self.fail:
            raise RuntimeError("health check broke")
        return self.ok, {"channels": {"news": {"stream_up": self.ok}}}


@pytest.fixture()
def health() -> Health:
    return Health()


@pytest.fixture()
def metrics() -> Metrics:
    return Metrics(CHANNELS)


@pytest.fixture()
def server(metrics: Metrics, health: Health) -> Iterator[MetricsServer]:
    srv = MetricsServer("127.0.0.1:0", metrics, health)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def get(srv: MetricsServer, path: str) -> tuple[int, str, str]:
    """(status, content type, body) of a GET, HTTP errors included."""
    url = f"http://127.0.0.1:{srv.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read().decode()


def samples(text: str) -> dict[str, list[dict[str, str]]]:
    """Sample name -> label sets, parsed the way a scraper parses them."""
    out: dict[str, list[dict[str, str]]] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name].append(dict(sample.labels))
    return out


def value(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and dict(sample.labels) == labels:
                return sample.value
    raise AssertionError(f"no sample {name}{labels}")


def test_every_contract_series_exists_from_first_scrape(server: MetricsServer) -> None:
    status, ctype, text = get(server, "/metrics")
    assert status == 200
    assert ctype.startswith("text/plain")
    got = samples(text)

    for name in CONTRACT_CHANNEL_SERIES:
        channels = {labels.get("channel") for labels in got.get(name, [])}
        assert channels == set(CHANNELS), f"{name}: {channels}"

    dropped = {(l["channel"], l["reason"]) for l in got["ad_detector_frames_dropped_total"]}
    assert dropped == {(c, r) for c in CHANNELS for r in DROP_REASONS}

    published = {(l["channel"], l["type"]) for l in got["ad_detector_events_published_total"]}
    assert published == {(c, t) for c in CHANNELS for t in EVENT_TYPES}

    for suffix in ("_bucket", "_sum", "_count"):
        models = {l["model"] for l in got["ad_detector_inference_seconds" + suffix]}
        assert models == set(MODELS), suffix
        channels = {l["channel"] for l in got["ad_detector_decision_latency_seconds" + suffix]}
        assert channels == set(CHANNELS), suffix
        assert got["ad_detector_batch_size" + suffix], suffix

    assert {l["le"] for l in got["ad_detector_batch_size_bucket"]} == {
        "1.0", "2.0", "4.0", "8.0", "16.0", "32.0", "64.0", "128.0", "256.0", "+Inf"}
    inference_le = {float(l["le"]) for l in got["ad_detector_inference_seconds_bucket"]}
    assert min(inference_le) == 0.001 and max(inference_le - {float("inf")}) == 10.0
    latency_le = {float(l["le"]) for l in got["ad_detector_decision_latency_seconds_bucket"]}
    assert min(latency_le) == 0.05 and max(latency_le - {float("inf")}) == 30.0

    (info,) = got["ad_detector_model_info"]
    assert set(info) >= {"classes", "backbone_sha256", "sequence_sha256", "providers", "precision"}

    # Gauges start at 0, not absent.
    assert value(text, "ad_detector_stream_up", channel="news") == 0
    assert value(text, "ad_detector_ad_probability", channel="sport-1") == 0


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_exposition_passes_promtool(server: MetricsServer, metrics: Metrics) -> None:
    metrics.set_model_info(["ad", "football"], "a" * 64, "b" * 64, ["CPUExecutionProvider"], "int8")
    metrics.inference_seconds.labels(model="backbone").observe(0.12)
    metrics.decision_latency.labels(channel="news").observe(1.7)
    metrics.batch_size.observe(16)
    _, _, text = get(server, "/metrics")
    proc = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, f"promtool exit {proc.returncode}:\n{proc.stdout}{proc.stderr}"


def test_counters_gauges_and_info_move(server: MetricsServer, metrics: Metrics) -> None:
    metrics.frames_captured.labels(channel="news").inc(25)
    metrics.frames_dropped.labels(channel="news", reason="ring_overflow").inc()
    metrics.events_published.labels(channel="sport-1", type="segment.start").inc()
    metrics.stream_up.labels(channel="news").set(1)
    metrics.set_model_info(["ad", "football"], "a" * 64, "b" * 64,
                           ["CUDAExecutionProvider", "CPUExecutionProvider"], "fp32")
    _, _, text = get(server, "/metrics")

    assert value(text, "ad_detector_frames_captured_total", channel="news") == 25
    assert value(text, "ad_detector_frames_captured_total", channel="sport-1") == 0
    assert value(text, "ad_detector_frames_dropped_total", channel="news", reason="ring_overflow") == 1
    assert value(text, "ad_detector_events_published_total", channel="sport-1", type="segment.start") == 1
    assert value(text, "ad_detector_stream_up", channel="news") == 1
    assert value(text, "ad_detector_model_info", classes="ad,football", backbone_sha256="a" * 64,
                 sequence_sha256="b" * 64, providers="CUDAExecutionProvider,CPUExecutionProvider",
                 precision="fp32") == 1


def test_registries_are_independent() -> None:
    a, b = Metrics(["x"]), Metrics(["x"])  # would raise "Duplicated timeseries" on a shared registry
    a.frames_captured.labels(channel="x").inc()
    assert value(b.exposition().decode(), "ad_detector_frames_captured_total", channel="x") == 0


def test_healthz_follows_health_callback(server: MetricsServer, health: Health) -> None:
    status, ctype, body = get(server, "/healthz")
    assert status == 200 and ctype == "application/json"
    assert json.loads(body) == {"healthy": True, "channels": {"news": {"stream_up": True}}}
    _, _, text = get(server, "/metrics")
    assert value(text, "ad_detector_healthy") == 1

    health.ok = False
    status, _, body = get(server, "/healthz")
    assert status == 503
    assert json.loads(body)["healthy"] is False
    _, _, text = get(server, "/metrics")
    assert value(text, "ad_detector_healthy") == 0

    health.fail = True
    status, _, body = get(server, "/healthz")
    assert status == 503
    assert json.loads(body)["healthy"] is False and "health check broke" in json.loads(body)["error"]
    status, _, _ = get(server, "/metrics")  # a broken check must not break scraping
    assert status == 200


def test_unknown_path_is_404(server: MetricsServer) -> None:
    assert get(server, "/")[0] == 404
    assert get(server, "/metricsx")[0] == 404


def test_port_in_use_is_a_usage_error_naming_the_bind(metrics: Metrics, health: Health) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        bind = f"127.0.0.1:{busy.getsockname()[1]}"
        with pytest.raises(UsageError, match=bind.replace(".", r"\.")):
            MetricsServer(bind, metrics, health).start()


@pytest.mark.parametrize("bind", ["192.0.2.1:0", "127.0.0.1", "127.0.0.1:http", "127.0.0.1:70000", "::1:9108"])
def test_bad_bind_is_a_usage_error_naming_it(bind: str, metrics: Metrics, health: Health) -> None:
    with pytest.raises(UsageError) as info:
        MetricsServer(bind, metrics, health).start()
    assert bind in str(info.value)


def test_ipv6_bind(metrics: Metrics, health: Health) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    with MetricsServer("[::1]:0", metrics, health) as srv:
        assert srv.port > 0
        with urllib.request.urlopen(f"http://[::1]:{srv.port}/metrics", timeout=5) as resp:
            assert b"ad_detector_frames_captured_total" in resp.read()


def test_stop_releases_the_port(metrics: Metrics, health: Health) -> None:
    srv = MetricsServer("127.0.0.1:0", metrics, health)
    srv.start()
    port = srv.port
    srv.stop()
    srv.stop()  # idempotent
    again = MetricsServer(f"127.0.0.1:{port}", metrics, health)
    again.start()
    again.stop()


def test_a_client_that_sends_nothing_is_dropped_after_the_timeout(metrics: Metrics, health: Health) -> None:
    """Slow or silent clients must not pile up server threads when the port is reachable beyond loopback."""
    import socket
    import threading
    import time

    srv = MetricsServer("127.0.0.1:0", metrics, health, client_timeout=0.5)
    srv.start()
    try:
        before = threading.active_count()
        silent = [socket.create_connection(("127.0.0.1", srv.port), timeout=5) for _ in range(5)]
        time.sleep(0.2)
        assert threading.active_count() >= before + 5          # each one holds a handler thread meanwhile
        t0 = time.monotonic()
        for s in silent:
            assert s.recv(1) == b""                              # the server closed it
        assert time.monotonic() - t0 < 3.0
        deadline = time.monotonic() + 3
        while threading.active_count() > before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert threading.active_count() <= before
        assert get(srv, "/metrics")[0] == 200                   # and the server still answers
        for s in silent:
            s.close()
    finally:
        srv.stop()
