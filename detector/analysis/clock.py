"""The source's own clock: MPEG's 90 kHz presentation timestamps and their 33-bit wrap.

An MPEG-TS PTS counts 90 000 ticks a second in 33 bits, so it wraps to 0 every 26.5 hours
(2**33 / 90000 = 95 443.7 s): a channel that runs for months crosses it every day. Splicers
speak this clock (a SCTE-35 cue's pts_time is on it), so events carry it as the source sent
it, modulo 2**33; the media timeline needs it unwrapped, so it never runs backwards at the
wrap. Pure integer arithmetic: tested without video.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque

PTS_HZ = 90_000
PTS_MODULUS = 2 ** 33
_HALF = PTS_MODULUS // 2


def signed_delta(raw: int, ref: int) -> int:
    """Ticks from `ref` to `raw` on the 33-bit circle, in (-2**32, 2**32]: a step across the
    wrap is a small forward step, not a 26-hour leap back."""
    d = (raw - ref) % PTS_MODULUS
    return d - PTS_MODULUS if d > _HALF else d


def to_ticks(value: int | float, time_base: float) -> int:
    """A timestamp in `time_base` seconds per unit as 90 kHz ticks (exact for MPEG-TS's 1/90000)."""
    return int(round(float(value) * time_base * PTS_HZ))


def wrap(ticks: int) -> int:
    """Ticks as an MPEG PTS: modulo 2**33 (what a splicer and a SCTE-35 cue carry)."""
    return int(ticks) % PTS_MODULUS


class PtsUnwrapper:
    """33-bit PTS (or any timestamps, taken modulo 2**33) -> a continuous tick count.

    Each value is placed nearest to the previous one on the circle, so a wrap continues
    forward and a small step back (B-frame order, jitter) stays a small step back; what the
    step *means* (a reset, a leap) is the timeline's business. `wraps` counts the crossings.
    """

    def __init__(self) -> None:
        self.last_raw: int | None = None
        self.last: int | None = None
        self.wraps = 0

    def unwrap(self, ticks: int) -> int:
        raw = wrap(ticks)
        if self.last_raw is None or self.last is None:
            self.last_raw, self.last = raw, raw
            return raw
        step = signed_delta(raw, self.last_raw)
        value = self.last + step
        if value // PTS_MODULUS != self.last // PTS_MODULUS:
            self.wraps += 1 if step > 0 else 0
        self.last_raw, self.last = raw, value
        return value

    def near(self, ticks: int) -> int | None:
        """Another stream's timestamp (audio, a cue) on this stream's unwrapped count, placed
        nearest the latest value; None before the first one."""
        if self.last is None or self.last_raw is None:
            return None
        return self.last + signed_delta(wrap(ticks), self.last_raw)


class PtsMarks:
    """Recent (media time, 90 kHz PTS) pairs of one channel, to give a boundary its PTS.

    A boundary is placed on the media timeline, usually on an analysed frame, sometimes
    between two; its PTS is the nearest earlier mark's plus the elapsed time, modulo 2**33.
    Bounded, since a daemon runs for months; a mark older than the oldest kept is None.
    `capacity=None` keeps every mark (offline: a recording is finite).
    """

    def __init__(self, capacity: int | None = 4096):
        self._times: deque[float] = deque(maxlen=capacity)
        self._pts: deque[int | None] = deque(maxlen=capacity)

    def add(self, media_time: float, pts: int | None) -> None:
        if self._times and media_time < self._times[-1]:
            self.clear()                       # the timeline never runs back: a new channel epoch
        self._times.append(media_time)
        self._pts.append(pts)

    def clear(self) -> None:
        self._times.clear()
        self._pts.clear()

    def pts_at(self, media_time: float) -> int | None:
        """The PTS at `media_time`, None without a usable mark at or shortly before it."""
        i = bisect_right(self._times, media_time) - 1
        if i < 0:
            return None
        ref = self._pts[i]
        if ref is None:
            return None
        return wrap(ref + int(round((media_time - self._times[i]) * PTS_HZ)))
