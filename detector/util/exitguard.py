"""Leaving the process safely while a thread may still be inside native code.

A capture thread that was asked to stop finishes the libav read it is in (bounded by the
read timeout) and then closes its container. If the interpreter tears down meanwhile, that
thread comes back into freed interpreter state: CI saw `ad-detector run` die with SIGSEGV on
SIGTERM after an orderly stop. Everything durable (journal, last events, sockets) is done by
then, so the process waits a bounded time for such threads and otherwise leaves with
os._exit, which skips the teardown that would crash.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

log = logging.getLogger(__name__)

NATIVE_PREFIXES = ("capture-", "relay-", "inference")


def busy_threads() -> list[threading.Thread]:
    """Threads other than the main one that are still running."""
    main = threading.main_thread()
    return [t for t in threading.enumerate() if t is not main and t.is_alive()]


def leave(code: int, grace_seconds: float = 3.0) -> int:
    """Return `code` normally when no thread is left; otherwise exit without interpreter teardown."""
    deadline = time.monotonic() + grace_seconds
    for t in busy_threads():
        if t.name.startswith(NATIVE_PREFIXES):
            t.join(max(0.0, deadline - time.monotonic()))
    left = busy_threads()
    if not left:
        return code
    log.info("leaving without interpreter teardown threads=%s", ",".join(sorted(t.name for t in left)))
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:   # noqa: BLE001 - a closed pipe must not turn an orderly exit into a crash
            pass
    os._exit(code)
