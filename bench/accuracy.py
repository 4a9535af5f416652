"""Accuracy of the whole detector on a broadcast it has never seen.

Trains on the demo training set (the generator's defaults, seed 0: clips plus labelled
recordings), then scores a demo broadcast drawn with a DIFFERENT seed (4242, 600 s) with the
real command, `ad-detector evaluate VIDEO --truth CSV -m DIR`, and checks the targets:
frame accuracy >= 0.97, ad F1 >= 0.97, boundary recall within 1 s >= 0.90, median boundary
error < 0.5 s.

    .venv/bin/python bench/accuracy.py            # full run (builds data and bundle when missing)
    .venv/bin/python bench/accuracy.py --quick    # smoke run: small set, 120 s broadcast
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (OUT, add_common_args, ensure_bundle, log, machine_info, now, read_manifest,  # noqa: E402
                          run_cli, table, wait_for_quiet, write_json)

# (key in evaluate's JSON, label, comparison, target)
TARGETS = [("frame_accuracy", "frame accuracy (0.1 s grid)", ">=", 0.97),
           ("ad_f1", "ad F1 (by time)", ">=", 0.97),
           ("boundary_recall_1s", "boundary recall within 1 s", ">=", 0.90),
           ("boundary_error_median_s", "median boundary error (s)", "<", 0.5)]
SHOWN = [("ad_precision", "ad precision"), ("ad_recall", "ad recall"), ("boundary_recall_2s", "boundary recall within 2 s")]


def fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def verdict(value: Any, op: str, target: float) -> str:
    if value is None:
        return "MISS (none)"
    ok = value >= target if op == ">=" else value < target
    return "PASS" if ok else "MISS"


def make_broadcast(path: Path, seed: int, duration: float) -> Path:
    from detector.demo.write import video_is_valid, write_broadcast

    size, fps = (640, 360), 25.0   # the demo set's size and rate
    if not (video_is_valid(path, int(round(duration * fps)), size) and path.with_suffix(".csv").is_file()):
        log(f"drawing the evaluation broadcast (seed {seed}, {duration:g} s) -> {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        write_broadcast(path, seed=seed, duration=duration, size=size, fps=fps)
    return path


def explain(video: Path, truth: Path, model: Path) -> dict[str, Any]:
    """Predicted ad segments (from the real `classify`) beside the true ad breaks."""
    from detector.analysis.segments import read_labels

    out_dir = OUT / "accuracy" / f"classify-{video.stem}"
    run_cli(["classify", video, "-m", model, "-o", out_dir, "--no-progress"], capture=True)
    predicted = json.loads((out_dir / f"{video.stem}.segments.json").read_text(encoding="utf-8"))
    ads = [s for s in predicted if s["is_ad"]]
    ad_classes = (read_manifest(model) or {}).get("ad_classes") or ["commercial"]
    true_ads = [s for s in read_labels(truth, set(ad_classes), ad_label=ad_classes[0]) if s.is_ad]
    print(f"\npredicted ad segments ({len(ads)}) beside the true ad breaks ({len(true_ads)}); files in {out_dir}:")
    rows = []
    for seg in ads:
        hit = [t for t in true_ads if t.start < seg["end"] and seg["start"] < t.end]
        rows.append([f"{seg['start']:.2f}", f"{seg['end']:.2f}", f"{seg['end'] - seg['start']:.2f}", seg.get("confidence"),
                     ", ".join(f"{t.start:.2f}-{t.end:.2f}" for t in hit) or "none (false alarm)"])
    print(table(["start", "end", "length", "confidence", "true break(s) overlapped"], rows))
    missed = [t for t in true_ads if not any(t.start < s["end"] and s["start"] < t.end for s in ads)]
    for t in missed:
        print(f"missed break: {t.start:.2f}-{t.end:.2f}")
    return {"out_dir": str(out_dir), "predicted_ads": ads, "true_ads": [[t.start, t.end] for t in true_ads],
            "missed": [[t.start, t.end] for t in missed]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=None, help="demo set to train on (default bench/out/demo-full)")
    p.add_argument("--model", type=Path, default=None,
                   help="bundle (default bench/out/bundle-full; exported with --weights none and trained when missing)")
    p.add_argument("--train-seed", type=int, default=0, help="seed of the training demo set (default 0)")
    p.add_argument("--seed", type=int, default=4242, help="seed of the evaluation broadcast (default 4242)")
    p.add_argument("--duration", type=float, default=600.0, help="evaluation broadcast length in seconds (default 600)")
    p.add_argument("--video", type=Path, help="evaluate this video instead of drawing one (needs --truth)")
    p.add_argument("--truth", type=Path, help="ground truth for --video (CSV start,end,label or EDL)")
    p.add_argument("--explain", action="store_true",
                   help="also run `ad-detector classify` on the video (into bench/out/accuracy/classify-NAME/) and list "
                        "predicted ad segments beside the true ad breaks (doubles the run time)")
    add_common_args(p, "accuracy")
    args = p.parse_args(argv)
    small = {}
    if args.quick:
        args.duration = min(args.duration, 120.0)
        if args.model is None and not (read_manifest(OUT / "bundle-full") or {}).get("sequence"):
            args.data = args.data or OUT / "demo-quick"     # no full bundle yet: build a small one
            args.model = OUT / "bundle-quick"
            small = dict(train_clips=4, test_clips=2, clip_seconds=8.0, train_recordings=1, recording_seconds=90.0,
                         broadcast_seconds=120.0)
        args.max_wait = min(args.max_wait, 0.0)
    args.data = args.data or OUT / "demo-full"
    args.model = args.model or OUT / "bundle-full"

    from detector.demo.data import generate_demo_set

    t0 = time.perf_counter()
    built = not (read_manifest(args.model) or {}).get("sequence")
    if built:
        log(f"demo training set in {args.data} (seed {args.train_seed})")
        demo = generate_demo_set(args.data, seed=args.train_seed, **small)
        ensure_bundle(args.model, demo.data_dir)
    prep_s = time.perf_counter() - t0
    manifest = read_manifest(args.model) or {}
    if args.video:
        if not args.truth:
            raise SystemExit("bench: --video needs --truth")
        video, truth = args.video, args.truth
    else:
        video = make_broadcast(OUT / "accuracy" / f"broadcast-seed{args.seed}-{args.duration:g}s.mp4", args.seed, args.duration)
        truth = video.with_suffix(".csv")

    quiet = wait_for_quiet(args.max_load, args.max_wait)   # evaluate's speed figure is the only thing load changes
    started = now()
    t1 = time.perf_counter()
    proc = run_cli(["evaluate", video, "--truth", truth, "-m", args.model], capture=True)
    eval_s = time.perf_counter() - t1
    figures = json.loads(proc.stdout)
    load_after = machine_info()["loadavg"]

    rows = []
    checks = {}
    for key, label, op, target in TARGETS:
        value = figures.get(key)
        v = verdict(value, op, target)
        checks[key] = {"value": value, "target": f"{op} {target}", "verdict": v}
        rows.append([label, fmt(value), f"{op} {target}", v])
    for key, label in SHOWN:
        rows.append([label, fmt(figures.get(key)), "", ""])
    rows.append(["ad breaks detected / true", f"{figures.get('ad_breaks_detected')}/{figures.get('ad_breaks_true')}", "", ""])
    rows.append(["boundaries found / true", f"{figures.get('boundaries_found')}/{figures.get('boundaries_true')}", "", ""])
    rows.append(["speed (x real time)", figures.get("speed_x_realtime"), "", ""])
    text = table(["figure", "value", "target", "verdict"], rows)
    held_out = manifest.get("evaluation") or {}
    machine = machine_info()
    print(f"\naccuracy: trained on {args.data} (seed {args.train_seed}), bundle {args.model}, "
          f"backbone weights '{(manifest.get('backbone') or {}).get('weights')}'")
    print(f"evaluated on {video} (seed {args.seed}, {figures.get('duration_s')} s) against {truth}")
    print(text)
    errors = [b for b in figures.get("boundaries", [])]
    if errors:
        print("boundaries (kind, true time s, error s):")
        for b in errors:
            err = "missed" if b["error_s"] is None else f"{b['error_s']:+.2f}"
            print(f"  {b['kind']:<10} {b['true_s']:>8.2f}  {err}")
    if held_out:
        acc = held_out.get("accuracy")
        lat = (held_out.get("switch_latency") or {}).get("median_s")
        print(f"training's held-out test split: window accuracy {acc}, median switch latency {lat} s")
    explained = explain(video, truth, args.model) if args.explain else None
    passed = sum(c["verdict"] == "PASS" for c in checks.values())
    print(f"{passed}/{len(checks)} targets met")

    write_json(args.out, {
        "benchmark": "accuracy", "date": started, "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "quick": args.quick, "data": str(args.data), "model": str(args.model), "built_bundle_this_run": built,
        "prep_s": round(prep_s, 1), "evaluate_s": round(eval_s, 1),
        "evaluate_command": f"ad-detector evaluate {video} --truth {truth} -m {args.model}",
        "video": str(video), "truth": str(truth), "seed": args.seed, "duration_s": args.duration,
        "figures": figures, "checks": checks, "explain": explained, "targets_met": passed, "held_out_evaluation": held_out,
        "machine": machine, "load": {"wait": quiet, "before": quiet["load_at_start"], "after": load_after}, "table": text})
    return 0


if __name__ == "__main__":
    sys.exit(main())
