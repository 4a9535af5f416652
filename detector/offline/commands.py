"""`ad-detector classify` and `ad-detector evaluate`: a recording through the engine, then its
files (classify) or its scores against ground truth (evaluate).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from detector.analysis.breakrules import BreakRules
from detector.analysis.decision import DecisionSettings
from detector.errors import UsageError
from detector.model.bundle import Bundle, load_bundle
from detector.model.models import Models
from detector.offline.analyse import Analysis, analyse, default_providers
from detector.sources.video import open_video

log = logging.getLogger(__name__)


def _models(bundle: Bundle, args: argparse.Namespace) -> Models:
    models = Models(bundle, default_providers(args.providers), engine=args.engine, precision=args.precision)
    log.info("models loaded bundle=%s engine=%s precision=%s providers=%s classes=%s", bundle.root, models.plan.engine,
             models.precision, ",".join(models.providers_in_use), ",".join(bundle.classes))
    return models


def _check_video_arg(video: str) -> Path:
    path = Path(video)
    open_video(path)   # clear errors before any model is loaded
    return path


def rules_from_args(args: argparse.Namespace) -> BreakRules:
    """The break rules of `--min-break` ... `--min-programme` (absent: off), checked like check-config does."""
    values = {name: getattr(args, name, None) for name in ("min_break", "max_break", "min_spot", "max_spot", "min_programme")}
    for name, value in values.items():
        if value is not None and not (0 <= value <= 86400):
            raise UsageError(f"--{name.replace('_', '-')}: {value:g} is not a number of seconds between 0 and 86400")
    for kind in ("break", "spot"):
        low, high = values[f"min_{kind}"], values[f"max_{kind}"]
        if low is not None and high is not None and high < low:
            raise UsageError(f"--max-{kind} ({high:g}) must be >= --min-{kind} ({low:g})")
    return BreakRules(min_break_seconds=values["min_break"] or 0.0, max_break_seconds=values["max_break"],
                      min_spot_seconds=values["min_spot"] or 0.0, max_spot_seconds=values["max_spot"],
                      min_programme_seconds=values["min_programme"] or 0.0)


def classify_command(args: argparse.Namespace) -> int:
    from detector.offline.cues import plan_cues
    from detector.offline.formats import DEFAULT_FORMATS, check_formats, ensure_writable_dir, write_outputs

    video = _check_video_arg(args.video)
    formats = check_formats(args.formats or DEFAULT_FORMATS)
    preroll = float(args.preroll_seconds)
    if not (preroll >= 0 and preroll < 3600):
        raise UsageError(f"--preroll-seconds must be between 0 and 3600 seconds, got {args.preroll_seconds}")
    if "hls" in formats:
        from detector.offline.hls import check_mpegts

        check_mpegts(video)
    decision = DecisionSettings(rules=rules_from_args(args))
    out_dir = Path(args.output)
    bundle = load_bundle(Path(args.model))   # a bad bundle is refused before OUT_DIR is created
    ensure_writable_dir(out_dir)
    models = _models(bundle, args)
    result = analyse(video, bundle, models, decision, progress=not args.no_progress, loudness=True)
    if not result.report.has_audio:
        log.warning("no audio stream, loudness not measured file=%s (integrated_lufs and loudness_range_lu are null)", video)
    cue_plan = plan_cues(result.segments, result.pts_marks.pts_at, result.first_pts, video.stem, preroll)
    written = write_outputs(out_dir, video.stem, result.segments, result.times, result.probs, result.classes,
                            result.ad_classes, result.fps, result.total_frames, result.duration, formats,
                            cue_plan=cue_plan, video=video, loudness=result.loudness)
    if args.annotate:
        from detector.offline.annotate import write_annotated

        written.append(write_annotated(video, out_dir / f"{video.stem}.annotated.mp4", result, progress=not args.no_progress))
    ads = [s for s in result.segments if s.is_ad]
    t = result.timings
    log.info("classified file=%s duration_s=%.1f ad_segments=%d ad_seconds=%.1f speed_x_realtime=%.1f break_rule_actions=%d", video,
             result.duration, len(ads), sum(s.duration for s in ads), result.duration / max(t["total_s"], 1e-9), len(result.rule_actions))
    for path in written:
        print(path)
    return 0


def segment_file_names(video: Path, model_dirs: list[str]) -> list[str]:
    """`VIDEO_STEM.MODEL_DIR_NAME` per bundle, made unique with `-2`, `-3` ... (two `-m .../bundle`)."""
    names: list[str] = []
    for d in model_dirs:
        base = f"{video.stem}.{Path(d).resolve().name or 'model'}"
        name, n = base, 1
        while name in names:
            n += 1
            name = f"{base}-{n}"
        names.append(name)
    return names


def _analyse_sharing_backbones(video: Path, bundles: list[Bundle], args: argparse.Namespace,
                               decision: DecisionSettings) -> list[Analysis]:
    """Each bundle's analysis of `video`, in order, decoding and running the backbone once per
    distinct backbone (`shared_pass_key`): an ablation's bundles share one, so three bundles
    cost one backbone pass plus three sequence models instead of three whole passes."""
    from detector.offline.analyse import analyse_many, shared_pass_key

    groups: list[tuple[tuple, Models, list[int]]] = []      # key, the models that run the backbone, members
    models: list[Models] = []
    for i, bundle in enumerate(bundles):
        for key, owner, members in groups:
            if (bundle.variant_sha256(owner.precision), float(bundle.analysis_fps), tuple(bundle.input_size)) == key:
                models.append(Models(bundle, backbone=owner.backbone))
                log.info("models loaded bundle=%s backbone shared with=%s classes=%s", bundle.root, bundles[members[0]].root,
                         ",".join(bundle.classes))
                members.append(i)
                break
        else:
            models.append(_models(bundle, args))
            groups.append((shared_pass_key(bundle, models[-1]), models[-1], [i]))
    out: dict[int, Analysis] = {}
    for _, owner, members in groups:
        results = analyse_many(video, [(bundles[i], models[i]) for i in members], decision, progress=not args.no_progress)
        out.update(zip(members, results))
        owner.close()
    return [out[i] for i in range(len(bundles))]


def evaluate_command(args: argparse.Namespace) -> int:
    """One -m: that bundle's scores (the JSON object as ever). Several -m: the same recording
    through each bundle, side by side (`{"video", "models": [{"model", "blocks", ...scores}]}`),
    the ablation that shows what a cue block buys (video only vs. video + audio vs. all).

    A `.json` truth with trap spans (detector.offline.truth) adds `trap_spans` (accuracy inside
    them, per kind); `--segments-dir DIR` writes each bundle's predicted segments there
    (`VIDEO.BUNDLE.segments.json` and `.csv`), so a score can be checked against what was said."""
    from detector.offline.formats import ensure_writable_dir, segments_json
    from detector.offline.scoring import score, span_scores, table
    from detector.offline.truth import read_truth
    from detector.analysis.segments import labels_csv_text
    from detector.util.fsutil import atomic_write_text

    video = _check_video_arg(args.video)
    decision = DecisionSettings(rules=rules_from_args(args))
    dirs = args.model if isinstance(args.model, list) else [args.model]
    bundles = [load_bundle(Path(d)) for d in dirs]      # every bundle checked before the first long analysis
    for bundle in bundles:                              # so is the truth, once per set of ad classes
        read_truth(Path(args.truth), set(bundle.ad_classes), ad_label=bundle.ad_classes[0])
    seg_dir = Path(args.segments_dir) if getattr(args, "segments_dir", None) else None
    if seg_dir is not None:
        ensure_writable_dir(seg_dir)
    names = segment_file_names(video, [str(d) for d in dirs])
    analyses = _analyse_sharing_backbones(video, bundles, args, decision)
    results = []
    for bundle, name, result in zip(bundles, names, analyses):
        truth = read_truth(Path(args.truth), set(bundle.ad_classes), ad_label=bundle.ad_classes[0])
        figures = score(result.segments, truth.segments, result.duration)
        if truth.spans:
            figures["trap_spans"] = span_scores(result.segments, truth.segments, truth.spans, result.duration)
        figures["video"] = str(video)
        figures["speed_x_realtime"] = round(result.duration / max(result.timings["total_s"], 1e-9), 2)
        if seg_dir is not None:
            atomic_write_text(seg_dir / f"{name}.segments.json", segments_json(result.segments))
            atomic_write_text(seg_dir / f"{name}.csv", labels_csv_text(result.segments))
            figures["segments_file"] = str(seg_dir / f"{name}.segments.json")
            log.info("predicted segments written file=%s segments=%d", seg_dir / f"{name}.segments.json", len(result.segments))
        results.append((bundle, figures))
    if len(results) == 1:
        print(json.dumps(results[0][1], indent=2))
        if args.table:
            print(table(results[0][1]), file=sys.stderr)
        return 0
    rows = []
    for (bundle, figures), name in zip(results, dirs):
        rows.append({"model": str(name), "blocks": [b.name for b in bundle.blocks],
                     **{k: v for k, v in figures.items() if k != "video"}})
    print(json.dumps({"video": str(video), "models": rows}, indent=2))
    if args.table:
        for row, (_, figures) in zip(rows, results):
            print(f"== {row['model']} (blocks: {', '.join(row['blocks']) or 'none'})", file=sys.stderr)
            print(table(figures), file=sys.stderr)
    return 0
