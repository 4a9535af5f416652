"""`ad-detector train DATA_DIR -o MODEL_DIR`: features -> windows -> LSTM -> sequence.onnx.

The bundle directory must already hold a backbone (`export-backbone`); its features are
computed with that very `backbone.onnx` through ONNX Runtime, as the daemon will.
`model.json` is rewritten last and atomically; while training runs the directory holds a
backbone-only manifest, so an interrupted run never leaves a bundle that looks complete.

`--blocks audio,visual` adds cue blocks (detector.analysis.blocks): the cue vectors cached
with the features are standardised inside the graph with statistics of the training frames
(missing values filled with the mean first, as the runtime does) and `sequence.onnx` gets
its second input `cues`; `model.json` lists the blocks with those statistics.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from detector.analysis.blocks import ALL_BLOCKS, BLOCKS, block_columns, fill_missing
from detector.model.bundle import SEQUENCE_CUES, SEQUENCE_INPUT, load_bundle, read_manifest, sha256_file
from detector.errors import UsageError
from detector.model.models import Models
from detector.analysis.window import min_frames_for
from ad_detector_export.common import now_rfc3339, prepare_out_dir, quiet_tensorflow, tool_versions, write_manifest
from ad_detector_train import windows as W
from ad_detector_train.dataset import Dataset, Item, discover
from ad_detector_train.features import default_cache_dir, load_or_extract

log = logging.getLogger(__name__)


@dataclass
class TrainOptions:
    data_dir: Path
    out_dir: Path
    ad_class: str = "commercial"
    analysis_fps: float = 5.0
    window_seconds: float = 8.0
    arch: str = "small"
    units: int = 64
    epochs: int = 30
    batch_size: int = 64
    force: bool = False
    seed: int = 0
    cache_dir: Path | None = None
    progress: bool = True
    val_fraction: float = 0.15
    blocks: tuple[str, ...] = ()       # cue blocks beside the backbone features (default none: features only)


@dataclass
class Loaded:
    item: Item
    track: int          # index into the tracks list


# ----------------------------------------------------------------------------- features

def extract_all(ds: Dataset, models: Models, opts: TrainOptions, cues_out: list[np.ndarray] | None = None
                ) -> tuple[list[np.ndarray], list[np.ndarray], dict[str, list[Loaded]], list[str]]:
    """Features of every item; unreadable videos are skipped with a warning and counted.
    `cues_out`, when given, receives each kept track's raw cue vectors (every block, ALL_BLOCKS order)."""
    cache_dir = opts.cache_dir or default_cache_dir()
    items = [it for split in ("train", "test") for it in ds.split(split)]
    feats: list[np.ndarray] = []
    times: list[np.ndarray] = []
    loaded: dict[str, list[Loaded]] = {"train": [], "test": []}
    skipped: list[str] = []
    cached = 0
    bar = tqdm(items, desc="features", unit="video", disable=not opts.progress, file=sys.stderr, dynamic_ncols=True)
    frames_bar = tqdm(desc="frames", unit="frame", disable=not opts.progress, file=sys.stderr, dynamic_ncols=True, leave=False)
    for item in bar:
        bar.set_postfix_str(item.path.name[-30:])
        try:
            track, hit = load_or_extract(item.path, models, opts.analysis_fps, cache_dir,
                                         on_batch=lambda batch, _out: frames_bar.update(len(batch)))
        except UsageError as exc:
            log.warning("skipping unreadable video file=%s reason=%r", item.path, str(exc))
            skipped.append(f"{item.path}: {exc}")
            continue
        cached += hit
        if track.truncated_at is not None:
            log.warning("video truncated, using what decoded file=%s decoded_until_s=%.2f", item.path, track.truncated_at)
        loaded[item.split].append(Loaded(item, len(feats)))
        feats.append(track.features)
        times.append(track.times)
        if cues_out is not None:
            cues_out.append(track.cues if track.cues is not None else np.full((len(track.times), 0), np.nan, np.float32))
    frames_bar.close()
    log.info("features ready videos=%d from_cache=%d skipped=%d", len(feats), cached, len(skipped))
    return feats, times, loaded, skipped


# ----------------------------------------------------------------------------- windows

def build_recipes(loaded: list[Loaded], feats: list[np.ndarray], times: list[np.ndarray], ds: Dataset, t: int,
                  rng: np.random.Generator, transitions_per_pair: int = 6, min_frames: int | None = None) -> tuple[W.Recipes, list[str]]:
    """All windows of a split: clips, recordings, clip-to-clip transitions and, with
    `min_frames` < t (the dataset has clips shorter than the window), padded stream-start
    windows and same-class chains of the short clips. Videos under `min_frames` frames are
    returned as too short."""
    min_frames = t if min_frames is None else min_frames
    cidx = {c: i for i, c in enumerate(ds.classes)}
    parts: list[W.Recipes] = []
    short: list[str] = []
    clips_by_class: dict[int, list[int]] = {}
    for ld in loaded:
        n = len(feats[ld.track])
        if n < min_frames:
            short.append(str(ld.item.path))
            continue
        if ld.item.is_recording:
            parts.append(W.recording_windows(ld.track, times[ld.track], list(ld.item.segments or ()), cidx, t, ld.item.gap_label,
                                             min_frames=min_frames))
        else:
            c = cidx[ld.item.label]
            parts.append(W.clip_windows(ld.track, n, c, t))
            if min_frames < t:
                parts.append(W.padded_windows(ld.track, n, c, t, min_frames))
            clips_by_class.setdefault(c, []).append(ld.track)
    # transitions between clips of different classes, both directions
    for ca, tracks_a in clips_by_class.items():
        for cb, tracks_b in clips_by_class.items():
            if ca == cb:
                continue
            for ta in tracks_a:
                tb = tracks_b[int(rng.integers(len(tracks_b)))]
                parts.append(W.joined_windows(ta, len(feats[ta]), tb, len(feats[tb]), cb, t, rng, transitions_per_pair, W.TRANSITION))
    # a short clip followed by another clip of its class: full-length windows, as on air
    for c, tracks in clips_by_class.items():
        for ta in tracks:
            others = [tb for tb in tracks if tb != ta]
            if len(feats[ta]) >= t or not others:
                continue
            tb = others[int(rng.integers(len(others)))]
            parts.append(W.joined_windows(ta, len(feats[ta]), tb, len(feats[tb]), c, t, rng, transitions_per_pair, W.CHAIN))
    return W.concat(parts), short


def stream_start_frames(loaded: dict[str, list[Loaded]], feats: list[np.ndarray], t: int, opts: TrainOptions) -> int:
    """From how many frames a window counts: t, or half of it (padded windows) when some clip is shorter than t.

    Short clips are normal (many spots last 5-10 s). Rather than skip them, or shrink the window for
    every channel because of a few clips, they train as padded windows: the same windows the live
    engine gives its model in the first seconds of a stream (`window_min_frames` in the bundle).
    """
    clips = [ld for split in ("train", "test") for ld in loaded[split] if not ld.item.is_recording]
    short = [ld for ld in clips if len(feats[ld.track]) < t]
    if not short:
        return t
    min_frames = min_frames_for(t)
    usable = sum(len(feats[ld.track]) >= min_frames for ld in short)
    shortest = min(len(feats[ld.track]) for ld in short) / opts.analysis_fps
    log.info("short clips padded clips=%d of %d shorter than the %g s window (shortest %.1f s): %d of them train as windows "
             "padded the way the live window fills at stream start (oldest frame repeated, from %d frames = %g s); the bundle "
             "decides from %g s after a stream starts; a --window-seconds no longer than the clips avoids padding",
             len(short), len(clips), t / opts.analysis_fps, shortest, usable, min_frames, min_frames / opts.analysis_fps,
             min_frames / opts.analysis_fps)
    return min_frames


def fitting_window_hint(loaded: dict[str, list[Loaded]], feats: list[np.ndarray], opts: TrainOptions) -> str:
    """The option that fixes clips too short for the window: a window no longer than the longest clip."""
    lengths = [len(feats[ld.track]) for split in ("train", "test") for ld in loaded[split] if not ld.item.is_recording]
    lengths = [n for n in lengths if n >= 2] or [len(f) for f in feats if len(f) >= 2]
    if not lengths:
        return "the clips need at least 2 frames at --fps; use longer clips"
    seconds = max(lengths) / opts.analysis_fps
    return f"pass --window-seconds {seconds:g} or less (the longest clip lasts {seconds:g} s at --fps {opts.analysis_fps:g}), or use longer clips"


def split_validation(loaded: list[Loaded], fraction: float) -> tuple[list[Loaded], list[Loaded]]:
    """Hold out whole clips (every k-th of each class), so overlapping windows do not leak."""
    by_class: dict[str, list[Loaded]] = {}
    recordings = []
    for ld in loaded:
        (recordings if ld.item.is_recording else by_class.setdefault(ld.item.label or "", [])).append(ld)
    train, val = list(recordings), []
    step = max(2, round(1 / fraction)) if fraction > 0 else 0
    for lds in by_class.values():
        for i, ld in enumerate(lds):
            (val if step and len(lds) >= 3 and i % step == step - 1 else train).append(ld)
    return train, val


def split_recordings_tail(recipes: W.Recipes, feats: list[np.ndarray], fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Recording windows ending in the last `fraction` of their recording go to validation."""
    is_val = np.zeros(len(recipes), bool)
    rec = recipes.kind == W.RECORDING
    lengths = np.array([len(f) for f in feats])
    is_val[rec] = recipes.end[rec] > (1 - fraction) * lengths[recipes.a[rec]]
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


# ----------------------------------------------------------------------------- evaluation

def per_class_table(cm: np.ndarray, classes: list[str]) -> dict[str, dict[str, float]]:
    out = {}
    for i, c in enumerate(classes):
        tp = cm[i, i]
        prec = tp / cm[:, i].sum() if cm[:, i].sum() else 0.0
        rec = tp / cm[i, :].sum() if cm[i, :].sum() else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        out[c] = {"precision": round(float(prec), 4), "recall": round(float(rec), 4), "f1": round(float(f1), 4), "support": int(cm[i, :].sum())}
    return out


def switch_latency(probs_fn, feats: list[np.ndarray], loaded: list[Loaded], ds: Dataset, t: int, fps: float, max_pairs: int = 40,
                   rng: np.random.Generator | None = None) -> dict[str, Any]:
    """Seconds of new content the model needs before its top class is the new one and stays so.

    Measured on test clip-to-clip transitions: the decision latency that boundary-crossing
    windows in training buy (before smoothing and hysteresis add their share).
    """
    rng = rng or np.random.default_rng(0)
    cidx = {c: i for i, c in enumerate(ds.classes)}
    clips = [ld for ld in loaded if not ld.item.is_recording and len(feats[ld.track]) >= t]
    pairs = [(a, b) for a in clips for b in clips if a.item.label != b.item.label]
    if not pairs:
        return {"pairs": 0, "median_s": None, "p90_s": None, "never": 0}
    pairs = [pairs[i] for i in rng.permutation(len(pairs))[:max_pairs]]
    lat, never = [], 0
    for a, b in pairs:
        fa, fb = feats[a.track], feats[b.track]
        kmax = min(t - 1, len(fb))
        x = np.stack([np.concatenate([fa[len(fa) - (t - k):], fb[:k]]) for k in range(1, kmax + 1)])
        top = np.argmax(probs_fn(x), axis=1)
        ok = top == cidx[b.item.label]
        # first k from which the new class wins for every later k
        first = None
        for k in range(kmax, 0, -1):
            if ok[k - 1]:
                first = k
            else:
                break
        if first is None:
            never += 1
        else:
            lat.append(first / fps)
    return {"pairs": len(pairs), "median_s": round(float(np.median(lat)), 2) if lat else None,
            "p90_s": round(float(np.percentile(lat, 90)), 2) if lat else None, "never": never}


def format_report(classes: list[str], cm: np.ndarray, per_class: dict[str, dict[str, float]], acc: float, latency: dict[str, Any]) -> str:
    w = max(10, *(len(c) for c in classes)) + 2
    lines = [f"held-out test windows: {int(cm.sum())}   accuracy: {acc:.4f}", "", "confusion matrix (rows: truth, columns: predicted)",
             " " * w + "".join(f"{c:>{w}}" for c in classes)]
    for i, c in enumerate(classes):
        lines.append(f"{c:<{w}}" + "".join(f"{int(v):>{w}}" for v in cm[i]))
    lines += ["", f"{'class':<{w}}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}"]
    for c in classes:
        m = per_class[c]
        lines.append(f"{c:<{w}}{m['precision']:>10.4f}{m['recall']:>10.4f}{m['f1']:>10.4f}{m['support']:>10d}")
    if latency.get("pairs"):
        lines += ["", f"switch latency on {latency['pairs']} test transitions: median {latency['median_s']} s, "
                      f"p90 {latency['p90_s']} s, never switched {latency['never']}"]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- cue blocks

def cue_statistics(cues: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance per cue element over the training frames, ignoring missing (NaN) values.

    An element that never varies (or never occurs: every value missing) gets variance 1, so a
    value unlike training (a `present` flag at 0 on a channel without audio, when every
    training clip had audio) stays a modest number after standardising instead of exploding.
    """
    cues = np.asarray(cues, np.float64)
    with np.errstate(all="ignore"):
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(cues, axis=0) if len(cues) else np.zeros(cues.shape[1])
            var = np.nanvar(cues, axis=0) if len(cues) else np.ones(cues.shape[1])
    mean = np.where(np.isfinite(mean), mean, 0.0)
    var = np.where(np.isfinite(var) & (var > 1e-6), var, 1.0)
    return mean.astype(np.float32), var.astype(np.float32)


def split_inputs(x: np.ndarray, d: int, k: int) -> dict[str, np.ndarray]:
    """Windows of [features | cues] rows -> the sequence graph's inputs (features only when k == 0)."""
    if not k:
        return {SEQUENCE_INPUT: np.ascontiguousarray(x, np.float32)}
    return {SEQUENCE_INPUT: np.ascontiguousarray(x[..., :d], np.float32), SEQUENCE_CUES: np.ascontiguousarray(x[..., d:], np.float32)}


# ----------------------------------------------------------------------------- training

def make_dataset_class():
    import keras

    class WindowBatches(keras.utils.PyDataset):
        """Batches materialised from recipes on demand (bounded memory)."""

        def __init__(self, feats, recipes: W.Recipes, t: int, batch_size: int, shuffle: bool, seed: int, weights: dict[int, float] | None,
                     split_at: int | None = None):
            super().__init__()
            self.split_at = split_at       # rows are [features | cues]: feed them as the model's two inputs
            self.feats, self.r, self.t, self.bs, self.shuffle = feats, recipes, t, batch_size, shuffle
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(len(recipes)) if shuffle else np.arange(len(recipes))
            self.weights = weights

        def __len__(self) -> int:
            return math.ceil(len(self.r) / self.bs)

        def __getitem__(self, i: int):
            idx = self.order[i * self.bs:(i + 1) * self.bs]
            part = self.r.take(idx)
            x = W.materialize(self.feats, part, self.t)
            if self.split_at is not None:
                x = split_inputs(x, self.split_at, x.shape[-1] - self.split_at)
            if self.weights is None:
                return x, part.y
            return x, part.y, np.array([self.weights[int(c)] for c in part.y], np.float32)

        def on_epoch_end(self) -> None:
            if self.shuffle:
                self.order = self.rng.permutation(len(self.r))

    return WindowBatches


def train(opts: TrainOptions) -> dict[str, Any]:
    quiet_tensorflow()
    out_dir = Path(opts.out_dir)
    if opts.analysis_fps <= 0 or opts.analysis_fps > 30:
        raise UsageError(f"--fps {opts.analysis_fps}: must be in (0, 30]")
    t = int(round(opts.window_seconds * opts.analysis_fps))
    if t < 2:
        raise UsageError(f"--window-seconds {opts.window_seconds} at --fps {opts.analysis_fps} gives {t} frames; a window needs at least 2")
    ds = discover(Path(opts.data_dir), opts.ad_class)
    manifest = read_manifest(out_dir) if out_dir.exists() else None
    if manifest is None or not manifest.get("backbone"):
        raise UsageError(f"{out_dir}: no backbone there yet; run `ad-detector export-backbone -o {out_dir}` first")
    prepare_out_dir(out_dir, force=True)  # writability; foreign files are the export's concern
    if manifest.get("sequence") and not opts.force:
        raise UsageError(f"{out_dir}: already holds a trained model (classes {', '.join(manifest.get('classes') or [])}); use --force to replace it or another -o")
    backbone_only = {k: v for k, v in manifest.items() if k not in ("format",)}
    backbone_only.update({"sequence": None, "classes": None, "ad_classes": None, "evaluation": None, "blocks": None})
    write_manifest(out_dir, backbone_only)            # an interrupted run leaves no complete-looking bundle
    (out_dir / "sequence.onnx").unlink(missing_ok=True)
    # loaded after the invalidation: a --force run over a trained bundle must not open the old sequence.onnx
    bundle = load_bundle(out_dir, require_sequence=False)

    log.info("dataset classes=%s ad_class=%s train_items=%d test_items=%d window_frames=%d fps=%s",
             ",".join(ds.classes), ds.ad_class, len(ds.split("train")), len(ds.split("test")), t, opts.analysis_fps)
    models = Models(bundle, ["CPUExecutionProvider"])
    raw_cues: list[np.ndarray] = []
    feats, times, loaded, skipped = extract_all(ds, models, opts, raw_cues)
    if not loaded["train"]:
        raise UsageError(f"{opts.data_dir}: no training video could be decoded ({len(skipped)} skipped)")
    rng = np.random.default_rng(opts.seed)
    n_classes = len(ds.classes)

    min_frames = stream_start_frames(loaded, feats, t, opts)
    fix = fitting_window_hint(loaded, feats, opts)
    tr_loaded, va_loaded = split_validation(loaded["train"], opts.val_fraction)
    train_r, short_tr = build_recipes(tr_loaded, feats, times, ds, t, rng, min_frames=min_frames)
    val_r, short_va = build_recipes(va_loaded, feats, times, ds, t, rng, min_frames=min_frames)
    test_r, short_te = build_recipes(loaded["test"], feats, times, ds, t, rng, transitions_per_pair=0, min_frames=min_frames)
    need = f"{min_frames} frames = {min_frames / opts.analysis_fps:g} s" + (f", half the {t}-frame window" if min_frames < t else "")
    for path in short_tr + short_va + short_te:
        log.warning("skipping video shorter than a window can use file=%s needs_s=%g window_s=%g fix=%r", path,
                    min_frames / opts.analysis_fps, t / opts.analysis_fps, fix)
    skipped += [f"{p}: shorter than a window can use ({need})" for p in short_tr + short_va + short_te]
    keep, tail = split_recordings_tail(train_r, feats, opts.val_fraction)
    val_r = W.concat([val_r, train_r.take(tail)])
    train_r = train_r.take(keep)
    if len(train_r) == 0:
        raise UsageError(f"{opts.data_dir}: no training windows: every clip is shorter than a window can use ({need} at "
                         f"{opts.analysis_fps:g} fps); {fix}")
    present = set(np.unique(train_r.y).tolist())
    if len(present) < 2:
        raise UsageError(f"{opts.data_dir}: training windows cover only class {ds.classes[next(iter(present))]}; every class needs "
                         f"clips of at least {need}; {fix}")
    if len(val_r) == 0 or len(set(np.unique(val_r.y).tolist())) < 2:
        perm = rng.permutation(len(train_r))
        n_val = max(1, int(len(perm) * opts.val_fraction))
        val_r, train_r = train_r.take(perm[:n_val]), train_r.take(perm[n_val:])
    if len(test_r) == 0:
        raise UsageError(f"{opts.data_dir}/test: no usable test videos (each needs at least {need}); evaluation needs a held-out split; {fix}")
    counts = {split: {W.KIND_NAMES[k]: int((r.kind == k).sum()) for k in W.KIND_NAMES} for split, r in
              (("train", train_r), ("validation", val_r), ("test", test_r))}
    log.info("windows train=%s validation=%s test=%s", counts["train"], counts["validation"], counts["test"])

    # standardisation statistics from the training frames
    train_tracks = sorted({int(a) for a in train_r.a} | {int(b) for b in train_r.b if b >= 0})
    all_train = np.concatenate([feats[i] for i in train_tracks])
    mean, var = all_train.mean(axis=0), all_train.var(axis=0)
    d = feats[0].shape[1]
    k = 0
    block_specs: list[dict[str, Any]] = []
    cue_mean = cue_var = None
    if opts.blocks:
        cols = block_columns(ALL_BLOCKS, opts.blocks)
        chosen = [c[:, cols] for c in raw_cues]
        cue_mean, cue_var = cue_statistics(np.concatenate([chosen[i] for i in train_tracks]))
        k = len(cols)
        # one row per frame: [backbone features | cues, missing filled]: the windows, batches and
        # the switch-latency probe then need no second recipe; the model callable splits at d
        feats = [np.concatenate([f, fill_missing(c, cue_mean)], axis=1) for f, c in zip(feats, chosen)]
        pos = 0
        for name in opts.blocks:
            size = BLOCKS[name].size
            block_specs.append({"name": name, "size": size, "names": list(BLOCKS[name].names),
                                "mean": [round(float(v), 6) for v in cue_mean[pos:pos + size]],
                                "std": [round(float(v), 6) for v in np.sqrt(cue_var[pos:pos + size])]})
            pos += size
        log.info("cue blocks blocks=%s size=%d missing_fraction=%s", ",".join(opts.blocks), k,
                 {n: round(float(np.isnan(np.concatenate(chosen)[:, j]).mean()), 3)
                  for j, n in enumerate(e for b in opts.blocks for e in BLOCKS[b].names)})

    import keras

    from ad_detector_train.model import build_sequence_model

    keras.utils.set_random_seed(opts.seed)
    model = build_sequence_model(t, d, n_classes, mean, var, opts.arch, opts.units, cue_mean, cue_var)
    work = out_dir / "training"
    work.mkdir(exist_ok=True)
    weights = W.class_weights(train_r.y, n_classes)
    Batches = make_dataset_class()
    train_seq = Batches(feats, train_r, t, opts.batch_size, True, opts.seed, weights, d if k else None)
    val_seq = Batches(feats, val_r, t, opts.batch_size, False, opts.seed, None, d if k else None)
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=5, restore_best_weights=True),
        keras.callbacks.ModelCheckpoint(str(work / "best.keras"), monitor="val_loss", save_best_only=True),
        keras.callbacks.CSVLogger(str(work / "log.csv")),
        keras.callbacks.TensorBoard(log_dir=str(work / "tensorboard"), write_graph=False),
    ]
    verbose = (1 if sys.stderr.isatty() else 2) if opts.progress else 0
    with contextlib.redirect_stdout(sys.stderr):   # Keras prints its progress to stdout; stdout is for the report
        history = model.fit(train_seq, validation_data=val_seq, epochs=opts.epochs, callbacks=callbacks, verbose=verbose)
    epochs_run = len(history.history.get("loss", []))
    best_val = float(min(history.history.get("val_loss", [float("nan")])))

    # export, then evaluate the exported graph: the scores are those of the file that ships
    from ad_detector_export.sequence import export_sequence

    seq_path = out_dir / "sequence.onnx"
    check = W.materialize(feats, test_r.take(np.arange(min(64, len(test_r)))), t)
    parity = export_sequence(model, seq_path, t, d, check, k)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(seq_path), providers=["CPUExecutionProvider"])

    def probs(x: np.ndarray) -> np.ndarray:
        return sess.run(None, split_inputs(x, d, k))[0]

    preds = []
    for start in tqdm(range(0, len(test_r), 256), desc="evaluate", disable=not opts.progress, file=sys.stderr, leave=False):
        part = test_r.take(np.arange(start, min(start + 256, len(test_r))))
        preds.append(np.argmax(probs(W.materialize(feats, part, t)), axis=1))
    pred = np.concatenate(preds)
    cm = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(cm, (test_r.y, pred), 1)
    acc = float(np.trace(cm) / cm.sum())
    per_class = per_class_table(cm, ds.classes)
    latency = switch_latency(probs, feats, loaded["test"], ds, t, opts.analysis_fps)
    print(format_report(ds.classes, cm, per_class, acc, latency), flush=True)

    evaluation = {"split": "test", "windows": int(cm.sum()), "accuracy": round(acc, 4),
                  "confusion_matrix": cm.tolist(), "per_class": per_class, "switch_latency": latency}
    final = dict(backbone_only)
    final.update({
        "classes": ds.classes, "ad_classes": [ds.ad_class], "analysis_fps": opts.analysis_fps, "window_frames": t,
        "window_min_frames": min_frames,
        "blocks": block_specs or None,
        "sequence": {"file": seq_path.name, "sha256": sha256_file(seq_path), "arch": opts.arch,
                     "units": opts.units if opts.arch == "small" else 2048, "parity_max_abs_diff": parity},
        "evaluation": evaluation,
        "training": {"data_dir": str(Path(opts.data_dir).resolve()), "windows": counts, "epochs_run": epochs_run,
                     "best_val_loss": round(best_val, 5), "class_weights": {ds.classes[k]: round(v, 4) for k, v in weights.items()},
                     "skipped": skipped, "seed": opts.seed, "options": {k: str(v) for k, v in dataclasses.asdict(opts).items()}},
        "created": now_rfc3339(), "tools": tool_versions(),
    })
    if not block_specs:
        final.pop("blocks", None)        # a features-only bundle reads exactly as before blocks existed
    write_manifest(out_dir, final)
    load_bundle(out_dir)  # what we wrote must load, or we say so now rather than at the daemon
    log.info("model written dir=%s accuracy=%.4f windows_test=%d", out_dir, acc, int(cm.sum()))
    return final
