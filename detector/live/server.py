"""The small HTTP server of the daemon: `GET /metrics` and `GET /healthz` on `metrics.bind`.

A server of our own rather than `prometheus_client.start_http_server` because the daemon
needs `/healthz` on the same port, bind errors reported as usage errors (exit 2) naming the
configured address, and a clean `stop()`. Each connection has a socket timeout: when the
port is reachable beyond loopback, a client that connects and sends nothing (or reads
nothing) must not keep a thread forever, or slow clients pile up threads over months.
"""

from __future__ import annotations

import json
import logging
import socket
import socketserver
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST

from detector.errors import UsageError
from detector.live.metrics import Metrics

log = logging.getLogger(__name__)

CLIENT_TIMEOUT_SECONDS = 10.0    # per socket operation of one HTTP connection

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
                 health: HealthCheck, client_timeout: float = CLIENT_TIMEOUT_SECONDS) -> None:
        self.address_family = family
        self.client_timeout = client_timeout
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

    def setup(self) -> None:
        self.timeout = self.server.client_timeout     # StreamRequestHandler applies it to the connection
        super().setup()

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

    def __init__(self, bind: str, metrics: Metrics, health: HealthCheck, client_timeout: float = CLIENT_TIMEOUT_SECONDS) -> None:
        self.bind = bind
        self.client_timeout = client_timeout
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
            server = _Server(address, socket.AddressFamily(family), self.metrics, self.health, self.client_timeout)
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
