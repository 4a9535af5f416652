"""Programme loudness as broadcasters measure it: ITU-R BS.1770-4 and EBU Tech 3342.

Why this exists: loudness rules (EBU R128, ATSC A/85 / the CALM Act) make stations answer
complaints that "the ads are louder" with figures measured the standard way: integrated
loudness (LUFS) and loudness range (LU) per programme and per ad. The detector already knows
where each ad starts and ends, so it reports both per segment (`classify`: segments.json and
`--formats loudness`) and live per channel (a Prometheus gauge).

How (the standards, in the order the signal sees them):
- every channel is K-weighted (a high shelf of +4 dB above ~1.7 kHz, a high-pass at ~38 Hz),
  the two biquads BS.1770 gives at 48 kHz, recomputed for the source's rate with libebur128's
  analog-prototype parameters (so 44.1 kHz or 32 kHz sources are measured without resampling);
- mean square per channel, summed with the channel weights of BS.1770 (1.0 front, 1.41
  surround, LFE left out): a stereo source is measured on its own two channels, never on a
  mono downmix (which reads ~3 dB low for correlated stereo);
- everything is built from 100 ms sub-blocks on the channel's media timeline: a 400 ms gating
  block (momentary loudness) is 4 of them (75 % overlap), a 3 s short-term block 30;
- integrated loudness: blocks above -70 LUFS (absolute gate), then above (their power mean
  - 10 LU) (relative gate), power mean of those;
- loudness range: short-term blocks (every 100 ms, as FFmpeg's ebur128 filter), gated at
  -70 LUFS and at (power mean - 20 LU), the spread between their 10th and 95th percentile.

Accuracy: within 0.1 LU of FFmpeg's `ebur128` filter on tones, noise and a real 5.1 AAC
clip (tests/analysis/test_loudness.py; bench/RESULTS.md "Loudness").
The audio must be the source's own channels at >= 32 kHz (detector.sources.libav delivers
them beside the 16 kHz mono analysis audio): the K-weighting shelf reaches past 8 kHz.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

LUFS_OFFSET = -0.691                 # BS.1770: L = -0.691 + 10 log10(sum G_i * z_i)
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0             # integrated loudness
LRA_RELATIVE_GATE_LU = -20.0         # loudness range (EBU Tech 3342)
LRA_LOW_PERCENTILE = 0.10
LRA_HIGH_PERCENTILE = 0.95
SUBBLOCK_SECONDS = 0.1
MOMENTARY_SUBBLOCKS = 4              # 400 ms
SHORT_TERM_SUBBLOCKS = 30            # 3 s
MIN_RATE = 32_000                    # below this the K-weighting shelf is cut off by Nyquist
JOIN_TOLERANCE = 0.1                 # seconds: audio this close to the end of a run continues it
SURROUND_WEIGHT = 1.41
SURROUND_CHANNELS = frozenset({"BL", "BR", "BC", "SL", "SR", "TBL", "TBC", "TBR", "SDL", "SDR"})
LFE_CHANNELS = frozenset({"LFE", "LFE2", "LFE1"})
#: What FFmpeg assumes for a stream whose channel layout is unknown (`av_channel_layout_default`):
#: a PCM track in Matroska, for one, carries only its channel count.
GUESSED_LAYOUTS: dict[int, tuple[str, ...]] = {
    1: ("FC",), 2: ("FL", "FR"), 3: ("FL", "FR", "LFE"), 4: ("FL", "FR", "FC", "BC"), 5: ("FL", "FR", "FC", "BL", "BR"),
    6: ("FL", "FR", "FC", "LFE", "BL", "BR"), 7: ("FL", "FR", "FC", "LFE", "BC", "SL", "SR"),
    8: ("FL", "FR", "FC", "LFE", "BL", "BR", "SL", "SR"),
}
_UNKNOWN_CHANNEL = frozenset({"", "NONE", "UNKNOWN", "UNUSED"})


def k_weighting_sos(rate: float) -> np.ndarray:
    """BS.1770's K-weighting as second-order sections for `rate` Hz (scipy `sosfilt` layout).

    At 48 kHz these are the standard's published coefficients (to 1e-9); at other rates the
    same analog filters (libebur128's fitted shelf and high-pass parameters) through the
    bilinear transform, which is what FFmpeg's and libebur128's meters do.
    """
    if rate <= 0:
        raise ValueError(f"sample rate must be positive, got {rate}")
    f0, gain_db, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = math.tan(math.pi * f0 / rate)
    vh = 10.0 ** (gain_db / 20.0)
    vb = vh ** 0.4996667741545416
    a0 = 1.0 + k / q + k * k
    shelf = [(vh + vb * k / q + k * k) / a0, 2.0 * (k * k - vh) / a0, (vh - vb * k / q + k * k) / a0,
             1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0]
    f0, q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * f0 / rate)
    a0 = 1.0 + k / q + k * k
    highpass = [1.0, -2.0, 1.0, 1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0]
    return np.array([shelf, highpass], dtype=np.float64)


def channel_weights(names: Sequence[str]) -> tuple[float, ...]:
    """BS.1770 weight of each channel by its libav name: LFE 0, surround 1.41, others 1.0.

    (The same choice as FFmpeg's ebur128 filter: side, back and top-back channels count as
    surround.) A mono source is one channel of weight 1: it is not treated as dual mono.
    Channels without names (an unknown layout) are named as FFmpeg guesses them from their
    count, so a 6-channel PCM track is 5.1 and its LFE is left out, as FFmpeg does.
    """
    if any(n.upper() in _UNKNOWN_CHANNEL or n.upper().startswith("USR") for n in names) and len(names) in GUESSED_LAYOUTS:
        names = GUESSED_LAYOUTS[len(names)]
    return tuple(0.0 if n.upper() in LFE_CHANNELS else SURROUND_WEIGHT if n.upper() in SURROUND_CHANNELS else 1.0
                 for n in names)


def lufs(power: np.ndarray | float) -> np.ndarray | float:
    """Loudness (LUFS) of a channel-weighted mean square; -inf for silence."""
    with np.errstate(divide="ignore"):
        return LUFS_OFFSET + 10.0 * np.log10(power)


def integrated_lufs(block_powers: np.ndarray) -> float | None:
    """Gated integrated loudness of 400 ms gating-block powers (BS.1770-4 section 2.8).

    None when no block is above the absolute gate (no audio, digital silence).
    """
    p = np.asarray(block_powers, np.float64)
    p = p[lufs(p) > ABSOLUTE_GATE_LUFS]
    if not len(p):
        return None
    threshold = lufs(p.mean()) + RELATIVE_GATE_LU
    p = p[lufs(p) > threshold]
    return float(lufs(p.mean()))


def loudness_range(short_term_powers: np.ndarray) -> float | None:
    """Loudness range (LU) of 3 s short-term block powers (EBU Tech 3342).

    Absolute gate -70 LUFS, relative gate 20 LU below the power mean of what passed it,
    then the 95th minus the 10th percentile, by nearest rank as FFmpeg's ebur128 filter and
    libebur128 take them (the k-th smallest of n with k = round(p * n)): with the few blocks
    of a short ad the convention matters (0.7 LU on a 5 s clip), so it is the reference's.
    None when no short-term block is above the gates.
    """
    p = np.asarray(short_term_powers, np.float64)
    p = p[lufs(p) > ABSOLUTE_GATE_LUFS]
    if not len(p):
        return None
    threshold = lufs(p.mean()) + LRA_RELATIVE_GATE_LU
    levels = np.sort(lufs(p[lufs(p) > threshold]))
    n = len(levels)
    low = levels[max(1, int(math.floor(LRA_LOW_PERCENTILE * n + 0.5))) - 1]
    high = levels[max(1, int(math.floor(LRA_HIGH_PERCENTILE * n + 0.5))) - 1]
    return float(high - low)


def block_powers(times: np.ndarray, powers: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Blocks of `n` consecutive 100 ms sub-blocks (hop 100 ms) that are contiguous on the
    timeline (a gap in the audio ends a run: no block spans it). Returns (start times, powers)."""
    t = np.asarray(times, np.float64)
    p = np.asarray(powers, np.float64)
    if len(p) < n:
        return np.zeros(0), np.zeros(0)
    step = np.diff(t)
    joined = np.abs(step - SUBBLOCK_SECONDS) < 0.25 * SUBBLOCK_SECONDS
    # a block starting at i is valid when all n-1 steps after i are joined
    breaks = np.concatenate([[0], np.cumsum(~joined)])
    valid = breaks[n - 1:] - breaks[:len(breaks) - n + 1] == 0
    c = np.concatenate([[0.0], np.cumsum(p)])
    mean = (c[n:] - c[:-n]) / n
    return t[:len(mean)][valid], mean[valid]


@dataclass(frozen=True)
class SegmentLoudness:
    integrated_lufs: float | None      # None: no (or too little) audio above the gates
    loudness_range_lu: float | None    # None: shorter than one 3 s block of audio


@dataclass(frozen=True)
class LoudnessTrack:
    """The 100 ms sub-block powers of a recording on its media timeline (start of each)."""

    times: np.ndarray
    powers: np.ndarray

    def segment(self, start: float, end: float) -> SegmentLoudness:
        """Integrated loudness and loudness range of the audio inside [start, end] (seconds).

        Only whole sub-blocks inside the segment count, so an ad's loudness is not coloured
        by the programme around it.
        """
        eps = 1e-6
        inside = (self.times >= start - eps) & (self.times + SUBBLOCK_SECONDS <= end + eps)
        t, p = self.times[inside], self.powers[inside]
        _, gating = block_powers(t, p, MOMENTARY_SUBBLOCKS)
        _, short = block_powers(t, p, SHORT_TERM_SUBBLOCKS)
        lra = loudness_range(short) if len(short) else None
        return SegmentLoudness(integrated_lufs(gating) if len(gating) else None, lra)


class GatedHistogram:
    """Integrated loudness of an unbounded series of gating blocks in constant memory.

    Blocks are binned by loudness at 0.01 LU (FFmpeg's ebur128 filter uses the same grain)
    with their power summed per bin, so the relative gate is exact to one bin and a live
    channel's segment of any length costs the same few microseconds.
    """

    GRAIN = 100                        # bins per LU
    TOP_LUFS = 20.0

    def __init__(self) -> None:
        size = int((self.TOP_LUFS - ABSOLUTE_GATE_LUFS) * self.GRAIN) + 1
        self.counts = np.zeros(size, np.int64)
        self.sums = np.zeros(size, np.float64)
        self.levels = ABSOLUTE_GATE_LUFS + (np.arange(size) + 0.5) / self.GRAIN

    def clear(self) -> None:
        self.counts[:] = 0
        self.sums[:] = 0.0

    def _bin(self, power: float) -> int | None:
        level = float(lufs(power)) if power > 0 else -math.inf
        if not level > ABSOLUTE_GATE_LUFS:
            return None
        return min(len(self.counts) - 1, int((level - ABSOLUTE_GATE_LUFS) * self.GRAIN))

    def add(self, power: float) -> None:
        i = self._bin(power)
        if i is not None:
            self.counts[i] += 1
            self.sums[i] += power

    def remove(self, power: float) -> None:
        """Take back a block added before (the tail of a segment that ended in the past)."""
        i = self._bin(power)
        if i is not None and self.counts[i] > 0:
            self.counts[i] -= 1
            self.sums[i] = max(0.0, self.sums[i] - power) if self.counts[i] else 0.0

    def copy(self) -> "GatedHistogram":
        other = GatedHistogram()
        other.counts[:] = self.counts
        other.sums[:] = self.sums
        return other

    def integrated(self) -> float | None:
        n = int(self.counts.sum())
        if not n:
            return None
        threshold = float(lufs(self.sums.sum() / n)) + RELATIVE_GATE_LU
        keep = self.levels > threshold
        kept = int(self.counts[keep].sum())
        return float(lufs(self.sums[keep].sum() / kept)) if kept else None


class LoudnessMeter:
    """Streaming K-weighted sub-block powers of one channel's audio (thread-safe).

    The capture writes multichannel chunks at their place on the media timeline; the meter
    keeps the filter state across chunks, counts samples (not chunk timestamps) within a run
    of contiguous audio, and starts afresh at a gap, a jump or a change of rate or layout
    (`restarts`). It keeps the last `keep_seconds` of sub-blocks (None: all, for a recording)
    and, live, the gated integral of the current segment (`start_segment`).
    """

    def __init__(self, keep_seconds: float | None = 120.0):
        # imported here, not at module import (scipy.signal takes ~0.6 s): a meter is made at
        # start, so the capture thread never pays it while holding the lock mid-stream
        from scipy.signal import sosfilt
        self._sosfilt = sosfilt
        maxlen = None if keep_seconds is None else max(SHORT_TERM_SUBBLOCKS, int(keep_seconds / SUBBLOCK_SECONDS))
        self._t: deque[float] = deque(maxlen=maxlen)
        self._p: deque[float] = deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self._key: tuple[int, tuple[float, ...]] | None = None   # (rate, weights) of the current run
        self._sos: np.ndarray | None = None
        self._zi: np.ndarray | None = None
        self._weights = np.zeros(0)
        self._run_start = 0.0
        self._run_samples = 0           # samples since the run started
        self._sub = 0                   # samples per sub-block in this run
        self._acc = 0.0
        self._acc_n = 0
        self._run_blocks = 0            # sub-blocks emitted in this run
        self._segment_from: float | None = None
        self._segment = GatedHistogram()
        self.restarts = 0               # gaps, jumps and format changes that started a new run

    # -- writing (capture thread)
    def write(self, t: float, samples: np.ndarray, rate: int, weights: Sequence[float]) -> None:
        """`samples` [channels, n] float starting at media time `t`, at `rate` Hz."""
        x = np.asarray(samples, np.float32)
        if x.ndim == 1:
            x = x[None]
        if not x.shape[1] or not math.isfinite(t) or rate <= 0 or len(weights) != x.shape[0]:
            return
        with self._lock:
            key = (int(rate), tuple(float(w) for w in weights))
            end = self._run_start + self._run_samples / rate if self._key is not None else None
            if key != self._key or end is None or abs(t - end) > JOIN_TOLERANCE:
                if self._key is not None:
                    self.restarts += 1
                self._new_run(t, key)
            y, self._zi = self._sosfilt(self._sos, x, axis=-1, zi=self._zi)
            power = np.einsum("c,cn->n", self._weights, np.square(y, dtype=np.float64))
            self._accumulate(power)
            self._run_samples += x.shape[1]

    def _new_run(self, t: float, key: tuple[int, tuple[float, ...]]) -> None:
        rate, weights = key
        if self._key is None or key != self._key:
            self._sos = k_weighting_sos(rate)
        self._key = key
        self._weights = np.asarray(weights, np.float64)
        # the filters start from rest (zero state), as every meter does at the start of a file
        self._zi = np.zeros((self._sos.shape[0], len(weights), 2)) if self._sos is not None else None
        self._run_start, self._run_samples = t, 0
        self._sub = max(1, int(round(rate * SUBBLOCK_SECONDS)))
        self._acc, self._acc_n, self._run_blocks = 0.0, 0, 0

    def _accumulate(self, power: np.ndarray) -> None:
        i, n, sub = 0, len(power), self._sub
        if self._acc_n:
            take = min(n, sub - self._acc_n)
            self._acc += float(power[:take].sum())
            self._acc_n += take
            i = take
            if self._acc_n == sub:
                self._emit(self._acc / sub)
                self._acc, self._acc_n = 0.0, 0
        full = (n - i) // sub
        if full:
            for value in power[i:i + full * sub].reshape(full, sub).mean(axis=1):
                self._emit(float(value))
            i += full * sub
        if i < n:
            self._acc += float(power[i:].sum())
            self._acc_n += n - i

    def _emit(self, power: float) -> None:
        rate = self._key[0] if self._key else 1
        start = self._run_start + self._run_blocks * self._sub / rate
        self._run_blocks += 1
        self._t.append(start)
        self._p.append(power)
        if self._segment_from is not None and self._run_blocks >= MOMENTARY_SUBBLOCKS:
            first = self._t[-MOMENTARY_SUBBLOCKS]
            if first >= self._segment_from - 1e-6:
                self._segment.add(sum(self._p[-k] for k in range(1, MOMENTARY_SUBBLOCKS + 1)) / MOMENTARY_SUBBLOCKS)

    # -- reading (analysis thread)
    def track(self) -> LoudnessTrack:
        """The sub-blocks held, as arrays (a copy)."""
        with self._lock:
            return LoudnessTrack(np.fromiter(self._t, np.float64, len(self._t)), np.fromiter(self._p, np.float64, len(self._p)))

    def _recent(self, n: int, now: float | None) -> float | None:
        if self._run_blocks < n or len(self._p) < n:
            return None
        if now is not None and now - (self._t[-1] + SUBBLOCK_SECONDS) > 1.0:
            return None      # the audio stopped while the pictures go on: no current value
        power = sum(self._p[-k] for k in range(1, n + 1)) / n
        level = float(lufs(power)) if power > 0 else -math.inf
        return level if level > ABSOLUTE_GATE_LUFS else None

    def momentary(self, now: float | None = None) -> float | None:
        """Loudness of the latest 400 ms (LUFS); None without current audio or below -70 LUFS."""
        with self._lock:
            return self._recent(MOMENTARY_SUBBLOCKS, now)

    def short_term(self, now: float | None = None) -> float | None:
        """Loudness of the latest 3 s (LUFS); None without 3 s of current audio or below -70 LUFS."""
        with self._lock:
            return self._recent(SHORT_TERM_SUBBLOCKS, now)

    def start_segment(self, at: float) -> None:
        """A segment starts at media time `at` (possibly a little in the past, where the
        boundary was placed): the live integral restarts from the sub-blocks held since."""
        with self._lock:
            self._segment_from = at
            self._segment.clear()
            t = np.fromiter(self._t, np.float64, len(self._t))
            p = np.fromiter(self._p, np.float64, len(self._p))
            starts, powers = block_powers(t, p, MOMENTARY_SUBBLOCKS)
            for power in powers[starts >= at - 1e-6]:
                self._segment.add(float(power))

    def segment_integrated(self, until: float | None = None) -> float | None:
        """Integrated loudness of the current segment so far (LUFS); None before any gated audio.

        `until`: only up to that media time, for a segment whose end was placed in the past
        (a decision comes seconds after its boundary): the blocks after it, still held,
        are taken back, so an ad's figure is not coloured by the programme that followed.
        """
        with self._lock:
            if until is None or self._segment_from is None:
                return self._segment.integrated()
            hist = self._segment.copy()
            t = np.fromiter(self._t, np.float64, len(self._t))
            p = np.fromiter(self._p, np.float64, len(self._p))
            starts, powers = block_powers(t, p, MOMENTARY_SUBBLOCKS)
            late = (starts >= self._segment_from - 1e-6) & (starts + MOMENTARY_SUBBLOCKS * SUBBLOCK_SECONDS > until + 1e-6)
            for power in powers[late]:
                hist.remove(float(power))
            return hist.integrated()
