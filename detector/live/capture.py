"""The capture thread of one channel: decode the source, keep the sampled frames, never stall.

The source (detector.sources: one module per input kind, libav through PyAV) is opened with
its timeouts; every frame is `grab()`bed (the decoder needs it and it keeps time), only the
frames the analysis rate keeps are `retrieve()`d, converted and scaled to the model's input
in one libav call, into the ring with their source PTS. Audio decoded on the way goes to the
channel's `AudioBuffer` at its place on the timeline; SCTE-35 sections become upstream cues.

Reconnects: on end of stream, error or a stall, the capture is closed, `stream.down` is
reported, and it retries with exponential backoff and jitter up to a cap; `stream.up`
comes with the first frame again. A stall is judged by *new media time*, from outside the
blocking call (`stalled()` is read by the supervisor): on this machine a stalled RTSP
stream made `read()` block past its timeout and then hand out a few buffered frames per
timeout, which keeps a naive "no frame for N s" check happy forever. A capture stuck in
a call is abandoned (its thread exits when the call returns) and a fresh one started.

The channel timeline (`media_time`, detector.analysis.timeline) is continuous across
connections, PTS wraps and timestamp resets, and follows the source's own clock where it
carries on; a connection change or a timestamp reset/jump bumps `generation` so the engine
starts a fresh window (never a window that spans a gap). Frames a reconnect delivers again
(same PTS) are skipped.

What the capture learns goes to one `CaptureObserver` (stream up/down, frames, drops,
reconnects, faults): the orchestrator's per-channel object turns it into metrics and events.

Faults (see detector.live.faults) are reported once per episode through `faults`: an
unreachable or silent source, a read that ends mid-stream (connection lost, or data the
decoder cannot go on from), a stall, frames that do not decode, timestamps that reset or
leap, a picture size change, an input rate far off nominal. A size change does *not*
restart the window: every frame is squeezed whole into the model's input as in training,
so features stay comparable, and a size change often coincides with a switch between
programme and ad, exactly where a fresh (blind for a window length) start would hurt.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from collections.abc import Callable
from typing import Protocol

from detector.analysis.audio import AudioBuffer
from detector.analysis.loudness import LoudnessMeter
from detector.analysis.clock import PTS_HZ, signed_delta
from detector.analysis.framestats import frame_stats
from detector.analysis.sampler import Sampler
from detector.analysis.timeline import ChannelTimeline, ConnectionTimeline
from detector.live.faults import FaultEpisodes, RateMonitor
from detector.live.ring import FrameMeta, Ring
from detector.sources import Source, SourceOptions, open_source, redact, source_class
from detector.sources.cues import UpstreamCue, parse_cue

log = logging.getLogger(__name__)

DEFAULT_FPS = 25.0     # when a source does not announce its rate (for pacing and the rate check)
CUE_REPEAT_SECONDS = 30.0   # the same SCTE-35 section again within this much media time is a repeat


class RecentKeys:
    """Keys seen within the last `window` seconds of media time (bounded): repeats of a cue."""

    def __init__(self, window: float, capacity: int = 256):
        self.window = window
        self.capacity = capacity
        self._seen: dict[str, float] = {}

    def repeat(self, key: str, now: float) -> bool:
        last = self._seen.pop(key, None)
        self._seen[key] = now                  # re-inserted: the dict stays in order of last sight
        if len(self._seen) > self.capacity:
            del self._seen[next(iter(self._seen))]     # the key seen longest ago
        return last is not None and 0 <= now - last <= self.window


@dataclass(frozen=True)
class CaptureSettings:
    source: str
    realtime: bool = False
    open_timeout: float = 10.0
    read_timeout: float = 5.0
    stall_seconds: float = 10.0
    reconnect_initial: float = 1.0
    reconnect_max: float = 30.0
    rtsp_transport: str = "tcp"
    fault_quiet: float = 5.0        # capture.fault_quiet_seconds: FaultEpisodes' quiet_seconds
    hls_read_timeout: float = 30.0
    udp_fifo_packets: int = 100_000
    decode_threads: int = 1
    skip_nonref: bool = True
    tap: Callable[[bytes], None] | None = None      # the inline marker's raw-TS tap (detector.sources.tap)

    def source_options(self, analysis_fps: float = 0.0, measure_loudness: bool = False) -> SourceOptions:
        return SourceOptions(open_timeout=self.open_timeout, read_timeout=self.read_timeout, rtsp_transport=self.rtsp_transport,
                             hls_read_timeout=self.hls_read_timeout, udp_fifo_packets=self.udp_fifo_packets,
                             decode_threads=self.decode_threads, analysis_fps=analysis_fps, skip_nonref=self.skip_nonref,
                             tap=self.tap, measure_loudness=measure_loudness)


class CaptureObserver(Protocol):
    """What a capture reports, from its own thread (implementations must be quick and thread-safe)."""

    def stream_up(self, generation: int) -> None: ...
    def stream_down(self, reason: str) -> None: ...
    def frame_captured(self, wall: float) -> None: ...
    def frame_dropped(self, reason: str) -> None: ...
    def reconnecting(self) -> None: ...
    def fault(self, kind: str) -> None: ...
    def decode_errors(self, count: int) -> None: ...
    def audio_present(self, present: bool) -> None: ...
    def pts_wrapped(self) -> None: ...
    def upstream_cue(self, cue: UpstreamCue, stream_time: float | None) -> None: ...


def backoff_delays(initial: float, cap: float, rng: random.Random):
    """Exponential backoff with full jitter in [d/2, d], capped (pure generator)."""
    d = initial
    while True:
        yield min(cap, d) * (0.5 + 0.5 * rng.random())
        d = min(cap, d * 2)


class Capture:
    """Owns the capture thread(s) of one channel; what it learns goes to `observer`."""

    def __init__(self, channel: str, settings: CaptureSettings, ring: Ring, analysis_fps: float, input_size: tuple[int, int],
                 observer: CaptureObserver, audio: AudioBuffer | None = None, loudness: LoudnessMeter | None = None):
        self.channel = channel
        self.audio = audio
        self.loudness = loudness           # the BS.1770 meter of the source's own channels (the loudness metric)
        self.settings = settings
        self.ring = ring
        self.analysis_fps = analysis_fps
        self.input_size = input_size
        self.observer = observer
        self._live = source_class(settings.source).live    # a live stream does not end by itself; a file does
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._worker = 0                       # id of the thread allowed to publish; an abandoned one exits
        self.generation = 0
        self.up: bool | None = None            # None until the first connection attempt ends
        self.last_progress = time.monotonic()  # monotonic time media time last advanced
        self.timeline = ChannelTimeline()
        self._rng = random.Random(hash(channel) & 0xFFFF)
        self.started_at = time.monotonic()
        self.faults = FaultEpisodes(channel, observer.fault, quiet_seconds=settings.fault_quiet)
        self.source_size: tuple[int, int] | None = None   # (width, height) of the last decoded picture
        self.attempt_started: float | None = None         # monotonic start of a connection attempt not yet flowing
        self._seen_cues = RecentKeys(CUE_REPEAT_SECONDS)
        self._cues: list[UpstreamCue] = []

    # -- lifecycle
    def start(self) -> None:
        self._spawn()

    def _spawn(self) -> None:
        with self._lock:
            self._worker += 1
            me = self._worker
        thread = threading.Thread(target=self._run, args=(me,), name=f"capture-{self.channel}-{me}", daemon=True)
        thread.start()
        self._thread = thread       # only once started: the watchdog reads `thread` from other threads

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def thread(self) -> threading.Thread | None:
        """The current capture thread (an abandoned one is no longer it)."""
        return self._thread

    def stalled(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return now - self.last_progress > self.settings.stall_seconds

    def hung(self, now: float | None = None) -> bool:
        """A connection attempt that never delivered a frame and outlived its own timeouts.

        A source that accepts the connection and then sends nothing should time out in
        FFmpeg; when the call blocks past its timeout anyway (seen here with RTSP), only a
        watchdog outside the call notices.
        """
        now = time.monotonic() if now is None else now
        started = self.attempt_started
        s = self.settings
        return not self.up and started is not None and now - started > s.open_timeout + s.read_timeout + s.stall_seconds

    def abandon(self) -> None:
        """The supervisor saw no progress: give up on the current capture object, start a fresh thread."""
        if self.up:
            self.faults.occur("stall", stall_seconds=self.settings.stall_seconds)
        else:
            self.faults.occur("silent", hung_seconds=round(time.monotonic() - (self.attempt_started or time.monotonic()), 1))
        log.warning("capture stalled, abandoning it channel=%s stall_seconds=%.1f", self.channel, self.settings.stall_seconds)
        self.attempt_started = None
        self._set_down("stall")
        self.last_progress = time.monotonic()
        self.observer.reconnecting()
        self._spawn()

    def _current(self, me: int) -> bool:
        return me == self._worker and not self._stop.is_set()

    def _set_down(self, reason: str) -> None:
        with self._lock:
            was_up, self.up = self.up, False
        if was_up is not False:    # up before, or never reached at start: reported once per outage
            self.observer.stream_down(reason)

    # -- the thread
    def _run(self, me: int) -> None:
        delays = backoff_delays(self.settings.reconnect_initial, self.settings.reconnect_max, self._rng)
        attempt = 0
        while self._current(me):
            if attempt:
                self.observer.reconnecting()
            attempt += 1
            reason, flowed = self._session(me)
            if not self._current(me):
                break
            self.attempt_started = None      # backing off is not hanging
            if flowed and reason in ("end_of_stream", "read_failed") and self._live:
                self.faults.occur("read_error", reason=reason)   # a live stream does not end by itself
            self._set_down(reason)
            if flowed:   # a connection that delivered frames starts the backoff over
                delays = backoff_delays(self.settings.reconnect_initial, self.settings.reconnect_max, self._rng)
            delay = next(delays)
            log.info("capture reconnecting channel=%s reason=%s in_seconds=%.1f", self.channel, reason, delay)
            if self._stop.wait(delay):
                break

    def _session(self, me: int) -> tuple[str, bool]:
        """One connection: returns why it ended and whether frames flowed."""
        s = self.settings
        t_open = self.attempt_started = time.monotonic()
        source = open_source(s.source, s.source_options(self.analysis_fps, measure_loudness=self.loudness is not None))
        try:
            if not source.open():
                took = time.monotonic() - t_open
                # a refusal is quick; a source that accepted and then said nothing used up the timeout
                kind = "silent" if took >= 0.8 * s.open_timeout else "unreachable"
                if self._current(me):
                    self.faults.occur(kind, source=redact(s.source), open_seconds=round(took, 1), error=source.open_error or "-")
                log.debug("capture cannot open source channel=%s source=%s", self.channel, redact(s.source))
                return "open_failed", False
            return self._read(me, source, t_open)
        finally:
            source.close()

    def _read(self, me: int, source: Source, t_open: float) -> tuple[str, bool]:
        """Frames of one open connection until it ends, stalls or is abandoned."""
        s = self.settings
        fps = source.fps or DEFAULT_FPS
        # a file read at full speed is meant to be fast; everything else should arrive at its rate
        rate = RateMonitor(fps) if (source.live or s.realtime) and not source.bursty else None
        pace = s.realtime or source.bursty        # HLS delivers a segment at once: play it out at its rate
        sampler = Sampler(self.analysis_fps)
        clock = self.timeline.connection(fps, resume=source.live)
        index = -1
        pace_start: tuple[float, float] | None = None
        up_since: float | None = None
        flowed = False
        errors_seen = 0
        wraps_seen = 0
        skip_check: tuple[float, int] | None = None     # (first t_conn, frames) while non-reference frames are skipped
        h, w = self.input_size
        self.observer.audio_present(bool(source.has_audio))
        if not source.has_audio:
            log.info("source has no audio channel=%s kind=%s", self.channel, source.kind)
        while self._current(me):
            t_grab = time.monotonic()
            ok = source.grab()
            errors_seen = self._drain(source, clock, errors_seen)
            if not ok:
                self._publish_cues(placed=False)
                return self._read_ended(me, source, flowed, t_open, t_grab), flowed
            if not self._current(me):
                return "abandoned", flowed
            index += 1
            now_wall, now_mono = time.time(), time.monotonic()
            position = source.position() if source.clock == "stream" else None
            pts = source.pts() if source.clock == "stream" else None
            if position is None:
                position = now_mono - self.started_at    # capture cards: arrival time is the timeline
            wraps = source.pts_wraps
            if wraps != wraps_seen:
                wraps_seen = wraps
                log.info("source PTS wrapped past 2^33, timeline continues channel=%s stream_time=%.3f", self.channel,
                         self.timeline.end)
                self.observer.pts_wrapped()
            placed = clock.place(position, now_wall, pts)
            if placed.replayed:
                self.observer.frame_dropped("replayed")   # a reconnect resent what was analysed already
                self.last_progress = now_mono if not flowed else self.last_progress
                continue
            if placed.jump:
                # encoder restart / PTS reset (or a leap): a fresh window starts, pacing restarts
                if placed.settling:
                    log.debug("source clock settled at connection start channel=%s from_s=%.2f to_s=%.2f", self.channel,
                              placed.jumped_from, placed.jumped_to)
                else:
                    self.faults.occur(placed.jump, from_s=placed.jumped_from, to_s=placed.jumped_to)
                    self.observer.frame_dropped("timestamp_jump")
                sampler.reset()
                self._new_generation()
                if pace_start is not None:
                    pace_start = (now_mono, 0.0)
            if placed.advanced:
                self.last_progress = now_mono
            if not flowed:
                flowed = True
                self._new_generation()
                with self._lock:
                    self.up = True
                self.attempt_started = None
                up_since = now_mono
                self.observer.stream_up(self.generation)
                pace_start = (now_mono, placed.t_conn)
            self.observer.frame_captured(now_wall)
            self._publish_cues(placed=source.clock == "stream")
            self._check_size(source.frame_size)
            if rate is not None:
                off = rate.frame(now_mono)
                if off is not None:
                    self.faults.occur(off[0], fps=off[1], nominal_fps=fps)
            if up_since is not None and now_mono - up_since >= self.faults.quiet:
                self.faults.recovered(at=up_since)     # flowed long enough: the outage is over
                up_since = None
            self.faults.tick()
            if source.skipping_nonref:
                skip_check = self._check_skipping(source, placed.t_conn, skip_check)
            if pace and pace_start is not None:
                ahead = (placed.t_conn - pace_start[1]) - (time.monotonic() - pace_start[0])
                if ahead > 0 and self._stop.wait(ahead):
                    return "stopped", flowed
            if not sampler.keep(placed.t_conn):
                continue
            image = source.retrieve((h, w))
            if image is None:
                self.observer.frame_dropped("decode_error")
                self.faults.occur("decode_error", frame=index)
                continue
            meta = FrameMeta(index, placed.t, now_wall, now_mono, frame_stats(image), self.generation, pts)
            if self.ring.push(image, meta):
                self.observer.frame_dropped("ring_overflow")
        return "stopped", flowed

    def _drain(self, source: Source, clock: ConnectionTimeline, errors_seen: int) -> int:
        """What the source demuxed besides the frame: faults, audio, cues. Returns its error count."""
        for kind, info in source.take_faults():
            self.faults.occur(kind, **info)
        if source.decode_errors != errors_seen:
            self.observer.decode_errors(source.decode_errors - errors_seen)
        for chunk in source.take_audio():
            t = clock.to_channel(chunk.source_seconds)
            if t is not None and self.audio is not None:
                self.audio.write(t, chunk.samples)
        for loud in source.take_loudness():
            t = clock.to_channel(loud.source_seconds)
            if t is not None and self.loudness is not None:
                self.loudness.write(t, loud.samples, loud.rate, loud.weights)
        for packet in source.take_data():
            cue = parse_cue(packet.payload, packet.pts)
            if cue is None:
                if packet.declared:          # other private data on an undeclared stream is not a bad cue
                    self.faults.occur("bad_cue", size=len(packet.payload))
                continue
            if self._seen_cues.repeat(cue.base64, self.timeline.end):
                continue        # encoders repeat a cue several times before its splice point: announced once
            self._cues.append(cue)
        return source.decode_errors

    def _publish_cues(self, placed: bool) -> None:
        """Cues waiting for a frame to place their splice point on the timeline (a cue may come
        before a connection's first frame); `placed` False: publish them without it."""
        while self._cues:
            cue = self._cues.pop(0)
            splice = self._stream_time_of(cue.pts) if placed and cue.pts is not None else None
            self.observer.upstream_cue(cue, splice)

    def _stream_time_of(self, pts: int) -> float | None:
        """Where a PTS (a cue's splice time) lies on the channel timeline, from the newest frame."""
        last = self.timeline.last_pts
        if last is None:
            return None
        return round(self.timeline.end + signed_delta(pts, last) / PTS_HZ, 3)

    def _check_skipping(self, source: Source, t_conn: float, check: tuple[float, int] | None) -> tuple[float, int] | None:
        """Skipping non-reference frames must still leave twice the analysis rate; if not, decode all."""
        if check is None:
            return (t_conn, 1)
        start, n = check[0], check[1] + 1
        if t_conn - start >= 2.0:
            if n / (t_conn - start) < 2 * self.analysis_fps:
                log.info("too few reference frames to skip the others, decoding every frame channel=%s frames_per_s=%.1f",
                         self.channel, n / (t_conn - start))
                source.stop_skipping()
            return None
        return (start, n)

    def _read_ended(self, me: int, source: Source, flowed: bool, t_open: float, t_grab: float) -> str:
        """Why a read returned no frame: never flowed (silent), froze (stall) or ended."""
        s = self.settings
        if not flowed and self._current(me):
            self.faults.occur("silent", source=redact(s.source), waited_seconds=round(time.monotonic() - t_open, 1))
        if flowed and source.live and time.monotonic() - t_grab >= 0.8 * s.read_timeout and self._current(me):
            # the read timed out: the source froze (FFmpeg's own timeout noticed first)
            self.faults.occur("stall", waited_seconds=round(time.monotonic() - t_grab, 1))
            return "stall"
        return "end_of_stream" if flowed else "read_failed"

    def _check_size(self, size: tuple[int, int] | None) -> None:
        """A picture size change inside or across connections: reported (the scaler follows it by itself)."""
        if size is None:
            return
        if size != self.source_size:
            if self.source_size is not None:
                self.faults.occur("resolution_change", from_size="%dx%d" % self.source_size, to_size="%dx%d" % size)
            self.source_size = size

    def _new_generation(self) -> None:
        with self._lock:
            self.generation += 1

