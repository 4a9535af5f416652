"""SIGHUP reloads (issue 13 item 10): the new bundle loads on a thread of its own, so the systemd
watchdog keeps being fed however long it takes (a TensorRT build takes minutes), and a bundle
the running captures cannot feed (another analysis rate or input size) is refused, the old
one kept.

The slow load is made from outside the daemon's code, as in test_watchdog.py: a
`sitecustomize.py` first on the subprocess's PYTHONPATH wraps `load_models` so that every
call after the first sleeps.
"""

from __future__ import annotations

import json
import os
import shutil
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
    if _calls[0] > 1:
        time.sleep({seconds!r})
    return _original(cfg)


d.load_models = slow_load_models
'''


@pytest.fixture(scope="module")
def broadcast(demo_set) -> Path:
    return demo_set.broadcast


def start(tmp_path: Path, model: Path, broadcast: Path, slow_seconds: float) -> tuple[Daemon, NotifySocket, Listener, dict]:
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(SLOW_LOAD.format(seconds=slow_seconds))
    notify = NotifySocket(tmp_path / "notify.sock")
    cfg = tmp_path / "config.yaml"
    ep = write_config(cfg, model, [{"name": "tv", "source": str(broadcast), "realtime": True}])
    listener = Listener(ep["events"])
    daemon = Daemon(cfg, env={"PYTHONPATH": os.pathsep.join([str(inject), str(REPO)]), "NOTIFY_SOCKET": notify.path,
                              "WATCHDOG_USEC": "2000000"})
    assert daemon.wait_log("daemon ready", 120), daemon.log()[-3000:]
    return daemon, notify, listener, ep


def test_a_slow_reload_keeps_the_watchdog_fed_and_the_events_flowing(tmp_path, bundle_dir: Path, broadcast: Path):
    daemon, notify, listener, _ = start(tmp_path, bundle_dir, broadcast, slow_seconds=6.0)
    try:
        time.sleep(1.0)
        t_hup = time.monotonic()
        daemon.signal(signal.SIGHUP)
        assert daemon.wait_log("reload accepted", 60), daemon.log()[-3000:]
        t_done = time.monotonic()
        assert t_done - t_hup >= 6.0
        pings = [t for t, m in notify.messages if m == "WATCHDOG=1" and t_hup < t < t_done]
        # WatchdogSec=2: systemd wants a ping at least every second; a load on the main thread gave none
        gaps = [b - a for a, b in zip([t_hup, *pings], [*pings, t_done])]
        assert len(pings) >= 4 and max(gaps) < 2.0, (len(pings), max(gaps))
        heartbeats = [e for t, _, e in listener.events if e["type"] == "heartbeat"]
        assert heartbeats, "no heartbeat during the reload"
        assert daemon.proc.poll() is None
        assert "model swapped in" in daemon.log()
    finally:
        assert daemon.stop() == 0
        listener.close()
        notify.close()


def test_a_bundle_with_another_analysis_rate_is_refused_and_the_old_one_kept(tmp_path, bundle_dir: Path, broadcast: Path):
    from conftest import copy_bundle

    model = copy_bundle(bundle_dir, tmp_path / "model")
    daemon, notify, listener, ep = start(tmp_path, model, broadcast, slow_seconds=0.0)
    try:
        manifest = json.loads((model / "model.json").read_text())
        changed = dict(manifest, analysis_fps=manifest["analysis_fps"] * 2)
        (model / "model.json").write_text(json.dumps(changed))
        daemon.signal(signal.SIGHUP)
        assert daemon.wait_log("reload refused", 60), daemon.log()[-3000:]
        line = next(l for l in daemon.log().splitlines() if "reload refused" in l)
        assert "analysis_fps" in line and "differs from the running" in line, line
        assert "model swapped in" not in daemon.log()
        # still detecting on the old bundle: frames keep being analysed
        before = [e for _, _, e in listener.events if e["type"] == "heartbeat"][-1]
        time.sleep(2.5)
        after = [e for _, _, e in listener.events if e["type"] == "heartbeat"][-1]
        assert after["seq"] > before["seq"] and after["fps_analyzed"] > 0, (before, after)
        assert daemon.proc.poll() is None
    finally:
        assert daemon.stop() == 0
        listener.close()
        notify.close()
        shutil.rmtree(model, ignore_errors=True)
