"""`classify --annotate`: the recording with the current label and class probabilities drawn
on every frame (what the original tutorial's `result.avi` showed, for the whole file).
"""

from __future__ import annotations

import bisect
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from tqdm import tqdm

from detector.errors import RuntimeFailure
from detector.util.fsutil import atomic_path
from detector.analysis.segments import label_at
from detector.sources.video import decode_frames, open_video

if TYPE_CHECKING:
    from detector.offline.analyse import Analysis

AD_COLOUR = (40, 40, 220)          # BGR red
PROGRAMME_COLOUR = (60, 170, 60)   # BGR green


def draw_overlay(frame: np.ndarray, label: str, is_ad: bool, classes: list[str], probs: np.ndarray | None, t: float) -> None:
    """Label banner and one probability bar per class, in place."""
    h, w = frame.shape[:2]
    scale = max(0.5, w / 1280)
    colour = AD_COLOUR if is_ad else PROGRAMME_COLOUR
    cv2.rectangle(frame, (0, 0), (w, int(44 * scale)), colour, -1)
    mm, ss = divmod(t, 60)
    cv2.putText(frame, f"{'AD' if is_ad else 'PROGRAMME'}: {label}   {int(mm):02d}:{ss:05.2f}", (int(10 * scale), int(31 * scale)),
                cv2.FONT_HERSHEY_SIMPLEX, 0.9 * scale, (255, 255, 255), max(1, int(2 * scale)), cv2.LINE_AA)
    if probs is None:
        return
    y = int(60 * scale)
    bar_w = int(200 * scale)
    for name, p in zip(classes, probs):
        cv2.rectangle(frame, (int(10 * scale), y), (int(10 * scale) + bar_w, y + int(18 * scale)), (30, 30, 30), -1)
        cv2.rectangle(frame, (int(10 * scale), y), (int(10 * scale) + int(bar_w * float(p)), y + int(18 * scale)), (0, 200, 255), -1)
        cv2.putText(frame, f"{name} {float(p):.2f}", (int(20 * scale) + bar_w, y + int(15 * scale)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.55 * scale, (255, 255, 255), max(1, int(1 * scale)), cv2.LINE_AA)
        y += int(24 * scale)


def write_annotated(video: Path, out: Path, result: "Analysis", progress: bool = True) -> Path:
    """Second pass over the file: every frame, with the decided segment and latest probabilities."""
    info = open_video(video)
    fps = info.fps or result.fps
    times = list(result.times)
    bar = tqdm(total=info.frame_count or None, desc="annotate", unit="frame", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    try:
        with atomic_path(out) as tmp:
            writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (info.width, info.height))
            if not writer.isOpened():
                raise RuntimeFailure(f"{out}: OpenCV cannot write MPEG-4 video here")
            for t, frame in decode_frames(video):     # the analysis' decoder and timeline
                if frame.shape[1] != info.width or frame.shape[0] != info.height:
                    frame = cv2.resize(frame, (info.width, info.height))
                k = bisect.bisect_right(times, t + 1e-9) - 1
                seg = label_at(result.segments, t)
                draw_overlay(frame, seg.label if seg else "?", bool(seg and seg.is_ad), result.classes,
                             result.probs[k] if k >= 0 else None, t)
                writer.write(frame)
                bar.update(1)
            writer.release()
    finally:
        bar.close()
    return out
