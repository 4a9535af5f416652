"""The demo's sound: music beds and voice-over for ads, crowd and commentary for the programme.

Why: the sequence model can take audio cue blocks (detector.analysis.blocks), and the demo
must show what they buy and where they mislead. So ads get a music bed (chords on a beat,
a kick and a hi-hat) under a "voice-over" (formant-filtered pulse trains in syllables), the
programme gets crowd noise (band-limited noise with slow swells) under "commentary" (the
same synthetic voice, sparser, lower), playout leaves ~0.3 s of silence at some break edges,
and some parts are traps: an ad that sounds like the match (a sports spot recorded in a
stadium) and programme that sounds like an ad (music over the replay). Levels are equalised
the way loudness rules (EBU R128, CALM) equalise them, so level alone is no cue.

Pure numpy from a seed (no speech engine needed): the same seed gives the same samples.
`mux_audio` adds the samples to a written video as AAC through PyAV (no ffmpeg binary).
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np

RATE = 16_000
TARGET_RMS = 10 ** (-24.0 / 20)      # every part at about -24 dBFS RMS: level is not the cue
EDGE_SILENCE_SECONDS = 0.3
TRAP_PROBABILITY = 0.2


def _band_noise(rng: np.random.Generator, n: int, lo: float, hi: float, tilt: float = 0.0) -> np.ndarray:
    """White noise filtered to [lo, hi] Hz in one FFT, optionally tilted (tilt < 0: darker)."""
    if n <= 0:
        return np.zeros(0, np.float32)
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / RATE)
    gain = ((f >= lo) & (f <= hi)).astype(np.float64)
    if tilt:
        gain *= np.power(np.maximum(f, 1.0) / 1000.0, tilt)
    out = np.fft.irfft(spec * gain, n)
    return (out / (np.std(out) + 1e-12)).astype(np.float32)


def _voice(rng: np.random.Generator, n: int, density: float, pitch: float) -> np.ndarray:
    """Speech-like sound: syllables of a glottal pulse train through two vowel formants, in words and pauses.

    `density` is the fraction of time spent talking (voice-over talks nearly all the time,
    commentary leaves room for the crowd).
    """
    out = np.zeros(n, np.float32)
    pos = int(rng.uniform(0, 0.3) * RATE)
    while pos < n:
        if rng.random() > density:                      # a pause between phrases
            pos += int(rng.uniform(0.3, 1.2) * RATE)
            continue
        for _ in range(int(rng.integers(2, 7))):        # a word of a few syllables
            length = int(rng.uniform(0.12, 0.28) * RATE)
            if pos + length > n:
                break
            t = np.arange(length) / RATE
            f0 = pitch * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(1, 3) * t))
            phase = np.cumsum(f0) / RATE
            pulses = (np.diff(np.floor(phase), prepend=0.0) > 0).astype(np.float64)
            spec = np.fft.rfft(pulses)
            f = np.fft.rfftfreq(length, 1.0 / RATE)
            f1, f2 = rng.uniform(300, 800), rng.uniform(900, 2300)
            gain = np.exp(-((f - f1) / 90) ** 2) + 0.6 * np.exp(-((f - f2) / 140) ** 2)
            syl = np.fft.irfft(spec * gain, length) * np.hanning(length)
            out[pos:pos + length] += (syl / (np.std(syl) + 1e-12)).astype(np.float32)
            pos += length + int(rng.uniform(0.02, 0.08) * RATE)
        pos += int(rng.uniform(0.1, 0.4) * RATE)
    return out


def _music(rng: np.random.Generator, n: int) -> np.ndarray:
    """A music bed: a chord per bar on a steady beat (decaying notes), a kick on the beat, a hi-hat off it."""
    bpm = rng.uniform(96, 132)
    beat = int(RATE * 60 / bpm)
    root = rng.uniform(180, 260)
    progression = [(0, 4, 7), (5, 9, 12), (7, 11, 14), (-3, 0, 4)]
    offset = int(rng.integers(len(progression)))
    out = np.zeros(n, np.float64)
    t = np.arange(beat) / RATE
    decay = np.exp(-t * 5.0)
    kick = np.sin(2 * np.pi * 55 * t) * np.exp(-t * 25.0)
    hat = rng.standard_normal(beat // 4) * np.exp(-np.arange(beat // 4) / (beat / 40))
    for b, start in enumerate(range(0, n, beat)):
        chord = progression[(b // 4 + offset) % len(progression)]
        seg = sum(np.sin(2 * np.pi * root * 2 ** (s / 12) * t) + 0.3 * np.sin(4 * np.pi * root * 2 ** (s / 12) * t)
                  for s in chord) * decay
        seg = seg + 1.5 * kick
        end = min(n, start + beat)
        out[start:end] += seg[:end - start]
        h0 = start + beat // 2
        if h0 < n:
            h1 = min(n, h0 + len(hat))
            out[h0:h1] += 0.4 * hat[:h1 - h0]
    return (out / (np.std(out) + 1e-12)).astype(np.float32)


def _crowd(rng: np.random.Generator, n: int) -> np.ndarray:
    """Stadium crowd: dark band-limited noise with slow swells (a chance, a cheer)."""
    noise = _band_noise(rng, n, 150, 4000, tilt=-0.6)
    knots = max(2, int(n / RATE / 1.5) + 2)
    env = np.interp(np.arange(n), np.linspace(0, n, knots), rng.uniform(0.5, 1.4, knots))
    return (noise * env).astype(np.float32)


def _level(x: np.ndarray) -> np.ndarray:
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0
    return (x * (TARGET_RMS / rms)).astype(np.float32) if rms > 0 else x


def ad_sound(rng: np.random.Generator, n: int) -> np.ndarray:
    """An ad: a music bed under a busy voice-over."""
    return _level(_music(rng, n) + 0.9 * _voice(rng, n, 0.85, rng.uniform(150, 220)))


def programme_sound(rng: np.random.Generator, n: int) -> np.ndarray:
    """The match: crowd noise under sparse commentary."""
    return _level(_crowd(rng, n) + 0.7 * _voice(rng, n, 0.45, rng.uniform(95, 140)))


def part_sound(rng: np.random.Generator, kind: str, seconds: float, trap: bool) -> np.ndarray:
    """Samples for one broadcast part ('football', 'spot', 'black'); a trap swaps the sound of the two classes."""
    n = int(round(seconds * RATE))
    if kind == "black":
        return np.zeros(n, np.float32)
    ad_like = (kind == "spot") != trap
    return ad_sound(rng, n) if ad_like else programme_sound(rng, n)


def silence_edges(samples: np.ndarray, at: list[float], seconds: float = EDGE_SILENCE_SECONDS) -> np.ndarray:
    """Digital silence of `seconds` starting at each time in `at` (playout's gap at a break edge)."""
    out = samples.copy()
    k = int(round(seconds * RATE))
    for t in at:
        i = int(round(t * RATE))
        out[max(0, i):max(0, i) + k] = 0.0
    return out


def mux_audio(video: Path, samples: np.ndarray, out: Path) -> None:
    """`video` (its video stream copied, not re-encoded) plus mono `samples` at RATE as AAC -> `out`."""
    import av

    samples = np.clip(np.asarray(samples, np.float32), -1.0, 1.0)
    with av.open(str(video)) as src, av.open(str(out), "w", format="mp4") as dst:
        vin = src.streams.video[0]
        vout = dst.add_stream_from_template(vin)
        aout = dst.add_stream("aac", rate=RATE, layout="mono")
        aout.bit_rate = 64_000
        for packet in src.demux(vin):
            if packet.dts is None:
                continue
            packet.stream = vout
            dst.mux(packet)
        # one frame for the whole track: the encoder re-frames it (1024 samples per AAC frame) in C
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = RATE
        frame.pts = 0
        frame.time_base = Fraction(1, RATE)
        for packet in aout.encode(frame):
            dst.mux(packet)
        for packet in aout.encode(None):
            dst.mux(packet)


def add_sound(path: Path, samples: np.ndarray) -> None:
    """Mux `samples` into the written video at `path` in place (through a temporary file beside it)."""
    tmp = path.with_name(path.name + ".audio.mp4")
    try:
        mux_audio(path, samples, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
