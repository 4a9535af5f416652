"""Frames out of a recording, sampled, through the same libav source the live capture reads.

Offline `classify`/`evaluate`, `train` and the int8 calibration all decode here, with the
live capture's parts: the libav file source (detector.sources.file), the same timeline
(detector.analysis.timeline: PTS wraps undone, resets and leaps kept monotonic), the same
sampler and the same one-call scale to the model's input. So a bundle sees the same pictures
in training as in service: no train/serve skew from two decoders or two resize filters.

Media time comes from the container's timestamps, not frame counts, so variable frame rate
works; it is made relative to the first frame, as players show it. Audio is decoded beside
the pictures and each sampled frame carries the audio since the previous one.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detector.analysis.audio import AudioBuffer
from detector.analysis.framestats import FrameStats, frame_stats
from detector.analysis.loudness import LoudnessMeter
from detector.analysis.sampler import Sampler
from detector.analysis.timeline import ChannelTimeline
from detector.errors import UsageError
from detector.sources.base import SourceOptions
from detector.sources.file import FileSource

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".avi", ".mov", ".ts", ".m2ts", ".mts", ".mpg", ".mpeg", ".webm", ".flv", ".wmv",
                            ".m4v", ".3gp"})
"""File name endings taken as recordings when a folder is scanned (training data, calibration)."""

AUDIO_LAG_SECONDS = 2.0     # how far audio may trail its pictures in a file's interleaving


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    fps: float
    frame_count: int      # as the container claims; may be 0 or wrong for streams
    width: int
    height: int
    has_audio: bool = False

    @property
    def duration(self) -> float:
        return self.frame_count / self.fps if self.fps > 0 else 0.0


@dataclass
class SampledFrame:
    index: int            # decoded frame number, from 0
    media_time: float     # seconds from the first frame
    image: np.ndarray     # uint8 BGR [H, W, 3] at the model's input size
    stats: FrameStats
    pts: int | None = None            # the file's 90 kHz PTS (mod 2**33)
    audio: np.ndarray | None = None   # mono float32 16 kHz since the previous sampled frame; None without audio


@dataclass
class DecodeReport:
    """What decoding a file found: how far it got and whether it stopped early."""

    frames_decoded: int = 0
    frames_sampled: int = 0
    last_time: float = 0.0
    truncated: bool = False
    fps: float = 0.0
    decode_errors: int = 0
    has_audio: bool = False
    pts_wraps: int = 0
    timestamp_breaks: int = 0
    first_pts: int | None = None


def quiet_native_logs() -> None:
    """libav's and OpenCV's own stderr lines are not structured; our log says what happened
    (decode errors are counted and reported by the capture). Run before the first open."""
    try:
        import av.logging
        av.logging.set_level(None)      # no libav log callback: silent and cheapest
    except Exception:
        pass
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")


def _check_path(path: Path) -> None:
    if not path.exists():
        raise UsageError(f"{path}: no such file")
    if path.is_dir():
        raise UsageError(f"{path}: is a directory, not a video file")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{path}: not readable (check its permissions)")
    if path.stat().st_size == 0:
        raise UsageError(f"{path}: empty file (0 bytes), not a video")


def open_video(path: Path) -> VideoInfo:
    """What a recording holds, with clear errors for the usual mistakes (read before any model loads)."""
    import av
    path = Path(path)
    _check_path(path)
    try:
        with av.open(str(path), mode="r", timeout=(30.0, 30.0)) as c:
            video = [s for s in c.streams if s.type == "video"]
            kinds = sorted({s.type for s in c.streams})
            if not video:
                only = f" (only {', '.join(kinds)})" if kinds else ""
                raise UsageError(f"{path}: has no video stream{only}; pass a video file")
            v = video[0]
            rate = v.average_rate or v.guessed_rate or v.base_rate
            fps = float(rate) if rate and 0 < float(rate) < 1000 else 0.0
            count = int(v.frames or 0)
            if not count and fps and v.duration is not None and v.time_base is not None:
                count = int(float(v.duration * v.time_base) * fps)
            if not count and fps and c.duration:
                count = int(c.duration / 1e6 * fps)
            width, height = int(v.codec_context.width or 0), int(v.codec_context.height or 0)
            has_audio = any(s.type == "audio" for s in c.streams)
    except UsageError:
        raise
    except Exception as exc:
        raise UsageError(f"{path}: not a video FFmpeg can open (wrong format or corrupt header: {str(exc).splitlines()[0][:120]})") from None
    if width <= 0 or height <= 0:
        raise UsageError(f"{path}: its video stream has no picture size (corrupt header?)")
    return VideoInfo(path, fps, max(0, count), width, height, has_audio)


def file_source(path: Path, analysis_fps: float = 0.0, threads: int = 0, loudness: bool = False) -> FileSource:
    """The live capture's file source, tuned for speed: libav picks the decoder threads."""
    return FileSource(str(path), SourceOptions(open_timeout=30.0, read_timeout=30.0, decode_threads=threads,
                                               analysis_fps=analysis_fps, skip_nonref=analysis_fps > 0,
                                               measure_loudness=loudness))


def sample_video(path: Path, analysis_fps: float, size: tuple[int, int], report: DecodeReport | None = None,
                 info: VideoInfo | None = None, loudness: LoudnessMeter | None = None) -> Iterator[SampledFrame]:
    """Yield the sampled frames of a file, scaled to `size`, with their stats, PTS and audio.

    Stops quietly at the end; a file that stops decoding before its container said it
    would is reported in `report.truncated` with the time decoding reached, so the caller
    can warn with that time instead of failing the whole recording. With `loudness`, the
    file's own audio channels are metered into it on the same timeline (the loudness report).
    """
    path = Path(path)
    info = info or open_video(path)
    report = report if report is not None else DecodeReport()
    report.fps = info.fps
    source = file_source(path, analysis_fps, loudness=loudness is not None)
    if not source.open():
        raise UsageError(f"{path}: not a video FFmpeg can open ({source.open_error or 'unknown error'})")
    report.has_audio = bool(source.has_audio)
    sampler = Sampler(analysis_fps)
    timeline = ChannelTimeline()
    clock = timeline.connection(info.fps or 25.0)
    audio = AudioBuffer(seconds=30.0) if source.has_audio else None
    pending: deque[SampledFrame] = deque()      # sampled, waiting for their audio to be demuxed
    audio_from: float | None = None
    index = -1

    def release(upto: float | None) -> Iterator[SampledFrame]:
        nonlocal audio_from
        while pending and (upto is None or pending[0].media_time <= upto):
            frame = pending.popleft()
            if audio is not None:
                start = audio_from if audio_from is not None else frame.media_time - 1.0 / max(analysis_fps, 1e-6)
                frame.audio = audio.read(start, frame.media_time)
                audio_from = frame.media_time
            yield frame

    try:
        while source.grab():
            index += 1
            position = source.position()
            pts = source.pts()
            placed = clock.place(position if position is not None else index / (info.fps or 25.0), 0.0, pts)
            if placed.jump:
                report.timestamp_breaks += 1
            if report.first_pts is None:
                report.first_pts = pts
            for chunk in source.take_audio():
                t = clock.to_channel(chunk.source_seconds)
                if t is not None and audio is not None:
                    audio.write(t, chunk.samples)
            for loud in source.take_loudness():
                t = clock.to_channel(loud.source_seconds)
                if t is not None and loudness is not None:
                    loudness.write(t, loud.samples, loud.rate, loud.weights)
            source.take_data()
            source.take_faults()
            t = placed.t
            # frame numbers count every frame of the file, also the non-reference ones not decoded
            number = int(round(t * info.fps)) if info.fps and source.skipping_nonref else index
            report.frames_decoded = max(report.frames_decoded, number + 1)
            report.last_time = t
            if source.skipping_nonref and index == 50 and t > 0 and index / t < 2 * analysis_fps:
                source.stop_skipping()      # too few reference frames: decode them all (as live does)
            if sampler.keep(t):
                image = source.retrieve(size)
                if image is not None:
                    report.frames_sampled += 1
                    pending.append(SampledFrame(number, t, image, frame_stats(image), pts))
            yield from release(None if audio is None else t - AUDIO_LAG_SECONDS)
        yield from release(None)
    finally:
        report.decode_errors = source.decode_errors
        report.pts_wraps = source.pts_wraps
        source.close()
    if info.frame_count and report.frames_decoded < info.frame_count - max(2, int(0.02 * info.frame_count)):
        report.truncated = True
    if report.frames_decoded == 0:
        raise UsageError(f"{path}: no video frame could be decoded (corrupt or not a video)")


def decode_frames(path: Path) -> Iterator[tuple[float, np.ndarray]]:
    """Every frame at full size with its media time (the annotated video), on the same timeline."""
    source = file_source(path)
    if not source.open():
        raise UsageError(f"{path}: not a video FFmpeg can open ({source.open_error or 'unknown error'})")
    clock = ChannelTimeline().connection(source.fps or 25.0)
    index = -1
    try:
        while source.grab():
            index += 1
            position = source.position()
            placed = clock.place(position if position is not None else index / (source.fps or 25.0), 0.0, source.pts())
            source.take_audio()
            source.take_data()
            frame = source.retrieve()
            if frame is not None:
                yield placed.t, frame
    finally:
        source.close()
