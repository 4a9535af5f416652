"""Helpers shared by the tests in tests/events (imported as `evkit`: pytest puts this folder on sys.path)."""

from __future__ import annotations

import threading


class Recorder:
    """An `EventCounters` that remembers every call (thread-safe), so tests read what the metrics would count."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sent: list[tuple[str, str]] = []
        self.dropped: list[str] = []
        self.journal_errors = 0
        self.journal_states: list[bool] = []
        self.auth_failures: list[str] = []

    def event_sent(self, channel: str, type: str) -> None:
        with self._lock:
            self.sent.append((channel, type))

    def event_dropped(self, reason: str) -> None:
        with self._lock:
            self.dropped.append(reason)

    def journal_error(self) -> None:
        with self._lock:
            self.journal_errors += 1

    def journal_state(self, ok: bool) -> None:
        with self._lock:
            self.journal_states.append(ok)

    def auth_failure(self, reason: str) -> None:
        with self._lock:
            self.auth_failures.append(reason)


def wait_until(predicate, timeout: float = 5.0) -> None:
    """Poll `predicate` every 10 ms until it holds; AssertionError after `timeout` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


class PublisherFactory:
    """Starts real publishers with a test's defaults and stops every one it started (a fixture's body)."""

    def __init__(self, **defaults) -> None:
        self.defaults = defaults
        self.started: list = []

    def __call__(self, **kwargs):
        from detector.events.outputs.zeromq import Publisher

        pub = Publisher(**{**self.defaults, **kwargs})
        pub.start()
        self.started.append(pub)
        return pub

    def stop_all(self) -> None:
        for pub in self.started:
            pub.stop()
