"""The snapshot endpoint: late-joiner snapshots and REPLAY requests, answered on a ROUTER.

Why a ROUTER answering like a REP (a REQ client cannot tell the difference): a REP socket has
a strict recv/send state machine that a garbled or abandoned request can wedge; a ROUTER
answers anything, including a malformed request, and a reply to a client that went away is
simply dropped.

A snapshot is a copy of the channel state: answered at once on the socket-owning thread. A
REPLAY (`detector.events.replay`) reads journal files; its reply is built here from the
request, the journal and the publisher's state.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from detector.events import replay
from detector.events import schema as events
from detector.events.journal import replay as journal_replay
from detector.events.outputs.logfmt import kv

log = logging.getLogger(__name__)


def split_envelope(request: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """ROUTER frames -> (envelope to echo, body): [identity, (REQ envelope ..., b""), body...]."""
    envelope = request[:1]
    for i in range(1, len(request)):
        if request[i] == b"":
            envelope = request[: i + 1]
            break
    return envelope, request[len(envelope):]


def snapshot_body(run_id: str, seq: int, channels: dict[str, Any]) -> dict[str, Any]:
    return {"schema": events.SCHEMA, "seq": seq, "run_id": run_id, "channels": channels}


def replay_body(request: replay.ReplayRequest, journal_path: Path | None, run_id: str, seq: int,
                unjournaled: list[list[int]]) -> dict[str, Any]:
    """The reply to one replay request (reads the journal files: may take a while)."""
    if journal_path is None:
        return replay.error_reply("this publisher keeps no journal (events.journal is off): nothing to replay")
    found = journal_replay(journal_path, request.run_id, request.after_seq, request.limit)
    if not found.found and request.run_id == run_id:
        found.found, found.oldest = True, None  # our own run, nothing journaled yet: known, just empty
    last = found.events[-1] if found.events else None
    nxt = {"run_id": last["run_id"], "after_seq": last["seq"]} if last is not None and not found.complete else None
    log.info("replay served run_id=%s after_seq=%d found=%s events=%d complete=%s", kv(request.run_id),
             request.after_seq, "yes" if found.found else "no", len(found.events), "yes" if found.complete else "no")
    return {"schema": events.SCHEMA, "type": "replay", "run_id": run_id, "seq": seq,
            "request": request.as_json(), "found": found.found, "events": found.events,
            "complete": found.complete, "next": nxt, "oldest": found.oldest, "unjournaled": unjournaled}


def parse(body: list[bytes]) -> replay.ReplayRequest | dict[str, Any] | None:
    """A replay request, an error reply for a malformed one, or None for a snapshot request."""
    try:
        return replay.parse_request(body)
    except replay.RequestError as exc:
        log.info("replay request refused error=%s", kv(str(exc)))
        return replay.error_reply(str(exc))


def encode_reply(body: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON; text that is not UTF-8 (a lone surrogate from a damaged journal line)
    falls back to \\u escapes, which are still valid JSON. Raises ValueError for NaN/Infinity."""
    try:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(body, ensure_ascii=True, separators=(",", ":"), allow_nan=False).encode("ascii")
