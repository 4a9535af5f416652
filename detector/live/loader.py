"""The model-loader thread: where every model of the daemon is built, and released.

Inference engines keep per-thread state tied to the models a thread built. When the main
thread (the one that receives signals) had built a model and that model was released after
a SIGHUP swap, the next SIGTERM crashed the process with SIGSEGV (exit 139, OpenVINO on this
machine): the kernel could not deliver the signal on the state the released model left. So
one long-lived thread, which blocks process signals, builds every model (at start and on
reload) and releases the ones a swap replaced; the main thread stays free to feed the systemd
watchdog and to answer SIGTERM while a reload takes minutes (a TensorRT engine build).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from detector.util.threads import block_process_signals


class ModelLoader:
    def __init__(self) -> None:
        self.thread: threading.Thread | None = None
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._retired: queue.SimpleQueue[list[Any]] = queue.SimpleQueue()
        self._busy = threading.Event()

    def call(self, job: Callable[[], Any]) -> Any:
        """Run `job` on the loader thread and wait for its result (its exception is re-raised here)."""
        done = threading.Event()
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["result"] = job()
            except BaseException as exc:  # noqa: BLE001 - handed back to the caller
                box["error"] = exc
            finally:
                done.set()
        self._submit(run)
        done.wait()
        if "error" in box:
            raise box["error"]
        return box["result"]

    def background(self, job: Callable[[], None]) -> bool:
        """Start `job` on the loader thread without waiting; False (nothing queued) while one still runs."""
        if self._busy.is_set():
            return False
        self._busy.set()

        def run() -> None:
            try:
                job()
            finally:
                self._busy.clear()
        self._submit(run)
        return True

    def retire(self, objects: list[Any]) -> None:
        """Models (and what holds them) a swap replaced: released on the loader thread, soon."""
        self._retired.put(objects)

    def _submit(self, job: Callable[[], None]) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="model-loader", daemon=True)
            self.thread.start()
        self._jobs.put(job)

    def _run(self) -> None:
        block_process_signals()
        while True:
            try:
                job = self._jobs.get(timeout=0.5)
            except queue.Empty:
                job = None
            if job is not None:
                job()
            while True:
                try:
                    self._retired.get_nowait().clear()
                except queue.Empty:
                    break
