"""The publisher's two ZeroMQ sockets: their options, their binding, and a send that never blocks.

Why they are set up this way:

- The PUB side is an XPUB with `XPUB_NODROP`, sent with `NOBLOCK`. A plain PUB drops silently
  at the high-water mark, so an overflow could never be counted. With `XPUB_NODROP`, a send
  that would overflow a subscriber's queue fails with `zmq.Again` and nothing is sent; the
  caller counts it ("hwm") and `send` resends the same message in lossy mode, so it still
  reaches every subscriber with room. A slow subscriber thus loses messages itself, never
  blocks the pipeline, and never makes a fast subscriber miss anything.
  Limit (libzmq, measured): after that lossy send, libzmq parks the full subscriber's queue
  and skips it silently until the subscriber has read half of it, so "hwm" counts overflow
  EPISODES (one per time a subscriber falls behind), not every message it missed. Counting
  every message would need the strict NODROP mode, where one stuck dashboard makes every
  subscriber miss everything; subscribers see exactly what they missed from the gaps in `seq`.
- The snapshot endpoint is a ROUTER (see `serving`), with no linger: an unsent reply is for a
  client that will ask again.
- Both refuse messages over MAX_REQUEST_BYTES (requests and subscriptions are tiny), and with
  CURVE both are CURVE servers before they bind.

Used only by the thread that owns the sockets.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import zmq

from detector.errors import UsageError
from detector.events.curve import CurveServer

log = logging.getLogger(__name__)

PUB_LINGER_MS = 500          # at stop, queued messages get this long to reach subscribers
MAX_REQUEST_BYTES = 64 * 1024  # snapshot requests and subscriptions are tiny; refuse floods


def bind_sockets(ctx: zmq.Context[Any], bind: str, snapshot_bind: str, send_hwm: int,
                 curve: CurveServer | None) -> tuple[zmq.Socket[Any], zmq.Socket[Any], str, str]:
    """(XPUB, ROUTER, actual PUB endpoint, actual snapshot endpoint); UsageError naming a bad endpoint."""
    pub = ctx.socket(zmq.XPUB)
    rep = ctx.socket(zmq.ROUTER)
    try:
        if curve is not None:
            curve.secure(pub, rep)
        pub.setsockopt(zmq.SNDHWM, send_hwm)
        pub.setsockopt(zmq.LINGER, PUB_LINGER_MS)
        pub.setsockopt(zmq.XPUB_NODROP, 1)
        pub.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
        # a subscriber host that vanished (cable, power) is noticed in minutes, not hours
        pub.setsockopt(zmq.TCP_KEEPALIVE, 1)
        pub.setsockopt(zmq.TCP_KEEPALIVE_IDLE, 60)
        pub.setsockopt(zmq.TCP_KEEPALIVE_INTVL, 10)
        rep.setsockopt(zmq.LINGER, 0)
        rep.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
        for sock, endpoint, what in ((pub, bind, "events PUB"), (rep, snapshot_bind, "snapshot REP")):
            try:
                sock.bind(endpoint)
            except zmq.ZMQError as exc:
                raise UsageError(f"cannot bind {what} socket to {endpoint}: {exc.strerror}") from None
        return pub, rep, last_endpoint(pub, bind), last_endpoint(rep, snapshot_bind)
    except BaseException:
        pub.close(linger=0)
        rep.close(linger=0)
        raise


def send(pub: zmq.Socket[Any], frames: list[bytes], overflowed: Callable[[], None]) -> None:
    """Send without ever blocking. When a subscriber's queue is full, call `overflowed()` (it
    misses this message) and resend in lossy mode for the others. Raises on a send error."""
    try:
        pub.send_multipart(frames, flags=zmq.NOBLOCK)
        return
    except zmq.Again:
        overflowed()
    pub.setsockopt(zmq.XPUB_NODROP, 0)
    try:
        pub.send_multipart(frames, flags=zmq.NOBLOCK)
    finally:
        try:
            pub.setsockopt(zmq.XPUB_NODROP, 1)
        except Exception:
            # left lossy, a full subscriber's messages are dropped uncounted; log it, keep sending
            log.exception("could not switch XPUB_NODROP back on")


def drain_subscriptions(pub: zmq.Socket[Any], batch: int) -> None:
    """Read (and log at debug) up to `batch` subscription messages, so they cannot pile up."""
    for _ in range(batch):
        try:
            msg = pub.recv(zmq.NOBLOCK)
        except zmq.Again:
            return
        if msg[:1] in (b"\x01", b"\x00"):
            log.debug("subscriber %s topic=%r", "subscribed" if msg[:1] == b"\x01" else "unsubscribed",
                      msg[1:80].decode("utf-8", "replace"))


def last_endpoint(sock: zmq.Socket[Any], fallback: str) -> str:
    """The endpoint a socket actually bound (resolves a `*` port)."""
    try:
        value = sock.getsockopt(zmq.LAST_ENDPOINT)
    except zmq.ZMQError:
        return fallback
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return text or fallback
