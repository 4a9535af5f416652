"""Backbone throughput (InceptionV3, frames/s) on this machine, every path side by side in one run.

  (a) the original tutorial's way: Keras `model.predict` on a batch of 1, once per frame;
  (b) ONNX Runtime fp32, batch 16, 2 intra-op threads, on the real exported backbone.onnx;
  (c) what else exists: Keras called directly, ORT fp32 at other batch sizes, and, exploratory,
      ORT int8: dynamic and static QDQ (MinMax) copies via onnxruntime.quantization, and the
      NNCF copy that `export-backbone --quantize int8` ships (export/quantize.py);
  (d) OpenVINO fp32, bf16 and int8 (the int8 of the bundle when it has one, else both copies).

Every path is warmed up, then measured in several interleaved rounds (a, b, c, a, b, c, ...)
so that a change in the load of a shared machine hits all paths alike; the ratios are the
figures to trust. Input: real decoded frames of the demo clips, sampled and resized as the
engine does.

    .venv/bin/python bench/backbone.py                 # full run, ~6-10 min on 2 cores
    .venv/bin/python bench/backbone.py --quick         # smoke run
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from bench.common import (OUT, CpuMeter, add_common_args, demo_frames, ensure_backbone, log, machine_info, now,  # noqa: E402
                          read_manifest, table, wait_for_quiet, wait_until_idle, write_json)

INPUT_NAME = "images"
ORIGINAL = "keras predict, 1 frame per call (tutorial)"


class Runner:
    """One way of running the backbone at one batch size."""

    def __init__(self, name: str, kind: str, batch: int, run: Callable[[np.ndarray], Any], note: str = ""):
        self.name, self.kind, self.batch, self.run, self.note = name, kind, batch, run, note
        self.frames = 0
        self.seconds = 0.0
        self.rounds: list[float] = []
        self.cpu: list[dict[str, float]] = []

    @property
    def fps(self) -> float:
        """Median over the rounds: robust to a round disturbed by another process."""
        return float(np.median(self.rounds)) if self.rounds else 0.0

    @property
    def fps_mean(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0

    def clean(self, threshold: float) -> list[float]:
        """frames/s of the rounds during which other processes used less than `threshold` cores."""
        return [f for f, c in zip(self.rounds, self.cpu) if c["others_cores"] < threshold]

    @property
    def others(self) -> float:
        return float(np.mean([c["others_cores"] for c in self.cpu])) if self.cpu else 0.0

    @property
    def own(self) -> float:
        return float(np.mean([c["own_cores"] for c in self.cpu])) if self.cpu else 0.0


def measure(path: Runner, pool: np.ndarray, seconds: float, min_calls: int) -> float:
    """Run `path` on consecutive batches of the pool for at least `seconds` and `min_calls` calls."""
    n = len(pool)
    starts = list(range(0, n - path.batch + 1, path.batch)) or [0]
    batches = [np.ascontiguousarray(pool[s:s + path.batch]) for s in starts]
    calls = 0
    meter = CpuMeter()
    t0 = time.perf_counter()
    while True:
        path.run(batches[calls % len(batches)])
        calls += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds and calls >= min_calls:
            break
    frames = calls * path.batch
    path.frames += frames
    path.seconds += elapsed
    path.rounds.append(frames / elapsed)
    path.cpu.append(meter.read())
    return frames / elapsed


# ----------------------------------------------------------------------------- Keras

def keras_paths(weights: str, batches: list[int]) -> tuple[list[Runner], dict[str, Any]]:
    from ad_detector_export.backbone import build_keras_backbone  # imports TensorFlow

    model = build_keras_backbone(weights)
    import keras
    import tensorflow as tf

    info = {"tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "tf_inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
            "keras_backend": keras.backend.backend(), "weights": weights}

    def predict(x: np.ndarray) -> Any:
        return model.predict(x, verbose=0)

    def call(x: np.ndarray) -> Any:
        return model(x, training=False).numpy()

    paths = [Runner(ORIGINAL, "keras", 1, predict, "as the tutorial: model.predict(frame[None]) per frame")]
    paths.append(Runner("keras model(x), 1 frame per call", "keras", 1, call, "eager call, no predict() overhead"))
    for b in batches:
        if b > 1:
            paths.append(Runner(f"keras model(x), batch {b}", "keras", b, call, "eager call, batched"))
    return paths, info


# ----------------------------------------------------------------------------- ONNX Runtime

def ort_session(model: Path, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])


def ort_run(sess: Any) -> Callable[[np.ndarray], Any]:
    def run(x: np.ndarray) -> Any:
        return sess.run(None, {INPUT_NAME: x})[0]
    return run


class FrameReader:
    """Calibration data for static quantization: real frames, a few per call."""

    def __init__(self, frames: np.ndarray, batch: int = 4):
        self._batches = iter([frames[i:i + batch] for i in range(0, len(frames), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        b = next(self._batches, None)
        return None if b is None else {INPUT_NAME: b}

    def rewind(self) -> None:  # some onnxruntime versions call it
        pass


def quantize(model: Path, kind: str, calib: np.ndarray, out_dir: Path) -> tuple[Path | None, str]:
    """An int8 copy of `model` (cached in out_dir); (None, reason) when the quantizer fails."""
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType, quant_pre_process,
                                          quantize_dynamic, quantize_static)

    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"backbone.int8-{kind}.onnx"
    if target.is_file() and target.stat().st_mtime >= model.stat().st_mtime:
        return target, "cached"
    pre = out_dir / "backbone.pre.onnx"
    t0 = time.perf_counter()
    try:
        if not pre.is_file() or pre.stat().st_mtime < model.stat().st_mtime:
            log("quantization pre-processing (shape inference, graph optimisation)")
            quant_pre_process(str(model), str(pre), skip_symbolic_shape=True)  # no sympy needed
        tmp = target.with_name(f".{target.name}.partial")
        if kind == "nncf":
            from ad_detector_export.quantize import quantize_model

            log(f"NNCF int8 quantization (the shipped quantizer, first conv fp32) on {len(calib)} real frames")
            quantize_model(model, calib, tmp, progress=False)
        elif kind == "dynamic":
            log("dynamic int8 quantization (weights int8, activations quantized at run time)")
            quantize_dynamic(str(pre), str(tmp), weight_type=QuantType.QUInt8)
        else:
            log(f"static int8 quantization (QDQ, per-channel, MinMax calibration on {len(calib)} real frames)")
            quantize_static(str(pre), str(tmp), FrameReader(calib), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax)
        tmp.replace(target)
    except Exception as exc:  # noqa: BLE001 - exploratory: report and go on
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        log(f"int8 {kind} quantization failed: {first}")
        return None, f"failed: {first}"
    return target, f"made in {time.perf_counter() - t0:.0f} s"


def agreement(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    """How close quantized features are to fp32: the export guard's own figures (raw cosine,
    cosine centred on the fp32 mean, which is what tells frames apart, relative L2 error)."""
    from ad_detector_export.quantize import compare_features

    return compare_features(ref, got)


# ----------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=OUT / "backbone-none",
                   help="bundle directory with backbone.onnx (default bench/out/backbone-none; exported with "
                        "--weights none when missing)")
    p.add_argument("--seconds", type=float, default=30.0, help="measured seconds per path, over all rounds (default 30)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5); frames/s is the median")
    p.add_argument("--max-others", type=float, default=0.5,
                   help="before each measurement wait until other processes use fewer cores than this (default 0.5; 0: off)")
    p.add_argument("--clean-threshold", type=float, default=0.1,
                   help="a round is 'uncontended' when other processes used fewer cores than this (default 0.1)")
    p.add_argument("--gate-budget", type=float, default=600.0,
                   help="total seconds those waits may take over the run (default 600)")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads (default 2)")
    p.add_argument("--batches", default="1,8,16,32", help="ORT fp32 batch sizes (default 1,8,16,32)")
    p.add_argument("--keras-weights", default="none", help="Keras backbone weights: none (random, default) or imagenet/PATH")
    p.add_argument("--no-keras", action="store_true", help="skip the Keras paths (no TensorFlow)")
    p.add_argument("--keras-batch", type=int, default=16, help="also time a batched Keras call of this size (0: no)")
    p.add_argument("--int8", choices=["none", "dynamic", "static", "nncf", "all"], default=None,
                   help="ONNX Runtime int8 paths: dynamic, static (MinMax), nncf (the shipped quantizer) (default all; none with --quick)")
    p.add_argument("--int8-batches", default="1,16", help="batch sizes for the int8 paths (default 1,16)")
    p.add_argument("--calib-frames", type=int, default=32, help="frames for static calibration (default 32)")
    p.add_argument("--openvino", default="fp32,bf16,int8",
                   help="OpenVINO paths (the daemon's CPU engine), comma-separated of fp32,bf16,int8 (default all; 'none' to skip)")
    p.add_argument("--openvino-batches", default="1,16", help="batch sizes for the OpenVINO int8 path (default 1,16; others at 16)")
    add_common_args(p, "backbone")
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds = min(args.seconds, 3.0), 1
        args.batches = "1,16"
        args.keras_batch = 0
        args.int8 = args.int8 or "none"
        args.max_wait = min(args.max_wait, 0.0)
        args.gate_budget = min(args.gate_budget, 10.0)
    int8_kinds = {"none": [], "dynamic": ["dynamic"], "static": ["static"], "nncf": ["nncf"],
                  "all": ["dynamic", "static", "nncf"], None: ["dynamic", "static", "nncf"]}[args.int8]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    onnx_path = ensure_backbone(args.model)
    log(f"backbone: {onnx_path}")
    pool = demo_frames(96 if not args.quick else 32)
    calib = demo_frames(args.calib_frames, seed=100)  # other clips than the measured frames
    log(f"frames: {len(pool)} real decoded demo frames, {pool.shape[1]}x{pool.shape[2]}")

    paths: list[Runner] = []
    notes: dict[str, Any] = {}
    if not args.no_keras:
        kb = [args.keras_batch] if args.keras_batch and args.keras_batch > 1 else []
        kpaths, notes["keras"] = keras_paths(args.keras_weights, kb)
        paths += kpaths
    fp32 = ort_session(onnx_path, args.threads)
    for b in [int(x) for x in args.batches.split(",") if x.strip()]:
        paths.append(Runner(f"ORT fp32, batch {b}", "ort-fp32", b, ort_run(fp32), f"{args.threads} intra-op threads"))
    sessions = {"fp32": fp32}
    int8_info: dict[str, Any] = {}
    reference = fp32.run(None, {INPUT_NAME: pool[:32]})[0]
    for kind in int8_kinds:
        qpath, how = quantize(onnx_path, kind, calib, OUT / "int8" / args.model.name)
        int8_info[kind] = {"file": str(qpath) if qpath else None, "how": how}
        if qpath is None:
            continue
        try:
            sess = ort_session(qpath, args.threads)
            got = sess.run(None, {INPUT_NAME: pool[:32]})[0]
        except Exception as exc:  # noqa: BLE001
            int8_info[kind]["how"] = f"does not run: {(str(exc).splitlines() or ['?'])[0][:200]}"
            log(f"int8 {kind}: {int8_info[kind]['how']}")
            continue
        int8_info[kind]["agreement_vs_fp32"] = agreement(reference, got)
        int8_info[kind]["size_mb"] = round(qpath.stat().st_size / 1e6, 1)
        sessions[kind] = sess
        for b in [int(x) for x in args.int8_batches.split(",") if x.strip()]:
            paths.append(Runner(f"ORT int8 {kind}, batch {b}", f"ort-int8-{kind}", b, ort_run(sess),
                               f"{args.threads} intra-op threads"))

    # OpenVINO: the product's own runner (detector.model.backends.openvino.OpenVinoRunner), on the same files
    ov_kinds = [k for k in args.openvino.split(",") if k.strip() and k != "none"]
    try:
        from detector.model.backends.openvino import OpenVinoRunner, openvino_capabilities

        caps = openvino_capabilities()
    except ImportError:
        caps = None
    ov_info: dict[str, Any] = {"capabilities": caps}
    manifest = read_manifest(args.model) or {}
    bundle_int8 = ((manifest.get("backbone") or {}).get("variants") or {}).get("int8")
    for kind in ov_kinds if caps is not None else []:
        if kind == "int8":
            # the bundle's own int8 file when it has one; else each quantized copy made above
            if bundle_int8:
                files = [(args.model / bundle_int8["file"], "the bundle's calibrated backbone.int8.onnx", "int8")]
            else:
                files = [(Path(int8_info[k]["file"]), f"{k} QDQ copy, calibrated on demo frames", f"int8-{k}")
                         for k in ("nncf", "static") if int8_info.get(k, {}).get("file") and k in sessions]
        else:
            files = [(onnx_path, "backbone.onnx", kind)]
        for file, note, tag in files:
            runner = OpenVinoRunner(file, kind, args.threads)
            got = runner(np.ascontiguousarray(pool[:32]))
            ov_info[tag] = {"file": str(file), "agreement_vs_fp32": agreement(reference, got), "note": note}
            for b in ([int(x) for x in args.openvino_batches.split(",") if x.strip()] if kind == "int8" else [16]):
                paths.append(Runner(f"OpenVINO {tag}, batch {b}", f"openvino-{tag}", b, runner, f"{args.threads} threads; {note}"))
    if caps is None and ov_kinds:
        log("OpenVINO not installed (pip install openvino): its paths are skipped")

    # warm-up: first calls build graphs / allocate arenas
    for path in tqdm(paths, desc="warm-up", unit="path", file=sys.stderr):
        warm = np.ascontiguousarray(pool[:path.batch])
        for _ in range(3 if path.kind == "keras" else 2):
            path.run(warm)

    quiet = wait_for_quiet(args.max_load, args.max_wait)
    load_before = quiet["load_at_start"]
    per_round = args.seconds / args.rounds
    started = now()
    loads = []
    gate_budget = args.gate_budget
    gate_waited = 0.0
    total = len(paths) * args.rounds
    with tqdm(total=total, desc="measuring", unit="run", file=sys.stderr) as bar:
        for r in range(args.rounds):
            for path in paths:
                if args.max_others > 0 and gate_budget - gate_waited > 0:
                    bar.set_postfix_str(f"round {r + 1}: waiting for other processes to calm down")
                    waited, _ = wait_until_idle(args.max_others, min(60.0, gate_budget - gate_waited), sample_s=1.0)
                    gate_waited += waited
                bar.set_postfix_str(f"round {r + 1}: {path.name[:40]}")
                measure(path, pool, per_round, min_calls=3 if path.batch > 1 else 5)
                bar.update(1)
            loads.append(round(os.getloadavg()[0], 2))
    load_after = [round(x, 2) for x in os.getloadavg()]

    base = next((p for p in paths if p.name == ORIGINAL), None)
    ref16 = next((p for p in paths if p.kind == "ort-fp32" and p.batch == 16), None)
    rows, results = [], []
    for path in paths:
        ratio = path.fps / base.fps if base and base.fps else None
        ratio16 = path.fps / ref16.fps if ref16 and ref16.fps else None
        clean = path.clean(args.clean_threshold)
        clean_fps = float(np.median(clean)) if clean else None
        base_clean = base.clean(args.clean_threshold) if base else []
        ratio_clean = clean_fps / float(np.median(base_clean)) if clean_fps and base_clean else None
        rows.append([path.name, path.batch, round(path.fps, 1),
                     f"{clean_fps:.1f} ({len(clean)})" if clean_fps else "- (0)",
                     round(max(path.rounds), 1) if path.rounds else None,
                     None if ratio is None else f"{ratio:.1f}x", None if ratio_clean is None else f"{ratio_clean:.1f}x",
                     None if ratio16 is None else f"{ratio16:.2f}", f"{path.own:.2f}", f"{path.others:.2f}"])
        results.append({"path": path.name, "kind": path.kind, "batch": path.batch,
                        "frames_per_s": round(path.fps, 2), "frames_per_s_best_round": round(max(path.rounds), 2),
                        "frames_per_s_mean": round(path.fps_mean, 2),
                        "frames_per_s_uncontended_median": None if not clean else round(clean_fps, 2),
                        "uncontended_rounds": len(clean),
                        "ratio_to_original_uncontended": None if ratio_clean is None else round(ratio_clean, 2), "frames": path.frames, "seconds": round(path.seconds, 2),
                        "rounds_frames_per_s": [round(x, 2) for x in path.rounds], "rounds_cpu": path.cpu,
                        "own_cores_mean": round(path.own, 2), "others_cores_mean": round(path.others, 2),
                        "ratio_to_original": None if ratio is None else round(ratio, 2),
                        "ratio_to_ort_fp32_b16": None if ratio16 is None else round(ratio16, 3), "note": path.note})
    headers = ["path", "batch", "frames/s (median)", f"uncontended (n)", "best round", "vs original",
               "vs original, uncontended", "vs ORT fp32 b16", "cores used", "others' cores"]
    text = table(headers, rows)
    machine = machine_info(["onnx"])
    print(f"\nBackbone throughput, InceptionV3 299x299, {machine['cores_usable']} cores ({machine['cpu_model']}), "
          f"{args.rounds} interleaved rounds, {per_round:.0f} s per path per round")
    print(f"load average (1/5/15 min) before: {load_before}, after: {load_after}; 1-min load after each round: {loads}")
    print(f"waited {gate_waited:.0f} s in total before measurements for other processes to use < {args.max_others} cores; "
          "'cores used' / 'others\' cores': CPU this process / all other processes used while each path ran (mean of rounds); "
          f"'uncontended': median of the rounds in which other processes used < {args.clean_threshold} cores (n rounds)")
    print(text)
    def figures(agree: dict[str, Any]) -> str:
        return (f"features vs ORT fp32 on {agree['frames']} frames: cosine mean {agree['cosine_mean']}, "
                f"centred cosine mean {agree['centred_cosine_mean']} (min {agree['centred_cosine_min']}), "
                f"relative L2 error {agree['relative_l2_error']}")

    for kind, info in int8_info.items():
        agree = info.get("agreement_vs_fp32")
        print(f"ORT int8 {kind}: {figures(agree)}; {info['how']}" if agree else f"ORT int8 {kind}: {info['how']}")
    for tag, info in ov_info.items():
        if isinstance(info, dict) and info.get("agreement_vs_fp32"):
            print(f"OpenVINO {tag}: {figures(info['agreement_vs_fp32'])}")
    best = max(paths, key=lambda p: p.fps)
    print(f"fastest: {best.name} at {best.fps:.1f} frames/s; target (docs/DESIGN.md): 120 frames/s on 2 cores")

    write_json(args.out, {
        "benchmark": "backbone", "date": started, "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "quick": args.quick, "model": str(onnx_path), "input": {"frames": int(len(pool)), "shape": list(pool.shape[1:]),
                                                                 "source": "demo clips (write_clip + sample_video at 5 fps)"},
        "settings": {"seconds_per_path": args.seconds, "rounds": args.rounds, "max_others_cores": args.max_others,
                     "gate_budget_s": args.gate_budget, "gate_waited_s": round(gate_waited, 1), "ort_intra_op_threads": args.threads,
                     "ort_inter_op_threads": 1, "keras_weights": args.keras_weights},
        "machine": machine, "load": {"wait": quiet, "before": load_before, "after": load_after, "after_each_round_1min": loads},
        "keras": notes.get("keras"), "int8": int8_info, "openvino": ov_info, "results": results, "table": text,
        "target_frames_per_s": 120})
    return 0


if __name__ == "__main__":
    sys.exit(main())
