"""The model bundle: two ONNX files and the `model.json` manifest that ties them together.

A bundle is only trusted after its manifest parses, its files hash to what the manifest
says and the ONNX graphs have the shapes the runtime feeds them. Everything that goes
wrong here is the user's to fix (wrong directory, half-copied file), so it is a
`UsageError` naming the file and what to do (exit 2).

`model.json` is written last and atomically by export and training, so a directory
without it is not a bundle, whatever else it holds.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detector.errors import UsageError

MANIFEST = "model.json"
FORMAT = 1
BACKBONE_INPUT = "images"
BACKBONE_OUTPUT = "features"
SEQUENCE_INPUT = "features"
SEQUENCE_OUTPUT = "probabilities"
SEQUENCE_CUES = "cues"
FEATURE_DIM = 2048


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class BlockSpec:
    """One cue block the sequence model takes (model.json `blocks`): its elements and the
    training statistics the graph standardises with (mean also fills missing values)."""

    name: str
    names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def size(self) -> int:
        return len(self.names)


@dataclass(frozen=True)
class Bundle:
    """A verified bundle. `sequence` is None for a backbone-only bundle (before `train`)."""

    root: Path
    manifest: dict[str, Any]
    backbone_path: Path
    sequence_path: Path | None
    classes: tuple[str, ...] = field(default=())
    ad_classes: tuple[str, ...] = field(default=())
    analysis_fps: float = 5.0
    window_frames: int = 40
    input_size: tuple[int, int] = (299, 299)

    variants: tuple[tuple[str, Path, str], ...] = field(default=())   # (precision, file, sha256) beyond fp32
    blocks: tuple[BlockSpec, ...] = field(default=())                # cue blocks of the `cues` input, in order; () = features only

    @property
    def cue_size(self) -> int:
        """K, the width of the `cues` input (0 without blocks)."""
        return sum(b.size for b in self.blocks)

    @property
    def cue_mean(self) -> "np.ndarray":
        import numpy as np
        return np.array([m for b in self.blocks for m in b.mean], np.float32)

    @property
    def backbone_sha256(self) -> str:
        """The fp32 reference backbone's hash (feature caches and training key on it)."""
        return self.manifest["backbone"]["sha256"]

    @property
    def backbone_variants(self) -> dict[str, Path]:
        """precision -> backbone file: always "fp32", plus e.g. "int8" after `--quantize int8`."""
        out = {"fp32": self.backbone_path}
        out.update({prec: path for prec, path, _ in self.variants})
        return out

    def variant_sha256(self, precision: str) -> str:
        for prec, _, digest in self.variants:
            if prec == precision:
                return digest
        return self.backbone_sha256

    @property
    def sequence_sha256(self) -> str | None:
        seq = self.manifest.get("sequence")
        return seq["sha256"] if seq else None

    @property
    def ad_mask(self) -> list[bool]:
        return [c in self.ad_classes for c in self.classes]


def read_manifest(root: Path) -> dict[str, Any] | None:
    """The parsed `model.json`, or None when the directory has none."""
    path = Path(root) / MANIFEST
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: not a valid model manifest ({exc}); re-export the bundle") from None
    except (RecursionError, ValueError):  # nested thousands deep; an int over Python's digit limit
        raise UsageError(f"{path}: not a valid model manifest (nested too deeply or a number too long); re-export the bundle") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: not a valid model manifest (expected a JSON object)")
    return data


def _require(cond: bool, path: Path, message: str) -> None:
    if not cond:
        raise UsageError(f"{path}: {message}")


def _check_file(root: Path, manifest_path: Path, part: dict[str, Any], key: str) -> Path:
    _require(isinstance(part, dict), manifest_path, f"'{key}' must be an object with 'file' and 'sha256'")
    name = part.get("file")
    digest = part.get("sha256")
    _require(isinstance(name, str) and name and "/" not in name and "\\" not in name and name not in (".", ".."),
             manifest_path, f"'{key}.file' must be a file name inside the bundle directory")
    _require(isinstance(digest, str) and len(digest) == 64, manifest_path, f"'{key}.sha256' must be a SHA-256 hex digest")
    path = root / name
    if not path.is_file():
        raise UsageError(f"{path}: missing from the model bundle (named in {manifest_path}); copy the whole bundle directory")
    actual = sha256_file(path)
    if actual != digest:
        raise UsageError(f"{path}: SHA-256 {actual[:12]}... does not match model.json ({digest[:12]}...); the file is corrupt or from another bundle")
    return path


def _parse_blocks(raw: Any, mpath: Path) -> tuple[BlockSpec, ...]:
    """model.json `blocks`: [{name, size, names, mean, std}], each a block this version computes, as it computes it."""
    from detector.analysis.blocks import ALL_BLOCKS, BLOCKS

    if raw is None:
        return ()
    _require(isinstance(raw, list), mpath, "'blocks' must be a list of {name, size, names, mean, std}")
    out: list[BlockSpec] = []
    for i, b in enumerate(raw):
        key = f"blocks[{i}]"
        _require(isinstance(b, dict), mpath, f"'{key}' must be an object {{name, size, names, mean, std}}")
        name = b.get("name")
        _require(name in BLOCKS, mpath, f"'{key}.name' {name!r} is not a block this version computes ({', '.join(ALL_BLOCKS)}); "
                 "upgrade ad-detector or retrain with --blocks")
        _require(all(o.name != name for o in out), mpath, f"'{key}.name' {name!r} is listed twice")
        code = BLOCKS[name]
        names = b.get("names")
        _require(isinstance(names, list) and tuple(names) == code.names and b.get("size") == code.size, mpath,
                 f"'{key}' ({name}) was trained on elements {names!r} (size {b.get('size')!r}); this version computes "
                 f"{list(code.names)} (size {code.size}): retrain the bundle with this version")
        stats = {}
        for part in ("mean", "std"):
            v = b.get(part)
            _require(isinstance(v, list) and len(v) == code.size and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                                         and math.isfinite(x) for x in v),
                     mpath, f"'{key}.{part}' must list {code.size} finite numbers")
            stats[part] = tuple(float(x) for x in v)
        _require(all(x > 0 for x in stats["std"]), mpath, f"'{key}.std' must be positive")
        out.append(BlockSpec(name, code.names, stats["mean"], stats["std"]))
    return tuple(out)


def load_bundle(root: Path, require_sequence: bool = True, check_graphs: bool = True) -> Bundle:
    """Verify and describe the bundle in `root`.

    `check_graphs` opens both graphs in ONNX Runtime (CPU) to check input/output names,
    types and shapes against the manifest; the runtime then builds its own sessions with
    the configured providers.
    """
    root = Path(root)
    if not root.exists():
        raise UsageError(f"{root}: model bundle directory not found")
    if not root.is_dir():
        raise UsageError(f"{root}: not a directory; pass the model bundle directory (the one with model.json)")
    manifest = read_manifest(root)
    mpath = root / MANIFEST
    if manifest is None:
        raise UsageError(f"{mpath}: not found; this is not a complete model bundle (run `ad-detector export-backbone` and `ad-detector train`)")
    _require(manifest.get("format") == FORMAT, mpath, f"unsupported 'format' {manifest.get('format')!r} (this version reads format {FORMAT})")
    size = manifest.get("input_size")
    _require(isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size),
             mpath, "'input_size' must be [height, width]")
    fps = manifest.get("analysis_fps")
    _require(isinstance(fps, (int, float)) and not isinstance(fps, bool) and 0 < fps <= 60 and math.isfinite(fps), mpath, "'analysis_fps' must be a number in (0, 60]")
    backbone = _check_file(root, mpath, manifest.get("backbone"), "backbone")
    variants = []
    raw_variants = manifest["backbone"].get("variants") or {}
    _require(isinstance(raw_variants, dict), mpath, "'backbone.variants' must be an object {precision: {file, sha256}}")
    for prec, part in sorted(raw_variants.items()):
        _require(prec in ("int8",), mpath, f"'backbone.variants.{prec}': unknown precision (this version reads int8)")
        vpath = _check_file(root, mpath, part, f"backbone.variants.{prec}")
        variants.append((prec, vpath, part["sha256"]))

    sequence = None
    classes: tuple[str, ...] = ()
    ad_classes: tuple[str, ...] = ()
    window = 0
    if manifest.get("sequence") is None:
        if require_sequence:
            raise UsageError(f"{mpath}: this bundle has a backbone but no sequence model yet; run `ad-detector train DATA_DIR -o {root}`")
    else:
        sequence = _check_file(root, mpath, manifest["sequence"], "sequence")
        cls = manifest.get("classes")
        _require(isinstance(cls, list) and len(cls) >= 2 and all(isinstance(c, str) and c for c in cls) and len(set(cls)) == len(cls),
                 mpath, "'classes' must list at least two distinct class names")
        ads = manifest.get("ad_classes")
        _require(isinstance(ads, list) and ads and all(a in cls for a in ads), mpath, "'ad_classes' must name one or more of 'classes'")
        _require(len(ads) < len(cls), mpath, "'ad_classes' cannot be every class: nothing would be programme")
        window = manifest.get("window_frames")
        _require(isinstance(window, int) and window >= 1, mpath, "'window_frames' must be a positive integer")
        classes, ad_classes = tuple(cls), tuple(ads)
    blocks = _parse_blocks(manifest.get("blocks"), mpath) if sequence is not None else ()

    bundle = Bundle(root=root, manifest=manifest, backbone_path=backbone, sequence_path=sequence, classes=classes,
                    ad_classes=ad_classes, analysis_fps=float(fps), window_frames=int(window or 0),
                    input_size=(size[0], size[1]), variants=tuple(variants), blocks=blocks)
    if check_graphs:
        check_graph_shapes(bundle)
    return bundle


def _dims(shape: list[Any]) -> list[int | None]:
    return [d if isinstance(d, int) and d > 0 else None for d in shape]


def check_graph_shapes(bundle: Bundle) -> None:
    """Open the graphs (CPU, no optimisation) and check names, types and shapes."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3

    def session(path: Path) -> Any:
        try:
            return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types for bad graphs
            raise UsageError(f"{path}: ONNX Runtime cannot load it ({str(exc).splitlines()[0][:200]})") from None

    h, w = bundle.input_size
    bb = session(bundle.backbone_path)
    ins, outs = bb.get_inputs(), bb.get_outputs()
    _require(len(ins) == 1 and ins[0].name == BACKBONE_INPUT and ins[0].type == "tensor(uint8)"
             and _dims(ins[0].shape)[1:] == [h, w, 3] and len(ins[0].shape) == 4,
             bundle.backbone_path, f"expected one input '{BACKBONE_INPUT}' uint8 [N, {h}, {w}, 3], found "
             + ", ".join(f"'{i.name}' {i.type} {i.shape}" for i in ins))
    _require(len(outs) == 1 and outs[0].name == BACKBONE_OUTPUT and outs[0].type == "tensor(float)" and len(outs[0].shape) == 2,
             bundle.backbone_path, f"expected one output '{BACKBONE_OUTPUT}' float [N, D], found "
             + ", ".join(f"'{o.name}' {o.type} {o.shape}" for o in outs))
    dim = _dims(outs[0].shape)[1]
    for prec, vpath, _ in bundle.variants:
        vsess = session(vpath)
        vin, vout = vsess.get_inputs(), vsess.get_outputs()
        _require(len(vin) == 1 and vin[0].name == BACKBONE_INPUT and vin[0].type == "tensor(uint8)" and len(vout) == 1
                 and vout[0].name == BACKBONE_OUTPUT and _dims(vout[0].shape)[1] in (None, dim),
                 vpath, f"the {prec} backbone must have the same input '{BACKBONE_INPUT}' and output '{BACKBONE_OUTPUT}' as backbone.onnx")
    if bundle.sequence_path is None:
        return
    seq = session(bundle.sequence_path)
    ins, outs = seq.get_inputs(), seq.get_outputs()
    want = 2 if bundle.blocks else 1
    expected = f"'{SEQUENCE_INPUT}' float [N, {bundle.window_frames}, {dim}]" + (
        f" and '{SEQUENCE_CUES}' float [N, {bundle.window_frames}, {bundle.cue_size}] (the blocks in model.json)" if bundle.blocks else "")
    found = ", ".join(f"'{i.name}' {i.type} {i.shape}" for i in ins)
    _require(len(ins) == want, bundle.sequence_path, f"expected {'inputs' if want == 2 else 'one input'} {expected}, found {found}")
    by_name = {i.name: i for i in ins}
    for name, width in ((SEQUENCE_INPUT, dim), (SEQUENCE_CUES, bundle.cue_size))[:want]:
        i = by_name.get(name)
        idims = _dims(i.shape) if i is not None else []
        _require(i is not None and i.type == "tensor(float)" and len(idims) == 3 and idims[1] in (None, bundle.window_frames)
                 and idims[2] in (None, width), bundle.sequence_path, f"expected {'inputs' if want == 2 else 'one input'} {expected}, found {found}")
    odims = _dims(outs[0].shape) if outs else []
    _require(len(outs) == 1 and outs[0].name == SEQUENCE_OUTPUT and len(odims) == 2 and odims[1] in (None, len(bundle.classes)),
             bundle.sequence_path, f"expected one output '{SEQUENCE_OUTPUT}' float [N, {len(bundle.classes)}] (one per class in model.json), found "
             + ", ".join(f"'{o.name}' {o.type} {o.shape}" for o in outs))
