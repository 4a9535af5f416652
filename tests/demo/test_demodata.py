"""The demo data generator: deterministic, exactly labelled, and cheap to re-run."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from detector.demo import data as demodata
from detector.demo.data import AD_CLASS, CLASSES, PROGRAMME_CLASS, DemoSet, generate_demo_set, write_broadcast, write_clip
from detector.errors import UsageError
from detector.analysis.segments import Segment, read_labels

SMALL = (160, 90)
FPS = 25.0
BROADCAST_SECONDS = 120.0
BROADCAST_SEED = 1  # a seed whose break has black gaps at its edges (asserted below)


def decode(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), path
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def frame_hashes(path: Path) -> list[str]:
    return [hashlib.sha1(f.tobytes()).hexdigest() for f in decode(path)]


def green_fraction(frames: list[np.ndarray]) -> float:
    """Share of pixels whose green clearly beats red and blue."""
    stack = np.stack(frames[::5]).astype(np.int16)
    b, g, r = stack[..., 0], stack[..., 1], stack[..., 2]
    return float(np.mean((g > r + 15) & (g > b + 15)))


@pytest.fixture(scope="module")
def broadcast(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Segment], np.ndarray]:
    path = tmp_path_factory.mktemp("bc") / "show.mp4"
    segments = write_broadcast(path, BROADCAST_SEED, BROADCAST_SECONDS, size=SMALL, fps=FPS, progress=False)
    means = np.array([f.mean() for f in decode(path)])
    return path, segments, means


@pytest.mark.parametrize("label", CLASSES)
def test_same_seed_same_frames_different_seed_different(tmp_path: Path, label: str) -> None:
    write_clip(tmp_path / "a.mp4", label, 2.0, seed=7, size=SMALL)
    write_clip(tmp_path / "b.mp4", label, 2.0, seed=7, size=SMALL)
    write_clip(tmp_path / "c.mp4", label, 2.0, seed=8, size=SMALL)
    a, b, c = (frame_hashes(tmp_path / n) for n in ("a.mp4", "b.mp4", "c.mp4"))
    assert len(a) == 50
    assert a == b
    assert not set(a) & set(c)


@pytest.mark.parametrize(("seconds", "fps", "expected"), [(3.0, 25.0, 75), (2.04, 25.0, 51), (1.5, 10.0, 15)])
def test_clip_has_the_requested_length(tmp_path: Path, seconds: float, fps: float, expected: int) -> None:
    path = tmp_path / "clip.mp4"
    write_clip(path, PROGRAMME_CLASS, seconds, seed=1, size=SMALL, fps=fps)
    cap = cv2.VideoCapture(str(path))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(fps)
    cap.release()
    frames = decode(path)
    assert len(frames) == expected
    assert abs(len(frames) / fps - seconds) <= 1 / fps
    assert frames[0].shape == (SMALL[1], SMALL[0], 3)
    assert not list(tmp_path.glob(".*partial*")), "the temporary file must be gone"


def test_football_is_green_and_commercials_are_not_mostly(tmp_path: Path) -> None:
    football, commercial = [], []
    for seed in range(3):
        write_clip(tmp_path / f"f{seed}.mp4", PROGRAMME_CLASS, 4.0, seed=seed, size=SMALL)
        write_clip(tmp_path / f"c{seed}.mp4", AD_CLASS, 4.0, seed=seed, size=SMALL)
        f_frames = decode(tmp_path / f"f{seed}.mp4")
        mean_b, mean_g, mean_r = np.stack(f_frames).reshape(-1, 3).mean(axis=0)
        assert mean_g > mean_r and mean_g > mean_b
        football.append(green_fraction(f_frames))
        commercial.append(green_fraction(decode(tmp_path / f"c{seed}.mp4")))
    assert min(football) > 0.5, football
    assert np.mean(commercial) < min(football) - 0.2, (football, commercial)


def test_broadcast_truth_files(broadcast: tuple[Path, list[Segment], np.ndarray]) -> None:
    path, segments, _ = broadcast
    truth = read_labels(path.with_suffix(".csv"), {AD_CLASS})
    assert [(s.start, s.end, s.label) for s in truth] == [(round(s.start, 3), round(s.end, 3), s.label) for s in segments]
    assert truth[0].start == 0.0
    assert truth[-1].end == pytest.approx(BROADCAST_SECONDS)
    for prev, nxt in zip(truth, truth[1:]):
        assert nxt.start == prev.end, "no gaps, no overlaps"
        assert nxt.label != prev.label, "programme and ad breaks alternate (a break is one merged row)"
    assert truth[0].label == PROGRAMME_CLASS and truth[-1].label == PROGRAMME_CLASS
    ads = [s for s in truth if s.is_ad]
    assert len(ads) >= 1
    for seg in truth:
        for t in (seg.start, seg.end):
            assert abs(t * FPS - round(t * FPS)) < 1e-6, "boundaries sit on frame times"
    edl = read_labels(path.with_suffix(".edl"), {AD_CLASS})
    assert len(edl) == len(ads)
    for e, a in zip(edl, ads):
        assert e.is_ad and e.start == pytest.approx(a.start, abs=0.006) and e.end == pytest.approx(a.end, abs=0.006)


def test_broadcast_length_and_black_gaps(broadcast: tuple[Path, list[Segment], np.ndarray]) -> None:
    _, segments, means = broadcast
    assert len(means) == round(BROADCAST_SECONDS * FPS)
    black = means < 20
    ad_frame = np.zeros(len(means), bool)
    for seg in segments:
        if seg.is_ad:
            ad_frame[round(seg.start * FPS):round(seg.end * FPS)] = True
    assert not np.any(black & ~ad_frame), "near-black frames only inside ad breaks"
    edged = 0
    for seg in segments:
        if not seg.is_ad:
            continue
        a, b = round(seg.start * FPS), round(seg.end * FPS)
        assert not black[a - 1] and not black[b], "programme frames next to a break are not black"
        if black[a]:
            edged += 1
            assert black[b - 1], "a break with leading black also ends with black"
            lead = int(np.argmin(black[a:b]))
            trail = int(np.argmin(black[a:b][::-1]))
            for run in (lead, trail):
                assert round(0.2 * FPS) <= run <= round(0.6 * FPS)
    assert edged >= 1, "this seed has a break with black edges"


def test_broadcast_is_deterministic_per_seed(tmp_path: Path) -> None:
    a = write_broadcast(tmp_path / "a.mp4", 3, 30.0, size=SMALL, progress=False)
    b = write_broadcast(tmp_path / "b.mp4", 3, 30.0, size=SMALL, progress=False)
    assert a == b
    assert frame_hashes(tmp_path / "a.mp4")[::25] == frame_hashes(tmp_path / "b.mp4")[::25]
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()


def test_bad_arguments_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        write_clip(tmp_path / "x.mp4", "news", 1.0, seed=0, size=SMALL)
    with pytest.raises(UsageError):
        write_clip(tmp_path / "x.mp4", AD_CLASS, 1.0, seed=0, size=(161, 90))
    with pytest.raises(UsageError):
        write_broadcast(tmp_path / "x.mp4", 0, 5.0, size=SMALL, progress=False)
    assert not list(tmp_path.iterdir())


TINY = dict(train_clips=2, test_clips=1, clip_seconds=1.0, train_recordings=1, recording_seconds=24.0,
            broadcast_seconds=24.0, size=SMALL, fps=FPS, progress=False)


def mtimes(root: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_generate_demo_set_layout_and_cheap_rerun(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    demo = generate_demo_set(root, seed=5, workers=2, **TINY)
    assert demo == DemoSet(root, root / "DATA", root / "broadcast.mp4", root / "broadcast.csv", root / "broadcast.edl",
                           root / "broadcast.truth.json")
    for split, count in (("train", 2), ("test", 1)):
        for label in CLASSES:
            clips = sorted((root / "DATA" / split / label).glob("*.mp4"))
            assert len(clips) == count
            assert all(len(decode(c)) == 25 for c in clips)
    rec = root / "DATA" / "train" / "recording_01.mp4"
    assert rec.is_file() and rec.with_suffix(".csv").is_file() and rec.with_suffix(".edl").is_file()
    assert (rec.parent / "recording_01.truth.json").is_file()
    assert not list((root / "DATA" / "test").glob("recording_*"))
    truth = read_labels(demo.truth_csv, {AD_CLASS})
    assert truth[-1].end == pytest.approx(24.0) and any(s.is_ad for s in truth)
    assert demo.truth_edl.is_file()
    # The evaluation broadcast comes from a different seed than the training recording.
    assert demo.truth_csv.read_text() != rec.with_suffix(".csv").read_text() or \
        frame_hashes(demo.broadcast)[:5] != frame_hashes(rec)[:5]
    assert json.loads((root / ".complete").read_text())["seed"] == 5
    assert not (root / ".generating").exists()

    before = mtimes(root)
    start = time.monotonic()
    generate_demo_set(root, seed=5, workers=2, **TINY)
    assert time.monotonic() - start < 2.0
    assert mtimes(root) == before, "a complete set with the same parameters is not rewritten"

    (root / "DATA" / "test" / "football" / "football_001.mp4").unlink()
    (root / "DATA" / "train" / "football" / "notes.txt").write_text("mine")
    generate_demo_set(root, seed=5, workers=1, **TINY)
    after = mtimes(root)
    assert (root / "DATA" / "test" / "football" / "football_001.mp4") in after
    changed = {p for p in after if before.get(p) != after[p]}
    assert changed == {root / "DATA" / "test" / "football" / "football_001.mp4",
                       root / "DATA" / "train" / "football" / "notes.txt", root / ".complete"}


def test_generate_demo_set_regenerates_when_parameters_change(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    generate_demo_set(root, seed=0, workers=1, **TINY)
    old = frame_hashes(root / "DATA" / "train" / "commercial" / "commercial_001.mp4")
    params = {**TINY, "train_clips": 1}
    generate_demo_set(root, seed=1, workers=1, **params)
    assert sorted(p.name for p in (root / "DATA" / "train" / "commercial").iterdir()) == ["commercial_001.mp4"]
    assert frame_hashes(root / "DATA" / "train" / "commercial" / "commercial_001.mp4") != old
    assert json.loads((root / ".complete").read_text())["train_clips"] == 1


def test_main_quick(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demodata, "QUICK_SETTINGS", {**{k: v for k, v in TINY.items() if k not in ("progress",)},
                                                    "train_recordings": 0})
    assert demodata.main([str(tmp_path / "out"), "--seed", "3", "--quick", "--no-progress"]) == 0
    assert (tmp_path / "out" / "broadcast.mp4").is_file()
    assert json.loads((tmp_path / "out" / ".complete").read_text())["seed"] == 3
