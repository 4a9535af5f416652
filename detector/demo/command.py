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
    from detector.model.bundle import read_manifest

    model_dir = root / "models"
    manifest = read_manifest(model_dir) if model_dir.exists() else None
    if manifest and manifest.get("sequence") and (manifest.get("backbone") or {}).get("variants"):
        return model_dir
    from detector.errors import need_train_extra

    need_train_extra("demo")
    if manifest and manifest.get("sequence"):
        _quantize(model_dir, data_dir)
        return model_dir
    if not manifest or not manifest.get("backbone"):
        from ad_detector_export.backbone import export_backbone

        print("== exporting the InceptionV3 backbone to ONNX (random weights: ImageNet cannot be downloaded here)", flush=True)
        export_backbone(model_dir, weights="none", force=True)
    from ad_detector_train.trainer import TrainOptions, train

    print("== training the sequence model on the demo clips and recordings", flush=True)
    train(TrainOptions(data_dir=data_dir, out_dir=model_dir, force=True, epochs=15 if quick else 30))
    _quantize(model_dir, data_dir)
    return model_dir


def _quantize(model_dir: Path, data_dir: Path) -> None:
    """The int8 backbone, so the live run shows the fast CPU path (OpenVINO int8) the daemon picks."""
    from ad_detector_export.quantize import quantize_bundle

    print("== quantizing the backbone to int8, calibrated on the demo training clips", flush=True)
    quantize_bundle(model_dir, data_dir)


def demo_command(args: argparse.Namespace) -> int:
    from detector.demo.data import generate_demo_set

    root = Path(args.dir)
    print(f"== demo data in {root} (generated once, deterministic)", flush=True)
    kwargs = dict(train_clips=4, test_clips=2, clip_seconds=8.0, train_recordings=1, recording_seconds=90.0,
                  broadcast_seconds=120.0) if args.quick else {}
    demo = generate_demo_set(root, seed=0, **kwargs)
    model_dir = ensure_bundle(root, demo.data_dir, args.quick)
    if args.offline:
        return offline_run(demo.broadcast, demo.truth_csv, model_dir, root / "output")
    return live_run(demo.broadcast, demo.truth_csv, model_dir, root)


def to_h264(src: Path, dst: Path) -> Path:
    """Broadcast chains carry H.264; the RTSP server packetises it as it is (no re-encoding)."""
    import subprocess

    tmp = dst.with_suffix(".partial.mp4")
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(src), "-c:v", "libx264", "-preset", "veryfast",
                    "-g", "25", "-bf", "0", "-pix_fmt", "yuv420p", "-an", str(tmp)], check=True, timeout=1800)
    tmp.replace(dst)
    return dst


def rtsp_server_available() -> bool:
    """Debian's GStreamer RTSP server bindings live in the system Python."""
    import subprocess

    probe = "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"
    try:
        return subprocess.run(["/usr/bin/python3", "-c", probe], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def live_run(broadcast: Path, truth_csv: Path, model_dir: Path, root: Path) -> int:
    """Serve the broadcast as a live RTSP channel, run the daemon, print events beside the truth."""
    import json
    import shutil
    import subprocess
    import time

    import zmq

    from detector.config import parse_config
    from detector.live.daemon import Daemon
    from detector.offline.scoring import score, table
    from detector.analysis.segments import Segment, read_labels

    truth = read_labels(truth_csv, {"commercial"})
    server = None
    if rtsp_server_available() and shutil.which("ffmpeg"):
        h264 = root / "broadcast.h264.mp4"
        if not h264.exists() or h264.stat().st_mtime < broadcast.stat().st_mtime:
            print("== converting the demo broadcast to H.264 for the RTSP server", flush=True)
            to_h264(broadcast, h264)
        port = free_port()
        server = subprocess.Popen(["/usr/bin/python3", str(Path(__file__).parent / "rtsp_server.py"), str(h264),
                                   "--port", str(port), "--mount", "/demo"], stdout=subprocess.PIPE, text=True)
        line = server.stdout.readline() if server.stdout else ""
        if not line.startswith("READY"):
            server.kill()
            server = None
        source, realtime = f"rtsp://127.0.0.1:{port}/demo", False
    if server is None:
        print("== no GStreamer RTSP server here: playing the file paced in real time instead of a live stream", flush=True)
        source, realtime = str(broadcast.resolve()), True
    else:
        print(f"== serving the demo broadcast live at {source} (GStreamer RTSP server)", flush=True)
    from detector.offline.analyse import default_providers

    ev, snap, met = free_port(), free_port(), free_port()
    cfg = parse_config(json.dumps({
        "model": str(model_dir.resolve()),
        "inference": {"providers": default_providers(None)},
        "channels": [{"name": "demo", "source": source, "realtime": realtime}],
        "events": {"bind": f"tcp://127.0.0.1:{ev}", "snapshot_bind": f"tcp://127.0.0.1:{snap}",
                   "journal": str((root / "events.jsonl").resolve())},
        "metrics": {"bind": f"127.0.0.1:{met}"},
        "capture": {"stall_seconds": 10},
    }), origin="demo config", base_dir=root)
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        logging.getLogger().setLevel(logging.WARNING)   # the table below is the demo's output; -v shows the daemon's log
    daemon = Daemon(cfg)
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"segment.")
    sub.setsockopt(zmq.SUBSCRIBE, b"stream.")
    sub.setsockopt(zmq.RCVTIMEO, 500)
    sub.connect(f"tcp://127.0.0.1:{ev}")
    duration = truth[-1].end if truth else 0.0
    edges = [(s.start, "ad starts") for s in truth if s.is_ad] + [(s.end, "ad ends") for s in truth if s.is_ad and s.end < duration]
    print(f"== the daemon is running: events on tcp://127.0.0.1:{ev}, metrics on http://127.0.0.1:{met}/metrics; "
          f"the broadcast lasts {clock(duration)}; Ctrl-C stops", flush=True)
    print(f"\n{'stream':>8}  {'event':<11} {'label':<11} {'truth':>8} {'error':>7}  {'announced after':>15}")
    found: list[tuple[float, bool]] = []
    started = time.monotonic()
    try:
        daemon.start()
        while time.monotonic() - started < duration + 60:
            try:
                _topic, body = sub.recv_multipart()
            except zmq.Again:
                continue
            e = json.loads(body)
            if e["type"] == "stream.down":
                print(f"{'':>8}  stream down ({e.get('reason', '')})", flush=True)
                if found or e.get("reason") == "end_of_stream":
                    break
                continue
            if e["type"] == "stream.up":
                print(f"{'':>8}  stream up", flush=True)
                continue
            if e["type"] != "segment.start":
                continue
            t = float(e["stream_time"])
            kind = "ad starts" if e["is_ad"] else ("ad ends" if found else "starts as")
            same = [x for x, k in edges if k == kind]
            nearest = min(same, key=lambda x: abs(x - t)) if same else None
            from datetime import datetime

            lag = time.time() - datetime.fromisoformat(e["time"].replace("Z", "+00:00")).timestamp()
            print(f"{clock(t):>8}  {kind:<11} {e['label']:<11} {clock(nearest) if nearest is not None else '':>8} "
                  f"{(f'{t - nearest:+.1f} s') if nearest is not None else '':>7}  {lag:>13.1f} s", flush=True)
            found.append((t, bool(e["is_ad"])))
    except KeyboardInterrupt:
        print("\n== interrupted", flush=True)
    finally:
        sub.close(0)
        daemon.stop()
        if server is not None:
            server.terminate()
            server.wait(5)
    if found:
        end = max(duration, found[-1][0] + 0.1)
        segs = [Segment(t, (found[i + 1][0] if i + 1 < len(found) else end), "commercial" if ad else "football", ad)
                for i, (t, ad) in enumerate(found)]
        print("\n" + table(score(segs, truth, end)))
    print(f"\nevents journal: {root / 'events.jsonl'}; offline files: ad-detector demo --offline", flush=True)
    return 0


def offline_run(video: Path, truth_csv: Path, model_dir: Path, out_dir: Path) -> int:
    """Classify the broadcast, print breaks beside the truth, write the media-centre files."""
    from detector.analysis.boundary import STREAM_START
    from detector.model.bundle import load_bundle
    from detector.offline.formats import write_outputs
    from detector.model.models import Models
    from detector.offline.analyse import analyse
    from detector.offline.scoring import score, table
    from detector.analysis.segments import read_labels

    bundle = load_bundle(model_dir)
    models = Models(bundle, ["CPUExecutionProvider"], engine="auto", precision="auto")
    print(f"== backbone: {models.plan.engine} {models.precision}", flush=True)
    truth = read_labels(truth_csv, set(bundle.ad_classes))
    print(f"== classifying {video.name} offline, at full speed", flush=True)
    result = analyse(video, bundle, models, loudness=True)
    true_edges = [(s.start, "ad starts") for s in truth if s.is_ad and s.start > 0] + [(s.end, "ad ends") for s in truth if s.is_ad and s.end < result.duration - 0.05]
    print(f"\n{'found at':>9}  {'event':<10} {'label':<12} {'boundary':<8} {'truth':>8}  {'error':>7}")
    for tr in result.transitions:
        if tr.boundary_kind == STREAM_START:
            print(f"{clock(tr.boundary):>9}  {'starts as':<10} {tr.label:<12} {'':<8}")
            continue
        kind = "ad starts" if tr.is_ad else "ad ends"
        same = [t for t, k in true_edges if k == kind]
        nearest = min(same, key=lambda t: abs(t - tr.boundary)) if same else None
        err = f"{tr.boundary - nearest:+.1f} s" if nearest is not None else ""
        print(f"{clock(tr.boundary):>9}  {kind:<10} {tr.label:<12} {tr.boundary_kind:<8} {clock(nearest) if nearest is not None else '-':>8}  {err:>7}")
    figures = score(result.segments, truth, result.duration)
    written = write_outputs(out_dir, video.stem, result.segments, result.times, result.probs, result.classes, result.ad_classes,
                            result.fps, result.total_frames, result.duration, truth=truth, loudness=result.loudness)
    print("\n" + table(figures))
    print(f"\nfiles for media centres in {out_dir}: " + ", ".join(p.name for p in written))
    print(f"speed: {result.duration / max(result.timings['total_s'], 1e-9):.1f}x real time on this machine")
    if figures["ad_breaks_true"] and not figures["ad_breaks_detected"]:
        raise UsageError("the demo found none of the ad breaks; the demo bundle is not working")
    return 0
