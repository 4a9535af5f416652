"""One channel's inline marker: a thread between the raw-TS tap and the output destination.

Who calls what, and why nothing waits:
- the capture thread calls `feed(bytes)` through the source's tap (detector.sources.tap): it
  only appends to a bounded queue (over `max_buffer_mb`, the oldest chunk is dropped and
  counted: the marker thread is stuck, the capture must go on);
- the inference thread calls `cue(Scte35Cue)` as a cue sink (Channel.cue_sinks), right after
  the segment event is published: it only appends;
- this thread moves both into the delay line (detector.marker.delayline), writes what is due
  to the destination, and retries a destination that failed with backoff (counted, logged
  once per episode); what is released while the destination is down is dropped and counted.

Stopping (after the captures, the inference and the final events, so the cue-in of a break
still open at shutdown is in): everything held is released at once, then the destination
is closed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

from detector.events.outputs.base import OutputHealth
from detector.events.scte35 import Scte35Cue
from detector.marker.delayline import DelayLine, Placement
from detector.marker.destinations import Destination, destination_for
from detector.util.threads import block_process_signals

log = logging.getLogger("detector.marker")

TICK_SECONDS = 0.01          # how often held units are checked (the output's granularity in time)
BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 10.0
STATE_EVERY = 0.5            # seconds between updates of the delay / output-up gauges


@dataclass(frozen=True)
class MarkerSettings:
    url: str
    delay_seconds: float
    preroll_seconds: float
    max_buffer_bytes: int


class MarkerCounters:
    """What the marker reports (detector.live.metrics implements it for the daemon)."""

    def marker_cue(self, channel: str, late: bool) -> None: ...
    def marker_dropped(self, channel: str, reason: str, nbytes: int) -> None: ...
    def marker_output_error(self, channel: str) -> None: ...
    def marker_state(self, channel: str, held_seconds: float, up: bool) -> None: ...


class InlineMarker:
    def __init__(self, channel: str, settings: MarkerSettings, counters: MarkerCounters,
                 destination: Destination | None = None):
        self.channel = channel
        self.settings = settings
        self.counters = counters
        self.dest = destination or destination_for(settings.url)
        self.line = DelayLine(settings.delay_seconds, settings.preroll_seconds, settings.max_buffer_bytes)
        self.thread: threading.Thread | None = None
        self._chunks: deque[bytes] = deque()
        self._queued = 0
        self._qlock = threading.Lock()
        self._cues: deque[Scte35Cue] = deque()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._open = False
        self._retry_at = 0.0
        self._backoff = BACKOFF_INITIAL
        self._down_since: float | None = None
        self._state_at = 0.0
        self.cues_written = 0
        self.bytes_written = 0

    # -- other threads
    def feed(self, data: bytes) -> None:
        """The tap (capture thread): queue and return."""
        dropped = 0
        with self._qlock:
            self._chunks.append(data)
            self._queued += len(data)
            while self._queued > self.settings.max_buffer_bytes and len(self._chunks) > 1:
                old = self._chunks.popleft()
                self._queued -= len(old)
                dropped += len(old)
        if dropped:
            self.counters.marker_dropped(self.channel, "queue_full", dropped)

    def cue(self, cue: Scte35Cue) -> None:
        """A cue sink (inference thread): queue and return."""
        self._cues.append(cue)
        self._wake.set()

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name=f"marker-{self.channel}", daemon=True)
        self.thread.start()
        log.info("marker started channel=%s output=%s delay_seconds=%g preroll_seconds=%g", self.channel, self.dest.describe,
                 self.settings.delay_seconds, self.settings.preroll_seconds)

    def stop(self, timeout: float = 3.0) -> None:
        """Release everything held, close the destination."""
        self._stop.set()
        self._wake.set()
        if self.thread is not None:
            self.thread.join(timeout)

    def health(self) -> OutputHealth:
        """Its part of /healthz: a failing destination is "degraded" (retried; a restart would not
        bring a packager back), never a 503."""
        since = self._down_since
        if since is None:
            return OutputHealth()
        return OutputHealth(degraded=[f"marker output of {self.channel} failing for {time.monotonic() - since:.0f} s: "
                                      f"{self.dest.describe} (being retried)"])

    # -- the thread
    def _run(self) -> None:
        block_process_signals()
        try:
            while not self._stop.is_set():
                self._wake.wait(TICK_SECONDS)
                self._wake.clear()
                self._turn(time.monotonic(), flush=False)
            self._turn(time.monotonic(), flush=True)
        finally:
            left = self.line.held_bytes
            self.dest.close()
            log.info("marker stopped channel=%s bytes_written=%d cues_written=%d unfinished_frame_bytes=%d", self.channel,
                     self.bytes_written, self.cues_written, left)

    def _turn(self, now: float, flush: bool) -> None:
        with self._qlock:
            chunks, self._chunks = self._chunks, deque()
            self._queued = 0
        if chunks:
            self.line.feed(b"".join(chunks), now)     # one pass per turn: per-datagram feeds cost 10x the CPU
        if self.line.pmt_error:
            log.error("marker cannot declare its cue PID channel=%s error=%r; cues are not inserted", self.channel,
                      self.line.pmt_error)
            self.line.pmt_error = None
        while self._cues:
            self._placed(self._cues.popleft(), now)
        out = self.line.release(now, flush=flush)
        if out.dropped_bytes:
            self.counters.marker_dropped(self.channel, "buffer_full", out.dropped_bytes)
            log.warning("marker buffer full channel=%s dropped_bytes=%d max_buffer_bytes=%d", self.channel, out.dropped_bytes,
                        self.settings.max_buffer_bytes)
        if out.data:
            self._write(out.data, out.cues, now, final=flush)
        if now - self._state_at >= STATE_EVERY or flush:
            self._state_at = now
            self.counters.marker_state(self.channel, self.line.held_seconds(), self._open)

    def _placed(self, cue: Scte35Cue, now: float) -> None:
        p: Placement = self.line.add_cue(cue)
        kind = "cancel" if cue.cancel else ("out" if cue.out_of_network else "in")
        if p.kind == "withdrawn":
            log.info("marker cue withdrawn before output channel=%s event_id=%d", self.channel, cue.event_id)
            return
        late = p.kind == "late"
        self.counters.marker_cue(self.channel, late)
        if late:
            log.warning("marker cue late channel=%s event_id=%d cue=%s pts=%s late_seconds=%.3f lead_seconds=%s "
                        "preroll_seconds=%g delay_seconds=%g", self.channel, cue.event_id, kind, cue.pts, p.late_seconds,
                        "-" if p.lead_seconds is None else f"{p.lead_seconds:.3f}", self.settings.preroll_seconds,
                        self.settings.delay_seconds)
        else:
            log.info("marker cue placed channel=%s event_id=%d cue=%s pts=%s how=%s lead_seconds=%s", self.channel, cue.event_id,
                     kind, cue.pts, p.kind, "-" if p.lead_seconds is None else f"{p.lead_seconds:.3f}")

    def _write(self, data: bytes, cues: int, now: float, final: bool) -> None:
        if not self._open and (now >= self._retry_at or final):
            try:
                self.dest.open()
                self._open = True
                if self._down_since is not None:
                    log.info("marker output recovered channel=%s output=%s down_seconds=%.1f", self.channel,
                             self.dest.describe, now - self._down_since)
                self._down_since, self._backoff = None, BACKOFF_INITIAL
            except (OSError, ValueError) as exc:
                self._failed(exc, now)
        if not self._open:
            self.counters.marker_dropped(self.channel, "output_down", len(data))
            return
        try:
            self.dest.write(data)
        except OSError as exc:
            self.dest.close()
            self._open = False
            self._failed(exc, now)
            self.counters.marker_dropped(self.channel, "output_down", len(data))
            return
        self.bytes_written += len(data)
        self.cues_written += cues

    def _failed(self, exc: Exception, now: float) -> None:
        self.counters.marker_output_error(self.channel)
        if self._down_since is None:
            self._down_since = now
            log.error("marker output failed channel=%s output=%s error=%r retry_in_seconds=%.1f", self.channel, self.dest.describe,
                      str(exc).splitlines()[0] if str(exc) else type(exc).__name__, self._backoff)
        self._retry_at = now + self._backoff
        self._backoff = min(BACKOFF_MAX, self._backoff * 2)
