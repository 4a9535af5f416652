"""`ad-detector subscribe` as a user runs it (a subprocess) against real ZeroMQ sockets.

Against the real Publisher (and its journal) for the late-joiner handshake and for repairing
losses by replay across kills and restarts, and against hand-driven
XPUB/ROUTER sockets where a test needs exact control of what arrives when (gaps, restarts,
garbage, events already contained in the snapshot).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import zmq

from detector.events import schema as events
from detector.events.journal import read_journal
from detector.events.outputs.zeromq import Publisher
from conftest import CLI, cli_env
from livekit import Subscriber

ANY = "tcp://127.0.0.1:*"
RUN = "run-a"


def segment(n: int, label: str = "commercial") -> dict:
    return dict(label=label, is_ad=label == "commercial", confidence=0.8, segment_id=f"s{n}", time=time.time(),
                stream_time=float(n), pts=90_000 * n if n % 2 else None,
                boundary=events.BOUNDARIES[n % len(events.BOUNDARIES)])


def frames(kind: str, seq: int, run_id: str = RUN, channel: str = "demo", **fields) -> list[bytes]:
    defaults = {"heartbeat": dict(state="unknown", p_ad=None, stream_up=True, fps_in=25.0, fps_analyzed=5.0),
                "segment.start": segment(seq)}.get(kind, {})
    return events.encode(events.make_event(kind, channel, seq, run_id, time.time(), **{**defaults, **fields}))


def subscribe(*args: object) -> subprocess.Popen:
    return subprocess.Popen([*CLI, "subscribe", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=cli_env())


def finish(proc: subprocess.Popen, timeout: float = 20.0) -> tuple[int, list[dict], str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"subscribe did not finish; stdout={out[-2000:]!r} stderr={err[-2000:]!r}") from None
    return proc.returncode, [json.loads(line) for line in out.splitlines()], err


@pytest.fixture
def xpub(ctx) -> tuple[zmq.Socket, str]:
    """A raw publisher the test drives by hand; it also tells us when a subscription arrives."""
    sock = ctx.socket(zmq.XPUB)
    sock.bind(ANY)
    return sock, sock.getsockopt_string(zmq.LAST_ENDPOINT)


def wait_for_subscription(sock: zmq.Socket, timeout: float = 15.0) -> bytes:
    if not sock.poll(int(timeout * 1000)):
        raise AssertionError("the subscriber never subscribed")
    message = sock.recv()
    assert message[:1] == b"\x01"
    return message[1:]


def test_late_joiner_gets_the_snapshot_then_every_later_event_once():
    pub = Publisher(ANY, ANY, 60.0, None, RUN, ["a", "b"])
    pub.start()
    stop = threading.Event()
    try:
        pub.publish("stream.up", "a")
        pub.publish("segment.start", "a", **segment(1))
        deadline = time.monotonic() + 5
        while pub.last_seq < 2 and time.monotonic() < deadline:
            time.sleep(0.01)

        def feed() -> None:  # a live pipeline: events keep coming while the subscriber joins
            n = 2
            while not stop.is_set():
                n += 1
                if n % 2:
                    pub.publish("segment.start", "b", **segment(n, "football"))
                else:
                    pub.publish("segment.end", "b", duration=0.005, **segment(n - 1, "football"))
                time.sleep(0.005)

        feeder = threading.Thread(target=feed)
        feeder.start()
        proc = subscribe("--endpoint", pub.endpoint, "--snapshot-endpoint", pub.snapshot_endpoint, "--count", 40,
                         "--timeout", 15)
        rc, lines, err = finish(proc)
    finally:
        stop.set()
        pub.stop()
    assert rc == 0, err
    snap, received = lines[0], lines[1:]
    assert snap["type"] == "snapshot" and snap["run_id"] == RUN and snap["seq"] >= 2
    assert snap["channels"]["a"]["state"] == "commercial" and snap["channels"]["a"]["stream_up"] is True
    assert len(received) == 40
    seqs = [e["seq"] for e in received]
    # nothing at or below the snapshot, nothing twice, nothing missed (subscribed before the snapshot)
    assert seqs == list(range(snap["seq"] + 1, snap["seq"] + 41)), (snap["seq"], seqs)
    assert all(e["channel"] == "b" and e["schema"] == 1 for e in received)
    assert "warning" not in err, err


def test_updates_already_in_the_snapshot_are_dropped(ctx, xpub):
    pub_sock, endpoint = xpub
    router = ctx.socket(zmq.ROUTER)
    router.bind(ANY)
    snapshot_endpoint = router.getsockopt_string(zmq.LAST_ENDPOINT)
    proc = subscribe("--endpoint", endpoint, "--snapshot-endpoint", snapshot_endpoint, "--count", 4, "--timeout", 15)
    wait_for_subscription(pub_sock)
    for seq in range(1, 6):  # queued at the subscriber before it has the snapshot
        pub_sock.send_multipart(frames("stream.up", seq))
    assert router.poll(15000), "no snapshot request"
    request = router.recv_multipart()
    state = {"demo": {"state": "unknown", "segment_id": None, "since": None, "stream_up": True, "p_ad": None}}
    router.send_multipart([*request[:-1], json.dumps({"schema": 1, "seq": 3, "run_id": RUN, "channels": state}).encode()])
    pub_sock.send_multipart(frames("stream.down", 6))
    pub_sock.send_multipart(frames("stream.up", 7))
    rc, lines, err = finish(proc)
    assert rc == 0, err
    assert lines[0] == {"type": "snapshot", "schema": 1, "seq": 3, "run_id": RUN, "channels": state}
    assert [e["seq"] for e in lines[1:]] == [4, 5, 6, 7]
    assert err == ""


def test_gaps_restarts_and_garbage_are_warned_about_on_stderr(xpub):
    pub_sock, endpoint = xpub
    proc = subscribe("--endpoint", endpoint, "--count", 5, "--timeout", 15)
    wait_for_subscription(pub_sock)
    pub_sock.send_multipart(frames("heartbeat", 1))
    pub_sock.send_multipart([b"heartbeat/demo", b"\xff not json"])
    pub_sock.send_multipart([b"only one frame"])
    pub_sock.send_multipart(frames("heartbeat", 2))
    pub_sock.send_multipart(frames("segment.start", 5))          # 3 and 4 lost
    pub_sock.send_multipart(frames("segment.start", 5))          # a duplicate
    pub_sock.send_multipart(frames("heartbeat", 1, run_id="run-b"))  # the daemon restarted
    pub_sock.send_multipart(frames("heartbeat", 2, run_id="run-b"))
    rc, lines, err = finish(proc)
    assert rc == 0, err
    assert [(e["run_id"], e["seq"]) for e in lines] == [(RUN, 1), (RUN, 2), (RUN, 5), ("run-b", 1), ("run-b", 2)]
    warnings = err.splitlines()
    assert "Traceback" not in err
    assert all(line.startswith("ad-detector subscribe: warning: ") for line in warnings), warnings
    assert sum("undecodable" in line for line in warnings) == 2
    assert sum("gap in seq: expected 3, got 5 (2 events missed)" in line for line in warnings) == 1
    assert sum("duplicate" in line for line in warnings) == 1
    assert sum("restarted" in line and "run-b" in line for line in warnings) == 1
    assert len(warnings) == 5


def test_topic_filter_and_no_gap_warnings_for_filtered_streams(xpub):
    pub_sock, endpoint = xpub
    proc = subscribe("--endpoint", endpoint, "--topic", "segment.", "--topic", "stream.down/", "--count", 2,
                     "--timeout", 15)
    topics = {wait_for_subscription(pub_sock), wait_for_subscription(pub_sock)}
    assert topics == {b"segment.", b"stream.down/"}
    pub_sock.send_multipart(frames("heartbeat", 1))
    pub_sock.send_multipart(frames("segment.start", 2))
    pub_sock.send_multipart(frames("stream.up", 3))
    pub_sock.send_multipart(frames("stream.down", 4, reason="eof"))
    rc, lines, err = finish(proc)
    assert rc == 0, err
    assert [e["type"] for e in lines] == ["segment.start", "stream.down"]
    assert err == ""  # 2 -> 4 is a filtered stream, not a gap


def test_timeout_exits_1_with_one_line(xpub):
    _, endpoint = xpub
    started = time.monotonic()
    rc, lines, err = finish(subscribe("--endpoint", endpoint, "--timeout", 0.5))
    assert rc == 1 and lines == []
    assert err.strip().splitlines() == [f"ad-detector: failed: no event from {endpoint} within 0.5 s"]
    assert time.monotonic() - started < 10


def test_snapshot_timeout_exits_1(ctx, xpub):
    _, endpoint = xpub
    silent = ctx.socket(zmq.ROUTER)  # accepts the request, never answers
    silent.bind(ANY)
    rc, lines, err = finish(subscribe("--endpoint", endpoint, "--snapshot-endpoint",
                                      silent.getsockopt_string(zmq.LAST_ENDPOINT), "--timeout", 1))
    assert rc == 1 and lines == []
    assert "no snapshot from" in err and "Traceback" not in err


def test_ctrl_c_exits_0_quietly(xpub):
    pub_sock, endpoint = xpub
    proc = subscribe("--endpoint", endpoint)
    wait_for_subscription(pub_sock)
    pub_sock.send_multipart(frames("stream.up", 1))
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    rc, lines, err = finish(proc)
    assert rc == 0 and err == ""
    assert [e["seq"] for e in lines] == [1]


def test_bad_endpoint_is_a_usage_error():
    rc, lines, err = finish(subscribe("--endpoint", "not-an-endpoint", "--timeout", 1))
    assert rc == 2 and lines == []
    assert "--endpoint" in err and "Traceback" not in err


# -- repairing losses by replay (real Publisher, real journal, the subscriber as a subprocess) -----

def free_endpoint() -> str:
    """A fixed endpoint (not `*`): a restarted publisher must bind where the subscriber reconnects."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def start_publisher(run_id: str, ep: str, snap: str, journal: Path) -> Publisher:
    pub = Publisher(ep, snap, 60.0, journal, run_id, ["demo"], journal_fsync=False)
    deadline = time.monotonic() + 10
    while True:  # the previous publisher's port may take a moment to be free again
        try:
            pub.start()
            return pub
        except Exception:
            if time.monotonic() > deadline:
                raise
            pub = Publisher(ep, snap, 60.0, journal, run_id, ["demo"], journal_fsync=False)
            time.sleep(0.1)


def ad_break(pub: Publisher, n: int) -> None:
    """programme start/end, then an ad segment.start: the subscriber is 'in an ad break' after it."""
    pub.publish("segment.start", "demo", **segment(n, "football"))
    pub.publish("segment.end", "demo", duration=1.0, **segment(n, "football"))
    pub.publish("segment.start", "demo", **segment(n + 1, "commercial"))


def positions(evs: list[dict]) -> list[tuple[str, int]]:
    return [(e["run_id"], e["seq"]) for e in evs]


def test_subscriber_killed_in_an_ad_break_and_publisher_restarted_loses_nothing_and_repeats_nothing(tmp_path):
    ep, snap, journal, resume = free_endpoint(), free_endpoint(), tmp_path / "events.jsonl", tmp_path / "pos.json"
    pub = start_publisher("run-a", ep, snap, journal)
    first = Subscriber("--endpoint", ep, "--snapshot-endpoint", snap, "--resume", resume, "--timeout", 60)
    try:
        first.wait_for(lambda r: r.lines and r.lines[0]["type"] == "snapshot")
        pub.publish("stream.up", "demo")
        ad_break(pub, 1)
        first.wait_for(lambda r: any(e["type"] == "segment.start" and e["is_ad"] for e in r.events()))
    finally:
        first.kill()  # in the middle of the ad break
    try:
        # while no subscriber runs: the break ends, the daemon restarts, a new break starts
        pub.publish("segment.end", "demo", duration=3.0, **segment(2, "commercial"))
        pub.publish("segment.start", "demo", **segment(3, "football"))
        deadline = time.monotonic() + 5
        while pub.last_seq < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        pub.stop()
    pub = start_publisher("run-b", ep, snap, journal)
    try:
        pub.publish("stream.up", "demo")
        ad_break(pub, 10)
        deadline = time.monotonic() + 5
        while pub.last_seq < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        second = Subscriber("--endpoint", ep, "--snapshot-endpoint", snap, "--resume", resume, "--timeout", 60)
        try:
            second.wait_for(lambda r: len(r.events()) >= 6)  # the rest of run-a and run-b so far, replayed
            pub.publish("segment.end", "demo", duration=2.0, **segment(11, "commercial"))  # live again
            second.wait_for(lambda r: any(e["type"] == "segment.end" and e["run_id"] == "run-b" and e["is_ad"]
                                          for e in r.events()))
        finally:
            rc, err = second.stop()
    finally:
        pub.stop()
    printed = first.events() + second.events()
    journaled = list(read_journal(journal))
    assert positions(printed) == positions(journaled)  # every event once, in publication order
    assert printed == journaled
    assert len(set(positions(printed))) == len(printed)
    assert not any(e["type"] == "snapshot" for e in second.lines)  # a resumed subscriber replays instead
    assert rc == 0 and "Traceback" not in err and "lost" not in err, err
    assert json.loads(resume.read_text()) == {"run_id": "run-b", "seq": printed[-1]["seq"]}


def test_a_running_subscriber_repairs_a_publisher_restart_by_replay(tmp_path):
    ep, snap, journal = free_endpoint(), free_endpoint(), tmp_path / "events.jsonl"
    pub = start_publisher("run-a", ep, snap, journal)
    sub = Subscriber("--endpoint", ep, "--snapshot-endpoint", snap, "--timeout", 60)
    try:
        sub.wait_for(lambda r: r.lines and r.lines[0]["type"] == "snapshot")
        pub.publish("stream.up", "demo")
        ad_break(pub, 1)
        sub.wait_for(lambda r: len(r.events()) == 4)
        pub.stop()
        pub = start_publisher("run-b", ep, snap, journal)
        # published before the subscriber's SUB has reconnected: lost on the wire, back by replay
        pub.publish("stream.up", "demo")
        ad_break(pub, 10)
        time.sleep(1.0)
        pub.publish("segment.end", "demo", duration=2.0, **segment(11, "commercial"))
        sub.wait_for(lambda r: len(r.events()) == 9)
        time.sleep(0.3)  # nothing more (no duplicates) arrives
    finally:
        rc, err = sub.stop()
        pub.stop()
    journaled = list(read_journal(journal))
    assert positions(sub.events()) == positions(journaled)
    # the segment fields reach the output unchanged, live (run-a) and by replay (run-b)
    printed = [e for e in sub.events() if e["type"].startswith("segment.")]
    assert [(e["pts"], e["boundary"]) for e in printed] == \
        [(e["pts"], e["boundary"]) for e in journaled if e["type"].startswith("segment.")]
    assert None in [e["pts"] for e in printed] and len({e["boundary"] for e in printed}) >= 3
    assert rc == 0 and "lost" not in err and "Traceback" not in err, err


def test_a_gap_is_filled_by_replay_and_the_replayed_live_events_are_dropped(ctx, xpub):
    pub_sock, endpoint = xpub
    router = ctx.socket(zmq.ROUTER)
    router.bind(ANY)
    snapshot_endpoint = router.getsockopt_string(zmq.LAST_ENDPOINT)
    proc = subscribe("--endpoint", endpoint, "--snapshot-endpoint", snapshot_endpoint, "--count", 7, "--timeout", 15)
    wait_for_subscription(pub_sock)
    assert router.poll(15000), "no snapshot request"
    request = router.recv_multipart()
    assert request[-1] == b"snapshot"
    state = {"demo": {"state": "unknown", "segment_id": None, "since": None, "stream_up": True, "p_ad": None}}
    router.send_multipart([*request[:-1], json.dumps({"schema": 1, "seq": 0, "run_id": RUN, "channels": state}).encode()])
    for seq in (1, 2, 5):  # 3 and 4 lost on the way
        pub_sock.send_multipart(frames("stream.up", seq))
    assert router.poll(15000), "no replay request after the gap"
    request = router.recv_multipart()
    assert json.loads(request[-1]) == {"replay": {"run_id": RUN, "after_seq": 2, "limit": 500}}
    journal = [events.make_event("stream.up", "demo", seq, RUN, time.time()) for seq in (3, 4, 5, 6)]
    router.send_multipart([*request[:-1], json.dumps({
        "schema": 1, "type": "replay", "run_id": RUN, "seq": 6, "request": {}, "found": True, "events": journal,
        "complete": True, "next": None, "oldest": None, "unjournaled": []}).encode()])
    pub_sock.send_multipart(frames("stream.up", 6))  # already replayed: dropped quietly
    pub_sock.send_multipart(frames("stream.up", 7))
    rc, lines, err = finish(proc)
    assert rc == 0, err
    assert [e["seq"] for e in lines[1:]] == [1, 2, 3, 4, 5, 6, 7]
    assert err == ""


def test_resume_from_a_run_rotated_away_warns_and_replays_what_the_journal_still_has(tmp_path):
    ep, snap, journal, resume = free_endpoint(), free_endpoint(), tmp_path / "events.jsonl", tmp_path / "pos.json"
    resume.write_text(json.dumps({"run_id": "long-gone", "seq": 40}))
    pub = start_publisher("run-b", ep, snap, journal)
    try:
        pub.publish("stream.up", "demo")
        ad_break(pub, 1)
        deadline = time.monotonic() + 5
        while pub.last_seq < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        rc, lines, err = finish(subscribe("--endpoint", ep, "--snapshot-endpoint", snap, "--resume", resume,
                                          "--count", 4, "--timeout", 15))
    finally:
        pub.stop()
    assert rc == 0, err
    assert positions(lines) == [("run-b", s) for s in (1, 2, 3, 4)]
    warnings = err.splitlines()
    assert len(warnings) == 1 and "long-gone is no longer in the publisher's journal" in warnings[0], err
    assert "events in between are lost" in warnings[0]


@pytest.mark.parametrize("args, needle", [
    (["--resume", "pos.json"], "--resume needs --snapshot-endpoint"),
])
def test_resume_usage_errors(tmp_path, args, needle):
    rc, lines, err = finish(subscribe("--endpoint", "tcp://127.0.0.1:9", *args, "--timeout", 1))
    assert rc == 2 and lines == [] and needle in err and "Traceback" not in err


def test_a_damaged_resume_file_is_a_usage_error_naming_it(tmp_path):
    resume = tmp_path / "pos.json"
    resume.write_text("{half")
    rc, lines, err = finish(subscribe("--endpoint", "tcp://127.0.0.1:9", "--snapshot-endpoint", "tcp://127.0.0.1:9",
                                      "--resume", resume, "--timeout", 1))
    assert rc == 2 and lines == []
    assert err.strip() == f"ad-detector: error: --resume {resume}: not a position written by ad-detector subscribe; " \
                          "delete it to start from the current state"
