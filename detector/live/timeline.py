"""One continuous media timeline per channel, from the timestamps of many connections.

Each connection's timestamps start wherever the source's clock happens to be, and an encoder
restart or a PTS reset moves them back (or far ahead) in the middle of a connection. Events
need a `stream_time` that only moves forward across all of that, so each connection is
offset to continue where the last one stopped plus the wall-clock gap, and a reset or leap
inside a connection re-anchors it the same way. Pure logic and numbers: tested without video.
"""

from __future__ import annotations

from dataclasses import dataclass

from detector.live.faults import TIMESTAMP_JUMP_SECONDS

BACKWARDS_TOLERANCE_SECONDS = 0.5   # B-frame reordering and jittery muxers move time back a little


@dataclass
class ChannelTimeline:
    """Where the channel's timeline ended (channel seconds) and when (wall clock), across connections."""

    end: float = 0.0
    wall: float | None = None

    def connection(self, fps: float) -> ConnectionTimeline:
        return ConnectionTimeline(self, fps)


@dataclass(frozen=True)
class Placed:
    """A frame placed on the timeline."""

    t_conn: float            # seconds since this connection's (or re-anchor's) first frame
    t: float                 # seconds on the channel timeline
    jump: str | None         # "timestamp_reset" | "timestamp_jump" when the source's clock broke here
    jumped_from: float | None  # connection seconds before the break
    jumped_to: float | None    # ... and where the source's clock said it went
    advanced: bool           # new media time (what the stall watchdog wants to see)


class ConnectionTimeline:
    """The timestamps of one connection, placed on the channel timeline."""

    def __init__(self, channel: ChannelTimeline, fps: float):
        self.channel = channel
        self.fps = fps
        self.base: float | None = None
        self.last: float | None = None
        self.offset: float | None = None

    def place(self, source_seconds: float, now_wall: float) -> Placed:
        if self.base is None:
            self.base = source_seconds
        t_conn = source_seconds - self.base
        last = self.last
        jump = None
        if last is not None and t_conn < last - BACKWARDS_TOLERANCE_SECONDS:
            jump = "timestamp_reset"
        elif last is not None and t_conn > last + TIMESTAMP_JUMP_SECONDS:
            jump = "timestamp_jump"
        jumped_to = t_conn if jump else None
        if jump:
            # the channel timeline continues from where it was plus the wall-clock gap
            self.base, t_conn, self.offset = source_seconds, 0.0, None
        ch = self.channel
        if self.offset is None:
            self.offset = (ch.end + max(now_wall - ch.wall, 1.0 / self.fps) - t_conn) if ch.wall is not None else -t_conn
        t = t_conn + self.offset
        advanced = last is None or t_conn > last
        self.last = t_conn
        ch.end, ch.wall = t, now_wall
        return Placed(t_conn, t, jump, last if jump else None, jumped_to, advanced)
