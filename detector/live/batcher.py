"""Batches across channels for one backbone call (DeepStream's rule, pure logic).

A batch is sent when it is full or when `max_batch_delay` has passed since its first
(oldest waiting) frame, whichever comes first; frames are taken round-robin, one per
channel in turn starting after the channel that went first last time, so a busy channel
cannot starve a quiet one.
"""

from __future__ import annotations


def batch_due(waiting: int, batch_size: int, oldest_mono: float | None, now: float, max_delay: float) -> bool:
    """Whether to run a batch now."""
    if waiting <= 0 or oldest_mono is None:
        return False
    return waiting >= batch_size or now - oldest_mono >= max_delay


def allocate(available: list[int], batch_size: int, start: int) -> list[int]:
    """How many frames to take from each channel: round-robin from `start`, up to batch_size."""
    n = len(available)
    take = [0] * n
    left = list(available)
    total = 0
    while total < batch_size and any(left):
        for k in range(n):
            i = (start + k) % n
            if left[i] and total < batch_size:
                take[i] += 1
                left[i] -= 1
                total += 1
    return take
