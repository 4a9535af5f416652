"""Features of a whole video through the bundle's backbone: the one path training and
offline classification share, so there is no train/serve skew in decoding, sampling,
resizing or colour order.

Beside each frame's backbone features it computes the cue vectors of every block this
version knows (`CueComputer`, the object the live engine runs, fed the same frame stats and
the same per-step audio), so `train` can pick any `--blocks` from one cached extraction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from detector.analysis.blocks import ALL_BLOCKS, CueComputer
from detector.analysis.framestats import FrameStats
from detector.sources.video import DecodeReport, SampledFrame, sample_video

T = TypeVar("T")


def prefetch(items: Iterable[T], depth: int = 32) -> Iterator[T]:
    """Produce `items` on a background thread, `depth` ahead of the consumer.

    Offline, decoding and the backbone otherwise take turns on the cores; overlapping them
    makes the file go as fast as the slower of the two. Exceptions in the producer are
    re-raised in the consumer; abandoning the iterator stops the producer.
    """
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((done, None))
        except BaseException as exc:  # handed to the consumer, raised there
            q.put((done, exc))

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = q.get()
            if item is done:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        stop.set()


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of up to `size` items (the offline batcher: a file never waits)."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass
class FeatureTrack:
    times: np.ndarray                       # float64 [n] media seconds
    features: np.ndarray                    # float32 [n, D]
    stats: list[FrameStats] = field(default_factory=list)
    report: DecodeReport = field(default_factory=DecodeReport)
    cues: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))   # float32 [n, K] raw (NaN = missing)
    cue_blocks: tuple[str, ...] = ()                                                  # the blocks of `cues`, in order


def extract_features(path: Path, run_backbone: Callable[[np.ndarray], np.ndarray], analysis_fps: float,
                     input_size: tuple[int, int], batch_size: int = 16,
                     on_batch: Callable[[list[SampledFrame], np.ndarray], None] | None = None,
                     cue_blocks: tuple[str, ...] = ALL_BLOCKS) -> FeatureTrack:
    """Decode, sample and run the backbone over a file in batches; cue vectors of `cue_blocks` beside.

    `on_batch` sees each batch of frames with their features (progress bars, annotation).
    """
    report = DecodeReport()
    times: list[float] = []
    feats: list[np.ndarray] = []
    stats: list[FrameStats] = []
    computer = CueComputer(cue_blocks, fps=analysis_fps)
    cues: list[np.ndarray] = []
    for batch in batched(prefetch(sample_video(path, analysis_fps, input_size, report)), batch_size):
        images = np.stack([f.image for f in batch])
        out = run_backbone(images)
        feats.append(out.astype(np.float32, copy=False))
        times.extend(f.media_time for f in batch)
        stats.extend(f.stats for f in batch)
        cues.extend(computer.step(f.media_time, f.stats, f.audio, f.image) for f in batch)
        if on_batch is not None:
            on_batch(batch, out)
    dim = feats[0].shape[1] if feats else 0
    return FeatureTrack(np.asarray(times, np.float64), np.concatenate(feats) if feats else np.zeros((0, dim), np.float32),
                        stats, report, np.stack(cues) if cues else np.zeros((0, computer.size), np.float32), tuple(cue_blocks))
