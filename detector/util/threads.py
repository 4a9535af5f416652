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
