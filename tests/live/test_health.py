"""/healthz as a liveness probe reads it: 503 only when the daemon itself cannot work."""

from __future__ import annotations

from detector.events.outputs.base import OutputHealth
from detector.live.health import ChannelHealth, HealthInputs, assess


def inputs(**over) -> HealthInputs:
    base = dict(run_id="r", now=100.0, inference_alive=True, frames_waiting=0, last_inference=99.0, watched=["inference"],
                dead={}, stopping=False, failure=None,
                channels={"a": ChannelHealth(up=True), "b": ChannelHealth(up=True)}, outputs={"zeromq": OutputHealth()})
    base.update(over)
    return HealthInputs(**base)


def test_all_up_is_ok():
    ok, body = assess(inputs())
    assert ok and body["status"] == "ok" and body["channels"] == {"a": {"state": "up"}, "b": {"state": "up"}}
    assert "degraded" not in body


def test_one_channel_down_degrades_but_keeps_200_and_says_which():
    ok, body = assess(inputs(channels={"a": ChannelHealth(up=True), "b": ChannelHealth(up=False, faults=("unreachable",))}))
    assert ok is True and body["status"] == "degraded"
    assert body["channels"]["b"] == {"state": "down", "faults": ["unreachable"]}
    assert body["degraded"] == ["1 of 2 channel(s) down: b (being retried)"]


def test_every_channel_down_is_still_not_a_reason_to_restart():
    ok, body = assess(inputs(channels={"a": ChannelHealth(up=False), "b": ChannelHealth(up=True, stalled=True)}))
    assert ok is True and body["status"] == "degraded"
    assert body["channels"] == {"a": {"state": "down"}, "b": {"state": "down"}}


def test_a_dead_thread_a_stuck_inference_a_failing_output_or_a_failure_is_503():
    assert assess(inputs(dead={"inference": "ValueError('x')"}))[0] is False
    assert assess(inputs(frames_waiting=3, last_inference=80.0))[1]["inference"] == "stuck"
    assert assess(inputs(frames_waiting=3, last_inference=80.0))[0] is False
    ok, body = assess(inputs(outputs={"zeromq": OutputHealth(ok=False, degraded=["publisher stuck"])}))
    assert ok is False and body["status"] == "unhealthy" and body["outputs"] == {"zeromq": "failing"}
    ok, body = assess(inputs(failure="an inference call has not returned for 40 s"))
    assert ok is False and body["failure"].startswith("an inference call")


def test_an_output_degradation_is_reported_with_its_details():
    out = OutputHealth(ok=True, degraded=["journal /x: disk full"], details={"journal": {"ok": False}})
    ok, body = assess(inputs(outputs={"zeromq": out}))
    assert ok and body["status"] == "degraded" and body["journal"] == {"ok": False} and body["degraded"] == ["journal /x: disk full"]


def test_idle_inference_is_not_stuck():
    ok, body = assess(inputs(frames_waiting=0, last_inference=0.0))
    assert ok and body["inference"] == "ok"


def test_threads_are_not_judged_while_stopping():
    ok, body = assess(inputs(dead={"inference": "exited"}, stopping=True))
    assert ok and "threads" not in body
