"""REPLAY on the snapshot endpoint, journal rotation, and a journal on a disk that fills up or
goes read-only: real Publisher threads, real ZeroMQ sockets on 127.0.0.1, real files, and
(as root) real small tmpfs mounts.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq
from evkit import PublisherFactory, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector.events import schema as events

from detector.events import replay
from detector.events.journal import Journal, journal_files, read_journal
from detector.events.journal import replay as journal_replay
from detector.live.metrics import Metrics
from detector.events.outputs.zeromq import Publisher
from livekit import fill, mount_small_tmpfs, remount, unmount

ANY = "tcp://127.0.0.1:*"


def segment(n: int, label: str = "commercial") -> dict:
    return dict(label=label, is_ad=label == "commercial", confidence=0.9, segment_id=f"seg-{n}",
                time=time.time() - 1.0, stream_time=float(n), pts=90_000 * n, boundary="black")


def ask(ctx: zmq.Context, endpoint: str, *frames: bytes) -> dict:
    req = ctx.socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.setsockopt(zmq.RCVTIMEO, 5000)
    req.connect(endpoint)
    try:
        req.send_multipart(list(frames))
        reply = req.recv_multipart()
    finally:
        req.close()
    assert len(reply) == 1
    return json.loads(reply[0])


def replay_request(run_id: str, after_seq: int, limit: int | None = None) -> bytes:
    spec: dict = {"run_id": run_id, "after_seq": after_seq}
    if limit is not None:
        spec["limit"] = limit
    return json.dumps({"replay": spec}).encode()


@pytest.fixture
def make_publisher() -> Iterator[Callable[..., Publisher]]:
    make = PublisherFactory(bind=ANY, snapshot_bind=ANY, heartbeat_seconds=60.0, journal_path=None, run_id="run-a",
                            channels=["a"], journal_fsync=False)
    yield make
    make.stop_all()


def publish_n(pub: Publisher, n: int, channel: str = "a") -> None:
    """n events alternating segment.start / segment.end, then wait until all are sent."""
    base = pub.last_seq
    for i in range(1, n + 1):
        if i % 2:
            pub.publish("segment.start", channel, **segment(base + i))
        else:
            pub.publish("segment.end", channel, duration=1.0, **segment(base + i - 1))
    wait_until(lambda: pub.last_seq == base + n)


# -- replay from the journal ------------------------------------------------------------------------

def test_replay_after_seq_k_returns_exactly_the_later_events(ctx, make_publisher, tmp_path):
    pub = make_publisher(journal_path=tmp_path / "events.jsonl")
    publish_n(pub, 12)
    for k in (0, 1, 7, 11, 12):
        reply = ask(ctx, pub.snapshot_endpoint, replay_request("run-a", k))
        assert reply["type"] == "replay" and reply["found"] is True and reply["complete"] is True
        assert [e["seq"] for e in reply["events"]] == list(range(k + 1, 13))
        assert reply["run_id"] == "run-a" and reply["seq"] == 12 and reply["next"] is None
    # the events are the published ones, byte for byte valid events
    full = ask(ctx, pub.snapshot_endpoint, replay_request("run-a", 0))["events"]
    assert full == list(read_journal(tmp_path / "events.jsonl"))
    assert all(events.decode(events.encode(e)) == e for e in full)
    assert all(e["boundary"] == "black" and e["pts"] == 90_000 * int(e["segment_id"][4:]) for e in full)


def test_replay_pages_with_a_limit(ctx, make_publisher, tmp_path):
    pub = make_publisher(journal_path=tmp_path / "events.jsonl")
    publish_n(pub, 25)
    got, after, pages = [], 0, 0
    while True:
        reply = ask(ctx, pub.snapshot_endpoint, replay_request("run-a", after, limit=10))
        pages += 1
        assert len(reply["events"]) <= 10
        got += [e["seq"] for e in reply["events"]]
        if reply["complete"]:
            assert reply["next"] is None
            break
        assert reply["next"] == {"run_id": "run-a", "after_seq": got[-1]}
        after = reply["next"]["after_seq"]
    assert got == list(range(1, 26)) and pages == 3


def test_replay_spans_rotated_files_oldest_first(ctx, make_publisher, tmp_path):
    path = tmp_path / "events.jsonl"
    pub = make_publisher(journal_path=path, journal_max_bytes=1024, journal_keep=50)
    publish_n(pub, 40)
    files = journal_files(path)
    assert len(files) >= 4 and files[-1] == path and files[0].name.startswith("events.jsonl.")
    assert all(f.stat().st_size <= 1024 for f in files)  # rotation keeps every file under the limit
    # no line split across files: every file reads back whole
    seqs_per_file = [[e["seq"] for e in read_journal(f)] for f in files]
    assert sum(seqs_per_file, []) == list(range(1, 41))
    reply = ask(ctx, pub.snapshot_endpoint, replay_request("run-a", 3, limit=1000))
    assert [e["seq"] for e in reply["events"]] == list(range(4, 41))


def test_replay_skips_earlier_lines_by_their_bytes_without_confusing_runs_or_layouts(tmp_path):
    """The end of a long run is found without parsing the lines before it; a run whose id
    starts with the same text, and lines in another writer's layout, are still told apart."""
    path = tmp_path / "events.jsonl"
    with Journal(path, fsync=False) as j:
        for run_id, seqs in (("run-a", range(1, 6)), ("run-ab", range(1, 4))):
            for seq in seqs:
                j.append(events.make_event("segment.start", "a", seq, run_id, time.time(), **segment(seq)))
    with open(path, "a", encoding="utf-8") as fh:  # another tool's layout (spaces, other key order)
        late = events.make_event("stream.down", "a", 6, "run-a", time.time())
        fh.write(json.dumps(dict(reversed(list(late.items())))) + "\n")
    got = journal_replay(path, "run-a", 3, 100)
    assert [(e["run_id"], e["seq"]) for e in got.events] == \
        [("run-a", 4), ("run-a", 5), ("run-ab", 1), ("run-ab", 2), ("run-ab", 3), ("run-a", 6)]
    got = journal_replay(path, "run-a", 10, 100)
    assert [(e["run_id"], e["seq"]) for e in got.events] == [("run-ab", 1), ("run-ab", 2), ("run-ab", 3)]


def test_rotation_keeps_only_journal_keep_files(tmp_path):
    path = tmp_path / "events.jsonl"
    with Journal(path, fsync=False, max_bytes=1024, keep=2) as j:
        for seq in range(1, 200):
            j.append({"run_id": "r", "seq": seq, "pad": "x" * 50})
    files = journal_files(path)
    assert [f.name for f in files] == ["events.jsonl.2", "events.jsonl.1", "events.jsonl"]
    seqs = [e["seq"] for f in files for e in read_journal(f)]
    assert seqs == list(range(seqs[0], 200)) and seqs[0] > 1  # the oldest went, the rest is contiguous


def test_replay_across_a_restart_returns_the_rest_of_the_old_run_then_the_new_run(ctx, make_publisher, tmp_path):
    path = tmp_path / "events.jsonl"
    first = make_publisher(run_id="run-a", journal_path=path, journal_max_bytes=2048)
    publish_n(first, 10)
    first.stop()
    second = make_publisher(run_id="run-b", journal_path=path, journal_max_bytes=2048)
    publish_n(second, 6)
    reply = ask(ctx, second.snapshot_endpoint, replay_request("run-a", 4))
    assert reply["found"] is True and reply["complete"] is True
    assert [(e["run_id"], e["seq"]) for e in reply["events"]] == \
        [("run-a", s) for s in range(5, 11)] + [("run-b", s) for s in range(1, 7)]
    assert reply["run_id"] == "run-b"


def test_journal_lines_that_are_not_json_cost_those_lines_only(ctx, make_publisher, tmp_path):
    """A damaged journal (hand-edited, or written by another tool) with a NaN or a lone UTF-16
    surrogate in a line: a replay across it returns every other event, and the publisher lives on."""
    path = tmp_path / "events.jsonl"
    old = [events.make_event("segment.start", "a", seq, "run-old", time.time(), **segment(seq)) for seq in (1, 2, 3, 4)]
    lines = [json.dumps(e, separators=(",", ":")).encode() for e in old]  # as Journal.append writes them
    lines[1] = lines[1][:-1] + b',"p_ad":NaN}'            # Python's json writes this; it is not JSON
    lines[2] = lines[2][:-1] + b',"note":"\\ud800"}'         # valid JSON syntax, but no UTF-8 text
    path.write_bytes(b"\n".join(lines) + b"\n")
    pub = make_publisher(journal_path=path)
    publish_n(pub, 2)
    reply = ask(ctx, pub.snapshot_endpoint, replay_request("run-old", 0))
    assert reply["type"] == "replay" and reply["complete"] is True
    assert [(e["run_id"], e["seq"]) for e in reply["events"]] == [("run-old", 1), ("run-old", 4), ("run-a", 1), ("run-a", 2)]
    assert pub.alive
    publish_n(pub, 1)
    assert ask(ctx, pub.snapshot_endpoint, b"snapshot")["seq"] == 3


def test_live_events_leave_promptly_while_large_replays_are_served(ctx, make_publisher, tmp_path):
    """Ten subscribers ask at once for the end of a long old run (each request reads every line
    of it: a second of work in all): meanwhile live events still leave promptly."""
    path = tmp_path / "events.jsonl"
    n = 100_000
    template = events.make_event("segment.start", "a", 1, "run-old", time.time(), **segment(1))
    head, tail = json.dumps(template, separators=(",", ":")).split('"seq":1,')
    with open(path, "w", encoding="utf-8") as fh:
        fh.writelines(f'{head}"seq":{seq},{tail}\n' for seq in range(1, n + 1))
    pub = make_publisher(journal_path=path)
    sub = sub_socket(ctx, pub)
    reqs = []
    for _ in range(10):
        req = ctx.socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        req.connect(pub.snapshot_endpoint)
        req.send(replay_request("run-old", n))
        reqs.append(req)
    replies: dict[int, dict] = {}
    latencies: list[tuple[float, float]] = []
    k = 0
    deadline = time.monotonic() + 60
    while len(replies) < len(reqs) and time.monotonic() < deadline:
        k += 1
        t0 = time.monotonic()
        pub.publish("stream.up", "a", k=k)
        assert sub.poll(5000), "a live event did not arrive within 5 s"
        event = events.decode(sub.recv_multipart())
        assert event["k"] == k
        latencies.append((t0, time.monotonic() - t0))
        for i, req in enumerate(reqs):
            if i not in replies and req.poll(0):
                replies[i] = json.loads(req.recv())
        time.sleep(0.02)
    last_reply = time.monotonic()
    assert len(replies) == len(reqs)
    for reply in replies.values():
        assert reply["type"] == "replay" and reply["found"] is True and reply["events"]
        assert {e["run_id"] for e in reply["events"]} == {"run-a"}  # the old run's end, then this run
    during = [lat for t0, lat in latencies if t0 < last_reply]
    # typically a millisecond; replays served on the publisher thread held events back for as
    # long as they took, and a worker that did not step aside for it, up to 0.4 s (GIL convoy)
    assert statistics.median(during) < 0.05 and max(during) < 0.2, sorted(during)[-5:]
    assert len(during) >= 5, latencies  # the replays really overlapped the live events


def test_unknown_run_id_is_reported_with_where_the_journal_begins(ctx, make_publisher, tmp_path):
    path = tmp_path / "events.jsonl"
    pub = make_publisher(run_id="run-b", journal_path=path)
    publish_n(pub, 3)
    reply = ask(ctx, pub.snapshot_endpoint, replay_request("rotated-away", 17))
    assert reply["found"] is False and reply["events"] == [] and reply["complete"] is True
    assert reply["oldest"] == {"run_id": "run-b", "seq": 1}
    # the publisher's own run is known even before anything of it was journaled
    fresh = make_publisher(run_id="run-c", journal_path=tmp_path / "other.jsonl")
    own = ask(ctx, fresh.snapshot_endpoint, replay_request("run-c", 0))
    assert own["found"] is True and own["events"] == []


def test_other_requests_still_get_the_snapshot(ctx, make_publisher, tmp_path):
    pub = make_publisher(journal_path=tmp_path / "events.jsonl")
    publish_n(pub, 3)
    for body in (b"snapshot", b"", b'{"hello": 1}', b"[1,2]", b'{"replay"', b"\xff\xfe"):
        snap = ask(ctx, pub.snapshot_endpoint, body)
        assert snap["seq"] == 3 and snap["run_id"] == "run-a" and "channels" in snap, body


def test_a_publisher_without_journal_says_so(ctx, make_publisher):
    pub = make_publisher(journal_path=None)
    reply = ask(ctx, pub.snapshot_endpoint, replay_request("run-a", 0))
    assert reply["type"] == "error" and "no journal" in reply["error"]


@pytest.mark.parametrize("spec, needle", [
    ("nope", "'replay' must be an object"),
    ({"after_seq": 1}, "replay.run_id"),
    ({"run_id": "", "after_seq": 1}, "replay.run_id"),
    ({"run_id": "r", "after_seq": -1}, "replay.after_seq"),
    ({"run_id": "r", "after_seq": True}, "replay.after_seq"),
    ({"run_id": "r", "after_seq": 1.5}, "replay.after_seq"),
    ({"run_id": "r", "after_seq": 1, "limit": 0}, "replay.limit"),
    ({"run_id": "r", "after_seq": 1, "limit": replay.MAX_LIMIT + 1}, "replay.limit"),
    ({"run_id": "r", "after_seq": 1, "lmit": 5}, "unknown replay field"),
])
def test_a_bad_replay_request_gets_a_clear_error_reply(ctx, make_publisher, tmp_path, spec, needle):
    pub = make_publisher(journal_path=tmp_path / "events.jsonl")
    reply = ask(ctx, pub.snapshot_endpoint, json.dumps({"replay": spec}).encode())
    assert reply == {"schema": 1, "type": "error", "error": reply["error"]}
    assert needle in reply["error"] and "\n" not in reply["error"]
    assert pub.alive


# -- fuzzing the request parser ----------------------------------------------------------------------

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                           lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
                           max_leaves=12)
replay_specs = st.fixed_dictionaries({}, optional={"run_id": json_values | st.text(max_size=300),
                                                   "after_seq": json_values | st.integers(min_value=-5, max_value=2**70),
                                                   "limit": json_values | st.integers(min_value=-5, max_value=5000),
                                                   "other": json_values})
bodies = (st.binary(max_size=200).map(lambda b: [b])
          | st.lists(st.binary(max_size=20), max_size=3)
          | json_values.map(lambda v: [json.dumps(v).encode()])
          | (replay_specs | json_values).map(lambda spec: [json.dumps({"replay": spec}).encode()]))


@settings(max_examples=600, deadline=None)
@given(bodies)
def test_parse_request_returns_a_request_none_or_a_one_line_request_error(body):
    try:
        result = replay.parse_request(body)
    except replay.RequestError as exc:
        assert str(exc) and "\n" not in str(exc) and len(str(exc)) < 400
        return
    if result is not None:
        assert isinstance(result.run_id, str) and result.run_id
        assert isinstance(result.after_seq, int) and result.after_seq >= 0
        assert 1 <= result.limit <= replay.MAX_LIMIT
        assert replay.parse_request([replay.encode_request(result)]) == result  # round trip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bodies)
def test_fuzzed_requests_never_break_the_publisher_thread(live_publisher, body):
    ctx, pub = live_publisher
    req = ctx.socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.setsockopt(zmq.RCVTIMEO, 5000)
    req.connect(pub.snapshot_endpoint)
    try:
        req.send_multipart(body or [b""])
        reply = json.loads(req.recv_multipart()[-1])
    finally:
        req.close()
    assert reply.get("type") in ("replay", "error") or reply["run_id"] == "fuzz"
    if reply.get("type") == "error":
        assert reply["error"] and "\n" not in reply["error"]
    assert pub.alive


@pytest.fixture(scope="module")
def live_publisher(tmp_path_factory):
    ctx = zmq.Context()
    path = tmp_path_factory.mktemp("fuzz") / "events.jsonl"
    pub = Publisher(ANY, ANY, 60.0, path, "fuzz", ["a"], journal_fsync=False)
    pub.start()
    publish_n(pub, 5)
    yield ctx, pub
    pub.stop()
    ctx.destroy(linger=0)


# -- the journal's disk fills up or goes read-only ---------------------------------------------------

@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A 64 KiB tmpfs of our own (root only): a disk that really fills up and really goes read-only."""
    mnt = tmp_path / "disk"
    why_not = mount_small_tmpfs(mnt)
    if why_not:
        pytest.skip(why_not)
    try:
        yield mnt
    finally:
        unmount(mnt)


class Watch:
    """What the daemon passes the publisher as its counters: the real Metrics object."""

    def __init__(self) -> None:
        self.metrics = Metrics(["a"])

    def kwargs(self) -> dict:
        return dict(counters=self.metrics)

    def value(self, name: str) -> float:
        return self.metrics.registry.get_sample_value(name) or 0.0


def sub_socket(ctx: zmq.Context, pub: Publisher) -> zmq.Socket:
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(pub.endpoint)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # until our subscription has reached the publisher
        pub.publish("stream.up", "probe")
        if sock.poll(100):
            sock.recv_multipart()
            while sock.poll(50):
                sock.recv_multipart()
            return sock
    raise AssertionError("subscription never reached the publisher")


def received(sock: zmq.Socket, n: int) -> list[dict]:
    out = []
    while len(out) < n:
        assert sock.poll(5000), f"only {len(out)} of {n} events arrived"
        event = events.decode(sock.recv_multipart())
        if event["channel"] != "probe":
            out.append(event)
    return out


def test_disk_full_events_still_arrive_degraded_logged_once_then_journaling_resumes(ctx, make_publisher, small_disk,
                                                                                    caplog):
    caplog.set_level(logging.INFO, logger="detector.events")
    path = small_disk / "events.jsonl"
    watch = Watch()
    pub = make_publisher(journal_path=path, **watch.kwargs())
    sub = sub_socket(ctx, pub)
    publish_n(pub, 2)
    assert [e["seq"] for e in received(sub, 2)] == [pub.last_seq - 1, pub.last_seq]
    assert pub.journal_ok and watch.value("ad_detector_journal_ok") == 1
    filler = fill(small_disk)
    # the journal's last page still takes a few lines (tmpfs allocates 4 KiB pages): write until
    # the first failure, every event still reaching the subscriber
    for _ in range(200):
        publish_n(pub, 1)
        assert received(sub, 1)[0]["seq"] == pub.last_seq
        if not pub.journal_ok:
            break
    assert not pub.journal_ok, "the journal never failed on a full disk"
    before = pub.last_seq - 1  # the first unjournaled event
    publish_n(pub, 9)
    assert [e["seq"] for e in received(sub, 9)] == list(range(before + 2, before + 11))
    assert watch.value("ad_detector_journal_errors_total") == 10
    assert watch.value("ad_detector_journal_ok") == 0
    status = pub.journal_status()
    assert status["ok"] is False and "No space left" in status["error"] and status["unjournaled"] == 10
    assert status["path"] == str(path) and status["since"]
    failing = [r for r in caplog.records if "journal failing" in r.getMessage()]
    assert len(failing) == 1 and failing[0].levelno == logging.ERROR, [r.getMessage() for r in caplog.records]
    assert "cannot be replayed" in failing[0].getMessage()
    # a replay says which events were never journaled
    reply = ask(ctx, pub.snapshot_endpoint, replay_request("run-a", 0))
    assert reply["unjournaled"] == [[before + 1, before + 10]]
    assert all(e["seq"] <= before for e in reply["events"])
    # the disk recovers
    filler.unlink()
    publish_n(pub, 2)
    assert [e["seq"] for e in received(sub, 2)] == [before + 11, before + 12]
    wait_until(lambda: pub.journal_ok)
    assert watch.value("ad_detector_journal_ok") == 1
    assert watch.value("ad_detector_journal_errors_total") == 10
    journaled = [e["seq"] for e in read_journal(path)]
    assert journaled[-2:] == [before + 11, before + 12] and not set(journaled) & set(range(before + 1, before + 11))
    resumed = [r for r in caplog.records if "journaling resumed" in r.getMessage()]
    assert len(resumed) == 1 and "unjournaled=10" in resumed[0].getMessage()


def test_read_only_journal_disk_events_still_arrive_and_journaling_resumes_when_writable(ctx, make_publisher,
                                                                                          small_disk, caplog):
    caplog.set_level(logging.INFO, logger="detector.events")
    path = small_disk / "events.jsonl"
    path.write_text("")  # the journal exists, then the file system goes read-only (as after an I/O error)
    remount(small_disk, "ro")
    watch = Watch()
    pub = make_publisher(journal_path=path, **watch.kwargs())
    sub = sub_socket(ctx, pub)
    before = pub.last_seq
    publish_n(pub, 4)
    assert [e["seq"] for e in received(sub, 4)] == list(range(before + 1, before + 5))
    assert watch.value("ad_detector_journal_errors_total") >= 4 and watch.value("ad_detector_journal_ok") == 0
    assert "Read-only file system" in pub.journal_status()["error"]
    assert sum("journal failing" in r.getMessage() for r in caplog.records) == 1
    remount(small_disk, "rw")
    publish_n(pub, 1)
    wait_until(lambda: pub.journal_ok)
    assert watch.value("ad_detector_journal_ok") == 1
    assert [e["seq"] for e in read_journal(path)] == [pub.last_seq]
    assert sum("journaling resumed" in r.getMessage() for r in caplog.records) == 1
