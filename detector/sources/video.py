"""Frames out of a video file (or anything OpenCV's FFmpeg backend opens), sampled.

Every frame is decoded with `grab()` (needed to keep time) but only the frames the
analysis keeps are converted with `retrieve()` and resized: the rest cost nothing beyond
decoding. Media time comes from the container's timestamps, not frame counts, so
variable frame rate works; it is made relative to the first frame, as players show it.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from detector.errors import UsageError
from detector.analysis.framestats import FrameStats, frame_stats
from detector.analysis.sampler import Sampler

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".avi", ".mov", ".ts", ".m2ts", ".mts", ".mpg", ".mpeg", ".webm", ".flv", ".wmv",
                            ".m4v", ".3gp"})
"""File name endings taken as recordings when a folder is scanned (training data, calibration)."""

# Bilinear, not INTER_AREA: on real 720p frames it costs 0.7 ms instead of 4.1 ms (one
# thread) and the backbone's features stay at cosine 0.9999 of INTER_AREA ones, closer than
# int8 quantization moves them (bench/resize.py, RESULTS.md), so bundles trained on either
# run on both. Nearest is cheaper still but aliases fine text and patterns.
RESIZE_INTERPOLATION = cv2.INTER_LINEAR


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    fps: float
    frame_count: int      # as the container claims; may be 0 or wrong for streams
    width: int
    height: int

    @property
    def duration(self) -> float:
        return self.frame_count / self.fps if self.fps > 0 else 0.0


@dataclass
class SampledFrame:
    index: int            # decoded frame number, from 0
    media_time: float     # seconds from the first frame
    image: np.ndarray     # uint8 BGR [H, W, 3] at the model's input size
    stats: FrameStats


@dataclass
class DecodeReport:
    """What decoding a file found: how far it got and whether it stopped early."""

    frames_decoded: int = 0
    frames_sampled: int = 0
    last_time: float = 0.0
    truncated: bool = False
    fps: float = 0.0


def quiet_native_logs() -> None:
    """OpenCV's and FFmpeg's own stderr lines are not structured; our log says what happened.

    Must run before the first capture opens (FFmpeg reads its level once).
    """
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:
        pass


def resize_for_model(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The whole picture squeezed to the model's square input (as in training)."""
    h, w = size
    if frame.shape[0] == h and frame.shape[1] == w:
        return np.ascontiguousarray(frame)
    return cv2.resize(frame, (w, h), interpolation=RESIZE_INTERPOLATION)


def stream_types(path: Path) -> list[str] | None:
    """The file's stream types ('video', 'audio', ...) by ffprobe, or None if it cannot tell.

    Only for a clearer error: OpenCV says the same "cannot open" for a corrupt file and for
    a perfectly good audio-only one.
    """
    exe = shutil.which("ffprobe")
    if exe is None:
        return None
    try:
        proc = subprocess.run([exe, "-v", "error", "-show_entries", "stream=codec_type", "-of", "csv=p=0", "-i", str(path)],
                              capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    return [line.strip().strip(",") for line in proc.stdout.splitlines() if line.strip()]


def _no_video_stream(path: Path) -> UsageError | None:
    types = stream_types(path)
    if types and "video" not in types:
        return UsageError(f"{path}: has no video stream (only {', '.join(sorted(set(types)))}); pass a video file")
    return None


def open_video(path: Path) -> tuple[cv2.VideoCapture, VideoInfo]:
    """Open a local video file with clear errors for the usual mistakes."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: no such file")
    if path.is_dir():
        raise UsageError(f"{path}: is a directory, not a video file")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{path}: not readable (check its permissions)")
    if path.stat().st_size == 0:
        raise UsageError(f"{path}: empty file (0 bytes), not a video")
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not cap.isOpened():
        raise _no_video_stream(path) or UsageError(f"{path}: not a video FFmpeg can open (wrong format or corrupt header)")
    width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if width <= 0 or height <= 0:
        cap.release()
        raise _no_video_stream(path) or UsageError(f"{path}: has no video stream (audio only?)")
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    if not np.isfinite(fps) or fps <= 0 or fps > 1000:
        fps = 0.0
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    return cap, VideoInfo(path, fps, max(0, count), width, height)


def sample_video(path: Path, analysis_fps: float, size: tuple[int, int], report: DecodeReport | None = None,
                 cap_info: tuple[cv2.VideoCapture, VideoInfo] | None = None) -> Iterator[SampledFrame]:
    """Yield the sampled frames of a file, resized to `size`, with their stats.

    Stops quietly at the end; a file that stops decoding before its container said it
    would is reported in `report.truncated` with the time decoding reached, so the caller
    can warn with that time instead of failing the whole recording.
    """
    cap, info = cap_info or open_video(path)
    report = report if report is not None else DecodeReport()
    report.fps = info.fps
    sampler = Sampler(analysis_fps)
    first_ms: float | None = None
    index = -1
    try:
        while True:
            if not cap.grab():
                break
            index += 1
            ms = cap.get(cv2.CAP_PROP_POS_MSEC)
            if ms is None or not np.isfinite(ms) or ms < 0:
                ms = (index / info.fps * 1000.0) if info.fps else 0.0
            if first_ms is None:
                first_ms = ms
            t = (ms - first_ms) / 1000.0
            report.frames_decoded = index + 1
            report.last_time = t
            if not sampler.keep(t):
                continue
            ok, frame = cap.retrieve()
            if not ok or frame is None:
                continue
            if frame.ndim == 2:
                frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
            image = resize_for_model(frame, size)
            report.frames_sampled += 1
            yield SampledFrame(index, t, image, frame_stats(image))
    finally:
        cap.release()
    if info.frame_count and report.frames_decoded < info.frame_count - max(2, int(0.02 * info.frame_count)):
        report.truncated = True
    if report.frames_decoded == 0:
        raise UsageError(f"{path}: no video frame could be decoded (corrupt or not a video)")
