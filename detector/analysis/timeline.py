"""One continuous media timeline per channel, from the timestamps of many connections.

Each connection's timestamps start wherever the source's clock happens to be, and an encoder
restart or a PTS reset moves them back (or far ahead) in the middle of a connection. Events
need a `stream_time` that only moves forward across all of that, so each connection is
offset to continue where the last one stopped, and a reset or leap inside a connection
re-anchors it the same way.

How far a new connection continues: when the source's own clock carries on (the same
90 kHz PTS a little further on, as after a network blip on an encoder that kept running),
by the source's own elapsed time, so `stream_time` stays on the source's clock; frames a
reconnect delivers again (an HLS reconnect restarts a segment back) are reported as
`replayed`, for the capture to skip, so nothing is analysed twice. When the clock does not
carry on (another encoder, a restart), by the wall-clock gap. The 33-bit PTS wrap is undone
before (detector.analysis.clock), so it is neither a reset nor a leap. Pure logic and
numbers: tested without video.
"""

from __future__ import annotations

from dataclasses import dataclass

from detector.analysis.clock import PTS_HZ, signed_delta

BACKWARDS_TOLERANCE_SECONDS = 0.5   # B-frame reordering and jittery muxers move time back a little
TIMESTAMP_JUMP_SECONDS = 5.0        # a leap forward larger than this inside a connection is a jump
CONTINUATION_SECONDS = 120.0        # a reconnect whose PTS is within this of the last one continues its clock
SETTLE_SECONDS = 1.5                # a clock that steps within a connection's first this-many seconds is settling


@dataclass
class ChannelTimeline:
    """Where the channel's timeline ended (channel seconds), when (wall clock), and at which PTS."""

    end: float = 0.0
    wall: float | None = None
    last_pts: int | None = None        # 90 kHz ticks mod 2**33 of the newest frame placed

    def connection(self, fps: float, resume: bool = True) -> ConnectionTimeline:
        """A new connection; `resume`: a live source reconnecting may resend what was seen (a file replayed is a new pass)."""
        return ConnectionTimeline(self, fps, resume)


@dataclass(frozen=True)
class Placed:
    """A frame placed on the timeline."""

    t_conn: float            # seconds since this connection's (or re-anchor's) first frame
    t: float                 # seconds on the channel timeline
    jump: str | None         # "timestamp_reset" | "timestamp_jump" when the source's clock broke here
    jumped_from: float | None  # connection seconds before the break
    jumped_to: float | None    # ... and where the source's clock said it went
    advanced: bool           # new media time (what the stall watchdog wants to see)
    replayed: bool = False   # a reconnect delivered this frame (same PTS) before: skip it
    settling: bool = False   # the jump is the source's clock settling at the start of a connection: no fault


class ConnectionTimeline:
    """The timestamps of one connection, placed on the channel timeline."""

    def __init__(self, channel: ChannelTimeline, fps: float, resume: bool = True):
        self.channel = channel
        self.fps = fps
        self.base: float | None = None
        self.last: float | None = None
        self.offset: float | None = None
        self._resume_pts = channel.last_pts if resume else None   # the previous connection's last PTS, until passed
        self._settling = True          # the connection's first SETTLE_SECONDS, before any reported break

    def place(self, source_seconds: float, now_wall: float, pts: int | None = None) -> Placed:
        ch = self.channel
        if self._resume_pts is not None and pts is not None:
            behind = signed_delta(pts, self._resume_pts)
            if -CONTINUATION_SECONDS * PTS_HZ < behind <= 0:
                return Placed(0.0, ch.end, None, None, None, False, replayed=True)
        if self.base is None:
            self.base = source_seconds
        t_conn = source_seconds - self.base
        last = self.last
        jump = None
        if last is not None and t_conn < last - BACKWARDS_TOLERANCE_SECONDS:
            jump = "timestamp_reset"
        elif last is not None and t_conn > last + TIMESTAMP_JUMP_SECONDS:
            jump = "timestamp_jump"
        if last is not None and last > SETTLE_SECONDS:
            self._settling = False
        # libav's RTSP demuxer re-bases its timestamps once the first RTCP sender report arrives
        # (seen here: -1.1 s a few frames in): the clock settling, re-anchored like a reset (the
        # frames before carry PTS that no longer match) but not a fault
        settling = bool(jump) and self._settling
        jumped_to = t_conn if jump else None
        if jump:
            self._settling = False
            # the channel timeline continues from where it was plus the wall-clock gap
            self.base, t_conn, self.offset = source_seconds, 0.0, None
        if self.offset is None:
            self.offset = self._anchor(t_conn, now_wall, pts if not jump else None)
        self._resume_pts = None
        t = t_conn + self.offset
        advanced = last is None or t_conn > last
        self.last = t_conn
        ch.end, ch.wall = max(ch.end, t), now_wall
        if pts is not None:
            ch.last_pts = pts
        return Placed(t_conn, t, jump, last if jump else None, jumped_to, advanced, settling=settling)

    def _anchor(self, t_conn: float, now_wall: float, pts: int | None) -> float:
        ch = self.channel
        if ch.wall is None:
            return -t_conn
        if pts is not None and ch.last_pts is not None:
            ahead = signed_delta(pts, ch.last_pts)
            if 0 < ahead <= CONTINUATION_SECONDS * PTS_HZ:     # the same clock carried on
                return ch.end + ahead / PTS_HZ - t_conn
        return ch.end + max(now_wall - ch.wall, 1.0 / self.fps) - t_conn

    def to_channel(self, source_seconds: float) -> float | None:
        """A time on this connection's source clock (audio, a cue) on the channel timeline."""
        if self.base is None or self.offset is None:
            return None
        return source_seconds - self.base + self.offset
