"""The event schema on the wire (CONTRACT.md "Events"): building, encoding, decoding.

Pure functions, no sockets, so the schema is tested on its own and shared by the publisher
thread, the `subscribe` command and anyone writing a subscriber in Python.

Why it is strict in both directions:

- `make_event` checks every field the contract names, so a bug upstream (a numpy float, a
  naive datetime, a missing `segment_id`) fails where it happens, not in a subscriber's
  parser in another team's process.
- `decode` is fed by the network. Whatever bytes arrive, it returns a valid event or raises
  `EventError` with a one-line message; nothing else escapes, so a subscriber can log and
  carry on instead of dying on a traceback.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from detector.analysis.boundary import BOUNDARY_KINDS
from detector.analysis.clock import PTS_MODULUS as _PTS_MODULUS

SCHEMA = 1
#: Every event type of CONTRACT.md "Events", in one place for publishers, subscribers and tests.
TYPES = ("segment.start", "segment.end", "heartbeat", "stream.up", "stream.down", "cue.upstream")
SEGMENT_TYPES = ("segment.start", "segment.end")
#: What placed a segment boundary (`boundary`): the channel's first frame, a scene cut, a black
#: frame, a silence, the model's own estimate when no cue was near, or (`segment.end` only) the
#: stream or the daemon stopping. Defined where the boundaries are placed.
BOUNDARIES = BOUNDARY_KINDS
#: MPEG-TS presentation timestamps count 90 kHz modulo 2^33 (defined with the clock arithmetic).
PTS_MODULUS = _PTS_MODULUS

#: Keys every payload carries; `make_event` sets them, extra fields may not override them.
ENVELOPE = ("schema", "type", "channel", "seq", "run_id", "emitted")
SEGMENT_FIELDS = ("label", "is_ad", "confidence", "segment_id", "time", "stream_time", "pts", "boundary")
HEARTBEAT_FIELDS = ("state", "p_ad", "stream_up", "fps_in", "fps_analyzed")
CUE_FIELDS = ("pts", "packet_pts", "command", "out_of_network", "event_id", "base64")
#: The `scte35` object of ad segment events (CONTRACT.md); a cancel adds `cancel: true`.
SCTE35_FIELDS = ("command", "event_id", "out_of_network", "pts", "base64", "hex")
REQUIRED: dict[str, tuple[str, ...]] = {
    "segment.start": SEGMENT_FIELDS,
    "segment.end": SEGMENT_FIELDS + ("duration",),
    "heartbeat": HEARTBEAT_FIELDS,
    "stream.up": (),
    "stream.down": (),
    "cue.upstream": CUE_FIELDS,
}
#: Segment fields added to schema 1 later: `make_event` requires them, `decode` takes events
#: without them (journals written before, replayed after an upgrade) and checks them when present.
ADDED_SEGMENT_FIELDS = ("pts", "boundary")

# Channel names follow the config rule; "/" would make the topic frame ambiguous.
_CHANNEL_RE = re.compile(r"[A-Za-z0-9_-]+\Z")
# What we accept from the wire: any RFC 3339 date-time. What we write is always
# millisecond precision with "Z" (see `rfc3339`).
_RFC3339_RE = re.compile(r"(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})\Z")
_REPR_MAX = 60
_BASE64_RE = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{4})\Z")
# one encoder for every payload: json.dumps() with options builds a new one per call
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


class EventError(ValueError):
    """A message from the wire that is not a valid schema-1 event (one-line message)."""


def new_run_id() -> str:
    """A fresh `run_id` for one publisher process (random, so restarts are recognisable)."""
    return uuid.uuid4().hex


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _REPR_MAX else text[: _REPR_MAX - 3] + "..."


def rfc3339(ts: float | datetime) -> str:
    """UTC timestamp as RFC 3339 with millisecond precision: ``2026-11-28T18:00:00.123Z``.

    `ts` is Unix time in seconds or a timezone-aware datetime. It is truncated to the
    millisecond, not rounded, so the text never sorts after the instant it describes. A naive datetime
    is refused: it could be local time or UTC, and guessing wrong shifts every event by hours.
    """
    if isinstance(ts, datetime):
        if ts.tzinfo is None or ts.utcoffset() is None:
            raise ValueError(f"naive datetime {ts.isoformat()} has no timezone; pass an aware datetime or Unix seconds")
        dt = ts.astimezone(timezone.utc)
        return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{dt.microsecond // 1000:03d}Z"
    try:
        seconds = float(ts) if _is_number(ts) else math.nan
    except (OverflowError, ValueError, TypeError):
        seconds = math.nan
    if not math.isfinite(seconds):
        raise ValueError(f"timestamp must be finite Unix seconds or a datetime, got {_short(ts)}")
    # floor to whole milliseconds first: datetime.fromtimestamp() rounds to microseconds,
    # which would carry 1.9999995 up to 2.000; gmtime + formatting is also 5x faster
    whole, millis = divmod(math.floor(seconds * 1000), 1000)
    try:
        t = time.gmtime(whole)
    except (OverflowError, OSError, ValueError) as exc:
        raise ValueError(f"timestamp {_short(ts)} is out of range: {exc}") from None
    if not 1 <= t.tm_year <= 9999:
        raise ValueError(f"timestamp {_short(ts)} is out of range")
    return (f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
            f".{millis:03d}Z")


def _is_number(value: Any) -> bool:
    """Real numbers, including numpy scalars (they implement __float__), but not bool."""
    if isinstance(value, bool) or isinstance(value, (str, bytes)):
        return False
    if isinstance(value, (int, float)):
        return True
    # numpy floating / integer scalars; avoid importing numpy here
    return hasattr(value, "dtype") and getattr(value.dtype, "kind", "") in ("f", "i", "u") and hasattr(value, "__float__")


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool) or (hasattr(value, "dtype") and getattr(value.dtype, "kind", "") == "b")


def _valid_rfc3339(text: Any) -> bool:
    if not isinstance(text, str):
        return False
    m = _RFC3339_RE.match(text)
    if not m:
        return False
    try:
        datetime.strptime(f"{m.group(1)}T{m.group(2)}", "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return False
    return True


# -- field checks shared by make_event (after normalising) and decode -----------------------

def _need_number(kind: str, name: str, value: Any, lo: float | None = None, hi: float | None = None) -> float:
    try:
        number = float(value) if _is_number(value) else math.nan
    except (OverflowError, ValueError, TypeError):  # e.g. a 400-digit integer from the wire
        number = math.nan
    if not math.isfinite(number):
        raise ValueError(f"{kind}: field '{name}' must be a finite number, got {_short(value)}")
    if (lo is not None and number < lo) or (hi is not None and number > hi):
        bounds = f"[{lo:g}, {hi:g}]" if hi is not None else f">= {lo:g}"
        raise ValueError(f"{kind}: field '{name}' must be {bounds}, got {_short(value)}")
    return number


def _need_bool(kind: str, name: str, value: Any) -> bool:
    if not _is_bool(value):
        raise ValueError(f"{kind}: field '{name}' must be true or false, got {_short(value)}")
    return bool(value)


def _utf8_text(value: Any) -> bool:
    if not isinstance(value, str) or not value:
        return False
    try:
        value.encode("utf-8")  # lone surrogates would fail later, in encode(), on another thread
    except UnicodeEncodeError:
        return False
    return True


def _need_text(kind: str, name: str, value: Any) -> str:
    if not _utf8_text(value):
        raise ValueError(f"{kind}: field '{name}' must be a non-empty string, got {_short(value)}")
    return str(value)


def _need_time(kind: str, name: str, value: Any) -> str:
    if not _valid_rfc3339(value):
        raise ValueError(f"{kind}: field '{name}' must be an RFC 3339 UTC time, got {_short(value)}")
    return str(value)


def _plain_int(value: Any) -> int | None:
    """`value` as a Python int when it is an integer (numpy included, bool not), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return int(value)
    if hasattr(value, "dtype") and getattr(value.dtype, "kind", "") in ("i", "u"):
        return int(value)
    return None


def _need_pts(kind: str, name: str, value: Any) -> int | None:
    """A 90 kHz PTS (an integer modulo 2^33) or None where the source has none."""
    if value is None:
        return None
    number = _plain_int(value)
    if number is None or not 0 <= number < PTS_MODULUS:
        raise ValueError(f"{kind}: field '{name}' must be an integer from 0 to 2^33-1 (90 kHz) or null, "
                         f"got {_short(value)}")
    return number


def _need_boundary(kind: str, value: Any) -> str:
    if not isinstance(value, str) or value not in BOUNDARIES:
        raise ValueError(f"{kind}: field 'boundary' must be one of {', '.join(BOUNDARIES)}, got {_short(value)}")
    return value


def _need_optional_bool(kind: str, name: str, value: Any) -> bool | None:
    return None if value is None else _need_bool(kind, name, value)


def _need_event_id(kind: str, value: Any) -> int | None:
    """A SCTE-35 splice_event_id (32 bits) or None."""
    if value is None:
        return None
    number = _plain_int(value)
    if number is None or not 0 <= number < 2 ** 32:
        raise ValueError(f"{kind}: field 'event_id' must be an integer from 0 to 2^32-1 or null, got {_short(value)}")
    return number


def _need_base64(kind: str, value: Any) -> str:
    if not isinstance(value, str) or not _BASE64_RE.match(value):
        raise ValueError(f"{kind}: field 'base64' must be non-empty base64 text, got {_short(value)}")
    return value


def _need_scte35(kind: str, value: Any) -> dict[str, Any]:
    """An ad segment's cue (CONTRACT.md): the decoded fields and the section, base64 and hex."""
    if not isinstance(value, dict):
        raise ValueError(f"{kind}: field 'scte35' must be an object, got {_short(value)}")
    missing = [k for k in SCTE35_FIELDS if k not in value]
    if missing:
        raise ValueError(f"{kind}: field 'scte35' lacks {', '.join(missing)}")
    where = f"{kind} scte35"
    out = dict(value)
    out["command"] = _need_text(where, "command", value["command"])
    out["event_id"] = _need_event_id(where, value["event_id"])
    out["out_of_network"] = _need_optional_bool(where, "out_of_network", value["out_of_network"])
    out["pts"] = _need_pts(where, "pts", value["pts"])
    out["base64"] = _need_base64(where, value["base64"])
    hexed = value["hex"]
    if not isinstance(hexed, str) or not re.fullmatch(r"0x(?:[0-9a-f]{2})+", hexed):
        raise ValueError(f"{where}: field 'hex' must be 0x followed by the section's bytes in hex, got {_short(hexed)}")
    if "cancel" in value:
        out["cancel"] = _need_bool(where, "cancel", value["cancel"])
    return out


def _need_segment_id(kind: str, value: Any) -> str | int:
    if _utf8_text(value):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    if hasattr(value, "dtype") and getattr(value.dtype, "kind", "") in ("i", "u"):  # numpy integer
        return int(value)
    raise ValueError(f"{kind}: field 'segment_id' must be a non-empty string or an integer, got {_short(value)}")


def _check_fields(kind: str, fields: dict[str, Any], received: bool = False) -> dict[str, Any]:
    """Validate the type-specific fields; return them normalised (plain Python types).

    Raises ValueError naming the first bad field. Extra fields are kept as they are.
    `received` (decode): ADDED_SEGMENT_FIELDS may be missing, and are checked when present.
    """
    optional = ADDED_SEGMENT_FIELDS if received and kind in SEGMENT_TYPES else ()
    missing = [name for name in REQUIRED[kind] if name not in fields and name not in optional]
    if missing:
        raise ValueError(f"{kind}: missing field(s) {', '.join(missing)}")
    out = dict(fields)
    if kind in SEGMENT_TYPES:
        out["label"] = _need_text(kind, "label", fields["label"])
        out["is_ad"] = _need_bool(kind, "is_ad", fields["is_ad"])
        out["confidence"] = _need_number(kind, "confidence", fields["confidence"], 0.0, 1.0)
        out["segment_id"] = _need_segment_id(kind, fields["segment_id"])
        out["time"] = _need_time(kind, "time", fields["time"])
        out["stream_time"] = _need_number(kind, "stream_time", fields["stream_time"])
        if "pts" in fields:
            out["pts"] = _need_pts(kind, "pts", fields["pts"])
        if "boundary" in fields:
            out["boundary"] = _need_boundary(kind, fields["boundary"])
        if kind == "segment.end":
            out["duration"] = _need_number(kind, "duration", fields["duration"], 0.0)
        if "scte35" in fields:
            out["scte35"] = _need_scte35(kind, fields["scte35"])
        if "withdrawn" in fields:
            out["withdrawn"] = _need_bool(kind, "withdrawn", fields["withdrawn"])
        if "flags" in fields:         # what the break rules noticed (long_break, long_spot)
            flags = fields["flags"]
            if not isinstance(flags, list) or not all(_utf8_text(f) for f in flags):
                raise ValueError(f"{kind}: field 'flags' must be a list of strings, got {_short(flags)}")
            out["flags"] = [str(f) for f in flags]
        if "integrated_lufs" in fields and fields["integrated_lufs"] is not None:   # null: nothing measured
            out["integrated_lufs"] = _need_number(kind, "integrated_lufs", fields["integrated_lufs"], -200.0, 20.0)
    elif kind == "heartbeat":
        out["state"] = _need_text(kind, "state", fields["state"])
        p_ad = fields["p_ad"]
        out["p_ad"] = None if p_ad is None else _need_number(kind, "p_ad", p_ad, 0.0, 1.0)
        out["stream_up"] = _need_bool(kind, "stream_up", fields["stream_up"])
        out["fps_in"] = _need_number(kind, "fps_in", fields["fps_in"], 0.0)
        out["fps_analyzed"] = _need_number(kind, "fps_analyzed", fields["fps_analyzed"], 0.0)
    elif kind == "cue.upstream":
        out["pts"] = _need_pts(kind, "pts", fields["pts"])
        out["packet_pts"] = _need_pts(kind, "packet_pts", fields["packet_pts"])
        out["command"] = _need_text(kind, "command", fields["command"])
        out["out_of_network"] = _need_optional_bool(kind, "out_of_network", fields["out_of_network"])
        out["event_id"] = _need_event_id(kind, fields["event_id"])
        out["base64"] = _need_base64(kind, fields["base64"])
    return out


def _check_envelope(type: Any, channel: Any, seq: Any, run_id: Any) -> None:
    if type not in TYPES:
        raise ValueError(f"unknown event type {_short(type)} (expected one of {', '.join(TYPES)})")
    if not isinstance(channel, str) or not _CHANNEL_RE.match(channel):
        raise ValueError(f"channel must match [A-Za-z0-9_-]+, got {_short(channel)}")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise ValueError(f"seq must be an integer >= 1, got {_short(seq)}")
    if not _utf8_text(run_id):
        raise ValueError(f"run_id must be a non-empty string, got {_short(run_id)}")


def _dumps(event: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON; NaN/Infinity are refused because they are not JSON."""
    return _ENCODER.encode(event).encode("utf-8")


def make_event(type: str, channel: str, seq: int, run_id: str, emitted: float | datetime, **fields: Any) -> dict[str, Any]:
    """Build a validated schema-1 payload.

    `time` (segment events) may be given as Unix seconds, an aware datetime or an RFC 3339
    string; numbers may be numpy scalars. Everything comes out as plain JSON types, in a
    stable key order (envelope first), so the journal and the wire are easy to diff.
    Raises ValueError on anything the contract does not allow.
    """
    _check_envelope(type, channel, seq, run_id)
    clash = [name for name in fields if name in ENVELOPE]
    if clash:
        raise ValueError(f"{type}: field(s) {', '.join(clash)} are set by the publisher, not the caller")
    if "time" in fields and not isinstance(fields["time"], str):
        fields["time"] = rfc3339(fields["time"])
    checked = _check_fields(type, fields)
    event: dict[str, Any] = {"schema": SCHEMA, "type": type, "channel": channel, "seq": seq, "run_id": run_id,
                             "emitted": rfc3339(emitted)}
    event.update(checked)
    extras = {k: v for k, v in checked.items() if k not in REQUIRED[type]}
    if extras:  # the contract's fields were checked above; only extras can be non-JSON
        try:
            _dumps(extras)
        except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
            raise ValueError(f"{type}: fields are not JSON-serialisable: {exc}") from None
    return event


def topic(type: str, channel: str) -> str:
    """The topic frame text: ``<type>/<channel>`` (subscribers filter on its prefix)."""
    return f"{type}/{channel}"


def encode(event: Mapping[str, Any]) -> list[bytes]:
    """Two frames: the topic (UTF-8) and the payload as compact UTF-8 JSON."""
    return [topic(event["type"], event["channel"]).encode("utf-8"), _dumps(event)]


def _frame_bytes(frame: Any, which: str) -> bytes:
    if isinstance(frame, bytes):
        return frame
    if isinstance(frame, (bytearray, memoryview)):
        return bytes(frame)
    data = getattr(frame, "bytes", None)  # zmq.Frame
    if isinstance(data, bytes):
        return data
    raise EventError(f"{which} frame is {type(frame).__name__}, not bytes")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def decode(frames: Sequence[Any]) -> dict[str, Any]:
    """Validate a received message and return its payload; raise EventError otherwise.

    Checks: exactly two frames, both UTF-8, the payload a JSON object with schema 1, a known
    type, a valid channel, a topic equal to ``<type>/<channel>``, seq an integer >= 1, run_id
    a non-empty string, emitted an RFC 3339 time and the type's fields (segment events written
    before `pts` and `boundary` existed are accepted without them). Extra fields are allowed
    (newer publishers may add some without a schema bump).
    """
    if not isinstance(frames, (list, tuple)):
        raise EventError(f"expected a list of frames, got {type(frames).__name__}")
    if len(frames) != 2:
        raise EventError(f"expected 2 frames (topic, payload), got {len(frames)}")
    topic_raw = _frame_bytes(frames[0], "topic")
    payload_raw = _frame_bytes(frames[1], "payload")
    try:
        topic_text = topic_raw.decode("utf-8")
    except UnicodeDecodeError:
        raise EventError(f"topic frame is not UTF-8: {_short(topic_raw)}") from None
    try:
        text = payload_raw.decode("utf-8")
    except UnicodeDecodeError:
        raise EventError(f"payload frame is not UTF-8 (topic {_short(topic_text)})") from None
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise EventError(f"payload is nested too deeply (topic {_short(topic_text)})") from None
    except ValueError as exc:  # JSONDecodeError, huge integers, NaN/Infinity
        reason = " ".join(str(exc).split())
        raise EventError(f"payload is not valid JSON ({reason[:120]}) (topic {_short(topic_text)})") from None
    if not isinstance(obj, dict):
        raise EventError(f"payload is a JSON {type(obj).__name__}, not an object (topic {_short(topic_text)})")
    schema = obj.get("schema")
    if type(schema) is not int or schema != SCHEMA:
        raise EventError(f"unsupported schema {_short(schema)} (expected {SCHEMA}) (topic {_short(topic_text)})")
    kind: Any = obj.get("type")
    try:
        _check_envelope(kind, obj.get("channel"), obj.get("seq"), obj.get("run_id"))
        if topic_text != topic(kind, obj["channel"]):
            raise ValueError(f"topic {_short(topic_text)} does not match type/channel {_short(topic(kind, obj['channel']))}")
        if not _valid_rfc3339(obj.get("emitted")):
            raise ValueError(f"emitted must be an RFC 3339 time, got {_short(obj.get('emitted'))}")
        _check_fields(kind, {k: v for k, v in obj.items() if k not in ENVELOPE}, received=True)
    except ValueError as exc:
        raise EventError(" ".join(str(exc).split())) from None
    return obj
