"""Each backbone path on a whole broadcast: speed of `classify`, and how far its decisions
and `evaluate` figures are from the fp32 reference (the int8 guard of issue 6, measured).

For every engine/precision the machine and bundle offer (ONNX Runtime fp32 = reference,
ONNX Runtime int8, OpenVINO fp32 / bf16 / int8) the same broadcast goes through the same
engine code as `ad-detector classify` (detector.offline.analyse.analyse), one path after another:

  - x real time of the whole classification (decode + backbone + LSTM + decision);
  - decided-label agreement with fp32 per window (the label of the segment the decision
    stage put each window in), and raw argmax agreement (before smoothing/hysteresis);
  - the `evaluate` figures (detector.offline.scoring.score) and their change against fp32.

The bundle gets `backbone.int8.onnx` through the real `export-backbone --quantize int8
--calibration DATA` when it has none.

    .venv/bin/python bench/precision.py            # the bundle and broadcast of bench/accuracy.py (built when missing)
    .venv/bin/python bench/precision.py --quick    # a small demo set and a 120 s broadcast
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from bench.accuracy import make_broadcast  # noqa: E402
from bench.common import (OUT, add_common_args, ensure_bundle, log, machine_info, now, read_manifest, run_cli,  # noqa: E402
                          table, wait_for_quiet, write_json)

KEYS = ("frame_accuracy", "ad_precision", "ad_recall", "ad_f1", "boundary_recall_1s", "boundary_recall_2s")


def label_at(segments: list[Any], t: float) -> str:
    for s in segments:
        if s.start <= t < s.end:
            return s.label
    return segments[-1].label


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="training demo set (calibration data too; default as bench/accuracy.py)")
    p.add_argument("--model", type=Path, help="trained bundle (default as bench/accuracy.py)")
    p.add_argument("--video", type=Path, help="broadcast to classify (needs --truth; default a drawn one)")
    p.add_argument("--truth", type=Path)
    p.add_argument("--seed", type=int, default=4242, help="seed of the drawn broadcast (default 4242)")
    p.add_argument("--duration", type=float, default=600.0, help="drawn broadcast length, s (default 600)")
    add_common_args(p, "precision")
    args = p.parse_args(argv)
    small: dict[str, Any] = {}
    if args.quick:
        args.duration = min(args.duration, 120.0)
        args.data = args.data or OUT / "demo-quick"
        args.model = args.model or OUT / "bundle-quick"
        small = dict(train_clips=4, test_clips=2, clip_seconds=8.0, train_recordings=1, recording_seconds=90.0, broadcast_seconds=120.0)
        args.max_wait = min(args.max_wait, 0.0)
    args.data = args.data or OUT / "demo-full"
    args.model = args.model or OUT / "bundle-full"

    from detector.model.bundle import load_bundle
    from detector.demo.data import generate_demo_set
    from detector.model.backends.openvino import openvino_capabilities
    from detector.model.models import Models
    from detector.offline.analyse import analyse
    from detector.offline.scoring import score
    from detector.analysis.segments import read_labels
    from detector.offline.bench import candidate_paths

    if not (read_manifest(args.model) or {}).get("sequence"):
        demo = generate_demo_set(args.data, seed=0, **small)
        ensure_bundle(args.model, demo.data_dir)
    if not ((read_manifest(args.model) or {}).get("backbone") or {}).get("variants"):
        run_cli(["export-backbone", "-o", args.model, "--quantize", "int8", "--calibration", args.data])
    if args.video:
        if not args.truth:
            raise SystemExit("bench: --video needs --truth")
        video, truth_path = args.video, args.truth
    else:
        video = make_broadcast(OUT / "accuracy" / f"broadcast-seed{args.seed}-{args.duration:g}s.mp4", args.seed, args.duration)
        truth_path = video.with_suffix(".csv")
    bundle = load_bundle(args.model)
    truth = read_labels(truth_path, set(bundle.ad_classes), ad_label=bundle.ad_classes[0])
    quiet = wait_for_quiet(args.max_load, args.max_wait)
    started = now()

    results: list[dict[str, Any]] = []
    ref = None
    for engine, precision in candidate_paths(set(bundle.backbone_variants), openvino_capabilities(), False):
        models = Models(bundle, ["CPUExecutionProvider"], engine=engine, precision=precision)
        log(f"classifying {video.name}: {engine} {precision}")
        t0 = time.perf_counter()
        res = analyse(video, bundle, models, progress=True)
        wall = time.perf_counter() - t0
        figures = score(res.segments, truth, res.duration)
        argmax = res.probs.argmax(axis=1)
        row: dict[str, Any] = {"engine": engine, "precision": precision, "x_realtime": round(res.duration / wall, 2),
                               "windows": int(len(res.times)), **{k: figures[k] for k in KEYS},
                               "boundary_error_median_s": figures.get("boundary_error_median_s")}
        if ref is None:
            ref = (res, argmax)
            row.update(decided_agreement=1.0, argmax_agreement=1.0, worst_drop_points=0.0)
        else:
            rres, rarg = ref
            n = min(len(rres.times), len(res.times))
            row["decided_agreement"] = round(float(np.mean([label_at(rres.segments, t) == label_at(res.segments, t)
                                                             for t in rres.times[:n]])), 4)
            row["argmax_agreement"] = round(float(np.mean(rarg[:n] == argmax[:n])), 4)
            row["worst_drop_points"] = round(max(100 * (results[0][k] - figures[k]) for k in KEYS), 2)
        results.append(row)
    base = results[0]["x_realtime"]
    headers = ["engine", "precision", "classify x real time", "vs fp32", "decisions = fp32", "argmax = fp32",
               "frame acc", "ad F1", "boundary 1 s", "worst drop (points)", "guard"]
    rows = [[r["engine"], r["precision"], r["x_realtime"], f"{r['x_realtime'] / base:.1f}x", f"{r['decided_agreement']:.2%}",
             f"{r['argmax_agreement']:.2%}", r["frame_accuracy"], r["ad_f1"], r["boundary_recall_1s"], r["worst_drop_points"],
             "PASS" if r["decided_agreement"] >= 0.99 and r["worst_drop_points"] <= 0.5 else "FAIL"] for r in results]
    text = table(headers, rows)
    machine = machine_info()
    print(f"\n{video.name} ({results[0]['windows']} windows), bundle {args.model}, {machine['cores_usable']} cores; "
          "guard: decisions agree with fp32 on >= 99% of windows and no evaluate figure drops by more than 0.5 points")
    print(text)
    write_json(args.out, {"benchmark": "precision", "date": started, "command": " ".join([Path(sys.executable).name, *sys.argv]),
                          "video": str(video), "truth": str(truth_path), "model": str(args.model), "machine": machine,
                          "load": quiet, "results": results, "table": text})
    return 0


if __name__ == "__main__":
    sys.exit(main())
