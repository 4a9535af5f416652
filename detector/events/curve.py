"""ZeroMQ CURVE: key files, the server-side authenticator, client setup and `ad-detector keygen`.

Why it is built this way:

- Without CURVE, anything that can reach the PUB or snapshot port can subscribe and read
  every event. CURVE encrypts the connection and, with ZAP (pyzmq's ThreadAuthenticator and
  `configure_curve(location=allowed_clients_dir)`), admits only clients whose public key is
  in that directory. A client with an unknown key, or with no key at all, gets no data: the
  handshake fails before any message is delivered.
- Key files are the `zmq.auth.create_certificates` format (`NAME.key` public, `NAME.key_secret`
  public + secret), so keys made by other ZeroMQ tools work and ours work with them.
  `keygen` writes them itself rather than through `create_certificates`, because that
  function creates the secret file with the process umask (often world-readable) and only
  a later chmod would close the gap; here the file is created 0600 from the first byte.
- A secret key file readable or writable by "other" users is refused (exit 2, "chmod 600
  PATH"), like OpenSSH refuses an unprotected private key: a warning in a log nobody reads
  would leave the channel effectively open. Group access is allowed so a root-owned key can
  be shared with a service group (`root:ad-detector 0640`).
- The authenticator must use the same zmq.Context as the sockets it protects (ZAP is an
  inproc endpoint of that context), so `CurveServer.start(ctx)` is called by the publisher
  thread with the context it creates its sockets in.
- Refusals are counted (`EventCounters.auth_failure`: the daemon's `ad_detector_auth_failures_total`) and
  logged at most once per LOG_EVERY_SECONDS with the client's IP address and public key
  (public, so safe to log) and how many were refused since the last line. Secret keys are
  never logged, put in an error message, or kept anywhere but the sockets.

No YAML or environment is read here: the config passes paths in.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import stat
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from detector.errors import UsageError
from detector.events.outputs.base import EventCounters
from detector.util.ratelog import RateLimitedLog

log = logging.getLogger(__name__)

LOG_EVERY_SECONDS = 10.0
KEY_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_KEY_FILE_BYTES = 64 * 1024   # a certificate is ~300 bytes; refuse to read a wrong, huge file


class KeyFileError(ValueError):
    """A key file that is missing, unreadable, not a ZeroMQ certificate or badly protected.

    The message is one line, names no secret, and says what to do; callers prefix it with
    the config key or command-line option it came from.
    """


# --------------------------------------------------------------------------- key files

def _z85_key(value: bytes | None, what: str, path: Path) -> bytes:
    """A Z85 CURVE key (40 characters = 32 bytes); the value itself never goes into the message."""
    if value is None:
        raise KeyFileError(f"{path}: no {what} in it")
    try:
        ok = len(value) == 40 and len(z85.decode(value)) == 32
    except (ValueError, KeyError, TypeError, IndexError, OverflowError):
        ok = False
    if not ok:
        raise KeyFileError(f"{path}: the {what} is not a 40-character Z85 CURVE key; make a new pair with `ad-detector keygen`")
    return value


def _read_certificate(path: Path) -> tuple[bytes | None, bytes | None]:
    """(public, secret) from a certificate file, like zmq.auth.load_certificate, but with
    one-line errors for missing, unreadable, huge or binary files."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: not found; make keys with `ad-detector keygen -o DIR`") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"{path}: not a regular file (expected a ZeroMQ certificate made by `ad-detector keygen`)")
    if st.st_size > MAX_KEY_FILE_BYTES:
        raise KeyFileError(f"{path}: {st.st_size} bytes, too large for a ZeroMQ certificate")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    public = secret = None
    for raw in data.splitlines():
        line = raw.strip()
        if line.startswith(b"#"):
            continue
        if line.startswith(b"public-key") and b"=" in line:
            public = line.split(b"=", 1)[1].strip(b" \t'\"")
        elif line.startswith(b"secret-key") and b"=" in line:
            secret = line.split(b"=", 1)[1].strip(b" \t'\"")
    if public is None and secret is None:
        raise KeyFileError(f"{path}: not a ZeroMQ certificate (no public-key line); make keys with `ad-detector keygen`")
    return public, secret


def check_private(path: Path) -> None:
    """Refuse a secret key file that users other than its owner and group can read or write."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return  # reported by the reader
    if mode & 0o007:
        raise KeyFileError(f"{path}: secret key file is accessible to other users (mode {stat.S_IMODE(mode):04o}); "
                           f"run: chmod 600 {path}")


def load_public_key(path: Path) -> bytes:
    """The public key of a certificate (`NAME.key` or `NAME.key_secret`)."""
    public, _ = _read_certificate(path)
    return _z85_key(public, "public key", path)


def load_secret_certificate(path: Path) -> tuple[bytes, bytes]:
    """(public, secret) of a `NAME.key_secret` file: protected, both keys valid and matching."""
    public, secret = _read_certificate(path)
    if secret is None:
        raise KeyFileError(f"{path}: holds no secret key (a public .key file?); give the NAME.key_secret file")
    check_private(path)
    secret = _z85_key(secret, "secret key", path)
    public = _z85_key(public, "public key", path)
    if zmq.curve_public(secret) != public:
        raise KeyFileError(f"{path}: its public key does not belong to its secret key; make a new pair with `ad-detector keygen`")
    return public, secret


def check_allowed_clients_dir(path: Path) -> int:
    """Validate every `*.key` in the directory as a public certificate; return how many.

    Empty is an error: the daemon would refuse every subscriber, which is never what an
    operator who just turned CURVE on meant.
    """
    if not path.is_dir():
        raise KeyFileError(f"{path}: not a directory; create it and copy each client's NAME.key into it")
    try:
        keys = sorted(p for p in path.iterdir() if p.name.endswith(".key"))
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot list: {exc.strerror or exc}") from None
    if not keys:
        raise KeyFileError(f"{path}: no client public keys (*.key) in it; copy each client's NAME.key here "
                           "(make one with `ad-detector keygen -o DIR --name CLIENT`)")
    for key in keys:
        load_public_key(key)
    return len(keys)


# --------------------------------------------------------------------------- server side

_HANDSHAKE_FAILED = zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL


class _CountingAuthenticator(ThreadAuthenticator):
    """pyzmq's ThreadAuthenticator, plus a hook on every refusal (with the client's address).

    `handle_zap_message` remembers the request's address for `_send_zap_reply`, which is
    the single place every verdict passes through; both run on the authenticator thread,
    one request at a time.
    """

    def __init__(self, context: zmq.Context[Any], on_refused: Callable[[str, str, str], None]) -> None:
        super().__init__(context=context, log=logging.getLogger("detector.events.curve.zap"))
        self._on_refused = on_refused
        self._address = ""
        self._client_key = ""

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        self._address = msg[3].decode("utf-8", "replace") if len(msg) > 3 else "?"
        self._client_key = ""
        if len(msg) > 6 and msg[5] == b"CURVE" and len(msg[6]) == 32:
            self._client_key = z85.encode(msg[6]).decode("ascii")  # a PUBLIC key: fine to log
        await super().handle_zap_message(msg)

    def _send_zap_reply(self, request_id: bytes, status_code: bytes, status_text: bytes,
                        user_id: str = "anonymous") -> None:
        super()._send_zap_reply(request_id, status_code, status_text, user_id)
        if status_code != b"200":
            try:
                self._on_refused(self._address, self._client_key, status_text.decode("utf-8", "replace"))
            except Exception:
                log.exception("auth failure hook failed")


@dataclass
class CurveServer:
    """CURVE for the daemon's server sockets: keys loaded once at start, one authenticator.

    `counters.auth_failure(reason)` (an `EventCounters`: the daemon's metrics) is called once
    per refused client handshake, with reason "unknown_key" (a CURVE client whose key is not in allowed_clients_dir: seen by
    ZAP, with its address) or "handshake" (the handshake failed before authentication: a
    client without CURVE, one with the wrong server key, or a bare TCP probe; libzmq
    rejects these before ZAP, so they are seen through a socket monitor, which knows no
    peer address). Which side notices a mechanism mismatch first is a race, so both
    "protocol error" and "no detail" handshake failures count.
    """

    secret_key_path: Path
    allowed_clients_dir: Path
    counters: EventCounters | None = None
    _public: bytes = field(default=b"", repr=False)
    _secret: bytes = field(default=b"", repr=False)
    _auth: _CountingAuthenticator | None = field(default=None, repr=False)
    _log: RateLimitedLog = field(default_factory=lambda: RateLimitedLog(LOG_EVERY_SECONDS), repr=False)
    _monitors: list[zmq.Socket[Any]] = field(default_factory=list, repr=False)
    _watcher: threading.Thread | None = field(default=None, repr=False)
    monitor_error: BaseException | None = field(default=None, repr=False)   # what killed the monitor thread
    _stopping: threading.Event = field(default_factory=threading.Event, repr=False)

    def __post_init__(self) -> None:
        try:
            self._public, self._secret = load_secret_certificate(Path(self.secret_key_path))
            self.clients = check_allowed_clients_dir(Path(self.allowed_clients_dir))
        except KeyFileError as exc:
            raise UsageError(f"events.curve: {exc}") from None

    def start(self, ctx: zmq.Context[Any]) -> None:
        """Start the ZAP handler in `ctx` (the context the protected sockets are made in)."""
        if not zmq.has("curve"):
            raise UsageError("events.curve is set but this libzmq has no CURVE support; install pyzmq's wheel (bundled libsodium)")
        auth = _CountingAuthenticator(ctx, self._refused)
        auth.start()
        auth.configure_curve(domain="*", location=str(self.allowed_clients_dir))
        self._auth = auth
        log.info("curve enabled server_key=%s allowed_clients_dir=%s clients=%d", self.secret_key_path,
                 self.allowed_clients_dir, self.clients)

    def secure(self, *socks: zmq.Socket[Any]) -> None:
        """Make each socket a CURVE server and watch it for clients without CURVE.

        Called once, on the thread that owns the sockets, before bind(). The monitor PAIR
        sockets are created here and from then on used only by the watcher thread (the
        thread start is the hand-over), so no socket is ever shared between threads.
        """
        for sock in socks:
            sock.setsockopt(zmq.CURVE_SECRETKEY, self._secret)
            sock.setsockopt(zmq.CURVE_PUBLICKEY, self._public)
            sock.setsockopt(zmq.CURVE_SERVER, 1)
            self._monitors.append(sock.get_monitor_socket(_HANDSHAKE_FAILED))
        self._watcher = threading.Thread(target=self._watch, name="curve-monitor", daemon=True)
        self._watcher.start()

    @property
    def auth_thread(self) -> threading.Thread | None:
        """pyzmq's ZAP thread once started: without it no client can complete a handshake, so the
        daemon supervises it."""
        return self._auth.thread if self._auth is not None else None

    @property
    def monitor_thread(self) -> threading.Thread | None:
        """The socket-monitor thread once `secure` ran. Supervised too: without it clients are
        still refused, but refusals go uncounted and unlogged, which is how a scan or a
        misconfigured client fleet goes unnoticed; a restart brings it back."""
        return self._watcher

    def stop(self) -> None:
        """Stop the watcher and the authenticator (before the context is terminated)."""
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.join(timeout=2.0)
            self._watcher = None
        if self._auth is not None:
            self._auth.stop()
            self._auth = None

    def _watch(self) -> None:
        from zmq.utils.monitor import recv_monitor_message

        poller = zmq.Poller()
        for mon in self._monitors:
            poller.register(mon, zmq.POLLIN)
        try:
            while not self._stopping.is_set():
                for mon, _ in poller.poll(200):
                    try:
                        msg = recv_monitor_message(mon, zmq.NOBLOCK)
                    except zmq.ZMQError:
                        continue
                    if msg["event"] == zmq.EVENT_MONITOR_STOPPED:
                        poller.unregister(mon)
                    elif msg["event"] & _HANDSHAKE_FAILED:
                        self._refused("", "", "no CURVE, wrong server key or an aborted connection",
                                      kind="handshake", endpoint=msg["endpoint"].decode("utf-8", "replace"))
        except Exception as exc:
            self.monitor_error = exc
            log.exception("thread died thread=curve-monitor error=%r; clients without CURVE are still refused, "
                          "but no longer counted", exc)
        finally:
            for mon in self._monitors:
                mon.close(linger=0)
            self._monitors.clear()

    def _refused(self, address: str, client_key: str, reason: str, kind: str = "unknown_key",
                 endpoint: str = "") -> None:
        if self.counters is not None:
            try:
                self.counters.auth_failure(kind)
            except Exception:
                log.exception("auth failure counter failed")
        count = self._log.hit()
        if count is not None:
            where = f"address={address or '?'} client_key={client_key or 'none'}" if kind == "unknown_key" \
                else f"endpoint={endpoint or '?'}"
            log.warning("client refused kind=%s %s reason=%s refused_since_last_log=%d", kind, where,
                        "_".join(reason.split()) or "denied", count)


# --------------------------------------------------------------------------- exposure

_TCP_HOST_RE = re.compile(r"^tcp://(?P<host>\[[^\]]*\]|[^:]*):")


def _loopback(endpoint: str) -> bool:
    """True for endpoints only this machine can reach: ipc://, tcp on 127.0.0.0/8, ::1, localhost."""
    if not endpoint.startswith("tcp://"):
        return True   # ipc:// is guarded by file permissions
    m = _TCP_HOST_RE.match(endpoint)
    host = m.group("host").strip("[]").lower() if m else ""
    return host in ("localhost", "::1") or host.startswith("127.")


def exposure_warnings(bind: str, snapshot_bind: str, curve_enabled: bool) -> list[str]:
    """One line per event socket that other machines may reach without CURVE (DESIGN: "CURVE
    for anything beyond loopback"). A warning, not an error: a trusted, isolated network is
    a legitimate choice, but it has to be a conscious one."""
    if curve_enabled:
        return []
    return [f"events.{key} {endpoint} is reachable from other machines and events.curve is not set: anyone who can "
            "reach it can subscribe, unencrypted (README \"Security\")"
            for key, endpoint in (("bind", bind), ("snapshot_bind", snapshot_bind)) if not _loopback(endpoint)]


# --------------------------------------------------------------------------- client side

@dataclass(frozen=True)
class CurveClient:
    """What a CURVE client socket needs: the server's public key and our own key pair."""

    server_public: bytes = field(repr=False)
    public: bytes = field(repr=False)
    secret: bytes = field(repr=False)

    @classmethod
    def from_files(cls, server_key: str | None, client_key: str | None) -> CurveClient | None:
        """From `subscribe --server-key/--client-key`; None when neither is given."""
        if server_key is None and client_key is None:
            return None
        if server_key is None or client_key is None:
            given, missing = ("--server-key", "--client-key") if client_key is None else ("--client-key", "--server-key")
            raise UsageError(f"{given} needs {missing} too (the server's NAME.key and this client's NAME.key_secret)")
        try:
            server_public = load_public_key(Path(server_key))
        except KeyFileError as exc:
            raise UsageError(f"--server-key {exc}") from None
        try:
            public, secret = load_secret_certificate(Path(client_key))
        except KeyFileError as exc:
            raise UsageError(f"--client-key {exc}") from None
        return cls(server_public, public, secret)

    def secure(self, sock: zmq.Socket[Any]) -> None:
        """Make `sock` a CURVE client of the server; call before connect()."""
        sock.setsockopt(zmq.CURVE_SERVERKEY, self.server_public)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret)


# --------------------------------------------------------------------------- keygen

_PUBLIC_BANNER = """#   ****  Generated on {now} by ad-detector keygen  ****
#   ZeroMQ CURVE Public Certificate
#   Give this file to the other side (allowed_clients_dir, or subscribe --server-key).

"""
_SECRET_BANNER = """#   ****  Generated on {now} by ad-detector keygen  ****
#   ZeroMQ CURVE **Secret** Certificate
#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.

"""


def _certificate_text(banner: str, public: bytes, secret: bytes | None) -> bytes:
    text = banner.format(now=time.strftime("%Y-%m-%d %H:%M:%S%z")) + "metadata\ncurve\n"
    text += f'    public-key = "{public.decode("ascii")}"\n'
    if secret is not None:
        text += f'    secret-key = "{secret.decode("ascii")}"\n'
    return text.encode("ascii")


def _write_new(path: Path, data: bytes, mode: int, force: bool) -> None:
    """Write `data` to `path` created with `mode` (never wider, whatever the umask)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if force:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if path appeared meanwhile: never overwrite without --force
            os.unlink(tmp)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def keygen(out_dir: Path, name: str, force: bool = False) -> tuple[Path, Path]:
    """Make NAME.key (0644) and NAME.key_secret (0600) in out_dir; return (public, secret) paths."""
    if not KEY_NAME_RE.match(name):
        raise UsageError(f"--name {name!r}: use letters, digits, '_', '-' or '.' (up to 64), e.g. server or dashboard1")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"-o {out_dir}: cannot create the directory: {exc.strerror or exc}") from None
    public_path, secret_path = out_dir / f"{name}.key", out_dir / f"{name}.key_secret"
    existing = [str(p) for p in (public_path, secret_path) if p.exists() or p.is_symlink()]
    if existing and not force:
        raise UsageError(f"{existing[0]} exists; keys in use would stop working: pick another --name or add --force")
    public, secret = zmq.curve_keypair()
    try:
        _write_new(secret_path, _certificate_text(_SECRET_BANNER, public, secret), 0o600, force)
        _write_new(public_path, _certificate_text(_PUBLIC_BANNER, public, None), 0o644, force)
    except FileExistsError as exc:
        raise UsageError(f"{exc.filename or out_dir} exists; pick another --name or add --force") from None
    except OSError as exc:
        raise UsageError(f"-o {out_dir}: cannot write the key files: {exc.strerror or exc}") from None
    return public_path, secret_path


def keygen_command(args: argparse.Namespace) -> int:
    """`ad-detector keygen -o DIR [--name NAME] [--force]`: prints where the keys are and what to do."""
    public_path, secret_path = keygen(Path(args.output), args.name, force=args.force)
    public_abs, secret_abs = Path(os.path.abspath(public_path)), Path(os.path.abspath(secret_path))
    sys.stdout.write(
        f"public key: {public_abs}\n"
        f"secret key: {secret_abs} (mode 0600: keep it private, never copy it elsewhere)\n"
        "\n"
        "For the daemon (if this is the server's key pair), in config.yaml:\n"
        "  events:\n"
        "    curve:\n"
        f"      server_secret_key: {secret_abs}\n"
        "      allowed_clients_dir: /etc/ad-detector/clients   # each client's NAME.key, copied in\n"
        "  and give subscribers the public key above (subscribe --server-key).\n"
        "\n"
        "For a subscriber (if this is a client's key pair): copy the public key into the daemon's\n"
        "allowed_clients_dir (restart the daemon), then run:\n"
        f"  ad-detector subscribe --server-key SERVER.key --client-key {secret_abs}\n")
    return 0
