"""The backbone through a local Ray cluster vs in the process, and what one hop costs.

Measures, on this machine:
- in-process ONNX Runtime (what a single daemon runs): backbone frames/s at the batch a
  channel worker sends and at the batch a replica runs;
- the same backbone as a Ray Serve deployment (detector.cluster.backbone, one replica) fed by
  `--clients` Ray actors that each send batches of `--batch` frames as fast as answers come
  back, the way channel workers do: frames/s, and the replica's merged batch sizes;
- the hop alone: the same requests to a deployment that returns zeros without computing
  (transport, serialisation and Serve's routing and batching), as frames/s and ms per frame;
  and a plain Ray actor call carrying one batch (object store, no Serve).
Channels carried = frames/s divided by the analysis rate (5 frames/s per channel by
default), i.e. what the backbone allows; decoding happens elsewhere (capture workers).

    .venv/bin/python bench/cluster.py [--model DIR] [--seconds 20] [--clients 2] [--batch 8]

Ray starts a local cluster on 127.0.0.1 with `--cpus` CPUs (2).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (OUT, add_common_args, demo_frames, ensure_backbone, log, machine_info, now, table,  # noqa: E402
                    wait_for_quiet, write_json)

import numpy as np  # noqa: E402


def in_process(model_dir: Path, frames: np.ndarray, batch: int, seconds: float, threads: int) -> dict[str, Any]:
    from detector.model.bundle import load_bundle
    from detector.model.models import Models

    models = Models(load_bundle(model_dir), ["CPUExecutionProvider"], threads, engine="onnxruntime", precision="fp32")
    x = frames[:batch]
    models.features(x)
    n, t0, calls = 0, time.perf_counter(), []
    while time.perf_counter() - t0 < seconds:
        t = time.perf_counter()
        models.features(x)
        calls.append(time.perf_counter() - t)
        n += len(x)
    dt = time.perf_counter() - t0
    return {"frames_per_s": n / dt, "call_ms_median": 1000 * statistics.median(calls), "calls": len(calls)}


def through_serve(handle: Any, frames: np.ndarray, clients: int, batch: int, seconds: float) -> dict[str, Any]:
    import ray

    @ray.remote(num_cpus=0)
    class Client:
        def __init__(self, handle: Any, frames: np.ndarray, name: str) -> None:
            self.handle, self.frames, self.name = handle, frames, name

        def run(self, seconds: float) -> tuple[int, list[float]]:
            self.handle.infer.remote(self.frames, self.name).result(timeout_s=120)     # warm
            n, lat, t0 = 0, [], time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                t = time.perf_counter()
                out = self.handle.infer.remote(self.frames, self.name).result(timeout_s=120)
                lat.append(time.perf_counter() - t)
                n += len(out)
            return n, lat

    x = frames[:batch]
    actors = [Client.remote(handle, x, f"c{i}") for i in range(clients)]
    t0 = time.perf_counter()
    results = ray.get([a.run.remote(seconds) for a in actors])
    dt = time.perf_counter() - t0
    stats = handle.stats.remote().result(timeout_s=30)
    for a in actors:
        ray.kill(a)
    total = sum(n for n, _ in results)
    lat = [v for _, ls in results for v in ls]
    mean_batch = None
    for fam in stats["families"]:
        if fam.name == "ad_detector_replica_batch_frames":
            count = next(s.value for s in fam.samples if s.name.endswith("_count"))
            mean_batch = next(s.value for s in fam.samples if s.name.endswith("_sum")) / max(1, count)
    return {"frames_per_s": total / dt, "request_ms_median": 1000 * statistics.median(lat),
            "replica_mean_batch": mean_batch, "replica_max_callers": stats["max_callers"]}


def plain_actor_hop(frames: np.ndarray, batch: int, rounds: int) -> dict[str, Any]:
    import ray

    @ray.remote(num_cpus=0)
    class Sink:
        def take(self, x: np.ndarray) -> int:
            return int(x.shape[0])

    sink = Sink.remote()
    x = frames[:batch]
    ray.get(sink.take.remote(x))
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        ray.get(sink.take.remote(x))
        times.append(time.perf_counter() - t)
    ray.kill(sink)
    return {"ms_per_call": 1000 * statistics.median(times), "ms_per_frame": 1000 * statistics.median(times) / batch}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=OUT / "backbone-none", help="a bundle directory with backbone.onnx")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--clients", type=int, default=2, help="channel workers sending batches (Ray actors)")
    ap.add_argument("--batch", type=int, default=8, help="frames per request from one worker")
    ap.add_argument("--replica-batch", type=int, default=16, help="inference.batch_size: requests merged per replica call")
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads, in process and in the replica")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    ap.add_argument("--fps", type=float, default=5.0, help="analysis frames/s per channel")
    add_common_args(ap, "cluster")
    args = ap.parse_args()
    seconds = 3.0 if args.quick else args.seconds
    ensure_backbone(args.model)
    frames = demo_frames(max(args.batch, args.replica_batch))
    quiet = wait_for_quiet(args.max_load, args.max_wait)
    started = now()

    log("in process")
    local = {b: in_process(args.model, frames, b, seconds, args.threads) for b in sorted({args.batch, args.replica_batch})}

    import ray
    from ray import serve

    from detector.cluster.backbone import deploy

    t0 = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, _node_ip_address="127.0.0.1", configure_logging=False,
             log_to_driver=False)
    serve.start(proxy_location="Disabled")
    inference = SimpleNamespace(batch_size=args.replica_batch, max_batch_delay_ms=20, threads=args.threads,
                                providers=["CPUExecutionProvider"], engine="onnxruntime", precision="fp32")
    handle = deploy(args.model, inference, SimpleNamespace(replicas=1, max_replicas=None, gpus_per_replica=0,
                                                           cpus_per_replica=1))
    handle.describe.remote().result(timeout_s=120)
    startup = time.perf_counter() - t0
    log(f"cluster up in {startup:.1f} s; backbone through Serve")
    cluster = through_serve(handle, frames, args.clients, args.batch, seconds)

    log("hop only (echo deployment)")
    serve.delete("ad-detector")

    @serve.deployment(name="Echo", ray_actor_options={"num_cpus": 1},
                      logging_config={"enable_access_log": False, "log_level": "WARNING"})
    class Echo:              # the backbone's request path (batched, same shapes) without the compute
        @serve.batch(max_batch_size=args.replica_batch, batch_wait_timeout_s=0.02)
        async def infer(self, images: list[np.ndarray], callers: list[str]) -> list[np.ndarray]:
            return [np.zeros((len(x), 2048), np.float32) for x in images]

        def stats(self) -> dict[str, Any]:
            return {"families": [], "max_callers": None}

    handle = serve.run(Echo.bind(), name="echo", route_prefix=None)
    echo = through_serve(handle, frames, args.clients, args.batch, seconds)
    actor = plain_actor_hop(frames, args.batch, 50 if args.quick else 200)
    serve.shutdown()
    ray.shutdown()

    frame_kb = frames[0].nbytes / 1024
    rows = []
    for b, r in local.items():
        rows.append([f"in process, ORT fp32 {args.threads} threads, batch {b}", r["frames_per_s"], r["frames_per_s"] / args.fps,
                     1000 / r["frames_per_s"], f"call {r['call_ms_median']:.0f} ms"])
    rows.append([f"Ray Serve, 1 replica ({args.threads} threads), {args.clients} workers x batch {args.batch}",
                 cluster["frames_per_s"], cluster["frames_per_s"] / args.fps, 1000 / cluster["frames_per_s"],
                 f"request {cluster['request_ms_median']:.0f} ms, replica batch {cluster['replica_mean_batch']:.1f} frames"])
    rows.append([f"hop only: Serve echo, {args.clients} workers x batch {args.batch}", echo["frames_per_s"], None,
                 1000 / echo["frames_per_s"], f"request {echo['request_ms_median']:.1f} ms"])
    rows.append([f"hop only: plain actor call, batch {args.batch}", 1000 / actor["ms_per_frame"], None, actor["ms_per_frame"],
                 f"call {actor['ms_per_call']:.1f} ms"])
    print(table(["path", "frames/s", f"channels at {args.fps:g} fps", "ms per frame", "notes"], rows))
    print(f"\nframe {frame_kb:.0f} KiB (299x299x3 uint8); cluster start-up {startup:.1f} s")
    write_json(args.out, {"started": started, "machine": machine_info(["ray"]), "quiet": quiet, "args": vars(args),
                          "in_process": local, "serve": cluster, "echo": echo, "actor": actor, "startup_s": startup})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
