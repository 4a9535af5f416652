"""The engine over a recording at full speed: what `classify`, `evaluate` and training share.

Decode -> sample -> backbone in batches -> `ChannelEngine` per frame, exactly the parts the
live daemon runs; the result (`Analysis`) is what the file writers, the annotated video and
the scorer read.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from detector.analysis.clock import PtsMarks
from detector.model.bundle import Bundle
from detector.analysis.breakrules import BreakRules, RuleAction, apply_offline
from detector.analysis.decision import DecisionSettings
from detector.analysis.engine import ChannelEngine, Transition
from detector.analysis.loudness import LoudnessMeter, LoudnessTrack
from detector.errors import UsageError
from detector.model.features import batched, prefetch
from detector.model.backends.onnxruntime import nvidia_driver_present
from detector.model.models import Models
from detector.analysis.segments import Segment
from detector.sources.video import DecodeReport, open_video, sample_video

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
    # (media time, source PTS) of every analysed frame: a boundary's PTS for the SCTE-35 formats
    pts_marks: PtsMarks = field(default_factory=lambda: PtsMarks(capacity=None))
    rule_actions: list[RuleAction] = field(default_factory=list)   # what the break-structure rules changed or flagged
    loudness: LoudnessTrack | None = None     # the file's loudness sub-blocks (when measured; empty without audio)
    cues: np.ndarray | None = None    # raw cue vector of every analysed frame [frames, K] (bundles with blocks; NaN = missing)

    @property
    def first_pts(self) -> int | None:
        """The first frame's PTS (90 kHz, mod 2**33): where the recording's own clock starts."""
        return self.report.first_pts

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
            batch_size: int = 16, progress: bool = True, loudness: bool = False) -> Analysis:
    """Run the whole engine over one file; with `loudness`, also meter its audio (BS.1770).

    The break-structure rules in `decision.rules` are applied in their whole-recording form
    (`breakrules.apply_offline`) to the closed segments, not in the engine's live form: offline
    nothing has been published, so a short break is relabelled rather than withdrawn, and a
    short programme gap is merged without holding anything back. `transitions` stay the
    engine's own decisions.
    """
    return analyse_many(video, [(bundle, models)], decision, hop_seconds, batch_size, progress, loudness)[0]


def shared_pass_key(bundle: Bundle, models: Models) -> tuple[str, float, tuple[int, int]]:
    """Bundles with equal keys see the same backbone features frame for frame (pure): the same
    backbone file running, the same analysis rate and input size. `evaluate -m A -m B` then
    decodes and runs the backbone once for all of them (an ablation trains every bundle on one
    backbone, so that is the usual case)."""
    return models.backbone_sha256, float(bundle.analysis_fps), tuple(bundle.input_size)


def analyse_many(video: Path, runs: Sequence[tuple[Bundle, Models]], decision: DecisionSettings | None = None,
                 hop_seconds: float = 1.0, batch_size: int = 16, progress: bool = True,
                 loudness: bool = False) -> list[Analysis]:
    """`analyse` for several bundles in one pass: decoded once, the backbone run once with the
    first run's models, then every frame's features pushed to each bundle's own engine. All
    runs must have the same `shared_pass_key`; each result is what `analyse` alone gives
    (same frames, same features), with the pass's timings."""
    if not runs:
        raise ValueError("analyse_many needs at least one bundle")
    keys = {shared_pass_key(b, m) for b, m in runs}
    if len(keys) != 1:
        raise ValueError(f"bundles of one pass must share backbone, rate and input size: {sorted(keys)}")
    bundle, models = runs[0]
    info = open_video(video)
    decision = decision or DecisionSettings()
    engines = [ChannelEngine(b, m.probabilities, replace(decision, rules=BreakRules()), hop_seconds) for b, m in runs]
    report = DecodeReport()
    times: list[list[float]] = [[] for _ in runs]
    probs: list[list[np.ndarray]] = [[] for _ in runs]
    transitions: list[list[Transition]] = [[] for _ in runs]
    cues: list[list[np.ndarray]] = [[] for _ in runs]
    marks = PtsMarks(capacity=None)          # a recording is finite: keep every mark
    timings = {"decode_resize_s": 0.0, "backbone_s": 0.0, "sequence_decision_s": 0.0}
    bar = tqdm(total=info.frame_count or None, desc=video.name[-30:], unit="frame", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    started = time.perf_counter()
    meter = LoudnessMeter(keep_seconds=None) if loudness else None
    frames = prefetch(sample_video(video, bundle.analysis_fps, bundle.input_size, report, info, loudness=meter))
    mark = time.perf_counter()
    for batch in batched(frames, batch_size):
        t0 = time.perf_counter()
        timings["decode_resize_s"] += t0 - mark   # time waiting for decoded frames (decoding overlaps the backbone)
        feats = models.features(np.stack([f.image for f in batch]))
        t1 = time.perf_counter()
        timings["backbone_s"] += t1 - t0
        for frame, feat in zip(batch, feats):
            marks.add(frame.media_time, frame.pts)
            for i, engine in enumerate(engines):
                result, change = engine.push(frame.media_time, feat, frame.stats, frame.audio, frame.image)
                if engine.last_cues is not None:
                    cues[i].append(engine.last_cues)
                if result is not None:
                    times[i].append(result.time)
                    probs[i].append(result.probs)
                if change is not None:
                    transitions[i].append(change)
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
    track = meter.track() if meter is not None else None
    if meter is not None and meter.restarts:
        log.info("loudness audio restarted file=%s restarts=%d (gaps or format changes in the audio)", video, meter.restarts)
    out = []
    for i, ((b, _), engine) in enumerate(zip(runs, engines)):
        if any(block.name == "audio" for block in b.blocks) and not report.has_audio:
            # documented behaviour, not an error: the audio block is marked missing (see detector.analysis.blocks.base)
            log.warning("source has no audio, the model's audio block is marked missing file=%s blocks=%s", video,
                        ",".join(block.name for block in b.blocks))
        if not probs[i]:
            raise UsageError(f"{video}: too short to classify: {duration:.1f} s decoded, the model needs a window of "
                             f"{b.window_frames / b.analysis_fps:.1f} s")
        engine.finish(duration)
        programme = next(c for c in b.classes if c not in b.ad_classes)
        segments, actions = apply_offline(engine.segments, decision.rules, programme, list(engine.spot_marks))
        for action in actions:
            (log.warning if action.action == "flagged" else log.info)("%s", action.log_line(video.name))
        out.append(Analysis(video, list(b.classes), list(b.ad_classes), np.asarray(times[i]), np.stack(probs[i]), segments,
                            transitions[i], duration, fps, report.frames_decoded, report, dict(timings), marks, actions,
                            track, np.stack(cues[i]) if cues[i] else None))
    return out
