"""`ad-detector run` on a real local Ray cluster (issue 17), in ONE daemon run (Ray starts slowly).

The daemon runs in a network namespace the test creates (`unshare -n`, only `lo` up): Ray's
gRPC servers listen on every address of the node whatever it is told, so this keeps every
port it opens off the host's interfaces. The test talks to it from inside the namespace
(`nsenter`): a real `ad-detector subscribe` and real /metrics scrapes.

One run, three acts:
1. two channels (two clips of the demo broadcast, one worker each) are analysed through the
   Serve deployment: their segments are the ones `classify` finds in the same files, and the
   replica's batches held frames of both workers;
2. the worker of channel `a` is SIGKILLed: the events say so (open segment ended, stream down
   with reason worker_lost), Ray restarts it and it analyses `a` again; while it does, the
   backbone replica is SIGKILLed too: Serve starts another, the worker's calls are retried,
   and the second pass gives the same segments on a timeline that went on;
3. SIGTERM: exit 0 within 30 s, every process the daemon started is gone, the journal is
   complete and the subscriber saw one gap-free `seq`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli
from tests.livekit import metric, write_config

pytest.importorskip("ray", reason="cluster mode needs Ray: pip install '.[cluster]'")
if shutil.which("unshare") is None or shutil.which("nsenter") is None or os.geteuid() != 0:
    pytest.skip("the cluster test runs the daemon in its own network namespace (unshare/nsenter as root)",
                allow_module_level=True)

CLIPS = {"a": (18.0, 24.0), "b": (66.0, 24.0)}    # start, length in the 120 s demo broadcast: one boundary each
FRAMES = 115                                        # 24 s at 5 frames/s, less the last sampling step
TOL = 0.25                                          # seconds: same frames, same model; only float noise allowed


def cut(src: Path, dst: Path, start: float, length: float) -> Path:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", str(start), "-t", str(length), "-i", str(src), "-c:v", "mpeg4",
                    "-q:v", "5", "-an", str(dst)], check=True, timeout=60)
    return dst


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (from /proc's parent links)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


class Run:
    """The daemon in its namespace, and what it wrote."""

    def __init__(self, config: Path, endpoints: dict[str, str]) -> None:
        self.endpoints = endpoints
        self.log_path = config.parent / "daemon.log"
        self._log = open(self.log_path, "w")
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen(["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
                                      sys.executable, "-m", "detector", "run", "-c", str(config)],
                                     stdout=self._log, stderr=subprocess.STDOUT, env=env)
        self.journal = Path(endpoints["journal"])
        self.lines: list[dict] = []

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait(self, what: str, predicate, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode} while waiting for {what}\n{self.log()[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout:g} s: {what}\n{self.log()[-4000:]}")
            time.sleep(0.2)

    def in_netns(self, *cmd: str) -> list[str]:
        return ["nsenter", "-t", str(self.proc.pid), "-n", "--", *cmd]

    def subscribe(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.sub = subprocess.Popen(self.in_netns(sys.executable, "-m", "detector", "subscribe", "--endpoint",
                                                  self.endpoints["events"]),
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)

        def read() -> None:
            assert self.sub.stdout is not None
            for line in self.sub.stdout:
                self.lines.append(json.loads(line))
        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()

    def scrape(self) -> str:
        code = f"import urllib.request,sys; sys.stdout.write(urllib.request.urlopen({self.endpoints['metrics'] + '/metrics'!r}, timeout=5).read().decode())"
        return subprocess.run(self.in_netns(sys.executable, "-c", code), capture_output=True, text=True, timeout=30,
                              check=True).stdout

    def settled(self, channels: list[str], timeout: float, want: float) -> str:
        """/metrics once every channel has analysed `want` frames and the counts stopped moving
        (replica stats refresh every 2 s, so they include the last batch), or once the counts
        have not moved for 20 s (then the test's assertions say what is missing). A loaded CI
        machine can hold a backbone call for several seconds: waiting on the count, not on a
        short quiet spell, keeps that from reading as lost frames."""
        deadline = time.monotonic() + timeout
        seen: list[tuple[float, ...]] = []
        while True:
            text = self.scrape()
            seen.append(tuple(metric(text, "ad_detector_frames_analyzed_total", channel=c) for c in channels))
            if len(seen) >= 2 and seen[-1] == seen[-2] and min(seen[-1]) >= want:
                return text
            if len(seen) >= 9 and len(set(seen[-9:])) == 1:
                return text
            assert time.monotonic() < deadline, f"analysed frames still moving after {timeout:g} s: {seen[-3:]}"
            time.sleep(2.5)

    def events(self) -> list[dict]:
        if not self.journal.exists():
            return []
        return [json.loads(line) for line in self.journal.read_text().splitlines() if line.strip()]

    def of(self, channel: str, *types: str, after: int = 0) -> list[dict]:
        return [e for e in self.events() if e["channel"] == channel and e["type"] in types and e["seq"] > after]

    def pid_of(self, pattern: str) -> int:
        m = re.findall(pattern, self.log())
        assert m, f"{pattern!r} not in the log"
        return int(m[-1])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if getattr(self, "sub", None) is not None and self.sub.poll() is None:
            self.sub.kill()
            self.sub.wait(10)
        self._log.close()


def passes(segments: list[dict]) -> list[tuple[str, float]]:
    return [(e["label"], e["stream_time"]) for e in segments]


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory, bundle_dir: Path, demo_set):
    t_start = time.monotonic()
    d = tmp_path_factory.mktemp("cluster")
    clips = {name: cut(demo_set.broadcast, d / f"{name}.mp4", s, n) for name, (s, n) in CLIPS.items()}
    truth = {}
    for name, clip in clips.items():
        proc = run_cli("classify", clip, "-m", bundle_dir, "-o", d / f"classify-{name}", "--formats", "json", "--no-progress")
        assert proc.returncode == 0, proc.stderr[-2000:]
        truth[name] = json.loads((d / f"classify-{name}" / f"{name}.segments.json").read_text())
    config = d / "config.yaml"
    endpoints = write_config(
        config, bundle_dir, [{"name": n, "source": str(p)} for n, p in clips.items()],
        # files are read at full speed into rings that hold all of them (120 frames each):
        # nothing is dropped, so the analysis equals classify's; no reopen within the test
        capture={"ring_capacity": 512, "reconnect_initial_seconds": 300, "reconnect_max_seconds": 300},
        inference={"engine": "onnxruntime", "precision": "fp32", "batch_size": 8, "max_batch_delay_ms": 200, "threads": 2},
        cluster={"address": "local", "num_cpus": 2, "channels_per_worker": 1, "cpus_per_worker": 0.5,
                 "backbone": {"replicas": 1, "cpus_per_replica": 1}, "backbone_timeout_seconds": 60,
                 "start_timeout_seconds": 90})
    run = Run(config, endpoints)
    out: dict = {"truth": truth, "run": run}
    try:
        run.wait("the publisher", lambda: "publisher bound" in run.log(), 60)
        run.subscribe()
        run.wait("daemon ready", lambda: "daemon ready" in run.log(), 120)
        out["ready_seconds"] = time.monotonic() - t_start

        # act 1: both clips analysed through the cluster
        for name in clips:
            run.wait(f"{name}: every segment classify found",
                     lambda name=name: len(run.of(name, "segment.start")) >= len(truth[name]), 90)
        out["first"] = {n: run.of(n, "segment.start", "segment.end") for n in clips}
        out["metrics"] = run.settled(list(clips), 150, want=FRAMES)

        # act 2: kill channel a's worker, then the backbone replica while a is analysed again
        mark = max(e["seq"] for e in run.events())
        worker = run.pid_of(r"worker up worker=w0 pid=(\d+)")
        replica = run.pid_of(r"backbone replica ready replica=[^:\s]+:(\d+)")
        os.kill(worker, signal.SIGKILL)
        run.wait("a: worker_lost", lambda: any(e.get("reason") == "worker_lost" for e in run.of("a", "stream.down", after=mark)), 60)
        run.wait("a: a new worker", lambda: len(re.findall(r"worker up worker=w0 pid=(\d+)", run.log())) >= 2, 60)
        os.kill(replica, signal.SIGKILL)
        out["killed"] = {"worker": worker, "replica": replica}
        run.wait("a: the second pass", lambda: len(run.of("a", "segment.start", after=mark)) >= len(truth["a"]), 120)
        out["second"] = run.of("a", "segment.start", "segment.end", "stream.down", "stream.up", after=mark)
        out["metrics_after"] = run.scrape()

        # act 3: SIGTERM
        below = descendants(run.proc.pid)
        t0 = time.monotonic()
        run.proc.send_signal(signal.SIGTERM)
        try:
            out["rc"] = run.proc.wait(40)
        except subprocess.TimeoutExpired:
            out["rc"] = None
        out["stop_seconds"] = time.monotonic() - t0
        time.sleep(1.0)
        out["left"] = {p for p in below if Path(f"/proc/{p}").exists()}
        deadline = time.monotonic() + 5
        while run.sub.poll() is None and time.monotonic() < deadline and not run.lines:
            time.sleep(0.1)
        run.sub.send_signal(signal.SIGINT)
        run.sub.wait(10)
        run._reader.join(5)
        out["log"] = run.log()
        out["journal"] = run.events()
        out["received"] = list(run.lines)
        out["total_seconds"] = time.monotonic() - t_start
        print(f"\ncluster run: ready after {out['ready_seconds']:.1f} s, whole module fixture {out['total_seconds']:.1f} s, "
              f"stop {out['stop_seconds']:.1f} s")
        yield out
    finally:
        run.close()


def test_two_channels_through_the_cluster_give_classify_segments(cluster_run) -> None:
    for name, truth in cluster_run["truth"].items():
        starts = [e for e in cluster_run["first"][name] if e["type"] == "segment.start"]
        got = passes(starts)
        want = [(s["label"], s["start"]) for s in truth]
        assert [g[0] for g in got] == [w[0] for w in want], (name, got, want)
        assert all(abs(g[1] - w[1]) <= TOL for g, w in zip(got, want)), (name, got, want)
        ends = [e for e in cluster_run["first"][name] if e["type"] == "segment.end"]
        assert [e["stream_time"] for e in ends] == pytest.approx([s["end"] for s in truth[:len(ends)]], abs=TOL)
        assert len(ends) == len(truth) - 1      # the last stays open: a live source has not ended


def test_the_replica_batched_frames_of_both_workers(cluster_run) -> None:
    text = cluster_run["metrics"]
    batches = metric(text, "ad_detector_replica_batch_callers_count")
    single_caller = metric(text, "ad_detector_replica_batch_callers_bucket", le="1.0")
    assert batches > 0, "no replica batch statistics on the driver's endpoint"
    assert batches - single_caller >= 1, f"no batch held frames of both workers ({batches} batches)"
    assert metric(text, "ad_detector_replica_batch_frames_count") - metric(text, "ad_detector_replica_batch_frames_bucket", le="8.0") >= 1, \
        "no replica batch larger than one worker's (batch_size 8)"
    # one endpoint, the same names and labels as a single process
    for name in ("a", "b"):        # 24 s clips at 5 frames/s: every frame analysed, none dropped
        assert metric(text, "ad_detector_frames_analyzed_total", channel=name) >= FRAMES
        assert metric(text, "ad_detector_frames_dropped_total", channel=name) == 0
    assert metric(text, "ad_detector_batch_size_count") > 0


def test_killed_worker_and_replica_are_survived(cluster_run) -> None:
    second = cluster_run["second"]
    types = [(e["type"], e.get("reason"), e.get("boundary")) for e in second]
    lost = types.index(("stream.down", "worker_lost", None))
    assert ("segment.end", None, "stream_end") in types[:lost], types       # the open segment ended first
    assert ("stream.up", None, None) in types[lost:], types                  # the restarted worker's source
    again = [e for e in second[lost:] if e["type"] == "segment.start"]
    first = [e for e in cluster_run["first"]["a"] if e["type"] == "segment.start"]
    assert [e["label"] for e in again] == [e["label"] for e in first]
    offset = again[0]["stream_time"] - first[0]["stream_time"]
    assert offset > 20, "the timeline must go on after the restart, not start again at 0"
    assert [e["stream_time"] - offset for e in again] == pytest.approx([e["stream_time"] for e in first], abs=TOL)
    ids = [e["segment_id"] for e in cluster_run["journal"] if e["type"] == "segment.start"]
    assert len(ids) == len(set(ids)), "a segment_id was reused after the restart"
    log = cluster_run["log"]
    assert "worker lost worker=w0" in log
    assert "backbone call recovered caller=w0" in log, "the replica kill did not hit a call in flight"
    after = cluster_run["metrics_after"]
    assert metric(after, "ad_detector_worker_losses_total", worker="w0") == 1
    assert metric(after, "ad_detector_backbone_retries_total") >= 1


def test_sigterm_stops_everything_with_one_gap_free_seq_and_a_full_journal(cluster_run) -> None:
    assert cluster_run["rc"] == 0, cluster_run["log"][-3000:]
    assert cluster_run["stop_seconds"] < 30
    assert not cluster_run["left"], f"processes left behind: {cluster_run['left']}"
    journal = cluster_run["journal"]
    seqs = [e["seq"] for e in journal]
    assert seqs == sorted(set(seqs))
    assert len({e["run_id"] for e in journal}) == 1
    received = [e for e in cluster_run["received"] if "seq" in e]
    got = [e["seq"] for e in received]
    assert got == list(range(got[0], got[0] + len(got))), "the subscriber saw a gap in seq"
    published = {e["seq"] for e in received if e["type"] != "heartbeat"}
    assert published <= set(seqs), "an event on the wire is missing from the journal"
    from detector.events.scte35 import splice_event_id

    ads = [e for e in journal if e["type"].startswith("segment.") and e["is_ad"]]
    assert ads and all(e["scte35"]["event_id"] == splice_event_id(e["segment_id"]) for e in ads), \
        "an ad segment's cue does not pair with its published segment_id"
    finals = [e for e in journal if e["type"] == "segment.end" and e["boundary"] == "stream_end"]
    assert {e["channel"] for e in finals} >= {"a", "b"}     # shutdown ended the open segments
