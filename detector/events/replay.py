"""The REPLAY request on the snapshot endpoint: its format, parsing and the reply's shape.

Pure functions, no sockets (like `detector.events.schema`), so the parser can be fuzzed on its own and
the publisher and `ad-detector subscribe` share one definition of the format.

Why a replay exists: a subscriber that lost events (a network gap, its own restart, the
daemon's restart) can get them back from the journal instead of only being warned. It is
served on the snapshot endpoint so that no new port has to be opened, and it is recognised
only by a JSON object with a "replay" key: every other request (the CONTRACT says "any
request") still gets the snapshot, as before.

Request (one frame, UTF-8 JSON)::

    {"replay": {"run_id": "<run_id>", "after_seq": N, "limit": L}}

`after_seq` >= 0 (0 = the whole run); `limit` is optional, 1..MAX_LIMIT, default DEFAULT_LIMIT.

Reply (one frame, UTF-8 JSON)::

    {"schema": 1, "type": "replay", "run_id": <publisher's current run>, "seq": <its last seq>,
     "request": {"run_id", "after_seq", "limit"},
     "found": bool,          # false: run_id is in none of the journal files (rotated away)
     "events": [...],        # journaled events after the position, oldest first, <= limit
     "complete": bool,       # false: more follow; ask again with "next"
     "next": {"run_id", "after_seq"} | null,
     "oldest": {"run_id", "seq"} | null,      # where the record begins (when not found)
     "unjournaled": [[first_seq, last_seq], ...]}  # this run's seqs published while the
                                                    # journal was failing: never replayable

A request that names "replay" but is malformed gets ``{"schema": 1, "type": "error",
"error": "<one line>"}``; the publisher thread never raises on any input.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from detector.events import schema as events
DEFAULT_LIMIT = 500
MAX_LIMIT = 1000          # a reply stays well under a megabyte: events are a few hundred bytes
MAX_RUN_ID_CHARS = 200    # our run_ids are 32 hex digits; anything far longer is not one


class RequestError(ValueError):
    """A replay request that cannot be served; the message is one line for the client."""


@dataclass(frozen=True)
class ReplayRequest:
    run_id: str
    after_seq: int
    limit: int = DEFAULT_LIMIT

    def as_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "after_seq": self.after_seq, "limit": self.limit}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_request(body: Sequence[bytes]) -> ReplayRequest | None:
    """The replay request in a snapshot-endpoint message body, or None for a snapshot request.

    `body` is the frames after the REQ envelope. None (snapshot) for anything that is not a
    single-frame JSON object with a "replay" key, so old clients keep working. Raises
    RequestError for a replay request with bad fields; never anything else.
    """
    if len(body) != 1 or not isinstance(body[0], (bytes, bytearray, memoryview)):
        return None
    raw = bytes(body[0])
    if not raw.lstrip().startswith(b"{"):
        return None  # b"snapshot", b"", garbage: the snapshot, as always
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(obj, dict) or "replay" not in obj:
        return None
    spec = obj["replay"]
    if not isinstance(spec, dict):
        raise RequestError(f"'replay' must be an object {{run_id, after_seq[, limit]}}, got {_kind(spec)}")
    unknown = sorted(str(k)[:40] for k in spec if k not in ("run_id", "after_seq", "limit"))
    if unknown:
        raise RequestError(f"unknown replay field(s) {', '.join(repr(k) for k in unknown)} "
                           "(allowed: run_id, after_seq, limit)")
    run_id = spec.get("run_id")
    if not isinstance(run_id, str) or not run_id or len(run_id) > MAX_RUN_ID_CHARS:
        raise RequestError(f"replay.run_id must be a non-empty string of at most {MAX_RUN_ID_CHARS} characters, "
                           f"got {_kind(run_id)}")
    try:
        run_id.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError("replay.run_id is not valid UTF-8 text") from None
    after = spec.get("after_seq")
    if not _is_int(after) or after < 0:
        raise RequestError(f"replay.after_seq must be an integer >= 0, got {_kind(after)}")
    limit = spec.get("limit", DEFAULT_LIMIT)
    if not _is_int(limit) or not 1 <= limit <= MAX_LIMIT:
        raise RequestError(f"replay.limit must be an integer from 1 to {MAX_LIMIT}, got {_kind(limit)}")
    return ReplayRequest(run_id=run_id, after_seq=int(after), limit=int(limit))


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if _is_int(value):
        return str(value) if abs(value) < 10**18 else "a huge integer"
    text = repr(value)
    return text if len(text) <= 40 else f"a {type(value).__name__}"


def encode_request(request: ReplayRequest) -> bytes:
    return json.dumps({"replay": request.as_json()}, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def error_reply(message: str) -> dict[str, Any]:
    return {"schema": events.SCHEMA, "type": "error", "error": " ".join(message.split())[:300]}


def parse_reply(frames: Sequence[bytes]) -> dict[str, Any]:
    """A replay reply as received by a client; raises ValueError (one line) when it is not one.

    The events in it are checked with `events.decode`'s rules, so a client can trust them as
    much as events from the PUB socket.
    """
    if len(frames) != 1:
        raise ValueError(f"{len(frames)} frames")
    try:
        obj = json.loads(bytes(frames[0]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ValueError(f"not JSON ({' '.join(str(exc).split())[:80]})") from None
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    if obj.get("type") == "error":
        raise ValueError(f"the publisher refused the request: {obj.get('error')}")
    if obj.get("type") != "replay":
        raise ValueError("not a replay reply (an older publisher without replay?)")
    evs = obj.get("events")
    if not isinstance(evs, list) or not isinstance(obj.get("complete"), bool) or not isinstance(obj.get("found"), bool):
        raise ValueError("events, complete or found missing")
    checked = []
    for e in evs:
        if not isinstance(e, dict) or not isinstance(e.get("type"), str) or not isinstance(e.get("channel"), str):
            raise ValueError("an event in the reply is not an event object")
        try:
            checked.append(events.decode(events.encode(e)))
        except (events.EventError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"an event in the reply is invalid: {exc}") from None
    obj["events"] = checked
    return obj
