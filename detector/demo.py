"""`ad-detector demo`: the quick start.

Builds what is missing (demo data, a backbone with random weights, a trained sequence
model), then runs the engine over the demo broadcast and prints each ad break as it is
found beside the ground truth, then the evaluation figures.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from detector.errors import UsageError

log = logging.getLogger(__name__)


def clock(t: float) -> str:
    m, s = divmod(max(0.0, t), 60)
    return f"{int(m):02d}:{s:04.1f}"


def ensure_bundle(root: Path, data_dir: Path, quick: bool) -> Path:
    """The demo bundle under root/models, built (export + train) when missing."""
    from detector.bundle import read_manifest

    model_dir = root / "models"
    manifest = read_manifest(model_dir) if model_dir.exists() else None
    if manifest and manifest.get("sequence"):
        return model_dir
    from detector.cli import need_train_extra

    need_train_extra("demo")
    if not manifest or not manifest.get("backbone"):
        from export.backbone import export_backbone

        print("== exporting the InceptionV3 backbone to ONNX (random weights: ImageNet cannot be downloaded here)", flush=True)
        export_backbone(model_dir, weights="none", force=True)
    from train.trainer import TrainOptions, train

    print("== training the sequence model on the demo clips and recordings", flush=True)
    train(TrainOptions(data_dir=data_dir, out_dir=model_dir, force=True, epochs=15 if quick else 30))
    return model_dir


def demo_command(args: argparse.Namespace) -> int:
    from detector.demodata import generate_demo_set

    root = Path(args.dir)
    print(f"== demo data in {root} (generated once, deterministic)", flush=True)
    kwargs = dict(train_clips=4, test_clips=2, clip_seconds=8.0, train_recordings=1, recording_seconds=90.0,
                  broadcast_seconds=120.0) if args.quick else {}
    demo = generate_demo_set(root, seed=0, **kwargs)
    model_dir = ensure_bundle(root, demo.data_dir, args.quick)
    return offline_run(demo.broadcast, demo.truth_csv, model_dir, root / "output")


def offline_run(video: Path, truth_csv: Path, model_dir: Path, out_dir: Path) -> int:
    """Classify the broadcast, print breaks beside the truth, write the media-centre files."""
    from detector.bundle import load_bundle
    from detector.formats import write_outputs
    from detector.inference import Models
    from detector.offline import analyse
    from detector.scoring import score, table
    from detector.segments import read_labels

    bundle = load_bundle(model_dir)
    models = Models(bundle, ["CPUExecutionProvider"])
    truth = read_labels(truth_csv, set(bundle.ad_classes))
    print(f"== classifying {video.name} ({'live mode arrives with the daemon; ' if False else ''}offline, full speed)", flush=True)
    result = analyse(video, bundle, models)
    true_edges = [(s.start, "ad starts") for s in truth if s.is_ad and s.start > 0] + [(s.end, "ad ends") for s in truth if s.is_ad and s.end < result.duration - 0.05]
    print(f"\n{'found at':>9}  {'event':<10} {'label':<12} {'how':<6} {'truth':>8}  {'error':>7}")
    for tr in result.transitions:
        if tr.how == "start":
            print(f"{clock(tr.boundary):>9}  {'starts as':<10} {tr.label:<12} {'':<6}")
            continue
        kind = "ad starts" if tr.is_ad else "ad ends"
        same = [t for t, k in true_edges if k == kind]
        nearest = min(same, key=lambda t: abs(t - tr.boundary)) if same else None
        err = f"{tr.boundary - nearest:+.1f} s" if nearest is not None else ""
        print(f"{clock(tr.boundary):>9}  {kind:<10} {tr.label:<12} {tr.how:<6} {clock(nearest) if nearest is not None else '-':>8}  {err:>7}")
    figures = score(result.segments, truth, result.duration)
    written = write_outputs(out_dir, video.stem, result.segments, result.times, result.probs, result.classes, result.ad_classes,
                            result.fps, result.total_frames, result.duration, truth=truth)
    print("\n" + table(figures))
    print(f"\nfiles for media centres in {out_dir}: " + ", ".join(p.name for p in written))
    print(f"speed: {result.duration / max(result.timings['total_s'], 1e-9):.1f}x real time on this machine")
    if figures["ad_breaks_true"] and not figures["ad_breaks_detected"]:
        raise UsageError("the demo found none of the ad breaks; the demo bundle is not working")
    return 0
