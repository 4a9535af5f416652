"""The publisher thread and the journal, with real ZeroMQ sockets on 127.0.0.1.

Endpoints use ZeroMQ's wildcard port (`tcp://127.0.0.1:*`); the publisher reports the port
it got, so tests never race each other for a "free" port.
"""

from __future__ import annotations

import errno
import json
import os
import random
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq

from detector.events import schema as events

from detector.events import journal
from detector.errors import UsageError
from detector.events.journal import Journal, JournalError, read_journal
from detector.events.outputs.base import DROP_REASONS
from detector.events.outputs.zeromq import Publisher
from evkit import PublisherFactory, Recorder, wait_until

ANY = "tcp://127.0.0.1:*"
RUN = "test-run"
PROBE = "probe"  # channel used to learn that a SUB's subscription has reached the publisher


def segment(label: str = "commercial", n: int = 1, **extra) -> dict:
    return dict(label=label, is_ad=label == "commercial", confidence=0.9, segment_id=f"demo-{n}",
                time=time.time() - 1.0, stream_time=10.0 * n, pts=(900_000 * n) % 2 ** 33, boundary="cut",
                **extra)


@pytest.fixture
def make_publisher() -> Iterator[Callable[..., Publisher]]:
    make = PublisherFactory(bind=ANY, snapshot_bind=ANY, heartbeat_seconds=60.0, journal_path=None, run_id=RUN, channels=["a", "b"])
    yield make
    make.stop_all()


def subscriber(ctx: zmq.Context, endpoint: str, *topics: bytes, **options: int) -> zmq.Socket:
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    for name, value in options.items():
        sock.setsockopt(getattr(zmq, name.upper()), value)
    for prefix in topics or (b"",):
        sock.setsockopt(zmq.SUBSCRIBE, prefix)
    sock.connect(endpoint)
    return sock


def recv(sock: zmq.Socket, timeout: float = 3.0, skip_probes: bool = True) -> list[bytes]:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not sock.poll(int(left * 1000)):
            raise AssertionError(f"nothing received within {timeout} s")
        frames = sock.recv_multipart()
        if skip_probes and frames[0].endswith(f"/{PROBE}".encode()):
            continue
        return frames


def wait_subscribed(pub: Publisher, sock: zmq.Socket, timeout: float = 5.0, heartbeats: bool = False) -> None:
    """Publish probes until the SUB gets one: ZeroMQ's slow-joiner problem, made deterministic.
    `heartbeats`: the publisher sends them, so they may arrive before the probe (skipped)."""
    deadline = time.monotonic() + timeout
    first = pub.last_seq
    sent = 0
    while time.monotonic() < deadline:
        pub.publish("stream.up", PROBE)
        sent += 1
        if sock.poll(100):
            frames = sock.recv_multipart()
            if heartbeats and frames[0].startswith(b"heartbeat/"):
                continue
            assert frames[0] == f"stream.up/{PROBE}".encode()
            # every probe has its seq before we return, so callers can count from pub.last_seq
            wait_until(lambda: pub.last_seq >= first + sent)
            return
    raise AssertionError("subscription never reached the publisher")


def snapshot_request(ctx: zmq.Context, endpoint: str, *frames: bytes) -> dict:
    req = ctx.socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.setsockopt(zmq.RCVTIMEO, 3000)
    req.connect(endpoint)
    req.send_multipart(list(frames) or [b"snapshot"])
    reply = req.recv_multipart()
    req.close()
    assert len(reply) == 1
    return json.loads(reply[0])


# -- events on the wire ---------------------------------------------------------------------------

def test_segment_events_arrive_in_order_as_two_frames(ctx, make_publisher):
    counts = Recorder()
    sent = counts.sent
    pub = make_publisher(counters=counts)
    sub = subscriber(ctx, pub.endpoint)
    wait_subscribed(pub, sub)
    pub.publish("segment.start", "a", **segment("commercial", 1))
    pub.publish("segment.end", "a", duration=31.5, **segment("commercial", 1))
    pub.publish("segment.start", "a", **segment("football", 2))
    received = [recv(sub) for _ in range(3)]
    assert [f[0] for f in received] == [b"segment.start/a", b"segment.end/a", b"segment.start/a"]
    decoded = [events.decode(f) for f in received]
    assert [e["label"] for e in decoded] == ["commercial", "commercial", "football"]
    assert decoded[1]["duration"] == 31.5
    seqs = [e["seq"] for e in decoded]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3 and seqs[2] - seqs[0] == 2
    assert all(e["run_id"] == RUN and e["schema"] == 1 for e in decoded)
    # event_sent is counted right after the send, so it may trail the subscriber by a moment
    wait_until(lambda: ("a", "segment.end") in sent and sent.count(("a", "segment.start")) == 2)


def test_every_event_is_in_the_journal_before_it_is_received(ctx, make_publisher, tmp_path):
    path = tmp_path / "journal" / "events.jsonl"
    pub = make_publisher(journal_path=path)
    sub = subscriber(ctx, pub.endpoint)
    wait_subscribed(pub, sub)
    # wait_subscribed re-sends its probe until one arrives, so it may have used several seqs
    probes = pub.last_seq
    kinds = ["stream.up", "segment.start", "segment.end", "stream.down"] * 5
    for i, kind in enumerate(kinds, 1):
        fields = {"stream.up": {"source": "rtsp://cam/live"}, "stream.down": {"reason": "stalled"},
                  "segment.start": segment(n=i), "segment.end": {**segment(n=i), "duration": 2.0}}[kind]
        pub.publish(kind, "b", **fields)
    for kind in kinds:
        event = events.decode(recv(sub))
        assert event["type"] == kind
        # read the journal at the moment the subscriber holds the event
        journaled = {e["seq"]: e for e in read_journal(path)}
        assert journaled.get(event["seq"]) == event
    wait_until(lambda: pub.last_seq == probes + len(kinds))
    seqs = [e["seq"] for e in read_journal(path)]
    assert seqs == list(range(1, pub.last_seq + 1))  # strictly increasing from 1, nothing missing


def test_events_leave_within_50_ms(ctx, make_publisher):
    pub = make_publisher()
    sub = subscriber(ctx, pub.endpoint)
    wait_subscribed(pub, sub)
    delays = []
    for i in range(20):
        t0 = time.perf_counter()
        pub.publish("segment.start", "a", **segment(n=i))
        recv(sub)
        delays.append(time.perf_counter() - t0)
        time.sleep(0.01)
    assert statistics.median(delays) < 0.05, delays


def publish_concurrently(pub: Publisher, sub: zmq.Socket, threads: int = 4, per_thread: int = 300,
                         budget: float = 15.0) -> tuple[list, list]:
    """`threads` threads publish `per_thread` events each, with short random pauses, while this
    thread receives them; returns (late, missing): events that took > 0.2 s, events never seen."""
    published: dict[tuple[int, int], float] = {}

    def worker(k: int) -> None:
        rng = random.Random(k)
        for i in range(per_thread):
            published[(k, i)] = time.monotonic()
            pub.publish("stream.up", "a", k=k, i=i)
            time.sleep(rng.uniform(0, 0.002))

    workers = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    arrived: dict[tuple[int, int], float] = {}
    deadline = time.monotonic() + budget
    while len(arrived) < threads * per_thread and time.monotonic() < deadline:
        if sub.poll(50):
            frames = sub.recv_multipart()
            if frames[0] == b"stream.up/a":
                event = events.decode(frames)
                arrived[(event["k"], event["i"])] = time.monotonic()
    for w in workers:
        w.join()
    late = sorted((round(arrived[key] - published[key], 3), key) for key in arrived if arrived[key] - published[key] > 0.2)
    missing = sorted(set(published) - set(arrived))
    return late, missing


def test_events_published_from_many_threads_all_leave_within_200_ms(ctx, make_publisher):
    """Publishers racing the publisher thread's wakeup must never leave an event waiting for
    the next heartbeat tick (60 s here): every event leaves promptly, whoever queued it."""
    pub = make_publisher(heartbeat_seconds=60.0)
    sub = subscriber(ctx, pub.endpoint)
    wait_subscribed(pub, sub)
    for _ in range(3):  # a few rounds: the race needs a publish between two lines of the thread's loop
        late, missing = publish_concurrently(pub, sub)
        assert not late and not missing, (late[:5], len(late), missing[:5], len(missing))


def test_heartbeats_every_interval_with_contract_fields_and_not_journaled(ctx, make_publisher, tmp_path):
    path = tmp_path / "events.jsonl"
    live = {"a": {"state": "commercial", "p_ad": 0.8, "stream_up": True, "fps_in": 25.0, "fps_analyzed": 5.0}}
    pub = make_publisher(heartbeat_seconds=0.2, journal_path=path, heartbeat_source=lambda: live)
    sub = subscriber(ctx, pub.endpoint, b"heartbeat/")
    arrivals: dict[str, list[float]] = {"a": [], "b": []}
    last: dict[str, dict] = {}
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        if sub.poll(100):
            frames = sub.recv_multipart()
            event = events.decode(frames)
            assert frames[0] == f"heartbeat/{event['channel']}".encode()
            arrivals[event["channel"]].append(time.monotonic())
            last[event["channel"]] = event
    for channel, times in arrivals.items():
        assert len(times) >= 4, (channel, times)
        gaps = [b - a for a, b in zip(times, times[1:])]
        assert all(0.1 < g < 0.4 for g in gaps), gaps
        assert abs(statistics.mean(gaps) - 0.2) < 0.05, gaps
    a, b = last["a"], last["b"]
    assert {k: a[k] for k in events.HEARTBEAT_FIELDS} == live["a"]
    # a channel the source does not know: what the published events say
    assert (b["state"], b["p_ad"], b["stream_up"], b["fps_in"], b["fps_analyzed"]) == ("unknown", None, False, 0.0, 0.0)
    assert pub.snapshot()["channels"]["a"]["p_ad"] == 0.8
    pub.publish("stream.up", "a")
    wait_until(lambda: path.exists() and any(True for _ in read_journal(path)))
    assert [e["type"] for e in read_journal(path)] == ["stream.up"]


def test_a_failing_heartbeat_source_does_not_stop_heartbeats(ctx, make_publisher):
    def broken() -> dict:
        raise RuntimeError("pipeline gone")

    pub = make_publisher(heartbeat_seconds=0.1, heartbeat_source=broken)
    sub = subscriber(ctx, pub.endpoint, b"heartbeat/a")
    first, second = events.decode(recv(sub)), events.decode(recv(sub))
    assert first["state"] == "unknown" and second["seq"] > first["seq"]
    assert pub.alive


def test_a_heartbeat_that_cannot_be_built_costs_that_heartbeat_only(ctx, make_publisher, monkeypatch, caplog):
    """A bug that makes one channel's heartbeat (and its fallback) invalid drops that heartbeat,
    counted and logged once per interval with its traceback; the thread and the other channels
    go on, and no seq is spent on what was never sent."""
    real = events.make_event

    def make_event(type, channel, *args, **fields):
        if type == "heartbeat" and channel == "b":
            raise ValueError("heartbeat: field 'p_ad' must be [0, 1], got nan")
        return real(type, channel, *args, **fields)

    monkeypatch.setattr(events, "make_event", make_event)
    caplog.set_level("WARNING", logger="detector.events")
    counts = Recorder()
    pub = make_publisher(heartbeat_seconds=0.05, counters=counts)
    sub = subscriber(ctx, pub.endpoint, b"heartbeat/")
    got = [events.decode(recv(sub)) for _ in range(10)]
    assert {e["channel"] for e in got} == {"a"}
    assert [e["seq"] for e in got] == list(range(got[0]["seq"], got[0]["seq"] + 10))
    assert pub.alive
    wait_until(lambda: counts.dropped.count("error") >= 10)
    assert set(counts.dropped) == {"error"}
    lines = [r for r in caplog.records if "heartbeat dropped" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info and "channel=b" in lines[0].getMessage(), \
        [r.getMessage() for r in caplog.records]


def test_a_heartbeat_round_that_raises_costs_that_round_only(ctx, make_publisher, monkeypatch):
    """A bug anywhere in a heartbeat round: the round is dropped (counted), events still leave."""
    def fail(self, pub):
        raise RuntimeError("heartbeat round exploded")

    monkeypatch.setattr(Publisher, "_send_heartbeats", fail)
    counts = Recorder()
    pub = make_publisher(heartbeat_seconds=0.05, counters=counts)
    wait_until(lambda: counts.dropped.count("error") >= 3)
    sub = subscriber(ctx, pub.endpoint)
    wait_subscribed(pub, sub)
    pub.publish("segment.start", "a", **segment())
    assert events.decode(recv(sub))["type"] == "segment.start"
    assert pub.alive


def test_a_failing_lossy_resend_costs_that_message_only(ctx, make_publisher, monkeypatch):
    """The XPUB_NODROP switch around the lossy resend fails (here: injected) while a subscriber
    is stuck: each message that meets the full queue is dropped and counted as "error",
    heartbeats included; the thread lives, no seq is used twice, and once the switch works
    again a healthy subscriber gets events again."""
    counts = Recorder()
    pub = make_publisher(heartbeat_seconds=0.05, counters=counts, send_hwm=1)
    healthy = subscriber(ctx, pub.endpoint)
    wait_subscribed(pub, healthy, heartbeats=True)
    stuck = subscriber(ctx, pub.endpoint, rcvhwm=1, rcvbuf=4096)
    wait_subscribed(pub, stuck, heartbeats=True)  # it reads until this probe, then never again
    real = zmq.Socket.setsockopt

    def setsockopt(self, option, value):
        if option == zmq.XPUB_NODROP and value == 0:
            raise zmq.ZMQError(errno.EINTR)
        return real(self, option, value)

    monkeypatch.setattr(zmq.Socket, "setsockopt", setsockopt)
    for i in range(200):  # fills the stuck subscriber's queue
        pub.publish("stream.up", "a", note="x" * 1000, i=i)
    wait_until(lambda: pub.last_seq >= 200 and counts.dropped.count("error") >= 5)
    time.sleep(0.3)  # several heartbeat rounds meet the full queue too
    assert pub.alive, pub.error
    assert set(counts.dropped) <= {"hwm", "error"}
    monkeypatch.undo()
    seqs: list[tuple[str | None, int]] = []
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and "marker" not in [s for s, _ in seqs]:
        pub.publish("stream.down", "a", reason="marker")
        while "marker" not in [s for s, _ in seqs] and healthy.poll(100):
            event = events.decode(healthy.recv_multipart())
            seqs.append((event.get("reason"), event["seq"]))
    assert "marker" in [s for s, _ in seqs], seqs[-5:]
    numbers = [n for _, n in seqs]
    assert numbers == sorted(set(numbers)), "a seq was used twice or out of order"
    assert pub.alive


# -- snapshot -------------------------------------------------------------------------------------

def test_snapshot_answers_seq_and_channel_state(ctx, make_publisher):
    pub = make_publisher()
    empty = snapshot_request(ctx, pub.snapshot_endpoint)
    assert empty["seq"] == 0 and empty["run_id"] == RUN and set(empty["channels"]) == {"a", "b"}
    assert empty["channels"]["a"] == {"state": "unknown", "segment_id": None, "since": None, "stream_up": False,
                                      "p_ad": None}
    start = segment("commercial", 3)
    pub.publish("stream.up", "a")
    pub.publish("segment.start", "a", **start)
    pub.publish("stream.up", "b")
    pub.publish("segment.start", "b", **segment("football", 4))
    pub.publish("segment.end", "b", duration=5.0, **segment("football", 4))
    pub.publish("stream.down", "b", reason="stalled")
    wait_until(lambda: pub.last_seq == 6)
    snap = snapshot_request(ctx, pub.snapshot_endpoint)
    assert snap["seq"] == 6 and snap["schema"] == 1
    a, b = snap["channels"]["a"], snap["channels"]["b"]
    assert a == {"state": "commercial", "segment_id": "demo-3", "since": events.rfc3339(start["time"]),
                 "stream_up": True, "p_ad": None}
    assert b["stream_up"] is False and b["state"] == "unknown" and b["segment_id"] is None
    assert {k: v for k, v in snap.items() if k != "schema"} == pub.snapshot()


def test_segment_end_alone_keeps_the_state(make_publisher):
    pub = make_publisher()
    pub.publish("segment.start", "a", **segment("commercial", 1))
    pub.publish("segment.end", "a", duration=3.0, **segment("commercial", 1))
    wait_until(lambda: pub.last_seq == 2)
    assert pub.snapshot()["channels"]["a"]["state"] == "commercial"


def test_a_reconnect_keeps_the_open_segment_in_the_snapshot(ctx, make_publisher):
    """stream.down (a reconnect) leaves the segment the engine keeps open: a late joiner still
    learns it; only a segment.end ends it, and a stream.down after that says unknown."""
    pub = make_publisher()
    start = segment("commercial", 1)
    pub.publish("stream.up", "a")
    pub.publish("segment.start", "a", **start)
    pub.publish("stream.down", "a", reason="stalled")
    wait_until(lambda: pub.last_seq == 3)
    open_segment = {"state": "commercial", "segment_id": "demo-1", "since": events.rfc3339(start["time"]), "p_ad": None}
    assert snapshot_request(ctx, pub.snapshot_endpoint)["channels"]["a"] == {**open_segment, "stream_up": False}
    pub.publish("stream.up", "a")
    wait_until(lambda: pub.last_seq == 4)
    assert snapshot_request(ctx, pub.snapshot_endpoint)["channels"]["a"] == {**open_segment, "stream_up": True}
    pub.publish("segment.end", "a", duration=30.0, **start)
    pub.publish("stream.down", "a", reason="shutdown")
    wait_until(lambda: pub.last_seq == 6)
    a = snapshot_request(ctx, pub.snapshot_endpoint)["channels"]["a"]
    assert (a["state"], a["segment_id"], a["stream_up"]) == ("unknown", None, False)


def test_malformed_snapshot_requests_still_get_a_reply(ctx, make_publisher):
    pub = make_publisher()
    # a DEALER without the REQ envelope, with junk
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.setsockopt(zmq.RCVTIMEO, 3000)
    dealer.connect(pub.snapshot_endpoint)
    dealer.send_multipart([b"\xff\x00garbage", b"more"])
    reply = dealer.recv_multipart()
    assert json.loads(reply[-1])["run_id"] == RUN
    # a REQ with several odd frames, then an abandoned REQ that never reads its reply
    assert snapshot_request(ctx, pub.snapshot_endpoint, b"", b"{not json", b"\x00")["seq"] == 0
    abandoned = ctx.socket(zmq.REQ)
    abandoned.connect(pub.snapshot_endpoint)
    abandoned.send(b"hello")
    abandoned.close(linger=0)
    # nothing wedged
    for _ in range(3):
        assert snapshot_request(ctx, pub.snapshot_endpoint)["run_id"] == RUN


# -- slow subscribers, failures, lifecycle ----------------------------------------------------

def test_a_subscriber_that_never_reads_blocks_nothing_and_drops_are_counted(ctx, make_publisher):
    counts = Recorder()
    drops = counts.dropped
    pub = make_publisher(counters=counts, queue_size=100_000)  # the burst below may all wait at once
    stuck = subscriber(ctx, pub.endpoint, rcvhwm=1, rcvbuf=4096)
    wait_subscribed(pub, stuck)  # it reads this one probe, then never again
    healthy = subscriber(ctx, pub.endpoint)
    wait_subscribed(pub, healthy)
    got = {"events": 0, "marker": False}

    def read_healthy() -> None:  # the socket now belongs to this thread alone
        deadline = time.monotonic() + 120.0   # generous: a loaded CI machine is slow, the assertions below are what count
        while time.monotonic() < deadline:
            if healthy.poll(100):
                topic = healthy.recv_multipart()[0]
                if topic == b"stream.down/b":
                    got["marker"] = True
                    return
                got["events"] += 1

    reader = threading.Thread(target=read_healthy)
    reader.start()
    base = pub.last_seq
    n = 50_000
    t0 = time.monotonic()
    for i in range(n):
        pub.publish("stream.up", "a", note="x" * 200, i=i)
    publish_seconds = time.monotonic() - t0
    wait_until(lambda: pub.last_seq >= base + n, timeout=25.0)
    total_seconds = time.monotonic() - t0
    # the stuck subscriber's full queue does not keep others from new events. (The healthy
    # reader may itself be behind on a loaded machine, and so miss a marker: repeat it.)
    deadline = time.monotonic() + 60.0
    while reader.is_alive() and time.monotonic() < deadline:
        pub.publish("stream.down", "b", reason="marker")
        reader.join(timeout=0.5)
    assert got["marker"], (got, publish_seconds, total_seconds)
    # loose bounds (about 2 s and 4 s on an idle 2-core machine): what matters is that
    # neither publish() nor the thread waits for the stuck subscriber
    assert publish_seconds < 12.0 and total_seconds < 20.0, (publish_seconds, total_seconds)
    # counted per overflow episode (libzmq parks a full queue), so at least one
    assert len(drops) >= 1 and set(drops) == {"hwm"}
    assert pub.alive


def test_journal_failure_still_publishes_and_reports(ctx, make_publisher, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the journal's directory should be")
    counts = Recorder()
    drops = counts.dropped
    pub = make_publisher(journal_path=blocker / "events.jsonl", counters=counts)
    sub = subscriber(ctx, pub.endpoint)
    wait_subscribed(pub, sub)
    pub.publish("segment.start", "a", **segment())
    pub.publish("stream.down", "a", reason="stalled")
    assert [events.decode(recv(sub))["type"] for _ in range(2)] == ["segment.start", "stream.down"]
    wait_until(lambda: counts.journal_errors >= 3)  # the probe and the two events
    status = pub.journal_status()
    assert status["ok"] is False and "not-a-directory" in status["error"] and status["unjournaled"] >= 3
    assert counts.journal_states == [False]
    assert drops == []
    assert pub.alive


def test_bind_on_a_port_in_use_is_a_usage_error_naming_the_endpoint(make_publisher):
    first = make_publisher()
    wait_until(lambda: first.alive)
    # publishers of earlier tests may still be winding down: count ours against this baseline
    baseline = sum(t.name == "publisher" for t in threading.enumerate())
    with pytest.raises(UsageError, match=first.endpoint.replace(".", r"\.")):
        Publisher(first.endpoint, ANY, 60.0, None, RUN, ["a"]).start()
    with pytest.raises(UsageError, match=first.snapshot_endpoint.replace(".", r"\.")):
        Publisher(ANY, first.snapshot_endpoint, 60.0, None, RUN, ["a"]).start()
    with pytest.raises(UsageError, match="tcp://127.0.0.1:notaport"):
        Publisher("tcp://127.0.0.1:notaport", ANY, 60.0, None, RUN, ["a"]).start()
    # a failed start leaves no thread behind
    wait_until(lambda: sum(t.name == "publisher" for t in threading.enumerate()) <= baseline)


def test_stop_sends_everything_already_queued(ctx, tmp_path):
    path = tmp_path / "events.jsonl"
    pub = Publisher(ANY, ANY, 60.0, path, RUN, ["a"], journal_fsync=False)
    pub.start()
    sub = subscriber(ctx, pub.endpoint)
    wait_subscribed(pub, sub)
    for i in range(500):
        pub.publish("segment.start", "a", **segment(n=i))
    pub.stop()
    got = [events.decode(recv(sub))["segment_id"] for _ in range(500)]
    assert got == [f"demo-{i}" for i in range(500)]
    assert sum(e["type"] == "segment.start" for e in read_journal(path)) == 500
    assert not pub.alive


def test_stop_journals_and_sends_everything_queued_promptly_whatever_the_heartbeat(ctx, tmp_path):
    """The daemon's final segment.end / stream.down come from several threads just before stop();
    with a heartbeat far longer than stop's join, they must still be journaled and sent, at once."""
    path = tmp_path / "events.jsonl"
    pub = Publisher(ANY, ANY, 60.0, path, RUN, ["a"], journal_fsync=False)
    pub.start()
    sub = subscriber(ctx, pub.endpoint, b"stream.down/a", f"stream.up/{PROBE}".encode())
    wait_subscribed(pub, sub)

    def worker(k: int) -> None:
        rng = random.Random(k)
        for i in range(200):
            pub.publish("stream.down", "a", k=k, i=i)
            time.sleep(rng.uniform(0, 0.002))

    workers = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    t0 = time.monotonic()
    pub.stop()
    took = time.monotonic() - t0
    expected = {(k, i) for k in range(4) for i in range(200)}
    journaled = {(e["k"], e["i"]) for e in read_journal(path) if e["type"] == "stream.down"}
    received = set()
    while sub.poll(500):
        event = events.decode(sub.recv_multipart())
        received.add((event["k"], event["i"]))
    assert journaled == expected, len(expected - journaled)
    assert received == expected, len(expected - received)
    assert took < 1.0, took
    assert not pub.alive


def test_a_stuck_publisher_is_reported_and_a_full_queue_drops_without_blocking(ctx, make_publisher, tmp_path,
                                                                               monkeypatch, caplog):
    """The thread hangs in the journal's fsync (a dying disk): stuck() and health() say so while
    events wait; publish() never blocks, and beyond queue_size it drops the new event, counted
    as "queue_full" and logged once. Once the disk answers, the queued events leave in order."""
    path = tmp_path / "events.jsonl"
    counts = Recorder()
    caplog.set_level("WARNING", logger="detector.events")
    pub = make_publisher(journal_path=path, counters=counts, queue_size=5, stuck_seconds=0.3)
    sub = subscriber(ctx, pub.endpoint, b"segment.start/", f"stream.up/{PROBE}".encode())
    wait_subscribed(pub, sub)
    assert pub.stuck(time.monotonic(), 0.3) is None and pub.health().ok
    entered, release = threading.Event(), threading.Event()
    real_fsync = journal.os.fsync

    def hung_fsync(fd: int) -> None:
        entered.set()
        release.wait(30)
        real_fsync(fd)

    monkeypatch.setattr(journal.os, "fsync", hung_fsync)
    pub.publish("segment.start", "a", **segment(n=0))
    assert entered.wait(5)
    t0 = time.monotonic()
    for i in range(1, 11):
        pub.publish("segment.start", "a", **segment(n=i))
    assert time.monotonic() - t0 < 0.5
    assert counts.dropped == ["queue_full"] * 5 and "queue_full" in DROP_REASONS
    full = [r for r in caplog.records if "queue full" in r.getMessage()]
    assert len(full) == 1 and full[0].levelname == "WARNING", [r.getMessage() for r in caplog.records]
    wait_until(lambda: pub.stuck(time.monotonic(), 0.3) is not None)
    reason = pub.stuck(time.monotonic(), 0.3)
    assert "5 event(s) queued" in reason, reason
    health = pub.health()
    assert health.ok is False and any("stuck" in d for d in health.degraded), health
    release.set()
    got = [events.decode(recv(sub))["segment_id"] for _ in range(6)]
    assert got == [f"demo-{i}" for i in range(6)]
    wait_until(lambda: pub.stuck(time.monotonic(), 0.3) is None and pub.health().ok)
    journaled = [e for e in read_journal(path) if e["type"] == "segment.start"]
    assert [e["segment_id"] for e in journaled] == [f"demo-{i}" for i in range(6)]
    assert [e["seq"] for e in read_journal(path)] == list(range(1, pub.last_seq + 1))  # the drops cost no seq


def test_publish_validates_in_the_caller_and_drops_after_stop(make_publisher):
    counts = Recorder()
    drops = counts.dropped
    pub = make_publisher(counters=counts)
    with pytest.raises(ValueError, match="confidence"):
        pub.publish("segment.start", "a", **{**segment(), "confidence": 7})
    with pytest.raises(ValueError, match="unknown event type"):
        pub.publish("segment.middle", "a")
    pub.stop()
    pub.publish("stream.up", "a")
    assert drops == ["stopped"]
    assert pub.last_seq == 0


def test_a_channel_name_the_contract_refuses_is_refused_at_construction():
    with pytest.raises(ValueError, match="channel"):
        Publisher(ANY, ANY, 60.0, None, RUN, ["news", "bad/name"])


def test_channels_not_configured_at_start_are_tracked(make_publisher):
    pub = make_publisher(channels=[])
    pub.publish("stream.up", "late")
    wait_until(lambda: pub.last_seq == 1)
    assert pub.snapshot()["channels"]["late"]["stream_up"] is True


# -- the journal on its own -------------------------------------------------------------------

def test_journal_appends_lines_and_reads_them_back(tmp_path):
    path = tmp_path / "sub" / "events.jsonl"
    with Journal(path) as j:
        j.append({"seq": 1, "text": "coupé"})
        j.append({"seq": 2})
    assert path.read_text(encoding="utf-8").splitlines() == ['{"seq":1,"text":"coupé"}', '{"seq":2}']
    assert [e["seq"] for e in read_journal(path)] == [1, 2]


def test_read_journal_skips_a_torn_last_line(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"seq":1}\n{"seq":2}\n{"seq":3,"ty')
    assert [e["seq"] for e in read_journal(path)] == [1, 2]
    # the next run terminates the fragment so its own records stay intact
    with Journal(path) as j:
        j.append({"seq": 1, "run": "b"})
    assert [e["seq"] for e in read_journal(path)] == [1, 2, 1]


def test_journal_resumes_after_disk_full(tmp_path, monkeypatch):
    path = tmp_path / "events.jsonl"
    j = Journal(path)
    j.append({"seq": 1})
    real_write = os.write
    calls = {"n": 0}

    def full_disk(fd: int, data) -> int:
        calls["n"] += 1
        if calls["n"] == 1:  # half a line makes it to disk, then the disk is full
            return real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(journal.os, "write", full_disk)
    with pytest.raises(JournalError, match="No space left"):
        j.append({"seq": 2, "padding": "x" * 50})
    with pytest.raises(JournalError):
        j.append({"seq": 3})
    monkeypatch.setattr(journal.os, "write", real_write)  # the disk recovers
    j.append({"seq": 4})
    j.close()
    assert [e["seq"] for e in read_journal(path)] == [1, 4]
    assert path.read_bytes().endswith(b'\n{"seq":4}\n')


def test_journal_follows_a_rotated_file(tmp_path):
    path = tmp_path / "events.jsonl"
    j = Journal(path, fsync=False)
    j.append({"seq": 1})
    path.rename(tmp_path / "events.jsonl.1")
    j.append({"seq": 2})
    j.close()
    assert [e["seq"] for e in read_journal(path)] == [2]
    assert [e["seq"] for e in read_journal(tmp_path / "events.jsonl.1")] == [1]


def test_journal_error_on_an_unwritable_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(JournalError, match="journal"):
        Journal(blocker / "events.jsonl").append({"seq": 1})


def test_publisher_journal_path_type(tmp_path):
    # str paths from a config object work as well as Path
    pub = Publisher(ANY, ANY, 60.0, str(tmp_path / "j.jsonl"), RUN, ["a"])  # type: ignore[arg-type]
    pub.start()
    pub.publish("stream.up", "a")
    pub.stop()
    assert [e["type"] for e in read_journal(Path(tmp_path / "j.jsonl"))] == ["stream.up"]


def test_a_dead_publisher_thread_is_reported_and_its_queue_journaled_at_stop(tmp_path, monkeypatch, caplog):
    """The thread dies (here: a loop turn raises, a bug outside any one message): `alive` goes
    False with `error` set, the death is logged once with its traceback, and what was queued is
    journaled by stop() (not sent: the sockets died with the thread), so the record misses
    nothing the daemon decided."""
    path = tmp_path / "events.jsonl"
    boom = RuntimeError("loop turn exploded")
    real_turn = Publisher._turn
    turns = {"n": 0}

    def fail(self, *args):
        turns["n"] += 1
        if turns["n"] >= 2:  # the first turn publishes what was queued before start
            raise boom
        return real_turn(self, *args)

    monkeypatch.setattr(Publisher, "_turn", fail)
    caplog.set_level("INFO", logger="detector.events")
    pub = Publisher(ANY, ANY, 60.0, path, RUN, ["a"], journal_fsync=False)
    pub.publish("stream.up", "a")
    pub.start()
    wait_until(lambda: not pub.alive)
    assert pub.error is boom
    for i in range(3):
        pub.publish("segment.start", "a", **segment(n=i))
    pub.stop()
    journaled = list(read_journal(path))
    assert [e["type"] for e in journaled] == ["stream.up"] + ["segment.start"] * 3
    assert [e["seq"] for e in journaled] == [1, 2, 3, 4]
    died = [r for r in caplog.records if "thread died thread=publisher" in r.getMessage()]
    assert len(died) == 1 and died[0].exc_info and died[0].exc_info[1] is boom
    assert any("journaled queued events without publishing them events=3 last_seq=4" in r.getMessage() for r in caplog.records)
