"""A real capture thread on a real source, its reports kept by a recording observer (shared by
tests/live/test_capture.py and tests/sources/test_protocols.py)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from detector.analysis.audio import AudioBuffer
from detector.live.capture import Capture, CaptureSettings
from detector.live.ring import Ring

SIZE = (299, 299)


class Recorder:
    """A CaptureObserver that keeps what it is told (thread-safe enough for a list append)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple]] = []
        self.lock = threading.Lock()

    def _add(self, name: str, *args) -> None:
        with self.lock:
            self.calls.append((name, args))

    def stream_up(self, generation): self._add("stream_up", generation)
    def stream_down(self, reason): self._add("stream_down", reason)
    def frame_captured(self, wall): self._add("frame_captured")
    def frame_dropped(self, reason): self._add("frame_dropped", reason)
    def reconnecting(self): self._add("reconnecting")
    def fault(self, kind): self._add("fault", kind)
    def decode_errors(self, count): self._add("decode_errors", count)
    def audio_present(self, present): self._add("audio_present", present)
    def pts_wrapped(self): self._add("pts_wrapped")
    def upstream_cue(self, cue, stream_time): self._add("upstream_cue", cue, stream_time)

    def of(self, name: str) -> list[tuple]:
        with self.lock:
            return [a for n, a in self.calls if n == name]


def run_capture(path: Path | str, until, timeout: float = 30.0, retry: bool = False,
                **settings) -> tuple[Recorder, Ring, AudioBuffer]:
    """Capture `path` until `until(recorder)` or the stream goes down (`retry`: only once it was up,
    for a sender that is not listening yet)."""
    rec, ring, audio = Recorder(), Ring(2000, (*SIZE, 3)), AudioBuffer()
    options = {"reconnect_initial": 30.0, "reconnect_max": 30.0, **settings}
    if retry:
        options.update(reconnect_initial=0.3, reconnect_max=0.5)
    cap = Capture("t", CaptureSettings(source=str(path), **options), ring, 5.0, SIZE, rec, audio=audio)
    cap.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not until(rec) and not (rec.of("stream_down") and (rec.of("stream_up") or not retry)):
            time.sleep(0.05)
    finally:
        cap.stop()
        cap.join(5)
    return rec, ring, audio


