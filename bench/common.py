"""What the benchmark scripts share: machine info, waiting for a quiet machine, tables, JSON,
and building the inputs (backbone, trained bundle, demo frames) when they are missing.

No TensorFlow here: scripts that need it import it themselves, late.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"

if str(REPO) not in sys.path:  # `python bench/x.py` from anywhere, without installing bench/
    sys.path.insert(0, str(REPO))


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- machine

def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The SIMD features that matter for int8/bf16 inference."""
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile",
              "avx512_fp16")
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [f for f in wanted if f in have]
    except OSError:
        pass
    return []


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def versions(extra: Sequence[str] = ()) -> dict[str, str]:
    """Versions of the libraries that decide the speed; only modules already imported or cheap to import."""
    out = {"python": platform.python_version()}
    for name in ("numpy", "cv2", "onnxruntime", "openvino", *extra):
        try:
            mod = __import__(name)
            out[name] = getattr(mod, "__version__", "?")
        except Exception:  # noqa: BLE001 - a missing optional module is just not reported
            pass
    for name in ("tensorflow", "keras", "tf2onnx", "onnx"):
        mod = sys.modules.get(name)
        if mod is not None:
            out[name] = getattr(mod, "__version__", "?")
    try:
        from detector import __version__
        out["ad_detector"] = __version__
    except Exception:  # noqa: BLE001
        pass
    ff = shutil.which("ffmpeg")
    if ff:
        try:
            first = subprocess.run([ff, "-version"], capture_output=True, text=True, timeout=10).stdout.splitlines()[0]
            out["ffmpeg"] = first.split()[2] if len(first.split()) > 2 else first
        except Exception:  # noqa: BLE001
            pass
    return out


def machine_info(extra_versions: Sequence[str] = ()) -> dict[str, Any]:
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {"cpu_model": cpu_model(), "cores_usable": usable_cores(), "cpu_count": os.cpu_count(),
            "cpu_flags": cpu_flags(), "mem_gib": mem, "platform": platform.platform(),
            "loadavg": loadavg(), "versions": versions(extra_versions)}


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def wait_for_quiet(max_load: float, max_wait_s: float, poll_s: float = 15.0) -> dict[str, Any]:
    """Wait until the 1-minute load average is below `max_load`, for at most `max_wait_s`.

    The machine may be shared: a measurement taken while others run is still recorded,
    with the load seen, and the ratios between paths measured side by side stay meaningful.
    """
    started = time.monotonic()
    first = loadavg()
    seen = first
    while seen and seen[0] >= max_load and time.monotonic() - started < max_wait_s:
        log(f"load {seen[0]:.2f} >= {max_load}: waiting for a quieter moment "
            f"({time.monotonic() - started:.0f}/{max_wait_s:.0f} s)")
        time.sleep(poll_s)
        seen = loadavg()
    quiet = bool(seen) and seen[0] < max_load
    if not quiet:
        log(f"load still {seen[0] if seen else '?'} after {max_wait_s:.0f} s: measuring anyway (recorded)")
    return {"max_load": max_load, "max_wait_s": max_wait_s, "waited_s": round(time.monotonic() - started, 1),
            "load_at_first_check": first, "load_at_start": seen, "quiet": quiet}


_CLK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_stat() -> tuple[float, float]:
    """(busy seconds, steal seconds) summed over all CPUs since boot, from /proc/stat."""
    try:
        with open("/proc/stat") as fh:
            f = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    user, nice, system, idle, iowait, irq, softirq, steal = (f + [0] * 8)[:8]
    return (user + nice + system + irq + softirq) / _CLK, steal / _CLK


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class CpuMeter:
    """How many cores this process used, and how many everything else used, over an interval.

    On a shared machine the second figure says how much a measurement was disturbed:
    2 cores, others using 1.0 means the measured code had at most half the machine.
    """

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        self.t0 = time.perf_counter()
        self.busy0, self.steal0 = _proc_stat()
        self.own0 = _own_cpu()

    def read(self) -> dict[str, float]:
        wall = max(time.perf_counter() - self.t0, 1e-9)
        busy, steal = _proc_stat()
        own = _own_cpu() - self.own0
        others = max(0.0, (busy - self.busy0) - own)
        return {"wall_s": round(wall, 3), "own_cores": round(own / wall, 2), "others_cores": round(others / wall, 2),
                "steal_cores": round((steal - self.steal0) / wall, 2)}


def others_cpu(sample_s: float = 2.0) -> float:
    """Cores used by other processes over a short sample (this process idle meanwhile)."""
    m = CpuMeter()
    time.sleep(sample_s)
    return m.read()["others_cores"]


def wait_until_idle(max_others: float, budget_s: float, sample_s: float = 2.0) -> tuple[float, float]:
    """Sleep until other processes use less than `max_others` cores, for at most `budget_s`.

    Returns (seconds waited, others' cores at the last sample)."""
    t0 = time.monotonic()
    seen = others_cpu(sample_s)
    while seen >= max_others and time.monotonic() - t0 < budget_s:
        seen = others_cpu(sample_s)
    return time.monotonic() - t0, seen


def add_common_args(parser: Any, name: str) -> None:
    parser.add_argument("--out", type=Path, default=OUT / f"{name}.json", help=f"JSON results (default bench/out/{name}.json)")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (figures not meaningful)")
    parser.add_argument("--max-load", type=float, default=1.5,
                        help="wait for the 1-min load average to drop below this before measuring (default 1.5)")
    parser.add_argument("--max-wait", type=float, default=600.0,
                        help="wait at most this many seconds for that, then measure anyway (default 600; 0 = do not wait)")


# ----------------------------------------------------------------------------- output

def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (reads fine in a terminal too)."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in cells[1:]]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}" if abs(value) >= 0.1 else f"{value:.3g}"
    return str(value)


def write_json(path: Path, data: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n", encoding="utf-8")
    tmp.replace(path)
    log(f"wrote {path}")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# ----------------------------------------------------------------------------- inputs

def ad_detector_cmd() -> list[str]:
    """The console script of this interpreter's environment (falls back to `python -m detector`)."""
    script = Path(sys.executable).parent / "ad-detector"
    return [str(script)] if script.exists() else [sys.executable, "-m", "detector"]


def run_cli(args: Sequence[str], capture: bool = False) -> subprocess.CompletedProcess:
    cmd = ad_detector_cmd() + [str(a) for a in args]
    log("running: " + " ".join(cmd))
    proc = subprocess.run(cmd, cwd=REPO, text=True, stdout=subprocess.PIPE if capture else None)
    if proc.returncode != 0:
        raise SystemExit(f"bench: command failed with exit {proc.returncode}: {' '.join(cmd)}")
    return proc


def read_manifest(model_dir: Path) -> dict[str, Any] | None:
    path = Path(model_dir) / "model.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def ensure_backbone(model_dir: Path) -> Path:
    """A bundle directory with a backbone.onnx (exported with random weights when missing)."""
    manifest = read_manifest(model_dir)
    if not (manifest and manifest.get("backbone") and (Path(model_dir) / "backbone.onnx").is_file()):
        log(f"no backbone in {model_dir}: exporting one (--weights none)")
        run_cli(["export-backbone", "-o", model_dir, "--weights", "none"])
    return Path(model_dir) / "backbone.onnx"


def ensure_bundle(model_dir: Path, data_dir: Path, epochs: int | None = None) -> Path:
    """A trained bundle: export the backbone and train on `data_dir` when model.json has no sequence."""
    manifest = read_manifest(model_dir)
    if manifest and manifest.get("sequence"):
        return Path(model_dir)
    ensure_backbone(model_dir)
    args = ["train", data_dir, "-o", model_dir]
    if epochs:
        args += ["--epochs", str(epochs)]
    run_cli(args)
    return Path(model_dir)


def demo_frames(count: int, size: tuple[int, int] = (299, 299), seconds: float = 8.0, seed: int = 0) -> "Any":
    """`count` real decoded frames (football and commercial demo clips, sampled and resized as
    the engine does) as uint8 BGR [count, H, W, 3]; repeats frames when the clips are short."""
    import tempfile

    import numpy as np

    from detector.demo.data import write_clip
    from detector.sources.video import sample_video

    frames = []
    with tempfile.TemporaryDirectory(prefix="bench-frames-") as tmp:
        for i, label in enumerate(("football", "commercial")):
            path = Path(tmp) / f"{label}.mp4"
            write_clip(path, label, seconds=seconds, seed=seed + i)
            frames.extend(f.image for f in sample_video(path, analysis_fps=5.0, size=size))
    # interleave the classes so any batch holds both
    half = len(frames) // 2
    mixed = [f for pair in zip(frames[:half], frames[half:]) for f in pair] or frames
    reps = -(-count // len(mixed))
    return np.stack((mixed * reps)[:count])
