"""The shared rate limiter for repeated log lines (detector.util.ratelog), with a fake clock."""

from __future__ import annotations

import threading

from detector.util.ratelog import RateLimitedLog


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_first_hit_speaks_then_one_summary_per_interval():
    clock = Clock()
    rl = RateLimitedLog(10.0, clock=clock)
    said = []
    for _ in range(100):                 # 100 hits over 25 s
        said.append(rl.hit())
        clock.t += 0.25
    spoken = [n for n in said if n is not None]
    # t=0 (the first, alone), t=10 (39 since then + this one), t=20 (40)
    assert said[0] == 1
    assert spoken == [1, 40, 40]
    assert rl.pending == 19              # t=20.25 .. 24.75 wait for the next line


def test_quiet_after_a_pause_reports_the_next_hit_at_once():
    clock = Clock()
    rl = RateLimitedLog(10.0, clock=clock)
    assert rl.hit() == 1
    assert rl.hit() is None
    clock.t += 60
    assert rl.hit() == 2                 # the held-back one is not lost: it is in the next count


def test_counts_are_exact_across_threads():
    """The CURVE authenticator and monitor threads share one limiter: no hit may be lost."""
    clock = Clock()
    rl = RateLimitedLog(0.0, clock=clock)     # speaks on every hit: every count must be 1
    seen: list[int | None] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(2000):
            n = rl.hit()
            with lock:
                seen.append(n)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 8000 and sum(n or 0 for n in seen) == 8000
