"""Soak: one channel for a long time with faults injected every few minutes, through the TCP
proxy of the fault tests (tests/faultproxy.py) in front of a real GStreamer RTSP server.

    .venv/bin/python bench/soak.py [--model DIR] [--minutes 30] [--fault-every 180]

For each fault (stall, cut, corrupt, throttle, encoder restart at another resolution, in
turn) it records how long until `ad_detector_stream_faults_total` counted it and how long
after healing until frames were analysed again. It samples the daemon's resident memory,
open file descriptors and threads throughout (bounded memory is the claim: ring capacities
and queues are fixed by config), and checks that every event in the journal reached a
subscriber. Prints a table and writes bench/out/soak.json. Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from bench.common import OUT, log, machine_info, now, table, write_json  # noqa: E402
from faultproxy import FaultProxy  # noqa: E402
from detector.live.metrics import DROP_REASONS  # noqa: E402
from livekit import Daemon, Listener, RtspServer, to_h264, metric, scrape, write_config  # noqa: E402

FAULTS = ("stall", "cut", "corrupt", "throttle", "resolution")
KIND = {"stall": "stall", "cut": "read_error", "corrupt": "read_error", "throttle": "rate_low", "resolution": "resolution_change"}
SIZES = ((320, 240), (480, 272))


def proc_figures(pid: int) -> dict[str, float]:
    """Resident memory (MiB), open file descriptors and threads of a process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {"rss_mib": round(int(fields["VmRSS"].split()[0]) / 1024, 1), "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "threads": int(fields["Threads"])}


def ensure_media(out: Path) -> list[Path]:
    """Two ~11-minute H.264 files of different picture sizes (long enough never to end between faults)."""
    from detector.demo.data import write_clip

    out.mkdir(parents=True, exist_ok=True)
    files = [out / f"soak-{w}x{h}.mp4" for w, h in SIZES]
    if all(f.exists() for f in files):
        return files
    parts = []
    for i, label in enumerate(["football", "commercial", "football", "commercial", "football", "commercial", "football"]):
        p = out / f"soak-part{i}.mp4"
        write_clip(p, label, 12.0, seed=500 + i, size=SIZES[0])
        parts.append(p)
    listing = out / "soak-parts.txt"
    listing.write_text("".join(f"file '{p}'\n" for p in parts) * 8)
    joined = out / "soak-joined.mp4"
    ff = ["ffmpeg", "-loglevel", "error", "-y"]
    subprocess.run(ff + ["-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", str(joined)], check=True, timeout=600)
    to_h264(joined, files[0])
    w, h = SIZES[1]
    subprocess.run(ff + ["-i", str(files[0]), "-vf", f"scale={w}:{h}", "-c:v", "libx264", "-preset", "veryfast", "-g", "25",
                         "-bf", "0", "-pix_fmt", "yuv420p", "-an", str(files[1])], check=True, timeout=1800)
    return files


def find_model(path: Path | None) -> Path:
    if path:
        return path.resolve()
    for candidate in (OUT / "bundle", REPO / "demo" / "models"):
        if (candidate / "model.json").exists() and json.loads((candidate / "model.json").read_text()).get("sequence"):
            return candidate
    raise SystemExit("no trained bundle found: pass --model DIR (e.g. run `make demo` first, then --model demo/models)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--fault-every", type=float, default=180.0, help="seconds between fault injections")
    ap.add_argument("--hold", type=float, default=25.0, help="longest a fault is held before healing (it heals once detected)")
    ap.add_argument("--sample-every", type=float, default=10.0)
    ap.add_argument("--out", type=Path, default=OUT / "soak.json")
    args = ap.parse_args()
    media = ensure_media(OUT)
    model = find_model(args.model)
    work = OUT / "soak"
    work.mkdir(parents=True, exist_ok=True)
    server = RtspServer(media[0])
    server.start()
    size_i = 0
    proxy = FaultProxy(("127.0.0.1", server.port)).start()
    cfg = work / "config.yaml"
    journal = work / "events.jsonl"
    journal.unlink(missing_ok=True)
    ep = write_config(cfg, model, [{"name": "soak", "source": f"rtsp://127.0.0.1:{proxy.port}/live"}], capture={"stall_seconds": 6})
    listener = Listener(ep["events"])
    daemon = Daemon(cfg)
    samples: list[dict] = []
    faults: list[dict] = []
    started = time.monotonic()

    def sample() -> None:
        if daemon.proc.poll() is None:
            samples.append({"t_s": round(time.monotonic() - started, 1), **proc_figures(daemon.proc.pid)})

    def analysed() -> float:
        return metric(scrape(ep["metrics"]), "ad_detector_frames_analyzed_total", channel="soak")

    def wait(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if samples and time.monotonic() - started - samples[-1]["t_s"] >= args.sample_every:
                sample()
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))

    try:
        if not daemon.wait_log("daemon ready", 180):
            raise SystemExit(daemon.log()[-2000:])
        listener.wait_for(lambda: listener.of_type("stream.up"), 60)
        time.sleep(5)
        sample()
        start_figures = dict(samples[-1])
        log(f"soak: {args.minutes:g} min, a fault every {args.fault_every:g} s; start {start_figures}")
        deadline = started + args.minutes * 60
        n = 0
        while time.monotonic() + args.fault_every < deadline:
            wait(args.fault_every)
            name = FAULTS[n % len(FAULTS)]
            n += 1
            kind = KIND[name]
            before = metric(scrape(ep["metrics"]), "ad_detector_stream_faults_total", channel="soak", kind=kind)
            t0 = time.monotonic()
            if name == "resolution":
                server.stop()
                size_i = 1 - size_i
                server = RtspServer(media[size_i], port=server.port)
                server.start()
            else:
                proxy.set_mode(name, rate=8000.0 if name == "throttle" else None)
            detected = None
            while time.monotonic() - t0 < args.hold + (30 if name == "resolution" else 0):
                if metric(scrape(ep["metrics"]), "ad_detector_stream_faults_total", channel="soak", kind=kind) > before:
                    detected = time.monotonic() - t0
                    break
                time.sleep(0.25)
            proxy.set_mode("pass")
            healed = time.monotonic()
            a0 = analysed()
            recovered = None
            while time.monotonic() - healed < 60:
                if analysed() >= a0 + 10:     # two seconds of analysis at 5 fps
                    recovered = time.monotonic() - healed
                    break
                time.sleep(0.25)
            faults.append({"fault": name, "kind": kind, "at_s": round(t0 - started, 1),
                           "detected_s": None if detected is None else round(detected, 2),
                           "recovered_s": None if recovered is None else round(recovered, 2)})
            log(f"fault {faults[-1]}")
        wait(max(0.0, deadline - time.monotonic()))
        sample()
        end_figures = dict(samples[-1])
        text = scrape(ep["metrics"])
        alive = daemon.proc.poll() is None
        exit_code = daemon.stop(timeout=15)
        time.sleep(1)
    finally:
        daemon.stop()
        listener.close()
        proxy.stop()
        server.stop()
    # events lost: every journalled event (all but heartbeats) must have reached the subscriber
    journalled = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]
    got = {(e["run_id"], e["seq"]) for _, _, e in listener.events}
    lost = [e for e in journalled if (e["run_id"], e["seq"]) not in got]
    segments = [e for e in journalled if e["type"].startswith("segment.")]
    fault_counts = {line.split('kind="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
                    for line in text.splitlines() if line.startswith("ad_detector_stream_faults_total{")}
    rows = [[f["fault"], f["kind"], f["at_s"], f["detected_s"], f["recovered_s"]] for f in faults]
    print(table(["fault", "counted as", "at (s)", "detected after (s)", "recovered after healing (s)"], rows))
    print()
    print(table(["", "rss MiB", "open fds", "threads"],
                [["start", start_figures["rss_mib"], start_figures["fds"], start_figures["threads"]],
                 ["end", end_figures["rss_mib"], end_figures["fds"], end_figures["threads"]],
                 ["max", max(s["rss_mib"] for s in samples), max(s["fds"] for s in samples), max(s["threads"] for s in samples)]]))
    print(f"\njournalled events {len(journalled)} (segments {len(segments)}), not received by the subscriber: {len(lost)}; "
          f"every fault recovered: {all(f['recovered_s'] is not None for f in faults)}; daemon alive at end: {alive}, exit {exit_code}")
    write_json(args.out, {"date": now(), "minutes": args.minutes, "fault_every_s": args.fault_every, "model": model,
                          "faults": faults, "samples": samples, "start": start_figures, "end": end_figures,
                          "journalled_events": len(journalled), "segment_events": len(segments), "events_lost": len(lost),
                          "fault_counts": fault_counts, "alive_at_end": alive, "exit_code": exit_code,
                          "frames_dropped": {r: metric(text, "ad_detector_frames_dropped_total", reason=r)
                                             for r in DROP_REASONS},
                          "machine": machine_info()})
    ok = alive and exit_code == 0 and not lost and all(f["recovered_s"] is not None for f in faults)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
