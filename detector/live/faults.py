"""Stream faults of one channel, reported once per episode, and the input-rate check.

A daemon that runs for months on broken input must say what is wrong without flooding its
log: a corrupt stream or a starved link produces the same symptom for every frame, and a
dead source fails every reconnect attempt. So each fault *kind* is an episode: the first
occurrence logs one structured line and counts one in `ad_detector_stream_faults_total`;
more occurrences within `quiet_seconds` extend the episode silently; when it has been quiet
that long (or, for outages, when the stream comes back) one "cleared" line says how long
it lasted and how often it happened. Pure logic and a clock: tested without video.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("detector.live.capture")

# Created up front for every channel (see detector.live.metrics), so alerts see them from 0.
FAULT_KINDS = (
    "unreachable",        # the source refused or failed to open quickly (connection refused, 404, DNS)
    "silent",             # accepted the connection, then sent nothing (open or first read timed out, or hung)
    "read_error",         # a flowing live stream stopped delivering: connection lost, server gone, or data the decoder could not go on from
    "stall",              # flowing, then frozen: the read timed out, or no new media time for capture.stall_seconds (judged outside the blocking read)
    "decode_error",       # packets or frames that did not decode (also counted one by one in ad_detector_decode_errors_total)
    "corrupt",            # the demuxer flagged packets corrupt (MPEG-TS continuity errors, UDP overruns): mild corruption
    "audio_decode_error", # audio that did not decode or resample (the video goes on)
    "bad_cue",            # a SCTE-35 section that does not parse
    "timestamp_reset",    # media time went backwards (encoder restart, PTS reset): timeline kept monotonic
    "timestamp_jump",     # media time leapt forward by more than analysis.timeline.TIMESTAMP_JUMP_SECONDS: timeline kept continuous
    "resolution_change",  # the decoded picture size changed (within a connection or across reconnects)
    "rate_low",           # frames arrive at under half the nominal rate (a starved link, a throttled source)
    "rate_high",          # frames arrive at over twice the nominal rate (a burst, or wrong rate metadata)
)
# Faults that are outages: they end when the stream delivers frames again, not by quiet time.
OUTAGE_KINDS = frozenset({"unreachable", "silent", "read_error", "stall"})

# The rate is judged once per RateMonitor window (5 s): its episode must outlast a window, or a
# link starved for a minute would be a dozen episodes.
QUIET_SECONDS = {"rate_low": 12.0, "rate_high": 12.0}


@dataclass
class _Episode:
    started: float
    last: float
    count: int


class FaultEpisodes:
    """Once-per-episode logging and counting of one channel's faults (thread-safe)."""

    def __init__(self, channel: str, on_fault: Callable[[str], None], quiet_seconds: float = 5.0,
                 clock: Callable[[], float] = time.monotonic):
        self.channel = channel
        self.on_fault = on_fault
        self.quiet = quiet_seconds
        self.clock = clock
        self._open: dict[str, _Episode] = {}
        self.cleared: list[tuple[str, float]] = []     # the latest (kind, duration) closed, bounded
        self._lock = threading.Lock()

    def occur(self, kind: str, **details: object) -> bool:
        """Record one occurrence; returns True when it opened a new episode (logged and counted)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}")
        now = self.clock()
        with self._lock:
            ep = self._open.get(kind)
            if ep is not None and (kind in OUTAGE_KINDS or now - ep.last <= self._quiet(kind)):
                ep.last, ep.count = now, ep.count + 1
                return False
            if ep is not None:
                self._cleared(kind, ep, now)
            self._open[kind] = _Episode(now, now, 1)
        extra = "".join(f" {k}={_fmt(v)}" for k, v in details.items())
        log.warning("stream fault channel=%s kind=%s%s", self.channel, kind, extra)
        self.on_fault(kind)
        return True

    def tick(self) -> None:
        """Close the non-outage episodes that have been quiet for `quiet_seconds`."""
        now = self.clock()
        with self._lock:
            done = [(k, e) for k, e in self._open.items() if k not in OUTAGE_KINDS and now - e.last > self._quiet(k)]
            for k, e in done:
                del self._open[k]
                self._cleared(k, e, now)

    def recovered(self, at: float | None = None) -> None:
        """Frames have flowed again (since `at`, monotonic): every open outage episode ends.

        The capture calls this once frames have flowed for `quiet_seconds`, not at the first
        frame: a corrupt stream that breaks the decoder a second after each reconnect is one
        episode, not one per reconnect. The recovery time reported runs to `at`.
        """
        now = self.clock() if at is None else at
        with self._lock:
            done = [(k, e) for k, e in self._open.items() if k in OUTAGE_KINDS]
            for k, e in done:
                del self._open[k]
                self._cleared(k, e, max(now, e.last))

    def _quiet(self, kind: str) -> float:
        return max(self.quiet, QUIET_SECONDS.get(kind, 0.0))

    def open_kinds(self) -> list[str]:
        with self._lock:
            return sorted(self._open)

    def _cleared(self, kind: str, ep: _Episode, now: float) -> None:
        # for an outage the duration is the time to recover; for the others, first to last occurrence
        end = now if kind in OUTAGE_KINDS else ep.last
        log.info("stream fault cleared channel=%s kind=%s occurrences=%d duration_s=%.1f", self.channel, kind, ep.count,
                 end - ep.started)
        self.cleared.append((kind, end - ep.started))
        del self.cleared[:-64]


class RateMonitor:
    """Measured input frame rate against the nominal one, over windows of `window` seconds.

    The first `warmup` seconds of a connection are ignored: RTSP servers send a burst of
    buffered frames on connect. Sampling for analysis is by media time either way; this only
    says the source is not delivering at the rate it claims.
    """

    def __init__(self, nominal_fps: float, window: float = 5.0, low: float = 0.5, high: float = 2.0, warmup: float = 3.0):
        self.nominal = nominal_fps
        self.window, self.low, self.high, self.warmup = window, low, high, warmup
        self._t0: float | None = None
        self._start: float | None = None
        self._n = 0
        self.last_fps: float | None = None

    def frame(self, now: float) -> tuple[str, float] | None:
        """Count one frame at monotonic `now`; at the end of a window returns (kind, fps) if off nominal."""
        if self._t0 is None:
            self._t0 = now
        if now - self._t0 < self.warmup:
            return None
        if self._start is None:
            self._start, self._n = now, 0
            return None
        self._n += 1
        elapsed = now - self._start
        if elapsed < self.window:
            return None
        fps = self._n / elapsed
        self._start, self._n = now, 0
        self.last_fps = fps
        if not (self.nominal > 0 and math.isfinite(fps)):
            return None
        if fps < self.low * self.nominal:
            return "rate_low", fps
        if fps > self.high * self.nominal:
            return "rate_high", fps
        return None


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.2f}"
    text = str(v)
    return text if text and " " not in text and "=" not in text else repr(text)
