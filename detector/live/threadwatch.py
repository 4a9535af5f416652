"""Which of the daemon's long-lived threads died, and of what (issue 5's thread watchdog).

Every thread the pipeline cannot do without is registered by name: one capture thread per
channel, inference, the publisher (it owns every ZeroMQ socket), the metrics HTTP server,
and the CURVE authenticator when CURVE is on. `dead()` is read by the supervisor (exit 1)
and by /healthz (503), so a dead thread is never a process that looks alive.

An uncaught exception in any thread goes through `threading.excepthook`, which Python's
default prints to stderr without a timestamp and keeps nowhere. `install()` replaces it:
the exception is logged once, as one structured line with its traceback (`thread died
thread=NAME error=...`), and remembered for the thread, so the supervisor's final message
can name the exception too. A thread that catches its own exception at the top (the
publisher does, to close its sockets) reports it through the `error` callable instead.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from detector.util.threads import WatchedThread

log = logging.getLogger(__name__)


Watched = WatchedThread   # the supervised-thread record lives in util, so outputs can name theirs


@dataclass(frozen=True)
class Death:
    name: str
    error: str      # repr of the exception, or why there is none


class ThreadWatch:
    def __init__(self) -> None:
        self._watched: list[Watched] = []
        self._errors: dict[threading.Thread, BaseException] = {}   # thread -> its uncaught exception
        self._lock = threading.Lock()
        self._previous: Callable[[Any], Any] | None = None

    # -- the excepthook
    def install(self) -> None:
        """Route uncaught thread exceptions here (process-wide; `uninstall()` puts the old hook back)."""
        if self._previous is None:
            self._previous = threading.excepthook
            threading.excepthook = self._hook

    def uninstall(self) -> None:
        if self._previous is not None:
            if threading.excepthook == self._hook:
                threading.excepthook = self._previous
            self._previous = None

    def _hook(self, args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:       # what the default hook ignores too
            return
        thread = args.thread
        name = thread.name if thread is not None else "?"
        if thread is not None and args.exc_value is not None:
            with self._lock:
                self._errors.setdefault(thread, args.exc_value)
        log.error("thread died thread=%s error=%r", name, args.exc_value,
                  exc_info=(args.exc_type, args.exc_value, args.exc_traceback))

    def error_of(self, thread: threading.Thread | None) -> BaseException | None:
        if thread is None:
            return None
        with self._lock:
            return self._errors.get(thread)

    # -- supervision
    def watch(self, name: str, thread: Callable[[], threading.Thread | None], alive: Callable[[], bool] | None = None,
              error: Callable[[], BaseException | None] | None = None) -> None:
        self._watched.append(Watched(name, thread, alive, error))

    def watch_all(self, threads: list[WatchedThread]) -> None:
        self._watched.extend(threads)

    def names(self) -> list[str]:
        return [w.name for w in self._watched]

    def dead(self) -> list[Death]:
        """The watched threads that are not running, with what killed them, in registration order."""
        out = []
        for w in self._watched:
            thread = w.thread()
            alive = w.alive() if w.alive is not None else thread is not None and thread.is_alive()
            if alive:
                continue
            exc = (w.error() if w.error is not None else None) or self.error_of(thread)
            out.append(Death(w.name, repr(exc) if exc is not None else "exited without an exception"))
        return out
