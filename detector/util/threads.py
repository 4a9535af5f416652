"""How a part of the daemon names a thread it wants supervised, without depending on the
supervisor (`detector.live.threadwatch`): events, sources and outputs hand these over."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class WatchedThread:
    """`thread()` returns the current thread (None before it started); `alive()` and `error()`,
    when given, let a thread that catches its own failure report it while still running."""

    name: str
    thread: Callable[[], threading.Thread | None]
    alive: Callable[[], bool] | None = None
    error: Callable[[], BaseException | None] | None = None


def block_process_signals() -> None:
    """Leave SIGTERM, SIGINT and SIGHUP to the main thread (call first thing in a worker thread).

    Python runs signal handlers on the main thread anyway, but the kernel may deliver a process
    signal to any thread that does not block it, and threads that native libraries start
    inherit the mask of the thread that started them. Inference engines set up per-thread
    state that dies with their models: after a model reload, a SIGTERM delivered to a thread
    that had run the released model crashed the daemon (SIGSEGV, exit 139, seen here with
    OpenVINO). Worker threads that touch models therefore block these signals.
    """
    import signal

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
