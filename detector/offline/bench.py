"""`ad-detector bench`: how fast this machine runs the backbone, and how many channels it carries.

For operators sizing a machine: every engine and precision the machine and the bundle
offer (ONNX Runtime fp32 / int8, OpenVINO fp32 / bf16 / int8, CUDA / TensorRT where a GPU
starts) is timed side by side on the bundle's own backbone, in interleaved rounds so that
a change of load on the machine hits every path alike; the ratios are the figures to
trust. Each path's features are compared with the ONNX Runtime fp32 reference (cosine),
so a fast path that changes what the model sees shows up here.

The channel estimate adds what one channel costs besides the backbone: decoding every
frame of a recording and converting the sampled ones (measured on `--video`, or on a
generated 720p 25 fps clip), and keeps 15% of the machine in reserve. It is an estimate;
`bench/live.py` measures the real daemon on real RTSP channels.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detector.model.bundle import load_bundle
from detector.errors import UsageError

log = logging.getLogger(__name__)

HEADROOM = 0.85


@dataclass
class Path_:
    engine: str
    precision: str
    models: Any
    frames: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    rounds: list[float] = field(default_factory=list)
    cosine_min: float | None = None

    @property
    def name(self) -> str:
        return f"{self.engine} {self.precision}"

    @property
    def fps(self) -> float:
        return float(np.median(self.rounds)) if self.rounds else 0.0

    @property
    def core_ms_per_frame(self) -> float:
        return 1000.0 * self.cpu_seconds / self.frames if self.frames else 0.0


def candidate_paths(variants: set[str], openvino_caps: list[str] | None, gpu: bool) -> list[tuple[str, str]]:
    """(engine, precision) pairs worth timing on this machine with this bundle (pure)."""
    caps = {c.upper() for c in openvino_caps or ()}
    out = [("onnxruntime", "fp32")]
    if gpu:
        out.append(("onnxruntime-gpu", "fp32"))
    if "int8" in variants:
        out.append(("onnxruntime", "int8"))
    if openvino_caps is not None:
        out.append(("openvino", "fp32"))
        if "BF16" in caps:
            out.append(("openvino", "bf16"))
        if "int8" in variants and "INT8" in caps:
            out.append(("openvino", "int8"))
    return out


def channels_carried(cores: int, decode_core_s: float, analysis_fps: float, core_s_per_frame: float,
                     headroom: float = HEADROOM) -> int:
    """Channels a machine carries: each costs decode plus analysis_fps backbone frames per second (pure)."""
    per_channel = decode_core_s + analysis_fps * core_s_per_frame
    return int(cores * headroom / per_channel) if per_channel > 0 else 0


def decode_cost(video: Path, analysis_fps: float, size: tuple[int, int], seconds: float = 10.0) -> dict[str, float]:
    """CPU seconds per second of media for decoding a channel and converting its sampled frames."""
    from detector.sources.video import sample_video

    t_cpu, t0 = time.process_time(), time.perf_counter()
    media = 0.0
    frames = 0
    for frame in sample_video(video, analysis_fps, size):
        media = frame.media_time
        frames += 1
        if media >= seconds:
            break
    cpu, wall = time.process_time() - t_cpu, time.perf_counter() - t0
    media = max(media, 1e-6)
    return {"media_seconds": round(media, 2), "cpu_seconds_per_media_second": round(cpu / media, 4),
            "x_realtime": round(media / max(wall, 1e-9), 1), "sampled_frames": frames}


def make_test_video(path: Path, seconds: float = 12.0) -> Path:
    """A 720p 25 fps H.264 clip (ffmpeg's test pattern), or mp4v from OpenCV without ffmpeg."""
    import shutil
    import subprocess

    if shutil.which("ffmpeg"):
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate=25:duration={seconds}",
                        "-c:v", "libx264", "-preset", "veryfast", "-g", "50", "-pix_fmt", "yuv420p", str(path)],
                       check=True, timeout=300)
        return path
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (1280, 720))
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8), (0, 0), 5)
    for i in range(int(seconds * 25)):
        writer.write(np.roll(base, i * 8, axis=1))
    writer.release()
    return path


def bench_command(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from detector.model.backends.onnxruntime import nvidia_driver_present
    from detector.model.backends.openvino import openvino_capabilities
    from detector.model.models import Models
    from detector.model.plan import GPU_PROVIDERS

    if args.seconds <= 0 or args.rounds < 1 or args.batch < 1 or args.analysis_fps <= 0:
        raise UsageError("--seconds, --rounds, --batch and --analysis-fps must be positive")
    bundle = load_bundle(Path(args.model), require_sequence=False)
    import onnxruntime as ort

    caps = openvino_capabilities()
    gpu = nvidia_driver_present() and any(p in ort.get_available_providers() for p in GPU_PROVIDERS)
    threads = args.threads or None
    paths: list[Path_] = []
    for engine, precision in candidate_paths(set(bundle.backbone_variants), caps, gpu):
        providers = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"] if engine == "onnxruntime-gpu" else ["CPUExecutionProvider"]
        try:
            models = Models(bundle, providers, threads, engine=engine.replace("-gpu", ""), precision=precision)
        except Exception as exc:  # noqa: BLE001 - one path that cannot start is reported, the others still run
            log.warning("bench path skipped engine=%s precision=%s reason=%r", engine, precision, str(exc).splitlines()[0][:200])
            continue
        if engine == "onnxruntime-gpu":
            engine = "onnxruntime " + "/".join(p.replace("ExecutionProvider", "") for p in models.providers_in_use)
        paths.append(Path_(engine, precision, models))

    from detector.demo.data import write_clip
    from detector.sources.video import sample_video

    with tempfile.TemporaryDirectory(prefix="ad-detector-bench-") as tmp:
        frames: list[np.ndarray] = []
        for i, label in enumerate(("football", "commercial")):
            clip = Path(tmp) / f"{label}.mp4"
            write_clip(clip, label, seconds=4.0, seed=i)
            frames += [f.image for f in sample_video(clip, 5.0, bundle.input_size)]
        pool = np.stack((frames * (1 + args.batch // max(1, len(frames))))[: max(args.batch, 32)])
        video = Path(args.video) if args.video else make_test_video(Path(tmp) / "720p25.mp4")
        if not video.is_file():
            raise UsageError(f"{video}: --video not found")
        decode = decode_cost(video, args.analysis_fps, bundle.input_size)

        batch = np.ascontiguousarray(pool[: args.batch])
        ref = paths[0].models.features(np.ascontiguousarray(pool[:32]))
        for p in paths:
            got = p.models.features(np.ascontiguousarray(pool[:32]))
            cos = (ref * got).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1) + 1e-12)
            p.cosine_min = float(cos.min())
            p.models.features(batch)                        # warm-up at the measured batch size
        per_round = args.seconds / args.rounds
        with tqdm(total=len(paths) * args.rounds, desc="bench", unit="run", disable=args.no_progress) as bar:
            for _ in range(args.rounds):
                for p in paths:
                    n, c0, t0 = 0, time.process_time(), time.perf_counter()
                    while time.perf_counter() - t0 < per_round or n < 2 * args.batch:
                        p.models.features(batch)
                        n += args.batch
                    wall = time.perf_counter() - t0
                    p.frames += n
                    p.seconds += wall
                    p.cpu_seconds += time.process_time() - c0
                    p.rounds.append(n / wall)
                    bar.update(1)

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    base = paths[0].fps or 1.0
    rows = []
    for p in paths:
        core_s = p.cpu_seconds / p.frames if p.frames else 0.0
        rows.append({"engine": p.engine, "precision": p.precision, "frames_per_s": round(p.fps, 1),
                     "vs_onnxruntime_fp32": round(p.fps / base, 2), "features_cosine_min_vs_fp32": round(p.cosine_min or 0.0, 5),
                     "core_ms_per_frame": round(p.core_ms_per_frame, 2),
                     "channels": channels_carried(cores, decode["cpu_seconds_per_media_second"], args.analysis_fps, core_s),
                     "rounds_frames_per_s": [round(r, 1) for r in p.rounds]})
    header = ["engine", "precision", "frames/s", "vs ORT fp32", "cosine vs fp32 (min)", "core-ms/frame", f"channels at {args.analysis_fps:g} fps"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        lines.append(f"| {r['engine']} | {r['precision']} | {r['frames_per_s']} | {r['vs_onnxruntime_fp32']}x | "
                     f"{r['features_cosine_min_vs_fp32']} | {r['core_ms_per_frame']} | {r['channels']} |")
    print(f"backbone of {bundle.root} at batch {args.batch}, {cores} cores, {args.rounds} interleaved rounds of {per_round:.1f} s; "
          f"decode of {video.name}: {decode['cpu_seconds_per_media_second']:.3f} core-s per media second")
    print("\n".join(lines))
    best = max(rows, key=lambda r: r["frames_per_s"])
    print(f"fastest: {best['engine']} {best['precision']} at {best['frames_per_s']} frames/s; estimated channels at "
          f"{args.analysis_fps:g} fps analysis with {int((1 - HEADROOM) * 100)}% headroom: {best['channels']} "
          "(an estimate: bench/live.py measures the real daemon)")
    if args.json:
        Path(args.json).write_text(json.dumps({"bundle": str(bundle.root), "cores": cores, "batch": args.batch,
                                               "analysis_fps": args.analysis_fps, "decode": decode, "openvino_capabilities": caps,
                                               "paths": rows}, indent=2) + "\n")
    return 0
