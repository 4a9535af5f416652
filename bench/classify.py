"""Offline `classify` speed: x-realtime on a 720p 25 fps recording analysed at 5 fps, fp32 backbone,
and where the time goes (decode, resize, backbone, sequence + decision).

The recording is the demo generator's broadcast (seed 7) at 1280x720, 25 fps, as OpenCV writes it
(MPEG-4 part 2, 'mp4v') and converted to H.264 with ffmpeg, since broadcast is H.264. For each,
in one run:
  1. decode only: `grab()` every frame (what any analysis must pay);
  2. decode + sample + resize: the engine's frame source (`sample_video`), no model;
  3. the engine (`detector.offline.analyse.analyse`, what `ad-detector classify` runs) with its own
     timings: decode_resize_s, backbone_s, sequence_decision_s, total_s;
  4. optionally the real `ad-detector classify` command end to end (model load, all files written).

    .venv/bin/python bench/classify.py               # full run (120 s recording, both codecs)
    .venv/bin/python bench/classify.py --quick       # smoke run (30 s, H.264 only)
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402
from tqdm import tqdm  # noqa: E402

from bench.common import (OUT, REPO, CpuMeter, ad_detector_cmd, add_common_args, ensure_bundle, log,  # noqa: E402
                          machine_info, now, read_manifest, table, wait_for_quiet, wait_until_idle, write_json)

TARGET_X = 4.0


def make_recording(out_dir: Path, duration: float, seed: int, size: tuple[int, int], fps: float, codecs: list[str]) -> dict[str, Path]:
    """The 720p broadcast as mp4v (OpenCV) and H.264 (ffmpeg), made once and reused."""
    from detector.demo.write import video_is_valid, write_broadcast

    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"broadcast-{size[1]}p{fps:g}-seed{seed}-{duration:g}s"
    mp4v = out_dir / f"{stem}.mp4"
    n = int(round(duration * fps))
    if not (video_is_valid(mp4v, n, size) and mp4v.with_suffix(".csv").is_file()):
        log(f"drawing the {size[0]}x{size[1]} {fps:g} fps recording ({duration:g} s, seed {seed}) -> {mp4v}")
        write_broadcast(mp4v, seed=seed, duration=duration, size=size, fps=fps)
    files = {"mp4v": mp4v}
    if "h264" in codecs:
        h264 = out_dir / f"{stem}.h264.mp4"
        if not video_is_valid(h264, n, size):
            ff = shutil.which("ffmpeg")
            if not ff:
                raise SystemExit("bench: ffmpeg not found; install it or pass --codecs mp4v")
            log(f"converting to H.264 with ffmpeg -> {h264}")
            tmp = h264.with_name(f".{h264.name}.partial.mp4")
            subprocess.run([ff, "-y", "-loglevel", "error", "-i", str(mp4v), "-c:v", "libx264", "-preset", "veryfast",
                            "-pix_fmt", "yuv420p", "-an", str(tmp)], check=True)
            tmp.replace(h264)
        files["h264"] = h264
    return {c: files[c] for c in codecs}


def probe(path: Path) -> dict[str, Any]:
    ff = shutil.which("ffprobe")
    info: dict[str, Any] = {"bytes": path.stat().st_size}
    if ff:
        out = subprocess.run([ff, "-v", "error", "-select_streams", "v:0", "-show_entries",
                              "stream=codec_name,profile,width,height,r_frame_rate,bit_rate,nb_frames", "-of", "default=nw=1",
                              str(path)], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if "=" in line:
                k, v = line.split("=", 1)
                info[k] = v
    return info


def decode_only(path: Path) -> dict[str, float]:
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    n = 0
    t0 = time.perf_counter()
    while cap.grab():
        n += 1
    s = time.perf_counter() - t0
    cap.release()
    return {"frames": n, "seconds": round(s, 3), "frames_per_s": round(n / s, 1)}


def decode_sample_resize(path: Path, analysis_fps: float, size: tuple[int, int]) -> dict[str, float]:
    from detector.sources.video import DecodeReport, sample_video

    report = DecodeReport()
    t0 = time.perf_counter()
    k = sum(1 for _ in sample_video(path, analysis_fps, size, report))
    s = time.perf_counter() - t0
    return {"frames_decoded": report.frames_decoded, "frames_sampled": k, "seconds": round(s, 3)}


def run_engine(path: Path, bundle: Any, models: Any, batch: int) -> dict[str, Any]:
    from detector.offline.analyse import analyse
    from detector.offline.scoring import score
    from detector.analysis.segments import read_labels

    result = analyse(path, bundle, models, batch_size=batch, progress=True)
    t = {k: round(v, 3) for k, v in result.timings.items()}
    truth_csv = path.parent / (path.name.split(".")[0] + ".csv")
    figures = None
    if truth_csv.is_file():
        truth = read_labels(truth_csv, set(bundle.ad_classes), ad_label=bundle.ad_classes[0])
        s = score(result.segments, truth, result.duration)
        figures = {k: s.get(k) for k in ("frame_accuracy", "ad_f1", "boundary_recall_1s", "boundary_error_median_s",
                                          "ad_breaks_true", "ad_breaks_detected")}
    return {"timings": t, "duration_s": round(result.duration, 3), "frames_decoded": result.total_frames,
            "frames_analysed": result.report.frames_sampled, "windows": int(len(result.times)),
            "segments": len(result.segments), "x_realtime": round(result.duration / t["total_s"], 2), "score_vs_truth": figures}


def run_cli(path: Path, model_dir: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-classify-") as tmp:
        cmd = ad_detector_cmd() + ["classify", str(path), "-m", str(model_dir), "-o", tmp, "--no-progress"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        s = time.perf_counter() - t0
        files = sorted(p.name for p in Path(tmp).iterdir())
    if proc.returncode != 0:
        log(f"classify failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    return {"command": " ".join(cmd[:5]) + " -o TMP --no-progress", "exit": proc.returncode,
            "wall_s": round(s, 2), "files": files}


def engine_overlaps_decoding() -> bool:
    """Whether this version of the engine decodes on a thread beside the backbone (prefetch)."""
    import inspect

    from detector.offline import analyse as offline
    return "prefetch(" in inspect.getsource(offline.analyse)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=OUT / "bundle",
                   help="trained bundle (default bench/out/bundle, built from a small demo set in bench/out/demo when missing)")
    p.add_argument("--data", type=Path, default=OUT / "demo", help="demo set used to build the default bundle")
    p.add_argument("--duration", type=float, default=120.0, help="recording length in seconds (default 120)")
    p.add_argument("--seed", type=int, default=7, help="broadcast seed (default 7)")
    p.add_argument("--size", default="1280x720", help="recording size (default 1280x720)")
    p.add_argument("--fps", type=float, default=25.0, help="recording frame rate (default 25)")
    p.add_argument("--codecs", default="h264,mp4v", help="comma list of h264, mp4v (default both)")
    p.add_argument("--batch", type=int, default=16, help="backbone batch (default 16, as classify)")
    p.add_argument("--no-cli", action="store_true", help="skip timing the real `ad-detector classify` command")
    p.add_argument("--max-others", type=float, default=0.5,
                   help="before each step wait until other processes use fewer cores than this (default 0.5; 0: off)")
    p.add_argument("--gate-budget", type=float, default=600.0, help="total seconds those waits may take (default 600)")
    add_common_args(p, "classify")
    args = p.parse_args(argv)
    if args.quick:
        args.duration = min(args.duration, 30.0)
        args.codecs = "h264"
        args.no_cli = True
        args.max_wait = min(args.max_wait, 0.0)
        args.gate_budget = min(args.gate_budget, 5.0)
    w, h = (int(x) for x in args.size.lower().split("x"))
    codecs = [c.strip() for c in args.codecs.split(",") if c.strip()]

    if not (read_manifest(args.model) or {}).get("sequence"):
        if args.model.resolve() != (OUT / "bundle").resolve():
            raise SystemExit(f"bench: {args.model} is not a trained bundle (no sequence model in model.json)")
        from detector.demo.data import generate_demo_set

        log(f"building a demo bundle: small demo set in {args.data}, export + train into {args.model}")
        generate_demo_set(args.data, seed=0, train_clips=4, test_clips=2, clip_seconds=8.0, train_recordings=1,
                          recording_seconds=90.0, broadcast_seconds=120.0)
        ensure_bundle(args.model, args.data / "DATA")
    files = make_recording(OUT / "classify", args.duration, args.seed, (w, h), args.fps, codecs)

    from detector.model.bundle import load_bundle
    from detector.model.models import Models

    bundle = load_bundle(args.model)
    models = Models(bundle, ["CPUExecutionProvider"])   # as classify: ORT default threads
    models.warm_up()
    threads = models.backbone.session.get_session_options().intra_op_num_threads
    log(f"bundle {args.model}: analysis {bundle.analysis_fps:g} fps, window {bundle.window_frames} frames; "
        f"ORT intra-op threads {threads or 'default'}")

    quiet = wait_for_quiet(args.max_load, args.max_wait)
    started = now()
    runs: dict[str, Any] = {}
    gate = {"budget_s": args.gate_budget, "waited_s": 0.0}

    def step(fn, *a):  # noqa: ANN001, ANN202 - wait for other processes to calm down, then measure with a CPU meter
        if args.max_others > 0 and gate["budget_s"] - gate["waited_s"] > 0:
            waited, _ = wait_until_idle(args.max_others, min(60.0, gate["budget_s"] - gate["waited_s"]), sample_s=1.0)
            gate["waited_s"] += waited
        meter = CpuMeter()
        out = fn(*a)
        out["cpu"] = meter.read()
        return out

    steps = len(files) * (3 + (0 if args.no_cli else 1))
    with tqdm(total=steps, desc="classify bench", unit="step", file=sys.stderr) as bar:
        for codec, path in files.items():
            r: dict[str, Any] = {"file": str(path), "probe": probe(path), "load_before": machine_info()["loadavg"]}
            bar.set_postfix_str(f"{codec}: decode only")
            r["decode_only"] = step(decode_only, path)
            bar.update(1)
            bar.set_postfix_str(f"{codec}: decode+sample+resize")
            r["decode_sample_resize"] = step(decode_sample_resize, path, bundle.analysis_fps, bundle.input_size)
            bar.update(1)
            bar.set_postfix_str(f"{codec}: engine")
            r["engine"] = step(run_engine, path, bundle, models, args.batch)
            bar.update(1)
            if not args.no_cli:
                bar.set_postfix_str(f"{codec}: ad-detector classify")
                r["cli"] = step(run_cli, path, args.model)
                bar.update(1)
            r["load_after"] = machine_info()["loadavg"]
            runs[codec] = r
    load_after = machine_info()["loadavg"]

    overlapped = engine_overlaps_decoding()
    rows = []
    for codec, r in runs.items():
        e = r["engine"]
        t = e["timings"]
        total = t["total_s"]
        dec_alone = r["decode_only"]["seconds"]
        res_alone = max(0.0, r["decode_sample_resize"]["seconds"] - dec_alone)
        other = total - t["decode_resize_s"] - t["backbone_s"] - t["sequence_decision_s"]
        e["derived"] = {"decode_alone_s": round(dec_alone, 3), "sample_resize_stats_alone_s": round(res_alone, 3),
                        "engine_decoding_overlapped": overlapped, "unaccounted_s": round(other, 3),
                        "backbone_frames_per_s": round(e["frames_analysed"] / t["backbone_s"], 1) if t["backbone_s"] else None}
        if not overlapped:   # serial engine: split its decode_resize_s in the ratio the separate passes measured
            share = min(1.0, dec_alone / (dec_alone + res_alone)) if dec_alone + res_alone else 0.0
            e["derived"]["engine_decode_s"] = round(t["decode_resize_s"] * share, 3)
            e["derived"]["engine_sample_resize_s"] = round(t["decode_resize_s"] * (1 - share), 3)
        cli = r.get("cli")
        rows.append([codec, f"{e['duration_s']:.0f}", f"{total:.1f}", f"{e['x_realtime']:.2f}x",
                     f"{100 * t['backbone_s'] / total:.0f}%", f"{100 * t['decode_resize_s'] / total:.0f}%",
                     f"{100 * t['sequence_decision_s'] / total:.1f}%",
                     f"{dec_alone:.1f} ({100 * dec_alone / total:.0f}%)", f"{res_alone:.1f} ({100 * res_alone / total:.0f}%)",
                     e["derived"]["backbone_frames_per_s"],
                     f"{e['duration_s'] / cli['wall_s']:.2f}x" if cli and cli["exit"] == 0 else "-",
                     "PASS" if e["x_realtime"] >= TARGET_X else "MISS", f"{e['cpu']['own_cores']:.2f}", f"{e['cpu']['others_cores']:.2f}"])
    wait_name = "engine: waiting for frames" if overlapped else "engine: decode+resize"
    headers = ["codec", "video s", "engine s", "x-realtime", "engine: backbone", wait_name, "engine: seq+decision",
               "decode alone s", "sample+resize alone s", "backbone fr/s", "CLI x-realtime", f">= {TARGET_X:g}x",
               "cores used", "others' cores"]
    text = table(headers, rows)
    machine = machine_info()
    print(f"\nclassify speed: {w}x{h} {args.fps:g} fps recording, {args.duration:g} s, analysed at {bundle.analysis_fps:g} fps "
          f"(fp32 backbone, batch {args.batch}), {machine['cores_usable']} cores ({machine['cpu_model']})")
    print(f"load average (1/5/15 min) before: {quiet['load_at_start']}, after: {load_after}")
    print(text)
    print("engine: shares of the engine's own timings (detector.offline.analyse.analyse); "
          + ("decoding runs on a prefetch thread, so its column is the time the backbone waited for frames. "
             if overlapped else "decoding and the backbone take turns. ")
          + "decode alone / sample+resize alone: separate passes over the same file (grab() of every frame; "
            "sample_video minus that), in seconds and as % of the engine's total.")
    print(f"'cores used' / 'others\' cores': CPU the engine run / all other processes used meanwhile; waited "
          f"{gate['waited_s']:.0f} s in total for other processes to use < {args.max_others} cores before the steps")
    for codec, r in runs.items():
        s = r["engine"]["score_vs_truth"]
        if s:
            print(f"{codec}: sanity vs truth: frame accuracy {s['frame_accuracy']}, ad F1 {s['ad_f1']}, "
                  f"breaks found {s['ad_breaks_detected']}/{s['ad_breaks_true']}")

    write_json(args.out, {
        "benchmark": "classify", "date": started, "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "quick": args.quick, "model": str(args.model), "bundle": {"analysis_fps": bundle.analysis_fps, "window_frames": bundle.window_frames,
                                                                   "backbone_weights": bundle.manifest["backbone"].get("weights"),
                                                                   "ort_intra_op_threads": threads or "default"},
        "engine_decoding_overlapped": overlapped, "recording": {"duration_s": args.duration, "size": [w, h], "fps": args.fps, "seed": args.seed},
        "gate": {**gate, "max_others_cores": args.max_others}, "machine": machine, "load": {"wait": quiet, "before": quiet["load_at_start"], "after": load_after},
        "runs": runs, "table": text, "target_x_realtime": TARGET_X})
    return 0


if __name__ == "__main__":
    sys.exit(main())
