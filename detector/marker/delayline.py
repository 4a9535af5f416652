"""The marker's heart, pure: TS bytes in, the same bytes out `delay` later, cues inserted.

No threads, sockets or clocks of its own (the caller passes `now`), so every rule below is
tested on bytes alone (tests/marker/test_delayline.py).

- Units. The input is cut before every video PES start (one access unit each). A unit is
  what is held, released and dropped, and a cue is always inserted *before* a unit: right
  ahead of the video packet whose PTS is the first at or after its target.
- Delay on the programme's own clock. A unit leaves when the input's video clock has moved
  `delay` past it (the running maximum of the video PTS, unwrapped, made continuous across
  resets and reconnects, so a jump neither flushes nor freezes what is held). A live input
  arrives at its own pace, so this is the wall-clock delay; a file read faster than real time
  keeps the same delay of programme. When the input goes silent for `delay` (a dead source),
  what is held goes out anyway, so the last seconds before an outage still reach viewers.
- Cues. A cue for splice point P goes before the first held unit with PTS >= P - preroll.
  When that place has already been released, the cue goes out at once and is `late`; a
  cancel or an immediate splice (no PTS) goes out at once too, except that the cancel of an
  event whose cue-out is still held removes that cue-out instead: downstream never hears
  of a break that was withdrawn within the delay.
- Bounded. Held bytes never exceed `max_bytes`: the oldest units are dropped (counted; their
  cues move to the next unit), which only happens if the delay times the bitrate exceeds it.
- The PMT is rewritten on the fly (detector.marker.ts) to declare the cue PID; every other
  packet, upstream SCTE-35 PIDs included, is copied unchanged.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from detector.analysis.clock import PTS_HZ, signed_delta, wrap
from detector.events.scte35 import Scte35Cue
from detector.marker import ts

log = logging.getLogger(__name__)

JUMP_BACK_TICKS = 2 * PTS_HZ       # more than B-frame reordering: the source restarted or reconnected
JUMP_AHEAD_TICKS = 10 * PTS_HZ     # a leap forward no real gap explains
FRAME_TICKS = PTS_HZ // 25         # where a new epoch continues after the old one ends
MAX_EPOCHS = 8
PAT_WAIT_BYTES = 4 << 20          # input skipped while waiting for the first PAT, at most


@dataclass
class Unit:
    """One access unit of the output: packets from a video PES start to the next one."""

    data: bytearray
    pts: int | None = None              # continuous PTS of the video PES it starts with
    clock: int | None = None            # running max of `pts` up to here (what the delay is measured on)
    raw_pts: int | None = None          # as in the stream (mod 2**33)
    cues: list[Scte35Cue] = field(default_factory=list)    # inserted before `data`


@dataclass(frozen=True)
class Placement:
    """What became of one cue: `scheduled` (ahead of its place), `late` (its place had gone
    out), `immediate` (no PTS: a cancel or an immediate splice), `withdrawn` (a cancel that
    removed its still-held cue-out), `pending` (its place has not arrived yet)."""

    kind: str
    target_pts: int | None = None       # raw PTS (mod 2**33) of the place it aimed at
    late_seconds: float = 0.0           # how far the output was past that place
    lead_seconds: float | None = None   # splice point minus the output's position when inserted


@dataclass
class _Epoch:
    """One stretch of unbroken input clock and how it maps onto the continuous one."""

    offset: int               # continuous = unwrapped + offset
    first: int                # continuous range seen
    last: int
    last_raw: int
    last_unwrapped: int


@dataclass
class Released:
    data: bytes
    cues: int                           # cue sections written
    dropped_bytes: int = 0


class DelayLine:
    def __init__(self, delay_seconds: float, preroll_seconds: float, max_bytes: int):
        self.delay = int(round(delay_seconds * PTS_HZ))
        self.silence_seconds = max(1.0, float(delay_seconds))
        self.preroll = int(round(preroll_seconds * PTS_HZ))
        self.max_bytes = int(max_bytes)
        self.units: deque[Unit] = deque([Unit(bytearray())])       # the last one is still filling
        self.held_bytes = 0
        self.cue_pid: int | None = None
        self.video_pid: int | None = None
        self.pmt_pid: int | None = None
        self.newest: int | None = None          # continuous video clock of the input
        self.released_clock: int | None = None  # clock of the last unit released
        self.epochs: list[_Epoch] = []
        self.pending: list[tuple[int, Scte35Cue]] = []    # (continuous target, cue) not yet placeable
        self.immediate: list[Scte35Cue] = []               # go out with the next release
        self.dropped_bytes = 0
        self.resync_bytes = 0
        self.skipped_before_pat = 0
        self.last_feed: float | None = None
        self._rest = b""
        self._seen_pids: set[int] = set()
        self._pat = ts.SectionAssembler()
        self._pmt = ts.SectionAssembler()
        self._pmt_cc = 0
        self._cue_cc = 0
        self.pmt_error: str | None = None

    # ------------------------------------------------------------------ input
    def feed(self, data: bytes, now: float) -> None:
        """Append input bytes (any split: packets may straddle calls)."""
        self.last_feed = now
        buf = self._rest + data if self._rest else data
        if not buf:
            return
        if buf[0] != ts.SYNC or (len(buf) > ts.TS and buf[ts.TS] != ts.SYNC):
            at = ts.sync_offset(buf, need=2 if len(buf) >= 2 * ts.TS else 1)
            if at is None:
                keep = buf[-(ts.TS - 1):]
                self.resync_bytes += len(buf) - len(keep)
                self._rest = keep
                return
            self.resync_bytes += at
            buf = buf[at:]
        n = len(buf) // ts.TS
        self._rest = buf[n * ts.TS:]
        if n:
            self._packets(buf[:n * ts.TS], n)
        self._bound()

    def _packets(self, buf: bytes, n: int) -> None:
        arr = np.frombuffer(buf, np.uint8).reshape(n, ts.TS)
        if not (arr[:, 0] == ts.SYNC).all():          # lost sync inside the chunk: packet by packet from the break
            bad = int(np.argmin(arr[:, 0] == ts.SYNC))
            if bad:
                self._packets(buf[:bad * ts.TS], bad)
            self._rest = buf[bad * ts.TS + 1:] + self._rest
            self.resync_bytes += 1
            return
        pids = ((arr[:, 1].astype(np.uint16) & 0x1F) << 8) | arr[:, 2]
        if self.pmt_pid is None and self.skipped_before_pat < PAT_WAIT_BYTES:
            # joined mid-stream: what comes before the first PAT cannot be decoded downstream, and a
            # PMT among it would go out without the cue PID; wait for the PAT (not forever: a
            # stream without one is passed through after PAT_WAIT_BYTES)
            first = np.flatnonzero(pids == 0)
            skip = int(first[0]) if first.size else n
            skip = min(skip, -(-(PAT_WAIT_BYTES - self.skipped_before_pat) // ts.TS))
            if skip:
                self.skipped_before_pat += skip * ts.TS
                if skip < n:
                    self._packets(buf[skip * ts.TS:], n - skip)
                return
        self._seen_pids.update(int(p) for p in np.unique(pids))
        pusi = (arr[:, 1] & 0x40) != 0
        special = pids == 0
        if self.pmt_pid is not None:
            special |= pids == self.pmt_pid
        if self.video_pid is not None:
            special |= (pids == self.video_pid) & pusi
        start = 0
        for i in np.flatnonzero(special):
            i = int(i)
            self.units[-1].data += buf[start * ts.TS:i * ts.TS]
            start = i + 1
            pkt = buf[i * ts.TS:(i + 1) * ts.TS]
            pid = int(pids[i])
            known = (self.pmt_pid, self.video_pid)
            if pid == 0:
                self.units[-1].data += pkt
                self._on_pat(pkt)
            elif pid == self.pmt_pid:
                self._on_pmt(pkt)
            else:
                self._new_unit(pkt)
            if (self.pmt_pid, self.video_pid) != known and i + 1 < n:    # the PIDs to watch changed: the rest anew
                self._packets(buf[(i + 1) * ts.TS:], n - i - 1)
                return
        self.units[-1].data += buf[start * ts.TS:]
        self.held_bytes = sum(len(u.data) for u in self.units)

    def _on_pat(self, pkt: bytes) -> None:
        for sec in self._pat.push(pkt):
            programs = ts.parse_pat(sec)
            if programs:
                pmt_pid = next(iter(programs.values()))      # the first programme carries the cues
                if pmt_pid != self.pmt_pid:
                    self.pmt_pid = pmt_pid
                    self._pmt = ts.SectionAssembler()

    def _on_pmt(self, pkt: bytes) -> None:
        """PMT packets are replaced by the rewritten PMT once its section is complete (a
        section that does not parse is re-sent as it was)."""
        for sec in self._pmt.push(pkt):
            pmt = ts.parse_pmt(sec)
            new = sec
            if pmt is not None:
                self.video_pid = pmt.video_pid
                pids = {pid for _, pid in pmt.streams}
                if self.cue_pid is None or self.cue_pid in pids:
                    used = pids | {self.pmt_pid or 0, pmt.pcr_pid} | self._seen_pids | set(range(0x20))
                    self.cue_pid = ts.choose_cue_pid(used)
                try:
                    new = ts.pmt_with_cues(sec, self.cue_pid)
                except ValueError as exc:
                    self.pmt_error = str(exc)
            out, self._pmt_cc = ts.section_packets(new, self.pmt_pid or 0, self._pmt_cc)
            for p in out:
                self.units[-1].data += p

    def _new_unit(self, pkt: bytes) -> None:
        raw = ts.pes_pts(pkt)
        unit = Unit(bytearray(pkt))
        prev = self.units[-1]
        if raw is not None:
            unit.raw_pts = raw
            unit.pts = self._continuous(raw)
            self.newest = unit.pts if self.newest is None else max(self.newest, unit.pts)
        unit.clock = self.newest
        self.units.append(unit)
        if prev.pts is None and prev.clock is None and len(self.units) == 2 and not prev.data:
            self.units.popleft()
        if self.pending and unit.pts is not None:
            still = []
            for target, cue in self.pending:
                (unit.cues.append(cue) if unit.pts >= target else still.append((target, cue)))
            self.pending = still

    def _continuous(self, raw: int) -> int:
        """The raw PTS on the continuous clock; a jump starts a new epoch that continues
        one frame after the newest clock (so what is held keeps its schedule)."""
        ep = self.epochs[-1] if self.epochs else None
        if ep is not None:
            unwrapped = ep.last_unwrapped + signed_delta(raw, ep.last_raw)
            value = unwrapped + ep.offset
            newest = self.newest if self.newest is not None else value
            if -JUMP_BACK_TICKS <= value - newest <= JUMP_AHEAD_TICKS:
                ep.last_raw, ep.last_unwrapped = raw, unwrapped
                ep.first, ep.last = min(ep.first, value), max(ep.last, value)
                return value
            log.info("marker input clock jumped from_pts=%d to_pts=%d: held programme keeps its schedule", ep.last_raw, raw)
        base = (self.newest + FRAME_TICKS) if self.newest is not None else raw
        self.epochs.append(_Epoch(base - raw, base, base, raw, raw))
        del self.epochs[:-MAX_EPOCHS]
        return base

    def _cue_position(self, raw: int) -> int | None:
        """A cue's PTS on the continuous clock: in the epoch whose range it falls in (newest first)."""
        best = None
        for ep in reversed(self.epochs):
            value = ep.last_unwrapped + signed_delta(wrap(raw), ep.last_raw) + ep.offset
            if ep.first - JUMP_AHEAD_TICKS <= value <= ep.last + JUMP_AHEAD_TICKS:
                return value
            best = value if best is None else best
        return best

    def _bound(self) -> None:
        """Drop the oldest closed units while more than `max_bytes` are held."""
        while self.held_bytes > self.max_bytes and len(self.units) > 1:
            unit = self.units.popleft()
            self.held_bytes -= len(unit.data)
            self.dropped_bytes += len(unit.data)
            self.units[0].cues[:0] = unit.cues
            if unit.clock is not None:
                self.released_clock = unit.clock if self.released_clock is None else max(self.released_clock, unit.clock)

    # ------------------------------------------------------------------ cues
    def add_cue(self, cue: Scte35Cue) -> Placement:
        if cue.cancel:
            for unit in self.units:
                for held in unit.cues:
                    if held.event_id == cue.event_id and not held.cancel:
                        unit.cues.remove(held)
                        return Placement("withdrawn")
            for i, (_, held) in enumerate(self.pending):
                if held.event_id == cue.event_id:
                    del self.pending[i]
                    return Placement("withdrawn")
        if cue.pts is None or cue.cancel:
            self.immediate.append(cue)
            return Placement("immediate")
        splice = self._cue_position(cue.pts)
        if splice is None:                        # no video clock yet
            self.immediate.append(cue)
            return Placement("late", None, 0.0, None)
        target = splice - self.preroll
        done = self.released_clock
        if done is not None and done >= target:
            self.immediate.append(cue)
            return Placement("late", wrap(target), (done - target) / PTS_HZ, (splice - done) / PTS_HZ)
        for unit in self.units:
            if unit.pts is not None and unit.pts >= target:
                unit.cues.append(cue)
                return Placement("scheduled", wrap(target), 0.0, (splice - unit.pts) / PTS_HZ)
        self.pending.append((target, cue))
        return Placement("pending", wrap(target), 0.0, self.preroll / PTS_HZ)

    # ------------------------------------------------------------------ output
    def release(self, now: float, flush: bool = False) -> Released:
        """The bytes due now (every closed unit with `flush`): PMT-rewritten, cues inserted."""
        out = bytearray()
        cues = 0
        if self.immediate and self.cue_pid is not None:
            for cue in self.immediate:
                out += self._cue_bytes(cue)
                cues += 1
            self.immediate.clear()
        silent = self.last_feed is not None and now - self.last_feed >= self.silence_seconds
        while len(self.units) > 1:
            head = self.units[0]
            due = flush or silent or head.clock is None or self.newest is None or self.newest - head.clock >= self.delay
            if not due:
                break
            self.units.popleft()
            self.held_bytes -= len(head.data)
            for cue in head.cues:
                if self.cue_pid is not None:
                    out += self._cue_bytes(cue)
                    cues += 1
            out += head.data
            if head.clock is not None:
                self.released_clock = head.clock if self.released_clock is None else max(self.released_clock, head.clock)
        dropped, self.dropped_bytes = self.dropped_bytes, 0
        return Released(bytes(out), cues, dropped)

    def held_seconds(self) -> float:
        """Programme held back now (what the output lags the input by)."""
        first = next((u.clock for u in self.units if u.clock is not None), None)
        if first is None or self.newest is None:
            return 0.0
        return (self.newest - first) / PTS_HZ

    def unreleased_cues(self) -> int:
        return sum(len(u.cues) for u in self.units) + len(self.pending) + len(self.immediate)

    def _cue_bytes(self, cue: Scte35Cue) -> bytes:
        assert self.cue_pid is not None
        packets, self._cue_cc = ts.section_packets(cue.section, self.cue_pid, self._cue_cc)
        return b"".join(packets)
