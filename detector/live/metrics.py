"""Prometheus metrics of the daemon and the small HTTP server that exposes them.

Why this module looks the way it does (CONTRACT.md "Metrics", DESIGN.md "Prometheus"):

- Every metric lives in a registry owned by one `Metrics` object, not in prometheus_client's
  global registry, so tests (and a SIGHUP-style rebuild) can create as many as they like
  without "Duplicated timeseries" errors.
- Every labelled series is created in `__init__` for every channel and every known reason /
  type / model, so the first scrape already shows all series at 0. Without that, `rate()` and
  alerts such as `increase(...[5m]) > 0` miss the first increment of a series that appears
  mid-run, and dashboards show "no data" instead of 0.
- Base units (seconds), counters named without `_total` (prometheus_client appends it),
  histogram buckets sized for what they measure, `_info` metrics for versions.

Contract metrics (names are part of the outside contract; do not rename):

==============================================  =========  ==================================
name                                            type       labels
==============================================  =========  ==================================
ad_detector_frames_captured_total               counter    channel
ad_detector_frames_analyzed_total               counter    channel
ad_detector_frames_dropped_total                counter    channel, reason (DROP_REASONS)
ad_detector_stream_up                           gauge      channel (1 up, 0 down)
ad_detector_capture_reconnects_total            counter    channel
ad_detector_inference_seconds                   histogram  model (backbone | sequence)
ad_detector_batch_size                          histogram  (frames per backbone call)
ad_detector_ad_probability                      gauge      channel (latest p(ad))
ad_detector_events_published_total              counter    channel, type (EVENT_TYPES)
ad_detector_decision_latency_seconds            histogram  channel (newest frame captured
                                                           -> decision taken)
ad_detector_last_frame_timestamp_seconds        gauge      channel (unix time, last frame)
ad_detector_model_info                          info       classes, backbone_sha256,
                                                           sequence_sha256, providers,
                                                           precision
==============================================  =========  ==================================

Extras (not in the contract, so they may change with a changelog note):

- ``ad_detector_events_dropped_total{reason}``: events the publisher could not deliver;
  ``hwm`` = a subscriber's ZeroMQ queue overflowed (a slow subscriber; the pipeline never
  waits): counted once per overflow episode, since ZeroMQ then skips that subscriber
  silently until it has read half its queue; subscribers see the loss as a gap in ``seq``.
  ``stopped`` = published after shutdown began. A failed journal write does not drop the
  event (it is still published): see ``ad_detector_journal_errors_total``.
- ``ad_detector_stream_faults_total{channel,kind}``: fault episodes of a channel's input
  (kinds in ``detector.live.faults.FAULT_KINDS``: unreachable, silent, read_error, stall,
  decode_error, timestamp_reset, timestamp_jump, resolution_change, rate_low, rate_high),
  counted once per episode, each logged once as ``stream fault channel=... kind=...``.
- ``ad_detector_journal_errors_total``: failed journal writes (disk full, permissions).
- ``ad_detector_journal_ok``: 0 while the journal fails (from the first failed append to the
  next successful one), else 1; ``/healthz`` then answers 200 with ``"status": "degraded"``.
- ``ad_detector_provider_fallbacks_total{model}``: an execution provider that was requested
  but not used for that model (e.g. CUDA asked for, CPU running): a silent slowdown otherwise.
- ``ad_detector_healthy``: 1 when the daemon's health check passes, 0 when not. The
  `MetricsServer` refreshes it from the same callback as ``/healthz`` at every scrape, so the
  two never disagree.
- ``ad_detector_build_info{version,python,onnxruntime}``: what is running, for joins in PromQL.
- ``ad_detector_auth_failures_total{reason}``: client handshakes refused by CURVE
  (``unknown_key``, ``handshake``); see detector/events/curve.py.

prometheus_client also exposes ``*_created`` series (creation time) for counters and
histograms; set ``PROMETHEUS_DISABLE_CREATED_SERIES=True`` in the service environment to
drop them.
"""

from __future__ import annotations

import json
import logging
import platform
import socket
import socketserver
import threading
from collections.abc import Callable, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from detector.errors import UsageError
from detector.live.faults import FAULT_KINDS

log = logging.getLogger(__name__)

# No "stale": the ring's fixed capacity already bounds how old a frame can be when it is
# analysed (ring_capacity / analysis_fps, 12.8 s at the defaults), and dropping old frames by
# age would leave holes in the evenly spaced window the sequence model was trained on.
DROP_REASONS = ("ring_overflow", "decode_error", "timestamp_jump", "shutdown")
EVENT_TYPES = ("segment.start", "segment.end", "heartbeat", "stream.up", "stream.down")
MODELS = ("backbone", "sequence")
EVENT_DROP_REASONS = ("hwm", "stopped")
AUTH_FAILURE_REASONS = ("unknown_key", "handshake")   # detector/events/curve.py CurveServer

# One backbone batch on a CPU takes tens to hundreds of ms, a sequence call ~1 ms, a large
# batch on a slow CPU several seconds: 1 ms .. 10 s covers both models with useful resolution.
INFERENCE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Batches are bounded by inference.batch_size; powers of two match how people configure it.
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# The target is a median under 3 s (DESIGN.md "Targets"), so resolution is finest around 1-5 s;
# 30 s catches a pipeline that has fallen badly behind.
DECISION_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0)

MODEL_INFO_KEYS = ("classes", "backbone_sha256", "sequence_sha256", "providers", "precision")


def _distribution_version(*names: str) -> str:
    """Installed version of the first distribution found, read from package metadata.

    Reading metadata instead of importing keeps a scrape-side module from loading
    onnxruntime (and its CUDA libraries) just to print a version string.
    """
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


class Metrics:
    """All metrics of one daemon process, in their own registry, every series pre-created.

    Attribute names are what the rest of the daemon uses; metric names are the contract's.
    """

    def __init__(self, channels: Sequence[str], registry: CollectorRegistry | None = None) -> None:
        self.channels: tuple[str, ...] = tuple(dict.fromkeys(channels))
        self.registry: CollectorRegistry = registry if registry is not None else CollectorRegistry()
        r = self.registry

        self.frames_captured = Counter(
            "ad_detector_frames_captured", "Frames read from the source (before analysis-rate sampling).",
            ["channel"], registry=r)
        self.frames_analyzed = Counter(
            "ad_detector_frames_analyzed", "Frames that went through the backbone.",
            ["channel"], registry=r)
        self.frames_dropped = Counter(
            "ad_detector_frames_dropped", "Frames lost before analysis, by reason.",
            ["channel", "reason"], registry=r)
        self.stream_up = Gauge(
            "ad_detector_stream_up", "1 while the channel's source delivers frames, else 0.",
            ["channel"], registry=r)
        self.capture_reconnects = Counter(
            "ad_detector_capture_reconnects", "Times the capture of a channel was reopened.",
            ["channel"], registry=r)
        self.inference_seconds = Histogram(
            "ad_detector_inference_seconds", "Wall time of one inference call, by model.",
            ["model"], buckets=INFERENCE_BUCKETS, registry=r)
        self.batch_size = Histogram(
            "ad_detector_batch_size", "Frames per backbone call (across channels).",
            buckets=BATCH_SIZE_BUCKETS, registry=r)
        self.ad_probability = Gauge(
            "ad_detector_ad_probability", "Latest probability that the channel shows an ad.",
            ["channel"], registry=r)
        self.events_published = Counter(
            "ad_detector_events_published", "Events sent on the PUB socket, by type.",
            ["channel", "type"], registry=r)
        self.decision_latency = Histogram(
            "ad_detector_decision_latency_seconds",
            "Time from capture of a window's newest frame to the decision on that window.",
            ["channel"], buckets=DECISION_LATENCY_BUCKETS, registry=r)
        self.last_frame_timestamp = Gauge(
            "ad_detector_last_frame_timestamp_seconds", "Unix time at which the last frame was captured.",
            ["channel"], registry=r)
        self.model_info = Info(
            "ad_detector_model", "The model bundle in use and the execution providers actually running it.",
            registry=r)

        # Extras (see the module docstring).
        self.events_dropped = Counter(
            "ad_detector_events_dropped", "Event delivery losses, by reason (hwm: a slow subscriber's queue overflowed, once per episode; stopped: after shutdown began).",
            ["reason"], registry=r)
        self.stream_faults = Counter(
            "ad_detector_stream_faults", "Stream fault episodes by kind (one per episode, not per frame; see detector.live.faults).",
            ["channel", "kind"], registry=r)
        self.journal_errors = Counter(
            "ad_detector_journal_errors", "Failed appends to the event journal.", registry=r)
        self.journal_ok = Gauge(
            "ad_detector_journal_ok", "1 while the event journal accepts appends, 0 from a failed append "
            "until one succeeds (events are still published, but not replayable).", registry=r)
        self.provider_fallbacks = Counter(
            "ad_detector_provider_fallbacks", "Requested execution providers not in use, by model.",
            ["model"], registry=r)
        self.healthy = Gauge(
            "ad_detector_healthy", "1 when the daemon's health check passes, else 0.", registry=r)
        self.build_info = Info(
            "ad_detector_build", "Versions of the running daemon.", registry=r)
        self.auth_failures = Counter(
            "ad_detector_auth_failures", "Client handshakes refused by CURVE (events.curve), by reason "
            "(unknown_key: key not in allowed_clients_dir; handshake: failed before authentication, e.g. a client without CURVE).",
            ["reason"], registry=r)

        self._create_series()
        self.model_info.info({key: "" for key in MODEL_INFO_KEYS})
        self.build_info.info({
            "version": _distribution_version("ad-detector"),
            "python": platform.python_version(),
            "onnxruntime": _distribution_version("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino"),
            "openvino": _distribution_version("openvino"),
        })

    def _create_series(self) -> None:
        """Touch every label combination so each series is exported (at 0) from the first scrape."""
        for channel in self.channels:
            self.frames_captured.labels(channel=channel)
            self.frames_analyzed.labels(channel=channel)
            for reason in DROP_REASONS:
                self.frames_dropped.labels(channel=channel, reason=reason)
            self.stream_up.labels(channel=channel).set(0)
            self.capture_reconnects.labels(channel=channel)
            self.ad_probability.labels(channel=channel).set(0)
            for event_type in EVENT_TYPES:
                self.events_published.labels(channel=channel, type=event_type)
            self.decision_latency.labels(channel=channel)
            self.last_frame_timestamp.labels(channel=channel).set(0)
            for kind in FAULT_KINDS:
                self.stream_faults.labels(channel=channel, kind=kind)
        for model in MODELS:
            self.inference_seconds.labels(model=model)
            self.provider_fallbacks.labels(model=model)
        for reason in AUTH_FAILURE_REASONS:
            self.auth_failures.labels(reason=reason)
        for reason in EVENT_DROP_REASONS:
            self.events_dropped.labels(reason=reason)
        self.journal_ok.set(1)

    def set_model_info(self, classes: Sequence[str], backbone_sha256: str, sequence_sha256: str,
                       providers: Sequence[str], precision: str) -> None:
        """Publish what is loaded; called at start and again after a SIGHUP model reload.

        `providers` must be the providers ONNX Runtime reports as in use, not the ones asked
        for: a GPU request that fell back to CPU has to be visible here.
        """
        self.model_info.info({
            "classes": ",".join(classes),
            "backbone_sha256": backbone_sha256,
            "sequence_sha256": sequence_sha256,
            "providers": ",".join(providers),
            "precision": precision,
        })

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format (what `GET /metrics` returns)."""
        return generate_latest(self.registry)


HealthCheck = Callable[[], tuple[bool, dict[str, Any]]]


def parse_bind(bind: str) -> tuple[str, int]:
    """Split "host:port" / "[v6]:port" into (host, port); an empty host means all interfaces.

    Raises UsageError naming the value, because it comes straight from `metrics.bind`.
    """
    text = bind.strip()
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise UsageError(f"metrics.bind {bind!r}: expected '[IPv6]:port'")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise UsageError(f"metrics.bind {bind!r}: expected 'host:port'")
        if ":" in host:
            raise UsageError(f"metrics.bind {bind!r}: write IPv6 addresses in brackets, e.g. '[::1]:9108'")
    try:
        port = int(port_text)
    except ValueError:
        raise UsageError(f"metrics.bind {bind!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise UsageError(f"metrics.bind {bind!r}: port {port} is out of range 0-65535")
    return host, port


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer for one resolved address family, carrying the app's state."""

    daemon_threads = True  # a stuck scraper must never keep the daemon from exiting

    def __init__(self, address: tuple[Any, ...], family: socket.AddressFamily, metrics: Metrics,
                 health: HealthCheck) -> None:
        self.address_family = family
        self.metrics = metrics
        self.health = health
        self.health_error_logged = False
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can hang
        # for seconds on a broadcast machine without DNS; the server name is never used here.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The default prints a traceback to stderr for every aborted scrape; a scraper that
        # hangs up is not the daemon's problem.
        log.debug("metrics HTTP: error serving %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "ad-detector"
    sys_version = ""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._serve(send_body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(send_body=False)

    def _serve(self, send_body: bool) -> None:
        path = urlsplit(self.path).path
        if path == "/metrics":
            self._refresh_healthy_gauge()
            self._reply(HTTPStatus.OK, CONTENT_TYPE_LATEST, self.server.metrics.exposition(), send_body)
        elif path == "/healthz":
            ok, body = self._health()
            status = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
            data = json.dumps(body, default=str).encode() + b"\n"
            self._reply(status, "application/json", data, send_body)
        else:
            self._reply(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8",
                        b"not found; try /metrics or /healthz\n", send_body)

    def _health(self) -> tuple[bool, dict[str, Any]]:
        """Run the health callback; any failure of the callback itself means unhealthy (503)."""
        try:
            result = self.server.health()
            ok, details = result
            if not isinstance(ok, bool) or not isinstance(details, dict):
                raise TypeError(f"health() must return (bool, dict), got {result!r}")
        except Exception as exc:  # noqa: BLE001 - a broken check must answer 503, not crash the server
            # Warn once (it is a bug in the check), then debug: every scrape would repeat it.
            level = logging.DEBUG if self.server.health_error_logged else logging.WARNING
            self.server.health_error_logged = True
            log.log(level, "health check raised: %s: %s", type(exc).__name__, exc, exc_info=level == logging.DEBUG)
            return False, {"healthy": False, "error": f"{type(exc).__name__}: {exc}"}
        body: dict[str, Any] = {"healthy": ok}
        body.update((k, v) for k, v in details.items() if k != "healthy")
        return ok, body

    def _refresh_healthy_gauge(self) -> None:
        ok, _ = self._health()
        self.server.metrics.healthy.set(1 if ok else 0)

    def _reply(self, status: HTTPStatus, content_type: str, data: bytes, send_body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if send_body:
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (base-class signature)
        # Prometheus scrapes every few seconds; one stderr line per scrape would drown the journal.
        log.debug("metrics HTTP %s: " + format, self.address_string(), *args)


class MetricsServer:
    """`GET /metrics` and `GET /healthz` on `metrics.bind`, served from a daemon thread.

    A small server of our own rather than `prometheus_client.start_http_server` because the
    daemon needs `/healthz` on the same port, bind errors reported as usage errors (exit 2)
    naming the configured address, and a clean `stop()` for tests and shutdown.

    `health` is called from the server's request threads, so it must be thread-safe and quick.
    It returns `(healthy, details)`; details are added to the JSON body of `/healthz`.
    """

    def __init__(self, bind: str, metrics: Metrics, health: HealthCheck) -> None:
        self.bind = bind
        self.metrics = metrics
        self.health = health
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and start serving; raises UsageError naming the address if it cannot bind."""
        if self._server is not None:
            raise RuntimeError("MetricsServer already started")
        host, port = parse_bind(self.bind)
        try:
            infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except socket.gaierror as exc:
            raise UsageError(f"metrics.bind {self.bind!r}: cannot resolve host {host!r} ({exc.strerror})") from None
        family, _, _, _, address = infos[0]
        try:
            server = _Server(address, socket.AddressFamily(family), self.metrics, self.health)
        except OSError as exc:
            raise UsageError(f"metrics.bind {self.bind!r}: cannot listen ({exc.strerror or exc})") from None
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="metrics-http", daemon=True)
        self._thread.start()
        log.info("metrics on http://%s/metrics", self._display_address())

    @property
    def thread(self) -> threading.Thread | None:
        """The thread running `serve_forever` (for the daemon's supervision)."""
        return self._thread

    @property
    def port(self) -> int:
        """The port actually bound (useful with port 0)."""
        if self._server is None:
            raise RuntimeError("MetricsServer not started")
        return int(self._server.server_address[1])

    def _display_address(self) -> str:
        assert self._server is not None
        host = str(self._server.server_address[0])
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def stop(self) -> None:
        """Stop serving and close the socket; safe to call more than once."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
