"""The systemd notify protocol (sd_notify(3)), spoken directly over `$NOTIFY_SOCKET`.

Why not a library: the protocol is one datagram of `KEY=VALUE` lines to a Unix socket, so a
dependency (or libsystemd through ctypes) buys nothing, and this works in containers and on
machines without systemd, where every call is simply a no-op returning False.

Why this module reads the environment although config is otherwise passed down as objects
(docs/DESIGN.md "Rules of the house"): `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` are set
by the service manager for this very process; they are the protocol, not configuration.

Notifications must never take the daemon down: a send that fails (socket gone, manager
restarted, buffer full) returns False and is logged once at debug level per address and error,
because watchdog pings repeat every few seconds.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

log = logging.getLogger(__name__)

_logged: set[tuple[str, str]] = set()
_logged_lock = threading.Lock()


def _log_once(address: str, exc: BaseException) -> None:
    key = (address, type(exc).__name__ + (f":{exc.errno}" if isinstance(exc, OSError) else ""))
    with _logged_lock:
        if key in _logged:
            return
        _logged.add(key)
    log.debug("sd_notify to %r failed (further identical failures not logged): %s", address, exc)


def _socket_address(value: str) -> str | None:
    """`$NOTIFY_SOCKET` as an AF_UNIX address: '@name' is the abstract namespace ('\\0name')."""
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # e.g. systemd's "vsock:" addresses, which this daemon does not need


def notify(message: str) -> bool:
    """Send one notification (one or more newline-separated `KEY=VALUE` assignments).

    Returns True if the datagram was sent, False if `$NOTIFY_SOCKET` is unset or empty, not a
    Unix socket address, or the send failed. Never raises.
    """
    value = os.environ.get("NOTIFY_SOCKET", "")
    if not value:
        return False
    address = _socket_address(value)
    if address is None:
        _log_once(value, ValueError("unsupported NOTIFY_SOCKET address"))
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            # never block the caller (the daemon's supervising main thread) on a full socket queue
            sock.sendto(message.encode("utf-8"), socket.MSG_DONTWAIT, address)
    except (OSError, UnicodeError) as exc:
        _log_once(value, exc)
        return False
    return True


def ready() -> bool:
    """Startup finished (models loaded and warmed up, sockets bound): `Type=notify` units go active."""
    return notify("READY=1")


def watchdog() -> bool:
    """Keep-alive for `WatchdogSec=`; send only while the pipeline makes progress, so a stall gets the
    process restarted instead of pinging from a thread that is still alive."""
    return notify("WATCHDOG=1")


def stopping() -> bool:
    """Shutdown has begun (draining), so systemd does not mistake the drain for a hang."""
    return notify("STOPPING=1")


def status(text: str) -> bool:
    """Free-form one-line status shown by `systemctl status`; newlines would start new assignments,
    so they are replaced by spaces."""
    one_line = " ".join(text.splitlines())
    return notify(f"STATUS={one_line}")


def watchdog_interval() -> float | None:
    """The watchdog timeout in seconds, or None when the watchdog is not enabled for this process.

    Reads `$WATCHDOG_USEC`; when `$WATCHDOG_PID` is set it must be this process's pid (otherwise
    the variables were inherited from a parent and are not for us). Ping at least every half of
    the returned interval, as sd_watchdog_enabled(3) recommends.
    """
    usec_text = os.environ.get("WATCHDOG_USEC", "")
    if not usec_text:
        return None
    pid_text = os.environ.get("WATCHDOG_PID", "")
    if pid_text:
        try:
            if int(pid_text) != os.getpid():
                return None
        except ValueError:
            log.debug("ignoring malformed WATCHDOG_PID=%r", pid_text)
            return None
    try:
        usec = int(usec_text)
    except ValueError:
        log.debug("ignoring malformed WATCHDOG_USEC=%r", usec_text)
        return None
    if usec <= 0:
        return None
    return usec / 1_000_000
