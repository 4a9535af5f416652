"""What the audio of one analysis step sounds like, as a fixed vector for the sequence model.

Why: pictures alone confuse ads that look like the programme (a sports drink on grass) and
programme that looks like an ad (studio, graphics). Sound separates them: loudness rules
(EBU R128, CALM Act) equalise the *level* of ads and programme, so the cues are the
*shape* of the sound: heavily compressed music beds (low dynamic range, low crest factor,
few quiet moments) against speech and crowd (pauses, high low-energy ratio, high crest),
the spectrum (music is broad and tonal, commentary narrow), and the short silences playout
leaves at break edges. pycommflag feeds its model similar speech/music and level features.

`audio_features(samples, rate)` is a pure function of the audio up to the step's frame (the
mono 16 kHz analysis audio of detector.sources.libav, as much of the last 3 s as there is);
the step's own part is its last `step_seconds`. The vector has `AUDIO_FEATURE_SIZE`
elements in the order of `AUDIO_FEATURE_NAMES`, in natural units (dB, LUFS, kHz, ratios),
never NaN or infinite: levels are floored at `LEVEL_FLOOR_DB`. A step without audio (a
source without an audio stream, a gap) is `missing_audio_features()`: all zeros, so its
`audio_present` element 0 marks the block missing for the model; real audio, even digital
silence, always has `audio_present` 1 and floored levels (-100), never zeros.

The loudness elements here are K-weighted (BS.1770) on the 16 kHz mono analysis audio: a
cue for the model, cheap and consistent between training and service, but not a
measurement to report (the mono downmix and the 8 kHz band limit read differently from a
meter: detector.analysis.loudness measures the source's own channels for the report).

`AudioFeatureTrack` keeps the 3 s context of one channel across steps, so the engine can
compute each step once as it arrives. Cost: bench/audiofeatures.py (bench/RESULTS.md).
"""

from __future__ import annotations

import functools
import math
from collections import deque

import numpy as np

from detector.analysis.loudness import LUFS_OFFSET, k_weighting_sos

CONTEXT_SECONDS = 3.0           # short-term loudness, dynamic range and low-energy ratio look this far back
MOMENTARY_SECONDS = 0.4
DEFAULT_STEP_SECONDS = 0.2      # one step at the default 5 fps analysis rate
LEVEL_FLOOR_DB = -100.0         # every level (dBFS, LUFS, band energies) is at least this
SILENCE_DBFS = -60.0            # a step quieter than this (RMS) is silence (FFmpeg's silencedetect default)
DYNAMICS_FLOOR_DB = -70.0       # 100 ms levels are floored here for the dynamic range (silence is not "range")
MEL_BANDS = 12
MEL_LOW_HZ = 60.0
MEL_HIGH_HZ = 8000.0
FFT_SIZE = 512                  # 32 ms at 16 kHz
ROLLOFF = 0.85

AUDIO_FEATURE_NAMES: tuple[str, ...] = (
    "audio_present",            # 1 with audio (even silence), 0 when the step has none (then every element is 0)
    "momentary_lufs",           # K-weighted loudness of the last 400 ms (mono analysis audio)
    "short_term_lufs",          # K-weighted loudness of the last 3 s (or as much as there is)
    "rms_dbfs",                 # the step's RMS level (a full-scale sine is -3 dBFS)
    "peak_dbfs",                # the step's sample peak
    "crest_db",                 # peak - RMS of the step: low for compressed music beds
    "silence",                  # 1 when the step's RMS is below SILENCE_DBFS
    "dynamic_range_db",         # 95th - 10th percentile of 100 ms levels over the context
    "low_energy_ratio",         # share of 50 ms frames of the context below half their mean power: speech high, music low
    "zero_crossing_rate",       # sign changes per sample in the step (0..1): noisy/unvoiced high
    "spectral_centroid_khz",    # the step's mean power spectrum's centre of mass
    "spectral_rolloff_khz",     # frequency below which 85 % of the step's power lies
    "spectral_flatness",        # geometric / arithmetic mean of the power spectrum (0 tonal .. 1 noise), mean over frames
    "spectral_flux",            # mean change between consecutive normalised magnitude spectra in the step (0..~1.4)
    *(f"mel_{i:02d}_db" for i in range(MEL_BANDS)),   # log energies of 12 mel bands, 60 Hz .. 8 kHz
)
AUDIO_FEATURE_SIZE = len(AUDIO_FEATURE_NAMES)
_INDEX = {name: i for i, name in enumerate(AUDIO_FEATURE_NAMES)}


def missing_audio_features() -> np.ndarray:
    """The vector of a step without audio: all zeros (`audio_present` 0)."""
    return np.zeros(AUDIO_FEATURE_SIZE, np.float32)


def _db(power: float) -> float:
    return max(LEVEL_FLOOR_DB, 10.0 * math.log10(power)) if power > 0 else LEVEL_FLOOR_DB


def _lufs(power: float) -> float:
    return max(LEVEL_FLOOR_DB, LUFS_OFFSET + 10.0 * math.log10(power)) if power > 0 else LEVEL_FLOOR_DB


@functools.lru_cache(maxsize=8)
def _mel_matrix(rate: int, n_fft: int) -> np.ndarray:
    """Triangular mel filters [MEL_BANDS, n_fft // 2 + 1] (HTK mel scale), each summing power."""
    def mel(f: np.ndarray | float) -> np.ndarray | float:
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    top = min(MEL_HIGH_HZ, rate / 2.0)
    edges_mel = np.linspace(mel(MEL_LOW_HZ), mel(top), MEL_BANDS + 2)
    edges = 700.0 * (10.0 ** (edges_mel / 2595.0) - 1.0)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / rate)
    m = np.zeros((MEL_BANDS, len(freqs)))
    for b in range(MEL_BANDS):
        lo, mid, hi = edges[b], edges[b + 1], edges[b + 2]
        rise = (freqs - lo) / max(mid - lo, 1e-9)
        fall = (hi - freqs) / max(hi - mid, 1e-9)
        m[b] = np.clip(np.minimum(rise, fall), 0.0, None)
    return m


@functools.lru_cache(maxsize=4)
def _window(n: int) -> tuple[np.ndarray, float]:
    w = np.hanning(n + 1)[:-1]       # periodic Hann
    return w, float(np.square(w.sum()))


def _frames(x: np.ndarray, size: int, hop: int) -> np.ndarray:
    """Frames [k, size] of `x` (zero-padded to one frame when shorter)."""
    if len(x) < size:
        x = np.pad(x, (0, size - len(x)))
    k = 1 + (len(x) - size) // hop
    idx = np.arange(size)[None, :] + hop * np.arange(k)[:, None]
    return x[idx]


def audio_features(samples: np.ndarray | None, rate: int, step_seconds: float = DEFAULT_STEP_SECONDS) -> np.ndarray:
    """The feature vector (float32 [AUDIO_FEATURE_SIZE]) of the step that ends where `samples` end.

    `samples`: mono audio up to the step's frame, ideally the last CONTEXT_SECONDS of it
    (more is ignored, less gives the context-wide elements over what there is); the
    step's own elements (levels, silence, zero crossings, spectrum) use its last
    `step_seconds`. None or empty: `missing_audio_features()`. Non-finite samples count as 0.
    """
    if samples is None or rate <= 0:
        return missing_audio_features()
    x = np.asarray(samples, np.float64).reshape(-1)
    if not len(x):
        return missing_audio_features()
    x = x[-max(1, int(round(CONTEXT_SECONDS * rate))):]
    if not np.all(np.isfinite(x)):
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    step = x[-max(1, int(round(step_seconds * rate))):]
    out = np.zeros(AUDIO_FEATURE_SIZE, np.float64)
    out[_INDEX["audio_present"]] = 1.0

    # loudness (K-weighted mean square, mono weight 1)
    from scipy.signal import sosfilt     # here, not at import: scipy.signal takes 0.6 s to import
    k = np.square(sosfilt(k_weighting_sos(rate), x))
    out[_INDEX["momentary_lufs"]] = _lufs(float(k[-max(1, int(round(MOMENTARY_SECONDS * rate))):].mean()))
    out[_INDEX["short_term_lufs"]] = _lufs(float(k.mean()))

    # levels of the step
    ms = float(np.square(step).mean())
    peak = float(np.abs(step).max())
    rms_db = _db(ms)
    peak_db = _db(peak * peak)
    out[_INDEX["rms_dbfs"]] = rms_db
    out[_INDEX["peak_dbfs"]] = peak_db
    out[_INDEX["crest_db"]] = peak_db - rms_db
    out[_INDEX["silence"]] = 1.0 if rms_db < SILENCE_DBFS else 0.0

    # dynamics over the context
    block = max(1, int(round(0.1 * rate)))
    nb = len(x) // block
    if nb >= 2:
        levels = 10.0 * np.log10(np.maximum(np.square(x[-nb * block:]).reshape(nb, block).mean(axis=1), 1e-30))
        levels = np.maximum(levels, DYNAMICS_FLOOR_DB)
        out[_INDEX["dynamic_range_db"]] = float(np.percentile(levels, 95) - np.percentile(levels, 10))
    frame = max(1, int(round(0.05 * rate)))
    nf = len(x) // frame
    if nf >= 2:
        energy = np.square(x[-nf * frame:]).reshape(nf, frame).mean(axis=1)
        mean = float(energy.mean())
        out[_INDEX["low_energy_ratio"]] = float((energy < 0.5 * mean).mean()) if mean > 0 else 0.0

    # the step's sign changes and spectrum
    if len(step) >= 2:
        signs = np.signbit(step)
        out[_INDEX["zero_crossing_rate"]] = float(np.count_nonzero(signs[1:] != signs[:-1]) / (len(step) - 1))
    if rms_db > LEVEL_FLOOR_DB:
        _spectral(step, rate, out)
    else:
        out[_INDEX["mel_00_db"]:] = LEVEL_FLOOR_DB
    return out.astype(np.float32)


def _spectral(step: np.ndarray, rate: int, out: np.ndarray) -> None:
    n_fft = FFT_SIZE if rate <= 24_000 else 1 << int(math.ceil(math.log2(FFT_SIZE * rate / 16_000)))
    window, norm = _window(n_fft)
    frames = _frames(step, n_fft, n_fft // 2) * window
    power = np.square(np.abs(np.fft.rfft(frames, axis=1))) / norm      # a full-scale sine peaks near -6 dB
    freqs = np.fft.rfftfreq(n_fft, 1.0 / rate)
    mean = power.mean(axis=0)
    total = float(mean.sum())
    if total <= 0:
        out[_INDEX["mel_00_db"]:] = LEVEL_FLOOR_DB
        return
    out[_INDEX["spectral_centroid_khz"]] = float((freqs * mean).sum() / total) / 1000.0
    cum = np.cumsum(mean)
    out[_INDEX["spectral_rolloff_khz"]] = float(freqs[min(len(freqs) - 1, int(np.searchsorted(cum, ROLLOFF * total)))]) / 1000.0
    p = power[:, 1:] + 1e-20          # without DC
    flatness = np.exp(np.log(p).mean(axis=1)) / p.mean(axis=1)
    out[_INDEX["spectral_flatness"]] = float(np.clip(flatness.mean(), 0.0, 1.0))
    if len(power) >= 2:
        mag = np.sqrt(power)
        mag /= np.maximum(np.linalg.norm(mag, axis=1, keepdims=True), 1e-20)
        out[_INDEX["spectral_flux"]] = float(np.linalg.norm(np.diff(mag, axis=0), axis=1).mean())
    bands = _mel_matrix(rate, n_fft) @ mean
    first = _INDEX["mel_00_db"]
    out[first:first + MEL_BANDS] = [_db(float(b)) for b in bands]


class AudioFeatureTrack:
    """One channel's audio features step by step, keeping the last CONTEXT_SECONDS of audio.

    `push(step_audio)` takes the audio since the previous analysed frame (None when the
    step has none) and returns that step's vector. A step without audio clears the context:
    the audio after a gap is not glued to the audio before it.
    """

    def __init__(self, rate: int = 16_000):
        self.rate = rate
        self._chunks: deque[np.ndarray] = deque()
        self._held = 0

    def reset(self) -> None:
        self._chunks.clear()
        self._held = 0

    def push(self, step_audio: np.ndarray | None) -> np.ndarray:
        if step_audio is None or not len(step_audio):
            self.reset()
            return missing_audio_features()
        chunk = np.asarray(step_audio, np.float32).reshape(-1)
        self._chunks.append(chunk)
        self._held += len(chunk)
        limit = int(round(CONTEXT_SECONDS * self.rate))
        while self._chunks and self._held - len(self._chunks[0]) >= limit:
            self._held -= len(self._chunks.popleft())
        context = np.concatenate(self._chunks) if len(self._chunks) > 1 else chunk
        return audio_features(context, self.rate, step_seconds=len(chunk) / self.rate)
