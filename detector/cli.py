"""`ad-detector` command line: parses arguments, maps failures to the contract's exit codes.

Heavy modules are imported inside each command, so `ad-detector --help` is instant and
the runtime commands never pull in the training stack.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from detector import __version__
from detector.errors import RuntimeFailure, UsageError, need_train_extra
from detector.util.logsetup import setup_logging

log = logging.getLogger("detector")




def cmd_export_backbone(args: argparse.Namespace) -> int:
    need_train_extra("export-backbone")
    from detector.model.bundle import read_manifest
    from ad_detector_export.backbone import check_weights_arg, export_backbone

    out = Path(args.output)
    if args.quantize and not args.calibration:
        raise UsageError("--quantize int8 needs --calibration DATA_DIR (the training data: real frames set the int8 ranges)")
    if args.calibration and not args.quantize:
        raise UsageError("--calibration is only used with --quantize int8")
    if args.weights is not None:
        check_weights_arg(args.weights)
    existing = None
    if args.quantize and out.is_dir() and not args.force:
        from ad_detector_export.quantize import calibration_videos

        calibration_videos(Path(args.calibration))        # a bad DATA_DIR is refused before any work
        try:
            existing = read_manifest(out)
        except UsageError:
            existing = None
    weights_name = None if args.weights is None else (args.weights if args.weights in ("imagenet", "none") else Path(args.weights).name)
    keep = existing and existing.get("backbone") and weights_name in (None, existing["backbone"].get("weights"))
    if keep:
        logging.getLogger("export").info("quantizing the bundle's existing fp32 backbone path=%s weights=%s", out / "backbone.onnx",
                                         existing["backbone"].get("weights"))
    else:
        export_backbone(out, weights=args.weights or "imagenet", force=args.force, seed=args.seed)
    if args.quantize:
        from ad_detector_export.quantize import quantize_bundle

        quantize_bundle(out, Path(args.calibration), frames=args.calibration_frames, seed=args.seed,
                        progress=not args.no_progress)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    need_train_extra("train")
    from ad_detector_train.trainer import TrainOptions, train

    from detector.analysis.blocks import parse_block_list
    try:
        blocks = parse_block_list(args.blocks)
    except ValueError as exc:
        raise UsageError(f"--blocks {args.blocks}: {exc}") from None
    opts = TrainOptions(blocks=blocks, data_dir=Path(args.data_dir), out_dir=Path(args.output), ad_class=args.ad_class,
                        analysis_fps=args.fps, window_seconds=args.window_seconds, arch=args.arch, units=args.units,
                        epochs=args.epochs, batch_size=args.batch_size, force=args.force, seed=args.seed,
                        cache_dir=Path(args.cache_dir) if args.cache_dir else None, progress=not args.no_progress)
    train(opts)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from detector.offline.bench import bench_command

    return bench_command(args)


def cmd_run(args: argparse.Namespace) -> int:
    """The daemon; with a `cluster` section its Ray driver (detector.cluster, built on the daemon: Ray only loads then)."""
    import os

    from detector.config import load_config, state_dir_from

    cfg = load_config(Path(args.config), state_dir_from(os.environ))
    if cfg.cluster is not None:
        from detector.cluster.driver import ClusterDaemon

        return ClusterDaemon(cfg).run()
    from detector.live.daemon import Daemon

    return Daemon(cfg).run()


def cmd_classify(args: argparse.Namespace) -> int:
    from detector.offline.commands import classify_command

    return classify_command(args)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from detector.offline.commands import evaluate_command

    return evaluate_command(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from detector.demo.command import demo_command

    return demo_command(args)


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate the config and print it resolved (stdout, exit 0).

    An invalid config raises ConfigError, a UsageError: `main` prints it (a count line, then
    one `CONFIG:LINE: key.path: message` line per error) and exits 2.
    """
    import os

    from detector.config import dump_resolved, load_config, state_dir_from
    from detector.events.curve import exposure_warnings

    cfg = load_config(Path(args.config), state_dir_from(os.environ))
    sys.stdout.write(dump_resolved(cfg))
    from detector.marker.checks import marker_warnings

    for warning in exposure_warnings(cfg.events.bind, cfg.events.snapshot_bind, cfg.events.curve is not None):
        print(f"ad-detector: warning: {warning}", file=sys.stderr)
    for warning in marker_warnings(cfg):
        print(f"ad-detector: warning: {warning}", file=sys.stderr)
    return 0


def _add_engine_options(p: argparse.ArgumentParser) -> None:
    """What `classify` and `evaluate` share: where the backbone runs, and progress bars."""
    from detector.model.plan import ENGINES, PRECISIONS

    p.add_argument("--providers", nargs="+",
                   help="ONNX Runtime execution providers in order (default: CUDA if an NVIDIA driver is present, then CPU)")
    p.add_argument("--engine", choices=ENGINES, default="auto",
                   help="backbone engine (default auto: a GPU provider if one starts, else OpenVINO if installed, else ONNX Runtime)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="backbone precision (default auto: int8 if the bundle has it, else bf16 on OpenVINO where the CPU has it, else fp32)")
    p.add_argument("--no-progress", action="store_true")


def _add_rule_options(p: argparse.ArgumentParser) -> None:
    """Break-structure rules for `classify` / `evaluate` (the daemon's decision.*_seconds keys; all off by default)."""
    g = p.add_argument_group("break-structure rules (Comskip's lengths; README \"Break-structure rules\")")
    g.add_argument("--min-break", type=float, metavar="SECONDS", help="ad runs shorter than this become programme (min_commercialbreak)")
    g.add_argument("--max-break", type=float, metavar="SECONDS", help="breaks longer than this are flagged long_break (max_commercialbreak)")
    g.add_argument("--min-spot", type=float, metavar="SECONDS",
                   help="black frames closer than this do not split spots; shorter ad runs become programme (min_commercial_size)")
    g.add_argument("--max-spot", type=float, metavar="SECONDS",
                   help="breaks with a spot (black to black) longer than this are flagged long_spot (max_commercial_size)")
    g.add_argument("--min-programme", type=float, metavar="SECONDS",
                   help="programme gaps shorter than this between two ad runs join the break (min_show_segment_length)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ad-detector", description="Real-time ad-break detection for live TV.")
    parser.add_argument("--version", action="version", version=f"ad-detector {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_live_commands(sub)
    _add_offline_commands(sub)
    _add_model_commands(sub)
    return parser


def _add_live_commands(sub: Any) -> None:
    """run, check-config, subscribe, keygen: the daemon and its clients."""
    p = sub.add_parser("run", help="the daemon, in the foreground")
    p.add_argument("-c", "--config", required=True)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check-config", help="validate a config and print it resolved")
    p.add_argument("-c", "--config", required=True)
    p.set_defaults(func=cmd_check_config)

    def cmd_subscribe(args: argparse.Namespace) -> int:
        from detector.events.subscribe import subscribe_command

        return subscribe_command(args)

    p = sub.add_parser("subscribe", help="print events as JSON lines")
    p.add_argument("--endpoint", default="tcp://127.0.0.1:5556", help="the daemon's events.bind (default %(default)s)")
    p.add_argument("--snapshot-endpoint", metavar="S",
                   help="the daemon's events.snapshot_bind: print the current state first (a {\"type\": \"snapshot\"} line)")
    p.add_argument("--server-key", metavar="PATH", help="CURVE: the daemon's public key file (SERVER.key); needs --client-key")
    p.add_argument("--client-key", metavar="PATH",
                   help="CURVE: this client's secret key file (NAME.key_secret, mode 0600; its NAME.key must be in the "
                        "daemon's allowed_clients_dir)")
    p.add_argument("--topic", action="append", metavar="PREFIX",
                   help="only topics starting with PREFIX, e.g. segment. or heartbeat/demo (repeatable; default all; "
                        "seq gaps are only reported without it)")
    p.add_argument("--count", type=int, metavar="N", help="exit 0 after N events (0 with --snapshot-endpoint: snapshot only)")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="exit 1 if nothing arrives for SECONDS (default: wait forever)")
    p.add_argument("--resume", metavar="FILE",
                   help="keep the position of the last printed event in FILE; when FILE exists, replay from there "
                        "instead of printing a snapshot (needs --snapshot-endpoint)")
    p.set_defaults(func=cmd_subscribe)

    def cmd_keygen(args: argparse.Namespace) -> int:
        from detector.events.curve import keygen_command

        return keygen_command(args)

    p = sub.add_parser("keygen", help="make a CURVE key pair (NAME.key, NAME.key_secret) for events.curve / subscribe")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="directory for the key files (created if missing)")
    p.add_argument("--name", default="server", help="base name of the files (default %(default)s)")
    p.add_argument("--force", action="store_true", help="replace existing key files of that name")
    p.set_defaults(func=cmd_keygen)



def _add_offline_commands(sub: Any) -> None:
    """classify, evaluate, bench, demo: recordings through the engine, and the quick start."""
    p = sub.add_parser("classify", help="classify a recording offline and write EDL/Comskip/chapters/plots")
    p.add_argument("video")
    p.add_argument("-m", "--model", required=True, help="model bundle directory")
    p.add_argument("-o", "--output", required=True, help="output directory")
    p.add_argument("--annotate", action="store_true", help="also write NAME.annotated.mp4")
    p.add_argument("--formats", nargs="+", metavar="FMT",
                   help="any of: json edl txt ffmeta csv png scte35 dash hls loudness (default: json edl txt ffmeta csv png)")
    p.add_argument("--preroll-seconds", type=float, default=4.0, metavar="S",
                   help="scte35 sidecar: insert each cue S seconds before its splice point (default: 4)")
    _add_engine_options(p)
    _add_rule_options(p)
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("evaluate", help="score a recording against ground truth; prints JSON")
    p.add_argument("video")
    p.add_argument("--truth", required=True,
                   help="CSV start,end,label, Kodi EDL, or JSON with segments and trap spans (the demo's NAME.truth.json)")
    p.add_argument("--segments-dir", metavar="DIR",
                   help="also write each bundle's predicted segments to DIR (VIDEO.BUNDLE.segments.json and .csv)")
    p.add_argument("-m", "--model", required=True, action="append", metavar="MODEL_DIR",
                   help="model bundle directory; repeat (-m A -m B) for a side-by-side ablation on the same recording")
    p.add_argument("--table", action="store_true", help="also print a human-readable table (to stderr)")
    _add_engine_options(p)
    _add_rule_options(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("bench", help="backbone frames/s per engine and precision, and channels this machine carries")
    p.add_argument("-m", "--model", required=True, help="model bundle directory (a backbone is enough)")
    p.add_argument("--seconds", type=float, default=20.0, help="measured seconds per path over all rounds (default %(default)s)")
    p.add_argument("--rounds", type=int, default=4, help="interleaved rounds (default %(default)s); frames/s is the median")
    p.add_argument("--batch", type=int, default=16, help="frames per backbone call (default %(default)s, as inference.batch_size)")
    p.add_argument("--threads", type=int, default=0, help="inference threads, 0 = all cores (default)")
    p.add_argument("--analysis-fps", type=float, default=5.0, help="analysis rate for the channel estimate (default %(default)s)")
    p.add_argument("--video", help="a recording of your channels for the decode cost (default: a generated 720p25 H.264 clip)")
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("demo", help="the quick start: demo data, models, a run with events printed")
    p.add_argument("--dir", default="demo", help="where demo data and models go (default ./demo)")
    p.add_argument("--quick", action="store_true", help="smaller data set (for tests)")
    p.add_argument("--offline", action="store_true", help="classify the demo broadcast offline instead of watching it live")
    p.set_defaults(func=cmd_demo)


def _add_model_commands(sub: Any) -> None:
    """export-backbone, train: making a model bundle (need the [train] extra)."""
    p = sub.add_parser("export-backbone", help="InceptionV3 -> backbone.onnx (needs [train])")
    p.add_argument("-o", "--output", required=True, help="model bundle directory")
    p.add_argument("--weights", default=None, help="imagenet (download, cached; the default), none (random, for tests), or PATH to the notop .h5")
    p.add_argument("--seed", type=int, default=0, help="random seed for --weights none and calibration sampling")
    p.add_argument("--force", action="store_true", help="replace a different model in the output directory")
    p.add_argument("--quantize", choices=["int8"], help="also write backbone.int8.onnx (static int8, calibrated on --calibration); "
                   "on a bundle that already has a backbone (even a trained one) only the int8 file is added")
    p.add_argument("--calibration", metavar="DATA_DIR", help="training data whose frames calibrate the int8 ranges")
    p.add_argument("--calibration-frames", type=int, default=240, metavar="N", help="frames used for calibration (default %(default)s)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_export_backbone)

    p = sub.add_parser("train", help="features, LSTM training, evaluation, sequence.onnx (needs [train])")
    p.add_argument("data_dir", metavar="DATA_DIR")
    p.add_argument("-o", "--output", required=True, help="model bundle directory (with a backbone from export-backbone)")
    p.add_argument("--ad-class", default="commercial")
    p.add_argument("--fps", type=float, default=5.0, help="analysis frames per second (default 5)")
    p.add_argument("--window-seconds", type=float, default=8.0, help="window length T in seconds (default 8)")
    p.add_argument("--arch", choices=["small", "original"], default="small",
                   help="small: LSTM(UNITS) -> softmax; original: LSTM(2048) -> Dense 512 -> Dropout -> softmax")
    p.add_argument("--units", type=int, default=64, help="LSTM units for --arch small")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", help="feature cache (default ~/.cache/ad-detector/features)")
    p.add_argument("--force", action="store_true", help="replace a trained model in the output directory")
    p.add_argument("--blocks", default="", metavar="NAMES",
                   help="cue blocks beside the backbone features, comma-separated: audio, visual (default: none)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_train)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    from detector.sources.video import quiet_native_logs

    quiet_native_logs()
    code = _call(args)
    if args.func is cmd_run:
        from detector.util.exitguard import leave

        return leave(code)
    return code


def _call(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"ad-detector: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeFailure as exc:
        print(f"ad-detector: failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ad-detector: interrupted", file=sys.stderr)
        return 130
