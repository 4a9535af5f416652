"""The per-step audio feature vector: its layout, its missing marker, what each element says
about sounds whose answer is known, and its loudness against FFmpeg's ebur128 on a file."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from detector.analysis.audiofeatures import (AUDIO_FEATURE_NAMES, AUDIO_FEATURE_SIZE, LEVEL_FLOOR_DB, AudioFeatureTrack,
                                             audio_features, missing_audio_features)

RATE = 16_000
IDX = {n: i for i, n in enumerate(AUDIO_FEATURE_NAMES)}


def f(x: np.ndarray | None, **kw) -> dict[str, float]:
    v = audio_features(x, RATE, **kw)
    assert v.shape == (AUDIO_FEATURE_SIZE,) and v.dtype == np.float32 and np.all(np.isfinite(v))
    return {n: float(v[i]) for n, i in IDX.items()}


def tone(freq: float, amp: float, seconds: float = 3.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(amp: float, seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).normal(0, amp, int(seconds * RATE))).astype(np.float32)


def test_layout_is_fixed_and_missing_is_all_zeros() -> None:
    assert AUDIO_FEATURE_SIZE == len(AUDIO_FEATURE_NAMES) == 26 == len(set(AUDIO_FEATURE_NAMES))
    assert AUDIO_FEATURE_NAMES[0] == "audio_present"
    assert AUDIO_FEATURE_NAMES[-12:] == tuple(f"mel_{i:02d}_db" for i in range(12))
    for absent in (None, np.zeros(0, np.float32)):
        assert np.array_equal(audio_features(absent, RATE), missing_audio_features())
    assert not missing_audio_features().any()


@pytest.mark.parametrize("x", [np.zeros(RATE, np.float32), np.zeros(1, np.float32), np.full(500, np.nan, np.float32),
                               np.array([np.inf, -np.inf, 1e30, -1e30], np.float32), noise(1e-12, 0.5), noise(50.0, 0.5)])
def test_any_audio_gives_a_finite_vector_marked_present(x: np.ndarray) -> None:
    got = f(x)
    assert got["audio_present"] == 1.0
    assert all(got[n] >= LEVEL_FLOOR_DB for n in AUDIO_FEATURE_NAMES)


def test_digital_silence_is_present_silent_and_floored_not_missing() -> None:
    got = f(np.zeros(3 * RATE, np.float32))
    assert got["audio_present"] == 1.0 and got["silence"] == 1.0
    assert got["rms_dbfs"] == got["momentary_lufs"] == got["mel_05_db"] == LEVEL_FLOOR_DB


def test_levels_of_a_sine() -> None:
    got = f(tone(1000, 0.5))
    assert got["rms_dbfs"] == pytest.approx(-9.03, abs=0.05)        # a full-scale sine is -3 dBFS
    assert got["peak_dbfs"] == pytest.approx(-6.02, abs=0.05)
    assert got["crest_db"] == pytest.approx(3.01, abs=0.05)
    assert got["silence"] == 0.0
    assert got["zero_crossing_rate"] == pytest.approx(2000 / RATE, rel=0.05)
    assert got["spectral_centroid_khz"] == pytest.approx(1.0, abs=0.05)
    assert got["spectral_flatness"] < 0.01
    assert got["dynamic_range_db"] < 0.1 and got["low_energy_ratio"] == 0.0
    mels = [got[f"mel_{i:02d}_db"] for i in range(12)]
    assert int(np.argmax(mels)) in (3, 4)           # 1 kHz sits in the 4th/5th mel band of 60 Hz..8 kHz


def test_noise_is_flat_and_bright_a_sine_tonal() -> None:
    white, sine = f(noise(0.1)), f(tone(440, 0.3))
    assert white["spectral_flatness"] > 0.4 > 0.01 > sine["spectral_flatness"]
    assert white["spectral_centroid_khz"] > 3.0 > sine["spectral_centroid_khz"]
    assert white["zero_crossing_rate"] > 0.4 > sine["zero_crossing_rate"]
    assert white["crest_db"] > sine["crest_db"] + 6


def test_speech_like_pauses_against_a_compressed_music_bed() -> None:
    t = np.arange(3 * RATE) / RATE
    syllables = (noise(0.1) * (np.sin(2 * np.pi * 4 * t) > 0.3)).astype(np.float32)   # bursts with pauses, 4 per second
    bed = (tone(220, 0.2) + tone(330, 0.15) + tone(440, 0.1)).astype(np.float32)     # steady chords
    speech, music = f(syllables), f(bed)
    assert speech["low_energy_ratio"] > 0.3 > music["low_energy_ratio"]
    assert speech["dynamic_range_db"] > 30 > 1 > music["dynamic_range_db"]


def test_the_steps_own_elements_use_only_the_step() -> None:
    x = np.concatenate([noise(0.3, 2.8), np.zeros(int(0.2 * RATE), np.float32)])    # loud, then a 200 ms silence
    got = f(x, step_seconds=0.2)
    assert got["silence"] == 1.0 and got["rms_dbfs"] == LEVEL_FLOOR_DB
    assert got["short_term_lufs"] > -20                                            # the context still holds the sound


def test_track_keeps_three_seconds_of_context_and_a_gap_clears_it() -> None:
    track = AudioFeatureTrack(RATE)
    x = noise(0.1, 5.0)
    step = int(0.2 * RATE)
    outs = [track.push(x[i:i + step]) for i in range(0, len(x), step)]
    assert all(o[0] == 1.0 for o in outs)
    assert np.allclose(outs[-1], audio_features(x[-3 * RATE:], RATE, step_seconds=0.2), atol=1e-4)
    assert not track.push(None).any()                                  # a step without audio: missing
    after = track.push(x[:step])
    assert np.allclose(after, audio_features(x[:step], RATE, step_seconds=0.2), atol=1e-4)


def test_momentary_loudness_of_a_mono_tone_agrees_with_ffmpeg(tmp_path: Path) -> None:
    """The features' loudness is a cue (mono, 16 kHz), but on a mono 1 kHz tone it is the meter's reading."""
    wav = tmp_path / "tone.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "aevalsrc=0.1*sin(2*PI*1000*t):s=16000:d=3",
                    "-c:a", "pcm_f32le", str(wav)], check=True)
    err = subprocess.run(["ffmpeg", "-hide_banner", "-nostats", "-i", str(wav), "-af", "ebur128", "-f", "null", "-"],
                         capture_output=True, text=True, check=True).stderr
    reference = float(re.search(r"I:\s+(-?[\d.]+) LUFS", err[err.rindex("Summary:"):]).group(1))
    got = f(tone(1000, 0.1))
    assert got["short_term_lufs"] == pytest.approx(reference, abs=0.2)
    assert got["momentary_lufs"] == pytest.approx(reference, abs=0.2)
