"""SIGHUP reloads (issue 13 item 10): the new bundle loads on a thread of its own, so the systemd
watchdog keeps being fed however long it takes (a TensorRT build takes minutes), and a bundle
the running captures cannot feed (another analysis rate or input size) is refused, the old
one kept.

The slow load is made from outside the daemon's code, as in test_watchdog.py: a
`sitecustomize.py` first on the subprocess's PYTHONPATH wraps `load_models` so that a chosen
call sleeps. Both checks share one daemon run (a refused reload, then a slow good one).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from livekit import REPO, Daemon, Listener, write_config
from test_watchdog import NotifySocket

SLOW_LOAD = '''\
import time
import detector.live.daemon as d

_original = d.load_models
_calls = [0]


def slow_load_models(cfg):
    _calls[0] += 1
    if _calls[0] in {slow_calls!r}:
        time.sleep({seconds!r})
    return _original(cfg)


d.load_models = slow_load_models
'''
SLOW_SECONDS = 6.0


@pytest.fixture(scope="module")
def reloads(tmp_path_factory, bundle_dir: Path, demo_set) -> dict:
    """One daemon, two SIGHUPs: first a bundle with another analysis rate (refused, the old one
    kept), then the good bundle again, loaded slowly (call 3 of load_models: start, refused, this)."""
    from conftest import copy_bundle

    work = tmp_path_factory.mktemp("reload")
    model = copy_bundle(bundle_dir, work / "model")
    inject = work / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(SLOW_LOAD.format(seconds=SLOW_SECONDS, slow_calls={3}))
    notify = NotifySocket(work / "notify.sock")
    cfg = work / "config.yaml"
    ep = write_config(cfg, model, [{"name": "tv", "source": str(demo_set.broadcast), "realtime": True}])
    listener = Listener(ep["events"])
    daemon = Daemon(cfg, env={"PYTHONPATH": os.pathsep.join([str(inject), str(REPO)]), "NOTIFY_SOCKET": notify.path,
                              "WATCHDOG_USEC": "2000000"})
    obs: dict = {}
    manifest_path = model / "model.json"
    good = manifest_path.read_text()
    try:
        assert daemon.wait_log("daemon ready", 120), daemon.log()[-3000:]
        # -- a bundle the running captures cannot feed
        manifest = json.loads(good)
        manifest_path.write_text(json.dumps(dict(manifest, analysis_fps=manifest["analysis_fps"] * 2)))
        daemon.signal(signal.SIGHUP)
        obs["refused"] = daemon.wait_log("reload refused", 60)
        t_refused = time.monotonic()
        obs["log_refused"] = daemon.log()
        # still detecting on the old bundle: a heartbeat covering a round after the refusal shows frames analysed

        def beats(after: float = 0.0) -> list[tuple[float, dict]]:
            return [(t, e) for t, _, e in listener.events if e["type"] == "heartbeat" and t > after]

        def moving() -> list[dict]:
            return [e for _, e in beats(t_refused + 1.0) if e["fps_analyzed"] > 0]

        earlier = [e for t, e in beats() if t <= t_refused]
        obs["beat_before"] = earlier[-1] if earlier else None
        listener.wait_for(moving, 10)
        obs["beat_after"] = (moving() or [e for _, e in beats(t_refused)] or [None])[0]
        obs["alive_after_refusal"] = daemon.proc.poll() is None
        # -- the good bundle again, and its load takes SLOW_SECONDS
        manifest_path.write_text(good)
        n_before = len(listener.events)
        obs["t_hup"] = time.monotonic()
        daemon.signal(signal.SIGHUP)
        obs["accepted"] = daemon.wait_log("reload accepted", 60)
        obs["t_done"] = time.monotonic()
        obs["events_during"] = [(t, e) for t, _, e in listener.events[n_before:] if obs["t_hup"] < t < obs["t_done"]]
        # the inference thread takes the new model at its next turn, just after "reload accepted"
        obs["swapped"] = daemon.wait_log("model swapped in", 10)
        obs["alive_after_reload"] = daemon.proc.poll() is None
    finally:
        obs["exit_code"] = daemon.stop()
        listener.close()
        notify.close()
    obs["log"] = daemon.log()
    obs["notify"] = list(notify.messages)
    return obs


def test_a_slow_reload_keeps_the_watchdog_fed_and_the_events_flowing(reloads):
    log = reloads["log"]
    assert reloads["accepted"], log[-3000:]
    t_hup, t_done = reloads["t_hup"], reloads["t_done"]
    assert t_done - t_hup >= SLOW_SECONDS
    pings = [t for t, m in reloads["notify"] if m == "WATCHDOG=1" and t_hup < t < t_done]
    # WatchdogSec=2: systemd wants a ping at least every second; a load on the main thread gave none
    gaps = [b - a for a, b in zip([t_hup, *pings], [*pings, t_done])]
    assert len(pings) >= 4 and max(gaps) < 2.0, (len(pings), max(gaps))
    heartbeats = [e for _, e in reloads["events_during"] if e["type"] == "heartbeat"]
    assert heartbeats, "no heartbeat during the reload"
    assert reloads["alive_after_reload"]
    assert reloads["swapped"] and "model swapped in" in log, log[-3000:]
    assert reloads["exit_code"] == 0, log[-3000:]


def test_a_bundle_with_another_analysis_rate_is_refused_and_the_old_one_kept(reloads):
    log = reloads["log_refused"]
    assert reloads["refused"], log[-3000:]
    line = next(l for l in log.splitlines() if "reload refused" in l)
    assert "analysis_fps" in line and "differs from the running" in line, line
    assert "model swapped in" not in log
    before, after = reloads["beat_before"], reloads["beat_after"]
    assert after is not None and after["fps_analyzed"] > 0, (before, after)
    assert before is None or after["seq"] > before["seq"], (before, after)
    assert reloads["alive_after_refusal"]
