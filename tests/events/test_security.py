"""CURVE on the event sockets, as users and operators meet it: real ZeroMQ sockets on
127.0.0.1, the real Publisher, and `ad-detector keygen / subscribe / check-config` run as
subprocesses. Every "receives nothing" test has an allowed client next to it receiving, so
it cannot pass just because nothing was sent."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest
import zmq
import zmq.auth

from detector.events import schema as events
from detector.live.metrics import Metrics
from detector.events.outputs.zeromq import Publisher
from detector.config import CurveConfig, EventsConfig
from detector.events.curve import CurveServer, keygen
from detector.events.outputs import build_outputs
from conftest import CLI, assert_usage_error, cli_env, run_cli

ANY = "tcp://127.0.0.1:*"
RUN = "run-curve"


def segment(n: int) -> dict:
    return dict(label="commercial", is_ad=True, confidence=0.9, segment_id=f"s{n}", time=time.time(),
                stream_time=float(n), pts=None, boundary="model")


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    """server + client1 (allowed) + stranger (not allowed) key pairs; clients/ holds client1.key."""
    out = tmp_path / "keys"
    paths: dict[str, Path] = {}
    for name in ("server", "client1", "stranger"):
        public, secret = keygen(out, name)
        paths[name], paths[name + "_secret"] = public, secret
    clients = tmp_path / "clients"
    clients.mkdir()
    (clients / "client1.key").write_bytes(paths["client1"].read_bytes())
    paths["clients"] = clients
    return paths


def secret_of(path: Path) -> bytes:
    secret = zmq.auth.load_certificate(path)[1]
    assert secret
    return secret


@pytest.fixture
def curve_publisher(keys):
    """A started Publisher with CURVE, its auth-failure counter from the real Metrics."""
    metrics = Metrics(["demo"])
    curve = CurveServer(keys["server_secret"], keys["clients"], counters=metrics)
    pub = Publisher(ANY, ANY, 60.0, None, RUN, ["demo"], curve=curve)
    pub.start()
    yield pub, metrics
    pub.stop()


def failures(metrics: Metrics, reason: str) -> float:
    value = metrics.registry.get_sample_value("ad_detector_auth_failures_total", {"reason": reason})
    assert value is not None, "series not created up front"
    return value


def curve_socket(ctx: zmq.Context, kind: int, endpoint: str, keys: dict[str, Path], client: str | None) -> zmq.Socket:
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    if client is not None:
        public, secret = zmq.auth.load_certificate(keys[client + "_secret"])
        sock.curve_secretkey, sock.curve_publickey = secret, public
        sock.curve_serverkey = zmq.auth.load_certificate(keys["server"])[0]
    if kind == zmq.SUB:
        sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(endpoint)
    return sock


class Pump:
    """Publishes a segment.start every 50 ms while a test watches who receives it."""

    def __init__(self, pub: Publisher) -> None:
        self.pub, self.stop_flag, self.n = pub, threading.Event(), 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop_flag.wait(0.05):
            self.n += 1
            self.pub.publish("segment.start", "demo", **segment(self.n))

    def __enter__(self) -> Pump:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_flag.set()
        self.thread.join()


def drain(sock: zmq.Socket, seconds: float) -> list[list[bytes]]:
    got, deadline = [], time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if sock.poll(int(left * 1000) + 1):
            got.append(sock.recv_multipart())
    return got


# --------------------------------------------------------------------------- sockets

def test_only_the_allowed_client_receives_events(ctx, keys, curve_publisher):
    pub, metrics = curve_publisher
    assert failures(metrics, "unknown_key") == failures(metrics, "handshake") == 0
    allowed = curve_socket(ctx, zmq.SUB, pub.endpoint, keys, "client1")
    stranger = curve_socket(ctx, zmq.SUB, pub.endpoint, keys, "stranger")
    keyless = curve_socket(ctx, zmq.SUB, pub.endpoint, keys, None)
    with Pump(pub):
        got = drain(allowed, 2.0)
        assert got, "the allowed client received nothing"
        assert events.decode(got[-1])["type"] == "segment.start"
        assert drain(stranger, 0.5) == []
        assert drain(keyless, 0.5) == []
    # both refusals counted: the stranger's key by ZAP, the keyless client's failed handshake by the socket monitor
    assert failures(metrics, "unknown_key") >= 1
    assert failures(metrics, "handshake") >= 1


def test_snapshot_answers_only_the_allowed_client(ctx, keys, curve_publisher):
    pub, _ = curve_publisher
    pub.publish("stream.up", "demo")
    replies = {}
    for client in ("client1", "stranger", None):
        req = curve_socket(ctx, zmq.REQ, pub.snapshot_endpoint, keys, client)
        req.send(b"snapshot")
        replies[client] = json.loads(req.recv()) if req.poll(1500) else None
    assert replies["client1"] is not None and replies["client1"]["channels"]["demo"]["stream_up"] is True
    assert replies["stranger"] is None
    assert replies[None] is None


def test_refusals_are_logged_with_the_address_and_no_secret_is_ever_logged(ctx, keys, curve_publisher, caplog):
    pub, _ = curve_publisher
    caplog.set_level(logging.DEBUG)  # pyzmq's own zap logger included
    allowed = curve_socket(ctx, zmq.SUB, pub.endpoint, keys, "client1")
    stranger = curve_socket(ctx, zmq.SUB, pub.endpoint, keys, "stranger")
    with Pump(pub):
        assert drain(allowed, 1.5)
        assert drain(stranger, 0.5) == []
    refused = [r.getMessage() for r in caplog.records if "client refused" in r.getMessage()]
    assert refused and "kind=unknown_key address=127.0.0.1" in refused[0]
    assert zmq.auth.load_certificate(keys["stranger"])[0].decode() in refused[0]  # the public key names who it was
    text = caplog.text
    for name in ("server", "client1", "stranger"):
        assert secret_of(keys[name + "_secret"]).decode() not in text


def test_build_outputs_makes_the_curve_publisher_and_names_every_thread_to_watch(ctx, keys, tmp_path):
    """What the daemon gets from the `events` config section: the ZeroMQ output with CURVE, whose
    watched threads include both CURVE threads (a dead socket monitor is a dead thread too)."""
    cfg = EventsConfig(bind=f"ipc://{tmp_path}/pub", snapshot_bind=f"ipc://{tmp_path}/snap", heartbeat_seconds=60.0,
                       journal=tmp_path / "events.jsonl",
                       curve=CurveConfig(server_secret_key=keys["server_secret"], allowed_clients_dir=keys["clients"]))
    metrics = Metrics(["demo"])
    outputs = build_outputs(cfg, RUN, ["demo"], metrics, lambda: {})
    assert [out.name for out in outputs] == ["zeromq"]
    out = outputs[0]
    out.start()
    try:
        watched = {w.name: w for w in out.watched_threads()}
        assert set(watched) == {"publisher", "publisher-replay", "curve-auth", "curve-monitor"}
        for name, w in watched.items():
            thread = w.thread()
            assert thread is not None and thread.is_alive() and (w.alive is None or w.alive()), name
        health = out.health()
        assert health.ok and health.degraded == [] and health.details["journal"]["ok"] is True
        # the keys are in force: an allowed client gets events, a keyless one is refused and counted
        allowed = curve_socket(ctx, zmq.SUB, f"ipc://{tmp_path}/pub", keys, "client1")
        keyless = curve_socket(ctx, zmq.SUB, f"ipc://{tmp_path}/pub", keys, None)
        with Pump(out):
            assert drain(allowed, 2.0)
            assert drain(keyless, 0.5) == []
        assert failures(metrics, "handshake") >= 1
    finally:
        out.stop()


def test_a_dead_curve_monitor_is_reported_to_the_supervisor(ctx, keys, curve_publisher, monkeypatch, caplog):
    """The socket monitor fails (here: injected, on the next handshake failure): its watched
    thread reports the death and the exception, like every other thread the daemon needs."""
    pub, _ = curve_publisher
    boom = RuntimeError("monitor exploded")

    def fail(*args, **kwargs):
        raise boom

    monkeypatch.setattr(CurveServer, "_refused", fail)
    monitor = {w.name: w for w in pub.watched_threads()}["curve-monitor"]
    keyless = curve_socket(ctx, zmq.SUB, pub.endpoint, keys, None)  # its handshake fails: a monitor event
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and monitor.thread() is not None and monitor.thread().is_alive():
        time.sleep(0.05)
    thread = monitor.thread()
    assert thread is not None and not thread.is_alive()
    assert monitor.error is not None and monitor.error() is boom
    assert any("thread died thread=curve-monitor" in r.getMessage() for r in caplog.records)
    keyless.close()


# --------------------------------------------------------------------------- subscribe CLI

def subscribe(*args: object) -> subprocess.Popen:
    return subprocess.Popen([*CLI, "subscribe", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=cli_env())


def test_subscribe_with_keys_gets_the_snapshot_and_events(keys, curve_publisher):
    pub, _ = curve_publisher
    proc = subscribe("--endpoint", pub.endpoint, "--snapshot-endpoint", pub.snapshot_endpoint,
                     "--server-key", keys["server"], "--client-key", keys["client1_secret"], "--count", "2",
                     "--timeout", "15")
    with Pump(pub):
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0]["type"] == "snapshot" and "demo" in lines[0]["channels"]
    assert [e["type"] for e in lines[1:]] == ["segment.start", "segment.start"]


@pytest.mark.parametrize("client", ["stranger", None])
def test_subscribe_with_a_wrong_or_no_key_receives_nothing(keys, curve_publisher, client):
    pub, _ = curve_publisher
    key_args = ["--server-key", keys["server"], "--client-key", keys["stranger_secret"]] if client else []
    proc = subscribe("--endpoint", pub.endpoint, *key_args, "--timeout", "3")
    with Pump(pub):
        out, err = proc.communicate(timeout=30)
    assert out == ""
    assert proc.returncode == 1, err
    if client:  # a CURVE client sees the refusal and says what to check
        assert "refused the handshake" in err and "allowed_clients_dir" in err and "no connection to" in err
    else:       # a plain client cannot tell a CURVE server from a silent one
        assert "no event from" in err


def test_subscribe_key_errors_are_one_line_exit_2(keys, tmp_path):
    proc = run_cli("subscribe", "--server-key", keys["server"], "--timeout", "1")
    assert_usage_error(proc, "--server-key needs --client-key")
    proc = run_cli("subscribe", "--server-key", tmp_path / "missing.key", "--client-key", keys["client1_secret"])
    assert_usage_error(proc, "--server-key", "missing.key", "not found")
    proc = run_cli("subscribe", "--server-key", keys["server"], "--client-key", keys["client1"])
    assert_usage_error(proc, "--client-key", "no secret key", "key_secret")
    os.chmod(keys["client1_secret"], 0o644)
    proc = run_cli("subscribe", "--server-key", keys["server"], "--client-key", keys["client1_secret"])
    assert_usage_error(proc, "--client-key", "chmod 600")
    garbage = tmp_path / "garbage.key"
    garbage.write_bytes(b"\xff\xfe not a certificate\n")
    proc = run_cli("subscribe", "--server-key", garbage, "--client-key", keys["stranger_secret"])
    assert_usage_error(proc, "--server-key", "not a ZeroMQ certificate")


# --------------------------------------------------------------------------- keygen CLI

def test_keygen_writes_a_private_pair_and_never_overwrites_silently(tmp_path):
    out = tmp_path / "k"
    proc = run_cli("keygen", "-o", out, "--name", "dash")
    assert proc.returncode == 0, proc.stderr
    public, secret = out / "dash.key", out / "dash.key_secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) & 0o077 == 0o044  # public: readable by anyone
    pub_key, sec_key = zmq.auth.load_certificate(secret)
    assert zmq.auth.load_certificate(public) == (pub_key, None)
    assert zmq.curve_public(sec_key) == pub_key
    assert str(secret) in proc.stdout and str(public) in proc.stdout and "server_secret_key:" in proc.stdout
    assert sec_key.decode() not in proc.stdout + proc.stderr

    again = run_cli("keygen", "-o", out, "--name", "dash")
    assert_usage_error(again, "dash.key", "--force")
    assert zmq.auth.load_certificate(secret)[1] == sec_key
    forced = run_cli("keygen", "-o", out, "--name", "dash", "--force")
    assert forced.returncode == 0, forced.stderr
    assert zmq.auth.load_certificate(secret)[1] != sec_key
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600

    assert_usage_error(run_cli("keygen", "-o", out, "--name", "../evil"), "--name")


def test_keygen_secret_is_private_whatever_the_umask(tmp_path):
    proc = subprocess.run(["sh", "-c", 'umask 000 && exec "$@"', "sh", *CLI, "keygen", "-o", str(tmp_path)],
                          capture_output=True, text=True, env=cli_env(), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE((tmp_path / "server.key_secret").stat().st_mode) == 0o600


# --------------------------------------------------------------------------- config

def write_config(tmp_path: Path, secret: Path | str, clients: Path | str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(f"model: models/demo\nchannels:\n  - name: demo\n    source: rtsp://127.0.0.1:8554/live\n"
                    f"events:\n  curve:\n    server_secret_key: {secret}\n    allowed_clients_dir: {clients}\n")
    return path


def test_check_config_resolves_the_paths_and_prints_no_secret(tmp_path, keys):
    cfg = write_config(tmp_path, "keys/server.key_secret", "clients")
    proc = run_cli("check-config", "-c", cfg)
    assert proc.returncode == 0, proc.stderr
    assert f"server_secret_key: {keys['server_secret']}" in proc.stdout
    assert f"allowed_clients_dir: {keys['clients']}" in proc.stdout
    assert secret_of(keys["server_secret"]).decode() not in proc.stdout + proc.stderr


def test_bad_curve_config_exits_2_naming_the_key(tmp_path, keys):
    cases = [
        (tmp_path / "nope.key_secret", keys["clients"], "events.curve.server_secret_key", "not found"),
        (keys["server"], keys["clients"], "events.curve.server_secret_key", "no secret key"),
        (keys["server_secret"], tmp_path / "none", "events.curve.allowed_clients_dir", "not a directory"),
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    cases.append((keys["server_secret"], empty, "events.curve.allowed_clients_dir", "no client public keys"))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.key").write_text("metadata\ncurve\n    public-key = \"short\"\n")
    cases.append((keys["server_secret"], bad, "events.curve.allowed_clients_dir", "x.key"))
    for secret, clients, key, needle in cases:
        cfg = write_config(tmp_path, secret, clients)
        for command in ("check-config", "run"):
            line = assert_usage_error(run_cli(command, "-c", cfg, timeout=60), key, needle)
            assert secret_of(keys["server_secret"]).decode() not in line

    os.chmod(keys["server_secret"], 0o604)
    cfg = write_config(tmp_path, keys["server_secret"], keys["clients"])
    assert_usage_error(run_cli("check-config", "-c", cfg), "events.curve.server_secret_key", "chmod 600")
    os.chmod(keys["server_secret"], 0o640)  # group-readable (a service group) is allowed
    assert run_cli("check-config", "-c", cfg).returncode == 0

    wrong = write_config(tmp_path, keys["server_secret"], keys["clients"])
    wrong.write_text(wrong.read_text().replace("allowed_clients_dir", "allowed_client_dir"))
    proc = run_cli("check-config", "-c", wrong)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "events.curve.allowed_client_dir: unknown key; did you mean 'allowed_clients_dir'?" in proc.stderr


def test_check_config_warns_when_the_sockets_are_reachable_without_curve(tmp_path, keys):
    base = "model: models/demo\nchannels:\n  - name: demo\n    source: rtsp://127.0.0.1:8554/live\n"
    cfg = tmp_path / "open.yaml"
    cfg.write_text(base + "events:\n  bind: tcp://*:5556\n  snapshot_bind: tcp://127.0.0.1:5557\n")
    proc = run_cli("check-config", "-c", cfg)
    assert proc.returncode == 0, proc.stderr
    warnings = [l for l in proc.stderr.splitlines() if l.startswith("ad-detector: warning:")]
    assert len(warnings) == 1 and "events.bind tcp://*:5556" in warnings[0] and "events.curve" in warnings[0]

    cfg.write_text(base)  # the defaults: loopback only
    assert "warning" not in run_cli("check-config", "-c", cfg).stderr
    secured = write_config(tmp_path, keys["server_secret"], keys["clients"])
    secured.write_text(secured.read_text().replace("events:\n", "events:\n  bind: tcp://0.0.0.0:5556\n"))
    proc = run_cli("check-config", "-c", secured)
    assert proc.returncode == 0 and "warning" not in proc.stderr, proc.stderr


# --------------------------------------------------------------------------- the daemon

def test_the_daemon_with_curve_serves_allowed_clients_only(tmp_path, keys, bundle_dir):
    """`ad-detector run` with events.curve (an unreachable source: heartbeats are enough):
    the allowed subscriber gets the snapshot and events, a stranger nothing, the refusal is in
    /metrics and the log, and no secret key is in the log."""
    import urllib.request

    from livekit import Daemon, free_port, write_config as daemon_config

    cfg = tmp_path / "daemon.yaml"
    ep = daemon_config(cfg, bundle_dir, [{"name": "gone", "source": f"rtsp://127.0.0.1:{free_port()}/nothing"}],
                       events={"curve": {"server_secret_key": str(keys["server_secret"]),
                                         "allowed_clients_dir": str(keys["clients"])}})
    daemon = Daemon(cfg)
    try:
        assert daemon.wait_log("daemon ready", 120), daemon.log()[-3000:]
        ok = subscribe("--endpoint", ep["events"], "--snapshot-endpoint", ep["snapshot"], "--server-key", keys["server"],
                       "--client-key", keys["client1_secret"], "--count", "1", "--timeout", "20")
        bad = subscribe("--endpoint", ep["events"], "--server-key", keys["server"], "--client-key",
                        keys["stranger_secret"], "--timeout", "4")
        out, err = ok.communicate(timeout=40)
        assert ok.returncode == 0, err
        lines = [json.loads(line) for line in out.splitlines()]
        assert lines[0]["type"] == "snapshot" and "gone" in lines[0]["channels"] and len(lines) == 2
        bad_out, bad_err = bad.communicate(timeout=40)
        assert bad_out == "" and bad.returncode == 1 and "refused the handshake" in bad_err
        text = urllib.request.urlopen(ep["metrics"] + "/metrics", timeout=5).read().decode()
        refused = [l for l in text.splitlines() if l.startswith('ad_detector_auth_failures_total{reason="unknown_key"}')]
        assert refused and float(refused[0].split()[-1]) >= 1, text[-2000:]
    finally:
        assert daemon.stop() == 0
    log = daemon.log()
    assert "client refused kind=unknown_key address=127.0.0.1" in log and "curve enabled" in log
    for name in ("server", "client1", "stranger"):
        assert secret_of(keys[name + "_secret"]).decode() not in log
