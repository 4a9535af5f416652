"""Visual traps in the demo data (issue 16): the picture misleads, the sound and the station logo tell the truth.

Measured the way the detector sees a broadcast: frames sampled and resized as the engine
samples them, the station logo learnt per channel by `visualcues.LogoLearner`, the sound
described by `audiofeatures` (the cues the model's blocks are made of).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from detector.analysis.audiofeatures import AUDIO_FEATURE_NAMES, AudioFeatureTrack
from detector.analysis.segments import read_labels
from detector.analysis.visualcues import LogoLearner, corner_edges
from detector.demo.data import AD_CLASS, generate_demo_set, write_broadcast, write_clip
from detector.demo.write import derive_seed
from detector.demo.traps import AD_ON_PITCH, AUDIO_TRAPS, STUDIO_PROGRAMME, TRAP_KINDS
from detector.errors import UsageError
from detector.sources.video import sample_video

SIZE = (320, 180)
SECONDS = 120.0
SEED = 5          # a seed whose broadcast (traps=0.5) has both kinds of visual trap after the logo is learnt (asserted)
FPS = 5.0         # the analysis rate
LER = AUDIO_FEATURE_NAMES.index("low_energy_ratio")
_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


@pytest.fixture(scope="module")
def trappy(tmp_path_factory) -> dict:
    """The broadcast with traps, its truth, and per analysed step: time, per-corner logo presence, audio features."""
    d = tmp_path_factory.mktemp("traps")
    video = d / "trappy.mp4"
    write_broadcast(video, SEED, SECONDS, size=SIZE, progress=False, traps=0.5)
    learner = LogoLearner(horizon_frames=3000, min_frames=int(30 * FPS))
    track = AudioFeatureTrack()
    times, edges, audio = [], [], []
    for f in sample_video(video, FPS, (299, 299)):
        e = corner_edges(cv2.cvtColor(f.image, cv2.COLOR_BGR2GRAY))
        learner.update(e)
        times.append(f.media_time)
        edges.append(e)
        audio.append(track.push(f.audio))
    mask = learner.mask
    assert mask is not None, "the station logo is learnt over the whole broadcast"
    presence = np.array([[(cv2.dilate(c.view(np.uint8), _CROSS).astype(bool) & m).sum() / max(1, m.sum())
                          for c, m in zip(e, mask)] for e in edges])
    return {"video": video, "truth": json.loads((d / "trappy.truth.json").read_text()), "times": np.array(times),
            "presence": presence, "audio": np.array(audio)}


def steps(data: dict, kind: str, margin: float = 1.0) -> np.ndarray:
    """Indices of analysed steps inside spans of `kind` ('ad' / 'programme': outside every trap), edges trimmed."""
    t = data["times"]
    traps = data["truth"]["traps"]
    inside_trap = np.zeros(len(t), bool)
    for start, end, _ in traps:
        inside_trap |= (t >= start) & (t < end)
    keep = np.zeros(len(t), bool)
    if kind in TRAP_KINDS:
        for start, end, k in traps:
            if k == kind:
                keep |= (t >= start + margin) & (t < end - margin)
        return np.flatnonzero(keep)
    for seg in data["truth"]["segments"]:
        if seg["is_ad"] == (kind == "ad"):
            keep |= (t >= seg["start"] + margin) & (t < seg["end"] - margin)
    return np.flatnonzero(keep & ~inside_trap)


def test_the_truth_lists_trap_spans_inside_segments_of_their_true_label(trappy: dict) -> None:
    truth = trappy["truth"]
    video = trappy["video"]
    assert truth["generator_version"] == 3 and truth["traps_setting"] == 0.5
    csv = read_labels(video.with_suffix(".csv"), {AD_CLASS})
    assert [(s.start, s.end, s.label) for s in csv] == [(x["start"], x["end"], x["label"]) for x in truth["segments"]]
    kinds = [k for _, _, k in truth["traps"]]
    assert AD_ON_PITCH in kinds and STUDIO_PROGRAMME in kinds
    assert set(kinds) <= set(TRAP_KINDS)
    for start, end, kind in truth["traps"]:
        home = [s for s in csv if s.start <= start and end <= s.end]
        assert len(home) == 1, (start, end, kind)        # a trap never straddles a boundary
        assert home[0].is_ad == (kind in (AD_ON_PITCH, "ad_sounds_like_programme"))
        assert abs(start * 25 - round(start * 25)) < 1e-6 and end - start >= 4.0
        if kind == "programme_sounds_like_ad":
            assert end - start <= 20.0 + 1e-6            # music over a replay, not over half the match


def test_traps_change_the_pictures_not_the_truth(tmp_path: Path, trappy: dict) -> None:
    plain = tmp_path / "plain.mp4"
    write_broadcast(plain, SEED, SECONDS, size=SIZE, progress=False)
    assert plain.with_suffix(".csv").read_text() == trappy["video"].with_suffix(".csv").read_text()
    spans = json.loads((tmp_path / "plain.truth.json").read_text())["traps"]
    assert all(k in AUDIO_TRAPS for _, _, k in spans)   # without traps: only the sound's own traps
    with pytest.raises(UsageError, match="traps must be a fraction in"):
        write_broadcast(tmp_path / "x.mp4", SEED, 30.0, size=SIZE, progress=False, traps=2.5)
    assert not (tmp_path / "x.mp4").exists()


def test_trap_programme_carries_the_station_logo_and_trap_ads_do_not(trappy: dict) -> None:
    presence = trappy["presence"]
    studio, pitch = steps(trappy, STUDIO_PROGRAMME), steps(trappy, AD_ON_PITCH)
    programme, ads = steps(trappy, "programme"), steps(trappy, "ad")
    assert min(len(studio), len(pitch), len(programme), len(ads)) >= 10
    logo = int(np.argmax(presence[studio].mean(axis=0)))   # the corner whose learnt mark the studio shows
    assert presence[studio, logo].mean() > 0.9
    assert presence[programme, logo].mean() > 0.9           # ... the very mark the match shows
    assert presence[pitch, logo].mean() < 0.4                # an advert on a pitch does not
    assert presence[ads, logo].mean() < 0.4


def test_the_sound_of_a_trap_is_the_sound_of_its_true_class(trappy: dict) -> None:
    """Music beds under voice-over have few quiet 50 ms frames; crowd under commentary many (low_energy_ratio)."""
    audio = trappy["audio"]
    ad_ler = audio[steps(trappy, "ad", 3.0), LER].mean()
    programme_ler = audio[steps(trappy, "programme", 3.0), LER].mean()
    assert ad_ler > programme_ler + 0.15, (ad_ler, programme_ler)
    middle = (ad_ler + programme_ler) / 2
    assert audio[steps(trappy, AD_ON_PITCH, 3.0), LER].mean() > middle      # the pitch advert sounds like an advert
    assert audio[steps(trappy, STUDIO_PROGRAMME, 3.0), LER].mean() < middle  # the studio sounds like the match


def decode(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def pixels(path: Path) -> str:
    return hashlib.sha1(b"".join(f.tobytes() for f in decode(path))).hexdigest()


def green_fraction(path: Path) -> float:
    stack = np.stack(decode(path)[::5]).astype(np.int16)
    return float(np.mean((stack[..., 1] > stack[..., 2] + 15) & (stack[..., 1] > stack[..., 0] + 15)))


def test_trap_clips_look_like_the_other_class_and_the_demo_set_has_some(tmp_path: Path) -> None:
    write_clip(tmp_path / "pitch_ad.mp4", AD_CLASS, 3.0, seed=1, size=SIZE, trap=True)
    write_clip(tmp_path / "studio.mp4", "football", 3.0, seed=1, size=SIZE, trap=True)
    write_clip(tmp_path / "match.mp4", "football", 3.0, seed=1, size=SIZE)
    assert green_fraction(tmp_path / "pitch_ad.mp4") > 0.5 and green_fraction(tmp_path / "match.mp4") > 0.5
    assert green_fraction(tmp_path / "studio.mp4") < 0.3

    root = tmp_path / "demo"
    generate_demo_set(root, seed=2, train_clips=4, test_clips=1, clip_seconds=1.0, train_recordings=1, recording_seconds=40.0,
                      broadcast_seconds=40.0, size=SIZE, progress=False, workers=1, traps=0.25)
    assert json.loads((root / ".complete").read_text())["traps"] == 0.25
    folder = root / "DATA" / "train" / AD_CLASS
    for i, trap in ((0, False), (3, True)):       # one commercial clip in four (the last) is an advert on a pitch
        write_clip(tmp_path / "expected.mp4", AD_CLASS, 1.0, derive_seed(2, "train", AD_CLASS, i), size=SIZE, trap=trap)
        assert pixels(folder / f"{AD_CLASS}_{i + 1:03d}.mp4") == pixels(tmp_path / "expected.mp4")
    truth = json.loads((root / "DATA" / "train" / "recording_01.truth.json").read_text())
    assert any(k in (AD_ON_PITCH, STUDIO_PROGRAMME) for _, _, k in truth["traps"])
    with pytest.raises(UsageError, match="traps must be a fraction in"):
        generate_demo_set(tmp_path / "bad", traps=1.5)
