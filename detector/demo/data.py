"""The demo data set: class folders to train on and a broadcast to evaluate on, made from a seed.

Why this exists: the detector has to be demonstrable (`ad-detector demo`), testable and
benchmarkable without shipping real TV recordings (size, copyright). Everything is drawn
with OpenCV on numpy frames from a seed, so the same seed always gives the same files, and
the ground truth is known exactly because we drew it. The drawing is in `paint`, `football`
and `commercials`, the files in `write`; this module lays out a whole set, keeps a re-run
cheap (valid files made with the same parameters are kept) and draws items in parallel.

Only numpy, OpenCV and tqdm are used (no TensorFlow): the runtime package must install
without the training stack.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing
import os
import re
import sys
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from detector.demo.paint import Size, frames_for
from detector.demo.write import (AD_CLASS, CLASSES, GENERATOR_VERSION, PROGRAMME_CLASS, check_args, derive_seed, trap_count,
                                 truth_json_path, video_is_valid, write_broadcast, write_clip)
from detector.errors import RuntimeFailure, UsageError
from detector.util.fsutil import atomic_write_text

log = logging.getLogger(__name__)

# GENERATOR_VERSION (detector.demo.write) is recorded in the set's marker: a new version regenerates old sets.

# Smaller/shorter items for tests and quick looks (`python -m detector.demo.data --quick`).
QUICK_SETTINGS: dict[str, int | float] = {
    "train_clips": 4,
    "test_clips": 2,
    "clip_seconds": 8.0,
    "train_recordings": 1,
    "recording_seconds": 90.0,
    "broadcast_seconds": 120.0,
}

_MARKER = ".complete"
_IN_PROGRESS = ".generating"


@dataclass(frozen=True)
class DemoSet:
    """Where a generated demo set lives: training data, and the broadcast to evaluate on."""

    root: Path
    data_dir: Path
    broadcast: Path
    truth_csv: Path
    truth_edl: Path
    truth_json: Path | None = None     # segments plus trap spans (`evaluate --truth` reports trap-span accuracy from it)


@dataclass(frozen=True)
class _Item:
    """One file (or broadcast with truth) to make; picklable for worker processes."""

    kind: str  # "clip" | "broadcast"
    path: Path
    label: str
    seconds: float
    seed: int
    size: Size
    fps: float
    traps: float = 0.0      # broadcast: visual traps (fraction or count, see write.trap_count); clip: 1.0 = a trap clip

    @property
    def frames(self) -> int:
        return frames_for(self.seconds, self.fps)

    def is_done(self) -> bool:
        if self.kind == "broadcast":
            for suffix in (".csv", ".edl"):
                if not self.path.with_suffix(suffix).is_file():
                    return False
            if not truth_json_path(self.path).is_file():
                return False
        return video_is_valid(self.path, self.frames, self.size)


def _make_item(item: _Item) -> Path:
    """Draw one item (runs in a worker process)."""
    if item.kind == "clip":
        write_clip(item.path, item.label, item.seconds, item.seed, item.size, item.fps, trap=item.traps >= 1.0)
    else:
        write_broadcast(item.path, item.seed, item.seconds, item.size, item.fps, progress=False, traps=item.traps)
    return item.path


_CLIP_NAMES = re.compile(r"^(?:football|commercial)_\d{3}\.mp4$")
_RECORDING_NAMES = re.compile(r"^recording_\d{2}\.(?:mp4|csv|edl|truth\.json)$")
_PARTIAL_NAMES = re.compile(r"^\..+\.partial(?:\.mp4|\.csv|\.edl|\.json)?$")  # left behind only by a killed (SIGKILL) run


def _remove_stale(folders: list[tuple[Path, re.Pattern[str] | None]], keep: set[Path]) -> None:
    """Delete files *we* named in our folders that the current parameters no longer produce.

    Only our own naming patterns are touched, so anything a user put there survives; stale
    clips must go, or a trainer reading the class folders would train on them.
    """
    for folder, ours in folders:
        if not folder.is_dir():
            continue
        for f in folder.iterdir():
            if not f.is_file() or f in keep:
                continue
            if _PARTIAL_NAMES.match(f.name) or (ours is not None and ours.match(f.name)):
                log.debug("removing stale demo file %s", f)
                f.unlink()


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def generate_demo_set(root: Path, seed: int = 0, train_clips: int = 12, test_clips: int = 4, clip_seconds: float = 10.0,
                      train_recordings: int = 2, recording_seconds: float = 150.0, broadcast_seconds: float = 240.0,
                      size: tuple[int, int] = (640, 360), fps: float = 25.0, progress: bool = True,
                      workers: int | None = None, traps: float = 0.0) -> DemoSet:
    """Everything `ad-detector demo` needs: class folders to train on and a broadcast to test on.

    Layout:
       root/DATA/train/football/*.mp4, root/DATA/train/commercial/*.mp4  (train_clips each)
       root/DATA/test/football/*.mp4,  root/DATA/test/commercial/*.mp4   (test_clips each)
       root/DATA/train/recording_01.mp4 + .csv + .edl ...  (train_recordings labelled broadcasts, directly
            in the split folder: the trainer reads them with the labels file beside them)
       root/broadcast.mp4 + .csv + .edl  (evaluation broadcast, from a seed no training item uses)
       root/broadcast.truth.json, root/DATA/train/recording_01.truth.json ...  (segments and trap spans)

    `traps` puts visual traps (detector.demo.traps: adverts on a pitch, studio programme; the
    picture misleads, sound and logo do not) everywhere in the same share: in every broadcast
    (a fraction of its spots and programme stretches, see write.trap_count) and in round(traps
    * count) of each class's clips per split (the last ones). 0 (default) draws no visual traps.

    Re-running is cheap: files that exist and are valid are skipped when they were made with
    the same parameters (recorded in root/.generating while working and root/.complete, written
    last). If the parameters differ, everything is regenerated and our stale files removed.
    Items are drawn in up to `workers` processes (default: 2, or 1 on a single core); each has
    its own seed from (seed, split, class, index), so the result does not depend on that.
    """
    root = Path(root)
    size = check_args(clip_seconds, size, fps, "demo set")
    for name, value in (("train_clips", train_clips), ("test_clips", test_clips), ("train_recordings", train_recordings)):
        if int(value) != value or value < 0:
            raise UsageError(f"demo set: {name} must be a whole number >= 0, got {value}")
    if not (math.isfinite(traps) and 0.0 <= traps < 1.0):
        raise UsageError(f"demo set: traps must be a fraction in [0, 1), got {traps}")
    for name, secs in (("recording_seconds", recording_seconds), ("broadcast_seconds", broadcast_seconds)):
        if not (math.isfinite(secs) and secs >= 20.0):
            raise UsageError(f"demo set: {name} must be at least 20 seconds, got {secs}")

    params = {"version": GENERATOR_VERSION, "seed": int(seed), "train_clips": int(train_clips), "test_clips": int(test_clips),
              "clip_seconds": float(clip_seconds), "train_recordings": int(train_recordings),
              "recording_seconds": float(recording_seconds), "broadcast_seconds": float(broadcast_seconds),
              "size": [size[0], size[1]], "fps": float(fps), "traps": float(traps)}
    data_dir = root / "DATA"
    demo = DemoSet(root=root, data_dir=data_dir, broadcast=root / "broadcast.mp4",
                   truth_csv=root / "broadcast.csv", truth_edl=root / "broadcast.edl",
                   truth_json=truth_json_path(root / "broadcast.mp4"))

    items: list[_Item] = []
    for split, count in (("train", int(train_clips)), ("test", int(test_clips))):
        for label in CLASSES:
            n_traps = trap_count(float(traps), count)
            for i in range(count):
                items.append(_Item("clip", data_dir / split / label / f"{label}_{i + 1:03d}.mp4", label, float(clip_seconds),
                                   derive_seed(seed, split, label, i), size, float(fps), 1.0 if i >= count - n_traps else 0.0))
    for i in range(int(train_recordings)):
        items.append(_Item("broadcast", data_dir / "train" / f"recording_{i + 1:02d}.mp4", "", float(recording_seconds),
                           derive_seed(seed, "train", "recording", i), size, float(fps), float(traps)))
    items.append(_Item("broadcast", demo.broadcast, "", float(broadcast_seconds),
                       derive_seed(seed + 1000, "demo", "broadcast", 0), size, float(fps), float(traps)))

    marker, in_progress = root / _MARKER, root / _IN_PROGRESS
    trusted = _read_json(marker) == params or _read_json(in_progress) == params
    root.mkdir(parents=True, exist_ok=True)
    own_dirs: list[tuple[Path, re.Pattern[str] | None]] = [(data_dir / s / c, _CLIP_NAMES) for s in ("train", "test") for c in CLASSES]
    own_dirs += [(data_dir / "train", _RECORDING_NAMES), (data_dir / "test", _RECORDING_NAMES), (root, None)]
    keep: set[Path] = set()
    for item in items:
        keep.add(item.path)
        if item.kind == "broadcast":
            keep.update({item.path.with_suffix(".csv"), item.path.with_suffix(".edl"), truth_json_path(item.path)})
    _remove_stale(own_dirs, keep)
    todo = [item for item in items if not (trusted and item.is_done())]
    if not todo and _read_json(marker) == params:
        return demo
    marker.unlink(missing_ok=True)
    atomic_write_text(in_progress, json.dumps(params, indent=2) + "\n")
    log.info("demo data: %d of %d items to draw in %s", len(todo), len(items), root)

    todo.sort(key=lambda it: -it.frames)  # longest first keeps both workers busy to the end
    n_workers = workers if workers is not None else min(2, os.cpu_count() or 1)
    with tqdm(total=len(items), initial=len(items) - len(todo), unit="item", desc="demo data", disable=not progress,
              file=sys.stderr) as bar:
        if n_workers <= 1 or len(todo) <= 1:
            for item in todo:
                _make_item(item)
                bar.update(1)
        else:
            ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold OpenCV/FFmpeg threads
            with ProcessPoolExecutor(max_workers=min(n_workers, len(todo)), mp_context=ctx) as pool:
                pending: set[Future[Path]] = {pool.submit(_make_item, item) for item in todo}
                try:
                    while pending:
                        done, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for fut in done:
                            fut.result()
                            bar.update(1)
                except BaseException:
                    pool.shutdown(wait=False, cancel_futures=True)  # don't start queued items after a failure or ^C
                    raise
    atomic_write_text(marker, json.dumps(params, indent=2) + "\n")
    in_progress.unlink(missing_ok=True)
    return demo


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m detector.demo.data OUT_DIR [--seed N] [--quick]`: write a demo set."""
    parser = argparse.ArgumentParser(prog="python -m detector.demo.data",
                                     description="Write a deterministic, labelled demo data set (drawn football and commercials).")
    parser.add_argument("out_dir", type=Path, help="folder to write (created if missing)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter items (for tests and a quick look)")
    parser.add_argument("--traps", type=float, default=0.0, metavar="FRACTION",
                        help="share of spots, programme stretches and clips drawn as visual traps (adverts on a pitch, "
                             "studio programme), 0 <= FRACTION < 1 (default 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = dict(QUICK_SETTINGS) if args.quick else {}
    try:
        demo = generate_demo_set(args.out_dir, seed=args.seed, progress=not args.no_progress, traps=args.traps,
                                 **settings)  # type: ignore[arg-type]
    except (UsageError, RuntimeFailure) as exc:
        log.error("error: %s", exc)
        return exc.exit_code
    log.info("demo data in %s; broadcast %s (truth %s)", demo.data_dir, demo.broadcast, demo.truth_csv)
    return 0


__all__ = ["AD_CLASS", "CLASSES", "GENERATOR_VERSION", "PROGRAMME_CLASS", "QUICK_SETTINGS", "DemoSet",
           "generate_demo_set", "main", "write_broadcast", "write_clip"]


if __name__ == "__main__":
    raise SystemExit(main())
