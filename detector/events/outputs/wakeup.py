"""Waking the thread that owns the ZeroMQ sockets from any other thread.

ZeroMQ sockets are single-thread, so other threads cannot send on them; they queue work and
wake the owner. The owner polls one end of a socketpair next to its ZeroMQ sockets (zmq.Poller
takes plain file descriptors), and a waker writes one byte to the other end, so queued work is
picked up within a poll cycle without the owner spinning on a timer.

One pending wakeup is enough: a flag skips the write while the owner has not yet taken the
last one, which keeps a burst of calls from paying one syscall (and one GIL hand-over) each.
"""

from __future__ import annotations

import socket


class Wakeup:
    """A socketpair and a pending flag. `wake` from any thread; `fileno` and `taken` on the owner."""

    def __init__(self) -> None:
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)
        self._pending = False

    def fileno(self) -> int:
        """What the owner registers with its poller (POLLIN)."""
        return self._r.fileno()

    def wake(self, force: bool = False) -> None:
        """Make the owner's next poll return. `force` writes even if a wakeup is pending."""
        if self._pending and not force:
            return
        self._pending = True
        try:
            self._w.send(b"\0")
        except (BlockingIOError, InterruptedError):
            pass  # the buffer is full of wakeups already: the owner will wake
        except OSError:
            pass  # closed after stop: nothing to wake

    def taken(self) -> None:
        """The owner woke: consume the bytes, then re-arm. Call BEFORE looking at the queued work.

        The order matters. Re-arming first and draining second would swallow the byte of a
        waker that ran in between (it saw the flag clear, set it, wrote), leaving the flag set
        with no byte behind it: every later `wake` would skip its write and the owner would
        sleep until its next timeout. Drained first, a waker that runs in between either
        queued its work before we look at the queue (we see it) or finds the flag clear and
        writes a byte that stays for the next poll.
        """
        try:
            while self._r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            pass
        self._pending = False

    def close(self) -> None:
        for sock in (self._r, self._w):
            try:
                sock.close()
            except OSError:
                pass
