"""`classify` and `evaluate`: the engine over a recording at full speed, with file sinks.

Decode -> sample -> backbone in batches -> `ChannelEngine` per frame, exactly the parts the
live daemon runs; the result is written as the files media centres read, or scored
against ground truth.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from detector.bundle import Bundle, load_bundle
from detector.decision import DecisionSettings
from detector.engine import ChannelEngine, Transition
from detector.errors import UsageError
from detector.features import batched, prefetch
from detector.inference import Models, nvidia_driver_present
from detector.segments import Segment
from detector.video import DecodeReport, open_video, sample_video

log = logging.getLogger(__name__)


@dataclass
class Analysis:
    video: Path
    classes: list[str]
    ad_classes: list[str]
    times: np.ndarray                 # newest-frame time of each window
    probs: np.ndarray                 # [n, C]
    segments: list[Segment]
    transitions: list[Transition]
    duration: float
    fps: float
    total_frames: int
    report: DecodeReport
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def p_ad(self) -> np.ndarray:
        mask = np.array([c in self.ad_classes for c in self.classes])
        return self.probs[:, mask].sum(axis=1) if len(self.probs) else np.zeros(0)


def default_providers(requested: Sequence[str] | None) -> list[str]:
    """Offline tools use the GPU when there is one, without complaining when there is not."""
    if requested:
        return list(requested)
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if nvidia_driver_present() else ["CPUExecutionProvider"]


def analyse(video: Path, bundle: Bundle, models: Models, decision: DecisionSettings | None = None, hop_seconds: float = 1.0,
            batch_size: int = 16, progress: bool = True) -> Analysis:
    """Run the whole engine over one file."""
    cap_info = open_video(video)
    info = cap_info[1]
    engine = ChannelEngine(bundle, models.probabilities, decision or DecisionSettings(), hop_seconds)
    report = DecodeReport()
    times: list[float] = []
    probs: list[np.ndarray] = []
    transitions: list[Transition] = []
    timings = {"decode_resize_s": 0.0, "backbone_s": 0.0, "sequence_decision_s": 0.0}
    bar = tqdm(total=info.frame_count or None, desc=video.name[-30:], unit="frame", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    started = time.perf_counter()
    frames = prefetch(sample_video(video, bundle.analysis_fps, bundle.input_size, report, cap_info))
    mark = time.perf_counter()
    for batch in batched(frames, batch_size):
        t0 = time.perf_counter()
        timings["decode_resize_s"] += t0 - mark   # time waiting for decoded frames (decoding overlaps the backbone)
        feats = models.features(np.stack([f.image for f in batch]))
        t1 = time.perf_counter()
        timings["backbone_s"] += t1 - t0
        for frame, feat in zip(batch, feats):
            result, change = engine.push(frame.media_time, feat, frame.stats)
            if result is not None:
                times.append(result.time)
                probs.append(result.probs)
            if change is not None:
                transitions.append(change)
        mark = time.perf_counter()
        timings["sequence_decision_s"] += mark - t1
        bar.update(report.frames_decoded - bar.n)
        elapsed = mark - started
        if elapsed > 0:
            bar.set_postfix_str(f"{report.frames_decoded / elapsed:.0f} fps, {report.last_time / elapsed:.1f}x realtime")
    bar.close()
    timings["total_s"] = time.perf_counter() - started
    fps = report.fps or info.fps or bundle.analysis_fps
    duration = report.last_time + 1.0 / fps if report.frames_decoded else 0.0
    if report.truncated:
        log.warning("decoding stopped early file=%s decoded_until_s=%.2f frames=%d of %d", video, report.last_time,
                    report.frames_decoded, info.frame_count)
    if not probs:
        raise UsageError(f"{video}: too short to classify: {duration:.1f} s decoded, the model needs a window of "
                         f"{bundle.window_frames / bundle.analysis_fps:.1f} s")
    engine.finish(duration)
    return Analysis(video, list(bundle.classes), list(bundle.ad_classes), np.asarray(times), np.stack(probs), engine.segments,
                    transitions, duration, fps, report.frames_decoded, report, timings)


def _models(bundle: Bundle, args: argparse.Namespace) -> Models:
    models = Models(bundle, default_providers(args.providers), engine=args.engine, precision=args.precision)
    log.info("models loaded bundle=%s engine=%s precision=%s providers=%s classes=%s", bundle.root, models.plan.engine,
             models.precision, ",".join(models.providers_in_use), ",".join(bundle.classes))
    return models


def _check_video_arg(video: str) -> Path:
    path = Path(video)
    open_video(path)[0].release()   # clear errors before any model is loaded
    return path


def classify_command(args: argparse.Namespace) -> int:
    from detector.formats import FORMATS, check_formats, ensure_writable_dir, write_outputs

    video = _check_video_arg(args.video)
    formats = check_formats(args.formats or FORMATS)
    out_dir = Path(args.output)
    bundle = load_bundle(Path(args.model))   # a bad bundle is refused before OUT_DIR is created
    ensure_writable_dir(out_dir)
    models = _models(bundle, args)
    result = analyse(video, bundle, models, progress=not args.no_progress)
    written = write_outputs(out_dir, video.stem, result.segments, result.times, result.probs, result.classes,
                            result.ad_classes, result.fps, result.total_frames, result.duration, formats)
    if args.annotate:
        from detector.annotate import write_annotated

        written.append(write_annotated(video, out_dir / f"{video.stem}.annotated.mp4", result, progress=not args.no_progress))
    ads = [s for s in result.segments if s.is_ad]
    t = result.timings
    log.info("classified file=%s duration_s=%.1f ad_segments=%d ad_seconds=%.1f speed_x_realtime=%.1f", video, result.duration,
             len(ads), sum(s.duration for s in ads), result.duration / max(t["total_s"], 1e-9))
    for path in written:
        print(path)
    return 0


def evaluate_command(args: argparse.Namespace) -> int:
    from detector.scoring import score, table
    from detector.segments import read_labels

    video = _check_video_arg(args.video)
    bundle = load_bundle(Path(args.model))
    truth = read_labels(Path(args.truth), set(bundle.ad_classes), ad_label=bundle.ad_classes[0])
    models = _models(bundle, args)
    result = analyse(video, bundle, models, progress=not args.no_progress)
    figures = score(result.segments, truth, result.duration)
    figures["video"] = str(video)
    figures["speed_x_realtime"] = round(result.duration / max(result.timings["total_s"], 1e-9), 2)
    print(json.dumps(figures, indent=2))
    if args.table:
        print(table(figures), file=sys.stderr)
    return 0
