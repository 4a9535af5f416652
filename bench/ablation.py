"""Ablation (issue 16): video only / video + audio / video + audio + visual cues, on held-out recordings with audio.

What a cue block buys is only visible beside a bundle trained without it, with everything
else equal. For each seed this script
1. draws a demo training set (that seed; a realistic share of visual traps, `--train-traps`,
   default 0.15: adverts shot on a pitch, studio programme; plus the demo's audio traps);
2. trains three bundles with identical settings and seed, one backbone (`--weights none`)
   copied into each, with the real `ad-detector train`: `--blocks none`, `audio`, `audio,visual`;
3. draws two held-out broadcasts with other seeds: `normal` (the training share of traps)
   and `traps` (a trap-heavy one, `--heavy-traps`, default 0.5 of the spots and programme
   stretches);
4. runs the real `ad-detector evaluate VIDEO --truth VIDEO.truth.json -m A -m B -m C
   --segments-dir DIR` on each (the JSON truth adds accuracy on the trap spans);
and prints per held-out broadcast a table (frame accuracy, ad F1, boundary recall within 1 s
and 2 s, median boundary error, accuracy on visual-trap and audio-trap spans), the mean over
seeds and every seed, with the issue's check: video + audio at least as good as video only
on every score of the normal broadcast, and strictly better on the visual-trap spans.

    .venv/bin/python bench/ablation.py --seeds 0 1     # default: quick data (as the tests), 240 s held-out broadcasts
    .venv/bin/python bench/ablation.py --quick         # smoke run: one seed, 3 epochs, 60 s broadcasts (figures meaningless)

Everything lands in bench/out/ablation/ (reused when present and made with the same
settings, so an interrupted run resumes) and the figures in bench/out/ablation.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import OUT, ensure_backbone, log, machine_info, now, read_manifest, run_cli, table, write_json  # noqa: E402

VARIANTS: tuple[tuple[str, str], ...] = (("video", ""), ("video+audio", "audio"), ("video+audio+visual", "audio,visual"))
# (key in the row, column title, True when higher is better)
SCORES: tuple[tuple[str, str, bool], ...] = (
    ("frame_accuracy", "frame acc", True), ("ad_f1", "ad F1", True), ("boundary_recall_1s", "bound. rec. 1 s", True),
    ("boundary_recall_2s", "bound. rec. 2 s", True), ("boundary_error_median_s", "median bound. err (s)", False),
    ("visual_trap_accuracy", "acc. visual traps", True), ("audio_trap_accuracy", "acc. audio traps", True))
VISUAL_KINDS = ("ad_on_pitch", "studio_programme")
AUDIO_KINDS = ("ad_sounds_like_programme", "programme_sounds_like_ad")
QUICK_DATA = {"train_clips": 4, "test_clips": 2, "clip_seconds": 10.0, "train_recordings": 1, "recording_seconds": 90.0,
              "broadcast_seconds": 60.0}      # the tests' demo set (tests/conftest.py TEST_DEMO), a short own broadcast
SIZE, FPS = (640, 360), 25.0                  # the demo set's picture


def pooled(trap_spans: dict | None, kinds: tuple[str, ...]) -> float | None:
    """Accuracy over every grid point of the given kinds of span (None when there is none)."""
    by_kind = (trap_spans or {}).get("by_kind", {})
    points = sum(by_kind[k]["points"] for k in kinds if k in by_kind and by_kind[k]["accuracy"] is not None)
    if not points:
        return None
    return round(sum(by_kind[k]["accuracy"] * by_kind[k]["points"] for k in kinds
                     if k in by_kind and by_kind[k]["accuracy"] is not None) / points, 4)


def make_broadcast(path: Path, seed: int, duration: float, traps: float) -> Path:
    """A held-out broadcast with its truth files (drawn once, reused while valid)."""
    from detector.demo.write import truth_json_path, video_is_valid, write_broadcast

    truth = truth_json_path(path)
    made = json.loads(truth.read_text()) if truth.is_file() else {}
    if not (video_is_valid(path, int(round(duration * FPS)), SIZE) and made.get("traps_setting") == traps
            and made.get("seed") == seed):
        log(f"drawing held-out broadcast {path.name} (seed {seed}, {duration:g} s, traps {traps:g})")
        path.parent.mkdir(parents=True, exist_ok=True)
        write_broadcast(path, seed=seed, duration=duration, size=SIZE, fps=FPS, traps=traps, progress=False)
    return path


def train_bundle(out: Path, backbone: Path, data_dir: Path, blocks: str, seed: int, epochs: int, cache: Path) -> Path:
    """A bundle trained with `ad-detector train` (reused when model.json says the same data, blocks, seed, epochs)."""
    want = {"data_dir": str(data_dir.resolve()), "blocks": blocks, "seed": seed, "epochs": epochs}
    manifest = read_manifest(out) or {}
    options = ((manifest.get("training") or {}).get("options") or {})
    have = {"data_dir": (manifest.get("training") or {}).get("data_dir"), "seed": (manifest.get("training") or {}).get("seed"),
            "blocks": ",".join(b["name"] for b in manifest.get("blocks") or []), "epochs": int(options.get("epochs", -1))}
    if manifest.get("sequence") and have == want:
        log(f"reusing {out} (blocks '{blocks or 'none'}', seed {seed})")
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for name in ("backbone.onnx", "model.json"):
        shutil.copy2(backbone / name, out / name)
    run_cli(["train", data_dir, "-o", out, "--no-progress", "--epochs", epochs, "--seed", seed, "--cache-dir", cache,
             "--blocks", blocks or "none"])
    return out


def row_of(model: dict) -> dict[str, Any]:
    row = {key: model.get(key) for key, _, _ in SCORES[:5]}
    row["visual_trap_accuracy"] = pooled(model.get("trap_spans"), VISUAL_KINDS)
    row["audio_trap_accuracy"] = pooled(model.get("trap_spans"), AUDIO_KINDS)
    row["trap_spans_by_kind"] = (model.get("trap_spans") or {}).get("by_kind")
    row["ad_breaks"] = f"{model.get('ad_breaks_detected')}/{model.get('ad_breaks_true')}"
    row["boundaries_found_true"] = f"{model.get('boundaries_found')}/{model.get('boundaries_true')}"
    row["speed_x_realtime"] = model.get("speed_x_realtime")
    return row


def check(video_row: dict, audio_row: dict) -> dict[str, Any]:
    """The issue's test: + audio at least as good on every score, strictly better on visual-trap spans."""
    worse = []
    for key, _, higher in SCORES[:5]:
        a, b = video_row.get(key), audio_row.get(key)
        if a is None or b is None:
            if b is None and a is not None:
                worse.append(key)
            continue
        if (b < a) if higher else (b > a):
            worse.append(key)
    va, vb = video_row.get("visual_trap_accuracy"), audio_row.get("visual_trap_accuracy")
    better = va is not None and vb is not None and vb > va
    return {"not_worse_on_every_score": not worse, "worse_on": worse, "strictly_better_on_visual_traps": better,
            "verdict": "PASS" if not worse and better else "MISS"}


def mean_rows(rows: list[dict]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, _, _ in SCORES:
        values = [r[key] for r in rows if r.get(key) is not None]
        out[key] = round(statistics.fmean(values), 4) if values else None
    return out


def _cell(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"      # 3 decimals: the differences are small


def print_table(title: str, rows: dict[str, dict]) -> str:
    text = table(["bundle", *[c for _, c, _ in SCORES]],
                 [[name, *[_cell(r.get(k)) for k, _, _ in SCORES]] for name, r in rows.items()])
    print(f"\n{title}\n{text}")
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (default 0); held-out seeds are 7000+s and 8000+s")
    p.add_argument("--epochs", type=int, default=20, help="training epochs, the same for every bundle (default 20, as the tests)")
    p.add_argument("--data", choices=["quick", "full"], default="quick",
                   help="training set size: quick = the tests' demo set (default), full = the generator's defaults")
    p.add_argument("--duration", type=float, default=240.0, help="held-out broadcast length in seconds (default 240)")
    p.add_argument("--train-traps", type=float, default=0.15, help="share of visual traps in training and in the normal broadcast")
    p.add_argument("--heavy-traps", type=float, default=0.5, help="share of visual traps in the trap-heavy broadcast")
    p.add_argument("--work", type=Path, default=OUT / "ablation", help="where data and bundles go (default bench/out/ablation)")
    p.add_argument("--out", type=Path, default=OUT / "ablation.json", help="JSON results (default bench/out/ablation.json)")
    p.add_argument("--quick", action="store_true", help="smoke run: one seed, 3 epochs, 60 s broadcasts (figures not meaningful)")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs, args.duration = args.seeds[:1], 3, 60.0
        args.work = args.work.with_name(args.work.name + "-quick")
        args.out = args.out.with_name("ablation-quick.json")

    from detector.demo.data import generate_demo_set

    started, t0 = now(), time.perf_counter()
    machine_before = machine_info()
    backbone = args.work / "backbone-none"
    ensure_backbone(backbone)
    cache = args.work / "feature-cache"
    held = (("normal", args.train_traps), ("traps", args.heavy_traps))
    per_seed: dict[int, dict[str, Any]] = {}
    for seed in args.seeds:
        sdir = args.work / f"seed{seed}"
        data = {**QUICK_DATA} if args.data == "quick" else {}
        log(f"seed {seed}: demo training set ({args.data}, traps {args.train_traps:g})")
        demo = generate_demo_set(sdir / "demo", seed=seed, traps=args.train_traps, progress=False, **data)
        bundles = {name: train_bundle(sdir / name.replace("+", "_"), backbone, demo.data_dir, blocks, seed, args.epochs, cache)
                   for name, blocks in VARIANTS}
        per_seed[seed] = {"bundles": {n: str(b) for n, b in bundles.items()},
                          "held_out_in_training": {n: (read_manifest(b) or {}).get("evaluation", {}).get("accuracy")
                                                   for n, b in bundles.items()}}
        for kind, traps in held:
            bseed = (7000 if kind == "normal" else 8000) + seed
            video = make_broadcast(sdir / f"heldout-{kind}.mp4", bseed, args.duration, traps)
            truth = video.with_name(video.stem + ".truth.json")
            seg_dir = sdir / f"segments-{kind}"
            cmd = ["evaluate", video, "--truth", truth, *[x for b in bundles.values() for x in ("-m", b)],
                   "--segments-dir", seg_dir, "--no-progress", "--precision", "fp32"]
            proc = run_cli(cmd, capture=True)
            models = json.loads(proc.stdout)["models"]
            rows = {name: row_of(m) for (name, _), m in zip(VARIANTS, models)}
            spans = json.loads(truth.read_text())["traps"]
            per_seed[seed][kind] = {"video": str(video), "seed": bseed, "traps_setting": traps, "trap_spans": spans,
                                    "evaluate_command": "ad-detector " + " ".join(str(c) for c in cmd), "rows": rows,
                                    "check": check(rows["video"], rows["video+audio"]), "raw": models}

    tables: dict[str, str] = {}
    summary: dict[str, Any] = {}
    for kind, traps in held:
        means = {name: mean_rows([per_seed[s][kind]["rows"][name] for s in args.seeds]) for name, _ in VARIANTS}
        summary[kind] = {"mean": means, "check_on_mean": check(means["video"], means["video+audio"]),
                         "checks_per_seed": {s: per_seed[s][kind]["check"]["verdict"] for s in args.seeds}}
        title = (f"{kind} held-out broadcast ({args.duration:g} s, visual traps {traps:g}), mean over seeds "
                 f"{' '.join(map(str, args.seeds))}")
        tables[f"{kind}/mean"] = print_table(title, means)
        if len(args.seeds) > 1:
            for s in args.seeds:
                tables[f"{kind}/seed{s}"] = print_table(f"{kind}, seed {s}", per_seed[s][kind]["rows"])
        c = summary[kind]["check_on_mean"]
        print(f"video+audio vs video ({kind}): not worse on every score: {c['not_worse_on_every_score']}"
              f"{' (worse on ' + ', '.join(c['worse_on']) + ')' if c['worse_on'] else ''}; strictly better on visual traps: "
              f"{c['strictly_better_on_visual_traps']}; per seed: {summary[kind]['checks_per_seed']}")
    machine = machine_info()
    print(f"\nCPU {machine['cpu_model']}, {machine['cores_usable']} cores; load before {machine_before['loadavg']}, "
          f"after {machine['loadavg']}; {time.perf_counter() - t0:.0f} s")
    write_json(args.out, {
        "benchmark": "ablation", "date": started, "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "quick": args.quick, "seeds": args.seeds, "epochs": args.epochs, "data": args.data, "duration_s": args.duration,
        "train_traps": args.train_traps, "heavy_traps": args.heavy_traps, "variants": dict(VARIANTS), "summary": summary,
        "per_seed": per_seed, "tables": tables, "machine": machine, "load": {"before": machine_before["loadavg"],
                                                                             "after": machine["loadavg"]},
        "elapsed_s": round(time.perf_counter() - t0, 1)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
