"""`ad-detector run` with a `cluster` section: the driver that places the pipeline on Ray.

Stages, started in order and stopped in reverse (as in detector.live.daemon):

    metrics HTTP -> outputs (the one publisher: PUB, snapshot, journal, CURVE) -> Ray
    (`address: local` starts a cluster owned by this process) -> backbone deployment (Serve)
    -> channel workers (actors, detector.cluster.worker) -> poller -> READY=1

The poller collects each worker's events, metrics and channel state a few times a second
(never blocking on a worker: `ray.wait` with a timeout) and publishes the events through
the one publisher, so subscribers see one `seq`, one snapshot and one journal. A worker that
dies is noticed on its next poll: its channels' open segments end and their streams go down
(`reason: worker_lost`, counted in `ad_detector_worker_losses_total`); Ray restarts it and
its sources come up again (`stream.up`). Stopping drains each worker (open segments end,
streams go down with `reason: shutdown`), removes the deployment and, for a local cluster,
stops every Ray process this driver started.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import Counter

from detector.config import Config
from detector.errors import RuntimeFailure
from detector.live import sdnotify
from detector.live.daemon import Daemon, Stage
from detector.live.health import ChannelHealth, HealthInputs, assess
from detector.model.bundle import load_bundle
from detector.cluster.metrics import ClusterMetrics
from detector.cluster.relay import ChannelRelay

log = logging.getLogger("detector.cluster.driver")

POLL_SECONDS = 0.1
REPLICA_STATS_SECONDS = 2.0
REPLICA_STATS_KEEP_SECONDS = 30.0
STOP_SECONDS = 15.0


def channel_groups(names: Sequence[str], per_worker: int) -> list[list[str]]:
    """Channels in config order, `per_worker` to a worker (pure)."""
    return [list(names[i:i + per_worker]) for i in range(0, len(names), per_worker)]


def ray_init_kwargs(cluster: Any) -> dict[str, Any]:
    """`ray.init` arguments for the config's cluster section (pure).

    `local` starts a cluster owned by this process, announcing `node_ip` (127.0.0.1 by
    default) and without the dashboard; Ray's gRPC servers still listen on every address
    (README "Multi-node Ray": a firewall or a network namespace keeps them local).
    """
    common = {"namespace": "ad-detector", "log_to_driver": True, "configure_logging": False}
    if cluster.address == "local":
        return {**common, "num_cpus": cluster.num_cpus, "include_dashboard": False, "_node_ip_address": cluster.node_ip}
    return {**common, "address": cluster.address}


def bounded(job: Callable[[], Any], seconds: float, what: str) -> None:
    """Run `job` on a thread and wait at most `seconds`: a Ray process that is already gone
    (systemd's SIGTERM reached the whole control group) must not hold up the exit."""
    error: list[BaseException] = []

    def run() -> None:
        try:
            job()
        except BaseException as exc:  # noqa: BLE001 - reported below
            error.append(exc)
    t = threading.Thread(target=run, name=f"stop-{what.replace(' ', '-')}", daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        log.warning("stop step did not finish step=%r seconds=%g", what, seconds)
    elif error:
        log.warning("stop step failed step=%r error=%r", what, first_line(error[0]))


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:300]


class ClusterDaemon(Daemon):
    def __init__(self, cfg: Config):
        super().__init__(cfg)
        assert cfg.cluster is not None
        self.cluster = cfg.cluster
        self.metrics = ClusterMetrics(self.names)
        self.worker_losses = Counter("ad_detector_worker_losses", "Channel workers found dead (Ray restarts them; "
                                     "their channels' streams go down meanwhile).", ["worker"], registry=self.metrics.registry)
        self.groups = {f"w{i}": names for i, names in enumerate(channel_groups(self.names, self.cluster.channels_per_worker))}
        for g in self.groups:
            self.worker_losses.labels(worker=g)
        self.relays = {n: ChannelRelay(n, self.run_id) for n in self.names}
        self.actors: dict[str, Any] = {}
        self.reports: dict[str, dict[str, Any]] = {}     # worker -> latest report (absent while lost)
        self.incarnations: dict[str, str | None] = {g: None for g in self.groups}
        self.handle: Any = None
        self._poll_stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._stats_thread: threading.Thread | None = None
        self._pending: dict[str, Any] = {}
        self._rate_marks: dict[str, tuple[float, int, int]] = {}
        self._replica_seen: dict[str, float] = {}

    # ------------------------------------------------------------------ start
    def start(self) -> None:
        self.watch.install()
        self.bundle = load_bundle(Path(self.cfg.model))
        self._run_stage(self._metrics_stage())
        self._run_stage(self._outputs_stage())
        self._run_stage(self._ray_stage())
        self._run_stage(self._backbone_stage())
        self._run_stage(self._workers_stage())
        self._run_stage(self._poller_stage())
        sdnotify.ready()
        sdnotify.status(f"watching {len(self.names)} channel(s) on {len(self.groups)} Ray worker(s)")
        log.info("daemon ready run_id=%s channels=%s workers=%d cluster=%s events=%s metrics=%s", self.run_id,
                 ",".join(self.names), len(self.groups), self.cluster.address, self.cfg.events.bind, self.cfg.metrics.bind)

    def _ray_stage(self) -> Stage:
        import ray

        def start() -> None:
            t0 = time.monotonic()
            os.environ.setdefault("RAY_COLOR_PREFIX", "0")     # plain `(ChannelGroup pid=N)` prefixes in the journal
            handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
            ray.init(**ray_init_kwargs(self.cluster))
            # Ray's core installs a C-level failure handler on SIGTERM that dumps stacks and
            # ends the process; the daemon's own handler (drain, exit 0) must stay in charge
            for sig, handler in handlers.items():
                if handler is not None:
                    signal.signal(sig, handler)
            log.info("ray connected address=%s seconds=%.1f resources=%s", self.cluster.address, time.monotonic() - t0,
                     {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")})

        def stop() -> None:
            # a local cluster: every process it started goes with it
            bounded(ray.shutdown, STOP_SECONDS, "ray shutdown")
            log.info("ray disconnected address=%s", self.cluster.address)
        return Stage("ray", start, stop)

    def _backbone_stage(self) -> Stage:
        from ray import serve

        from detector.cluster.backbone import APP, deploy

        def start() -> None:
            t0 = time.monotonic()
            serve.start(proxy_location="Disabled")
            self.handle = deploy(Path(self.cfg.model), self.cfg.inference, self.cluster.backbone)
            d = self.handle.describe.remote().result(timeout_s=self.cluster.start_timeout_seconds)
            assert self.bundle is not None
            self.metrics.set_model_info(self.bundle.classes, d["backbone_sha256"], self.bundle.sequence_sha256 or "",
                                        [f"ray_serve:{p}" for p in d["in_use"]], d["precision"])
            log.info("backbone deployment ready replicas=%d max_replicas=%s engine=%s precision=%s seconds=%.1f",
                     self.cluster.backbone.replicas, self.cluster.backbone.max_replicas, d["engine"], d["precision"],
                     time.monotonic() - t0)

        def stop() -> None:
            self.handle = None
            if self.cluster.address == "local":
                bounded(serve.shutdown, STOP_SECONDS / 2, "serve shutdown")
            else:
                bounded(lambda: serve.delete(APP), STOP_SECONDS / 2, "serve delete")   # a shared cluster keeps Serve
        return Stage("backbone", start, stop)

    def _workers_stage(self) -> Stage:
        import ray

        from detector.cluster.worker import ChannelGroup

        actor_class = ray.remote(ChannelGroup)

        def start() -> None:
            for g, names in self.groups.items():
                self.actors[g] = actor_class.options(
                    name=f"ad-detector-{self.run_id[:8]}-{g}", max_restarts=self.cluster.worker_max_restarts,
                    max_task_retries=0, num_cpus=self.cluster.cpus_per_worker,
                ).remote(self.cfg, names, self.run_id, g)
            refs = {g: a.ready.remote() for g, a in self.actors.items()}
            try:
                got = ray.get(list(refs.values()), timeout=self.cluster.start_timeout_seconds)
            except ray.exceptions.GetTimeoutError:
                raise RuntimeFailure(f"channel workers not ready within {self.cluster.start_timeout_seconds:g} s "
                                     "(cluster.start_timeout_seconds); is there room for them (cluster.cpus_per_worker)?") from None
            except ray.exceptions.RayError as exc:
                raise RuntimeFailure(f"a channel worker failed to start: {first_line(exc)}") from None
            for g, (inc, pid) in zip(refs, got):
                self.incarnations[g] = inc
                log.info("worker up worker=%s pid=%s channels=%s", g, pid, ",".join(self.groups[g]))
            log.info("workers ready workers=%s", ",".join(f"{g}:{'+'.join(n)}" for g, n in self.groups.items()))

        def stop() -> None:
            refs = {g: a.stop.remote() for g, a in self.actors.items()}
            ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=STOP_SECONDS)
            for g, ref in refs.items():
                if ref not in ready:
                    log.warning("worker did not drain in time worker=%s seconds=%g", g, STOP_SECONDS)
                    self._lost(g, "no answer to stop")
                    continue
                try:
                    self._publish(ray.get(ref))
                except ray.exceptions.RayError as exc:
                    self._lost(g, first_line(exc))
            for a in self.actors.values():
                ray.kill(a, no_restart=True)
            self.actors.clear()
        return Stage("workers", start, stop)

    def _poller_stage(self) -> Stage:
        def start() -> None:
            self._poller = threading.Thread(target=self._poll_loop, name="cluster-poller", daemon=True)
            self._poller.start()
            self._stats_thread = threading.Thread(target=self._stats_loop, name="cluster-replica-stats", daemon=True)
            self._stats_thread.start()
            self.watch.watch("cluster-poller", lambda: self._poller)

        def stop() -> None:
            self._poll_stop.set()
            for t in (self._poller, self._stats_thread):
                if t is not None:
                    t.join(STOP_SECONDS)
        return Stage("poller", start, stop)

    # ------------------------------------------------------------------ the poller thread
    def _poll_loop(self) -> None:
        import ray

        while True:
            stopping = self._poll_stop.is_set()
            if not stopping:
                for g, a in self.actors.items():
                    if g not in self._pending:
                        self._pending[g] = a.poll.remote()
            if not self._pending:
                if stopping:
                    return
                time.sleep(POLL_SECONDS)
                continue
            refs = list(self._pending.values())
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=STOP_SECONDS / 3 if stopping else POLL_SECONDS)
            for g, ref in list(self._pending.items()):
                if ref not in ready:
                    continue
                del self._pending[g]
                try:
                    self._take(g, ray.get(ref))
                except ray.exceptions.RayError as exc:
                    self._lost(g, first_line(exc))
            if stopping:
                self._pending.clear()       # whatever did not answer now is drained by the workers stage
                return
            time.sleep(POLL_SECONDS)

    def _take(self, g: str, report: dict[str, Any]) -> None:
        inc = report["incarnation"]
        if self.incarnations.get(g) not in (None, inc):
            self._lost(g, "restarted")      # a restart between two polls still ends what the old one left open
        if self.incarnations.get(g) is None:
            log.info("worker up worker=%s pid=%s channels=%s", g, report.get("pid"), ",".join(self.groups[g]))
        self.incarnations[g] = inc
        for name, st in report["channels"].items():
            self.relays[name].position(st["media"], st["wall"])
        self._publish(report["events"])
        self.reports[g] = report
        self.metrics.reports[g] = report["families"]

    def _publish(self, events: list[tuple[str, str, dict[str, Any]]]) -> None:
        for typ, channel, fields in events:
            for t, ch, f in self.relays[channel].incoming(typ, fields):
                self.events.publish(t, ch, **f)

    def _lost(self, g: str, error: str) -> None:
        if self.incarnations.get(g) is None and g not in self.reports:
            return      # already handled; still restarting
        log.warning("worker lost worker=%s channels=%s error=%r", g, ",".join(self.groups[g]), error)
        self.worker_losses.labels(worker=g).inc()
        self.incarnations[g] = None
        self.reports.pop(g, None)
        self.metrics.reports.pop(g, None)
        for name in self.groups[g]:
            for t, ch, f in self.relays[name].lost():
                self.events.publish(t, ch, **f)

    def _stats_loop(self) -> None:
        while not self._poll_stop.wait(REPLICA_STATS_SECONDS):
            handle = self.handle
            if handle is None:
                continue
            try:
                st = handle.stats.remote().result(timeout_s=REPLICA_STATS_SECONDS * 2)
            except Exception as exc:  # noqa: BLE001 - a replica restarting: try again next round
                log.debug("replica stats unavailable error=%r", first_line(exc))
                continue
            now = time.monotonic()
            key = f"replica:{st['replica']}"
            self._replica_seen[key] = now
            self.metrics.reports[key] = st["families"]
            for old, seen in list(self._replica_seen.items()):
                if now - seen > REPLICA_STATS_KEEP_SECONDS:
                    self._replica_seen.pop(old, None)
                    self.metrics.reports.pop(old, None)

    # ------------------------------------------------------------------ state for others
    def heartbeat_state(self) -> dict[str, dict[str, Any]]:
        now = time.monotonic()
        out: dict[str, dict[str, Any]] = {}
        for g, names in self.groups.items():
            rep = self.reports.get(g)
            for name in names:
                st = rep["channels"].get(name) if rep else None
                fps_in = fps_an = 0.0
                if st is not None:
                    t0, c0, a0 = self._rate_marks.get(name, (now, st["captured"], st["analysed"]))
                    dt = max(1e-6, now - t0)
                    fps_in, fps_an = max(0, st["captured"] - c0) / dt, max(0, st["analysed"] - a0) / dt
                    self._rate_marks[name] = (now, st["captured"], st["analysed"])
                p_ad = st["p_ad"] if st else None
                out[name] = {"state": st["state"] if st else "unknown", "p_ad": None if p_ad is None else round(p_ad, 4),
                             "stream_up": bool(st and st["up"]), "fps_in": round(fps_in, 2), "fps_analyzed": round(fps_an, 2)}
        return out

    def health(self) -> tuple[bool, dict[str, Any]]:
        now = time.monotonic()
        channels = {}
        idle = 0.0
        waiting = 0
        alive = True
        for g, names in self.groups.items():
            rep = self.reports.get(g)
            if rep is not None:
                idle = max(idle, rep["inference_idle"])
                alive = alive and rep["inference_alive"]
                waiting += sum(st["waiting"] for st in rep["channels"].values())
            for name in names:
                st = rep["channels"].get(name) if rep else None
                channels[name] = ChannelHealth(up=bool(st and st["up"]), stalled=bool(st and st["stalled"]),
                                               faults=tuple(st["faults"]) if st else ())
        return assess(HealthInputs(
            run_id=self.run_id, now=now, inference_alive=alive, frames_waiting=waiting, last_inference=now - idle,
            watched=self.watch.names(), dead={d.name: d.error for d in self.watch.dead()}, stopping=self._stopping,
            failure=self.failure, channels=channels, outputs={out.name: out.health() for out in self.outputs}))

    # ------------------------------------------------------------------ main thread
    def reload(self) -> None:
        log.warning("reload is not supported with a cluster section; restart the daemon to load a new model")

    def supervise(self) -> None:
        dead = self.watch.dead()
        if dead:
            self._fail(dead[0])
        healthy, _ = self.health()
        self.metrics.healthy.set(1 if healthy else 0)
        now = time.monotonic()
        if healthy and now - self._last_ping >= self._ping_every:
            sdnotify.watchdog()
            self._last_ping = now
