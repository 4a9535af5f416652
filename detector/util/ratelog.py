"""Rate limiting for log lines that can repeat many times a second.

A slow subscriber overflowing its queue (detector.events.publisher) or a stranger hammering the
CURVE port (detector.events.curve) can cause thousands of identical warnings a minute. One line
per episode start, then one summary per interval with the count since the last line, keeps
the journal readable and still says how much happened.

Its own module because both users need it and security.py cannot import publisher.py
(publisher imports security for CurveServer).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

LOG_EVERY_SECONDS = 10.0


class RateLimitedLog:
    """Logs the first occurrence at once, then at most one summary line per interval.

    Thread-safe: the CURVE authenticator and monitor threads both report refusals.
    The caller owns the wording; this only decides when to speak and how many to report.
    """

    def __init__(self, interval: float = LOG_EVERY_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.pending = 0
        self.last = -float("inf")
        self._clock = clock
        self._lock = threading.Lock()

    def hit(self) -> int | None:
        """Count one occurrence; return how many to report now (including this one), or None to stay quiet."""
        with self._lock:
            self.pending += 1
            now = self._clock()
            if now - self.last >= self.interval:
                count, self.pending, self.last = self.pending, 0, now
                return count
            return None
