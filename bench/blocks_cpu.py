"""Live CPU per channel: a video-only bundle against a bundle with the audio and visual cue
blocks, side by side (issue 16 point 8).

The blocks add work per analysed step (the audio block decodes and measures the sound, the
visual block looks at the analysed picture), and a station sizes its machines by the CPU a
channel takes. Both bundles share one backbone and one backbone precision, so the difference
is what the blocks cost (the sequence graph's wider input is in it too). Each bundle runs the
real daemon (`ad-detector run`) on one channel: a 720p 25 fps H.264 + AAC broadcast with
sound, read as live (`realtime: true`, a file channel paced at its own rate, so the audio is
decoded as from a broadcast feed). The daemon's own user+system CPU (`/proc/PID/stat`) over
the measured window after start-up, frames analysed and dropped from its /metrics. Runs
alternate A B A B ... so that a drifting machine load falls on both alike; the figure is the
ratio of the medians.

    .venv/bin/python bench/blocks_cpu.py --video-only DIR --blocks DIR [--seconds 60] [--rounds 2]

Prints a table and writes bench/out/blocks_cpu.json.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from bench.common import OUT, log, machine_info, now, read_manifest, table, write_json  # noqa: E402
from bench.live import cpu_seconds, metric_sum, rss_mib, scrape  # noqa: E402
from livekit import Daemon, Listener, write_config  # noqa: E402


def ensure_media(seconds: float) -> Path:
    """A 720p broadcast with sound, H.264 + AAC as a broadcast chain carries it."""
    from detector.demo.data import write_broadcast

    OUT.mkdir(parents=True, exist_ok=True)
    src = OUT / f"blocks720-{int(seconds)}.mp4"
    dst = OUT / f"blocks720-{int(seconds)}.h264-aac.mp4"
    if not dst.exists():
        log(f"drawing a {seconds:g} s 720p broadcast with sound")
        write_broadcast(src, seed=77, duration=seconds, size=(1280, 720), fps=25.0, progress=False)
        tmp = dst.with_suffix(".partial.mp4")
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(src), "-c:v", "libx264", "-preset", "veryfast",
                        "-g", "25", "-bf", "0", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k", str(tmp)],
                       check=True, timeout=1800)
        tmp.replace(dst)
    return dst


def blocks_of(model: Path) -> str:
    manifest = read_manifest(model) or {}
    return ",".join(b["name"] for b in manifest.get("blocks") or []) or "none"


def measure(model: Path, media: Path, seconds: float, work: Path, engine: str, precision: str) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    cfg = work / "config.yaml"
    ep = write_config(cfg, model, [{"name": "ch0", "source": str(media), "realtime": True}],
                      inference={"batch_size": 16, "max_batch_delay_ms": 200, "engine": engine, "precision": precision},
                      capture={"stall_seconds": 10})
    listener = Listener(ep["events"])
    daemon = Daemon(cfg)
    try:
        if not daemon.wait_log("daemon ready", 180):
            raise SystemExit(daemon.log()[-2000:])
        listener.wait_for(lambda: listener.of_type("stream.up"), 60)
        time.sleep(8)      # past start-up: the first window, the audio context, compiled graphs
        pid = daemon.proc.pid
        c0, w0 = cpu_seconds(pid), time.monotonic()
        m0 = scrape(ep["metrics"])
        time.sleep(seconds)
        c1, w1, rss = cpu_seconds(pid), time.monotonic(), rss_mib(pid)
        m1 = scrape(ep["metrics"])
        log_text = daemon.log()
    finally:
        daemon.stop()
        listener.close()
    wall = w1 - w0
    analysed = metric_sum(m1, "ad_detector_frames_analyzed_total") - metric_sum(m0, "ad_detector_frames_analyzed_total")
    dropped = metric_sum(m1, "ad_detector_frames_dropped_total") - metric_sum(m0, "ad_detector_frames_dropped_total")
    audio_present = metric_sum(m1, "ad_detector_audio_present")
    return {"blocks": blocks_of(model), "model": str(model), "seconds": round(wall, 1),
            "cpu_cores": round((c1 - c0) / wall, 3), "analysed_fps": round(analysed / wall, 2), "dropped": int(dropped),
            "audio_present": audio_present, "rss_end_mib": round(rss, 1),
            "backbone": next((l.split("backbone ready ", 1)[1] for l in log_text.splitlines() if "backbone ready" in l), "")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--video-only", type=Path, required=True, help="a bundle trained without blocks")
    p.add_argument("--blocks", type=Path, required=True, help="a bundle trained with --blocks audio,visual (same backbone)")
    p.add_argument("--seconds", type=float, default=60.0, help="measured seconds per run (default 60)")
    p.add_argument("--rounds", type=int, default=2, help="A B rounds (default 2)")
    p.add_argument("--engine", default="onnxruntime", help="inference.engine for both (default onnxruntime)")
    p.add_argument("--precision", default="fp32", help="inference.precision for both (default fp32)")
    p.add_argument("--json", type=Path, default=OUT / "blocks_cpu.json")
    args = p.parse_args(argv)
    for model in (args.video_only, args.blocks):
        if not (read_manifest(model) or {}).get("sequence"):
            raise SystemExit(f"{model}: not a trained bundle (model.json has no sequence); train one first")
    media = ensure_media(args.seconds + 60)
    info = machine_info()
    started = now()
    runs: list[dict] = []
    for r in range(args.rounds):
        for name, model in (("video", args.video_only), ("video+audio+visual", args.blocks)):
            log(f"round {r + 1}/{args.rounds}: {name} ({blocks_of(model)}) for {args.seconds:g} s")
            row = measure(model.resolve(), media, args.seconds, OUT / "blocks_cpu" / name, args.engine, args.precision)
            row.update({"bundle": name, "round": r + 1})
            runs.append(row)
    by = {name: [x for x in runs if x["bundle"] == name] for name in ("video", "video+audio+visual")}
    med = {name: statistics.median(x["cpu_cores"] for x in rows) for name, rows in by.items()}
    ratio = round(med["video+audio+visual"] / med["video"], 3) if med["video"] else None
    print(table(["round", "bundle", "blocks", "cpu cores", "fps analysed", "dropped", "audio present", "RSS end MiB"],
                [[x["round"], x["bundle"], x["blocks"], f"{x['cpu_cores']:.3f}", f"{x['analysed_fps']:.2f}", x["dropped"],
                  x["audio_present"], f"{x['rss_end_mib']:.0f}"] for x in runs]))
    print(f"\nmedian cpu cores per channel: video {med['video']:.3f}, video+audio+visual {med['video+audio+visual']:.3f}; "
          f"ratio {ratio}")
    write_json(args.json, {"started": started, "finished": now(), "machine": info, "engine": args.engine,
                           "precision": args.precision, "media": str(media), "runs": runs, "median_cpu_cores": med,
                           "ratio_blocks_to_video": ratio, "command": " ".join(sys.argv)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
