"""Live benchmark: the daemon on N channels from a local RTSP server (720p, 25 fps, H.264,
analysed at 5 fps): CPU per channel, frames dropped, decision latency (true boundary to
event received), resident memory at start and end, and how many channels this machine
carries in real time.

    .venv/bin/python bench/live.py [--model DIR] [--seconds 120] [--channels 1 2 3 4] [--quick]

Prints a table and writes bench/out/live.json. Needs the system Python's GStreamer RTSP
server and ffmpeg (`make test` installs both).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from livekit import Daemon, Listener, RtspServer, to_h264, write_config  # noqa: E402

OUT = REPO / "bench" / "out"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def scrape(url: str) -> str:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        return r.read().decode()


def metric_sum(text: str, name: str, contains: str = "") -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name)] in " {" and contains in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def ensure_media(seconds: float) -> tuple[Path, list]:
    from detector.demo.data import write_broadcast
    from detector.analysis.segments import read_labels

    OUT.mkdir(parents=True, exist_ok=True)
    src = OUT / f"live720-{int(seconds)}.mp4"
    h264 = OUT / f"live720-{int(seconds)}.h264.mp4"
    if not h264.exists():
        write_broadcast(src, seed=77, duration=seconds, size=(1280, 720), fps=25.0)
        to_h264(src, h264)
    return h264, read_labels(src.with_suffix(".csv"), {"commercial"})


def ensure_model(path: Path | None) -> Path:
    if path:
        return path
    for candidate in (OUT / "bundle", REPO / "demo" / "models"):
        if (candidate / "model.json").exists() and json.loads((candidate / "model.json").read_text()).get("sequence"):
            return candidate
    raise SystemExit("no trained bundle found: pass --model DIR (e.g. run `make demo` first, then --model demo/models)")


def run(n: int, seconds: float, media: Path, truth: list, model: Path, batch: int, engine: str = "auto", precision: str = "auto") -> dict:
    work = OUT / f"live-{n}"
    work.mkdir(parents=True, exist_ok=True)
    server = RtspServer(media)
    server.start()
    cfg = work / "config.yaml"
    ep = write_config(cfg, model, [{"name": f"ch{i}", "source": server.url} for i in range(n)],
                      inference={"batch_size": batch, "max_batch_delay_ms": 200, "engine": engine, "precision": precision},
                      capture={"stall_seconds": 10})
    listener = Listener(ep["events"])
    daemon = Daemon(cfg)
    try:
        if not daemon.wait_log("daemon ready", 180):
            raise SystemExit(daemon.log()[-2000:])
        listener.wait_for(lambda: len(listener.of_type("stream.up")) >= n, 60)
        time.sleep(5)   # past start-up
        pid = daemon.proc.pid
        c0, w0, rss0 = cpu_seconds(pid), time.monotonic(), rss_mib(pid)
        m0 = scrape(ep["metrics"])
        time.sleep(seconds)
        c1, w1, rss1 = cpu_seconds(pid), time.monotonic(), rss_mib(pid)
        m1 = scrape(ep["metrics"])
    finally:
        daemon.stop()
        listener.close()
        server.stop()
    cores = (c1 - c0) / (w1 - w0)
    info = next((l for l in m1.splitlines() if l.startswith("ad_detector_model_info{")), "")
    in_use = dict(re.findall(r'(\w+)="([^"]*)"', info))
    analysed = (metric_sum(m1, "ad_detector_frames_analyzed_total") - metric_sum(m0, "ad_detector_frames_analyzed_total")) / (w1 - w0)
    dropped = metric_sum(m1, "ad_detector_frames_dropped_total") - metric_sum(m0, "ad_detector_frames_dropped_total")
    # decision latency: true boundary (wall time of the stream's first frame + truth offset) -> event received
    latencies = []
    wall_now_minus_mono = time.time() - time.monotonic()
    for ch in range(n):
        evs = [(r, e) for r, _, e in listener.events if e.get("channel") == f"ch{ch}" and e["type"] == "segment.start"]
        if not evs:
            continue
        first = evs[0][1]
        wall0 = datetime.fromisoformat(first["time"].replace("Z", "+00:00")).timestamp() - float(first["stream_time"])
        for received, e in evs[1:]:
            edges = [s.start if e["is_ad"] else s.end for s in truth if s.is_ad]
            nearest = min(edges, key=lambda x: abs(x - float(e["stream_time"])))
            latencies.append((received + wall_now_minus_mono) - (wall0 + nearest))
    latencies.sort()

    def pct(p: float) -> float | None:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))], 2) if latencies else None

    return {"engine": engine, "precision_requested": precision, "providers": in_use.get("providers"),
            "precision": in_use.get("precision"), "channels": n, "seconds": round(w1 - w0, 1), "cpu_cores": round(cores, 3), "cpu_per_channel": round(cores / n, 3),
            "analysed_fps": round(analysed, 2), "analysed_fps_per_channel": round(analysed / n, 2), "dropped": int(dropped),
            "latency_p50_s": pct(0.5), "latency_p90_s": pct(0.9), "latency_n": len(latencies),
            "rss_start_mib": round(rss0, 1), "rss_end_mib": round(rss1, 1), "realtime": dropped == 0 and analysed / n >= 4.8}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path)
    ap.add_argument("--seconds", type=float, default=120.0, help="measured seconds per run")
    ap.add_argument("--channels", type=int, nargs="+", default=[1, 2, 3, 4])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--quick", action="store_true", help="one channel, 40 s")
    ap.add_argument("--json", type=Path, default=OUT / "live.json")
    ap.add_argument("--engine", default="auto", help="inference.engine (default auto)")
    ap.add_argument("--precision", default="auto", help="inference.precision (default auto)")
    args = ap.parse_args()
    if args.quick:
        args.channels, args.seconds = [1], 40.0
    media, truth = ensure_media(max(180.0, args.seconds + 40))
    model = ensure_model(args.model.resolve() if args.model else None)
    rows = []
    for n in args.channels:
        print(f"running {n} channel(s) for {args.seconds:.0f} s ...", file=sys.stderr, flush=True)
        rows.append(run(n, args.seconds, media, truth, model, args.batch, args.engine, args.precision))
    print(f"backbone: {rows[0]['providers']} {rows[0]['precision']} (inference.engine {args.engine}, precision {args.precision})")
    head = f"{'channels':>8} {'cpu cores':>9} {'cpu/ch':>7} {'fps/ch':>7} {'dropped':>8} {'lat p50':>8} {'lat p90':>8} {'rss start':>10} {'rss end':>8} {'realtime':>8}"
    print(head)
    for r in rows:
        print(f"{r['channels']:>8} {r['cpu_cores']:>9.2f} {r['cpu_per_channel']:>7.2f} {r['analysed_fps_per_channel']:>7.2f} {r['dropped']:>8} "
              f"{r['latency_p50_s'] if r['latency_p50_s'] is not None else '-':>8} {r['latency_p90_s'] if r['latency_p90_s'] is not None else '-':>8} "
              f"{r['rss_start_mib']:>10.0f} {r['rss_end_mib']:>8.0f} {'yes' if r['realtime'] else 'no':>8}")
    carried = max((r["channels"] for r in rows if r["realtime"]), default=0)
    print(f"channels carried in real time: {carried} (of those tried)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"rows": rows, "carried": carried, "model": str(model), "loadavg": os.getloadavg(),
                                     "machine": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                                     "date": datetime.now().isoformat(timespec="seconds")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
