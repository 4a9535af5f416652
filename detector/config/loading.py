"""Reading a config file: YAML to a validated `Config`, and every error mapped back to the
key path and line the user has to change.

- YAML is read with the safe loader only (no tags that build Python objects, no `eval`).
- PyYAML silently keeps the last of two duplicate keys; the line map finds them.
- Values quoted in errors and the resolved dump go through `redact`: source URLs may
  carry passwords.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from detector.config.errors import ConfigError, ErrorEntry, _KeyedError
from detector.config.schema import _SECTIONS, Config, _duplicate_name_errors
from detector.sources import redact, redact_text

def _line_map(root: yaml.Node | None) -> tuple[dict[tuple[str | int, ...], int], list[ErrorEntry]]:
    """Key path -> 1-based YAML line, plus duplicate-key errors (which PyYAML silently resolves).

    A mapping entry maps to its key's line, a list item to the item's first line. Each node is
    visited once, so aliases (even recursive ones or "billion laughs") cannot blow up the walk.
    Iterative, so deeply nested input cannot exhaust the stack.
    """
    lines: dict[tuple[str | int, ...], int] = {}
    errors: list[ErrorEntry] = []
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, tuple[str | int, ...]]] = [(root, ())] if root is not None else []
    while stack:
        node, path = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first_line: dict[str, int] = {}
            pairs = list(node.value)
            for key_node, value_node in pairs:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    # `<<: *defaults`: the merged keys belong to this mapping
                    merged = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                    stack.extend((m, path) for m in merged if isinstance(m, yaml.MappingNode))
                    continue
                if not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = key_node.value
                line = key_node.start_mark.line + 1
                if key in first_line:
                    errors.append((_format_path((*path, key)), line, f"duplicate key (first on line {first_line[key]})"))
                else:
                    first_line[key] = line
                    lines.setdefault((*path, key), line)
                stack.append((value_node, (*path, key)))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines.setdefault((*path, i), item.start_mark.line + 1)
                stack.append((item, (*path, i)))
    return lines, errors


def _format_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """('channels', 1, 'name') -> 'channels[1].name'."""
    out = ""
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _line_for(loc: tuple[Any, ...], lines: dict[tuple[str | int, ...], int]) -> int | None:
    """The line of `loc`, else of its nearest ancestor present in the file (a missing key's
    mapping); None when only the document itself contains it."""
    for n in range(len(loc), 0, -1):
        line = lines.get(tuple(loc[:n]))
        if line is not None:
            return line
    return None


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class whose keys live at `loc` (for 'did you mean' hints)."""
    current: Any = Config
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(part)
        if field is None:
            return None
        current = field.annotation
        while get_origin(current) in (list, Annotated, Union) or type(current).__name__ == "UnionType":
            args = [a for a in get_args(current) if a is not type(None)]
            current = args[0] if args else None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unknown_key_hint(loc: tuple[Any, ...]) -> str:
    key = loc[-1] if loc else None
    model = _model_at(loc[:-1])
    if not isinstance(key, str) or model is None:
        return "unknown key"
    close = difflib.get_close_matches(key, list(model.model_fields), n=1, cutoff=0.6)
    if close:
        return f"unknown key; did you mean {close[0]!r}?"
    for section in _SECTIONS:
        cls = _model_at((section,))
        if cls is not None and cls is not model and key in cls.model_fields:
            return f"unknown key here; it belongs in the {section} section"
    return f"unknown key (allowed: {', '.join(model.model_fields)})"


def _describe(value: Any) -> str:
    """A short, redacted rendering of the offending value."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        # redact the value itself before quoting and shortening it, so neither can split a URL
        text = repr(redact(value) if isinstance(value, str) else value)
        if len(text) > 60:
            text = text[:57] + "..."
        return redact_text(text)
    return f"a {'mapping' if isinstance(value, dict) else 'list' if isinstance(value, list) else type(value).__name__}"


def _message(err: dict[str, Any]) -> tuple[tuple[Any, ...], str]:
    """A pydantic error as (location, one-line message for an operator)."""
    loc = tuple(err.get("loc", ()))
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    cause = ctx.get("error")
    value = err.get("input")
    if isinstance(cause, _KeyedError):
        return loc + cause.key, str(cause)
    if kind in ("value_error", "assertion_error") and cause is not None:
        return loc, str(cause)
    if kind == "extra_forbidden":
        return loc, _unknown_key_hint(loc)
    if kind == "missing":
        return loc, "required key missing"
    if kind == "invalid_key":
        return loc[:-1], f"keys must be text, got {_describe(loc[-1] if loc else value)}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return loc, f"expected a mapping of keys, got {_describe(value)}"
    if kind == "path_type":
        return loc, f"expected a path, got {_describe(value)}"
    if kind == "list_type":
        return loc, f"expected a list, got {_describe(value)}"
    msg = str(err.get("msg", "invalid value"))
    msg = msg[:1].lower() + msg[1:]
    hint = ""
    if kind == "string_type" and isinstance(value, (bool, int, float)):
        hint = "; quote it if you meant text"
    return loc, f"{msg} (got {_describe(value)}{hint})"


def _yaml_error(exc: Exception, text: str) -> ErrorEntry:
    """A YAML syntax or construction error as an entry, without PyYAML's source snippet (it may
    quote a line holding a password)."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        context = exc.context
        if context and exc.context_mark is not None and exc.problem_mark is not None \
                and exc.context_mark.line != exc.problem_mark.line:
            context += f" (line {exc.context_mark.line + 1})"
        parts = [p for p in (context, exc.problem) if p]
        return "", (mark.line + 1 if mark else None), redact_text("invalid YAML: " + ", ".join(parts or ["syntax error"]))
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, max(0, exc.position)) + 1
        return "", line, f"invalid YAML: character #x{exc.character:04x} is not allowed"
    return "", None, redact_text(f"invalid YAML: {exc}")


def parse_config(text: str, origin: str = "<string>", base_dir: Path | None = None, state_dir: Path | None = None) -> Config:
    """Validate config text. Relative paths resolve against `base_dir` (default: the working
    directory), a relative journal against `state_dir` when given (systemd's StateDirectory).

    Raises ConfigError listing every problem found; never any other exception for any input text.
    """
    loader: yaml.SafeLoader | None = None
    try:
        loader = yaml.SafeLoader(text)      # the reader already rejects control characters here
        root = loader.get_single_node()
        # map lines before constructing: construction flattens `<<` merges into the node tree
        lines, errors = _line_map(root)
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        raise ConfigError(origin, [_yaml_error(exc, text)]) from None
    except RecursionError:
        raise ConfigError(origin, [("", None, "invalid YAML: nested too deeply")]) from None
    except Exception as exc:  # noqa: BLE001
        # PyYAML's constructors raise plain Python errors on some malformed values (a timestamp
        # like 2024-13-45: ValueError; an empty `!!int`: IndexError). Still the user's input.
        raise ConfigError(origin, [("", None, redact_text(f"invalid YAML value: {exc or type(exc).__name__}"))]) from None
    finally:
        if loader is not None:
            loader.dispose()

    if data is None:
        raise ConfigError(origin, [("", None, "empty config: expected a mapping with at least `model` and `channels`")])
    if not isinstance(data, dict):
        raise ConfigError(origin, [("", root.start_mark.line + 1 if root is not None else None,
                                    f"the top level must be a mapping of keys, got {_describe(data)}")])

    context = {"base_dir": Path(os.path.abspath(base_dir)) if base_dir is not None else Path.cwd(),
               "state_dir": Path(os.path.abspath(state_dir)) if state_dir is not None else None}
    located: list[tuple[tuple[Any, ...], str]] = []
    config: Config | None = None
    try:
        config = Config.model_validate(data, context=context)
    except ValidationError as exc:
        located.extend(_message(e) for e in exc.errors())
    except RecursionError:
        errors.append(("", None, "nested too deeply"))
    located.extend(_duplicate_name_errors(data.get("channels")))

    seen: set[tuple[str, str]] = {(p, m) for p, _, m in errors}
    for loc, message in located:
        key = (_format_path(loc), redact_text(message))
        if key not in seen:
            seen.add(key)
            errors.append((key[0], _line_for(loc, lines), key[1]))
    if errors or config is None:
        errors.sort(key=lambda e: (e[1] is None, e[1] or 0, e[0]))
        raise ConfigError(origin, errors or [("", None, "invalid config")])
    return config


def load_config(path: Path | str, state_dir: Path | None = None) -> Config:
    """Read and validate a config file; relative paths in it resolve against its directory
    (a relative journal against `state_dir` when the service has one, see `state_dir_from`)."""
    path = Path(path)
    origin = str(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(origin, [("", None, "not found")]) from None
    except IsADirectoryError:
        raise ConfigError(origin, [("", None, "is a directory, not a config file")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(origin, [("", None, f"not UTF-8 text (byte {exc.start})")]) from None
    except OSError as exc:
        raise ConfigError(origin, [("", None, f"cannot read: {exc.strerror or exc}")]) from None
    absolute = Path(os.path.abspath(path))
    config = parse_config(text, origin=origin, base_dir=absolute.parent, state_dir=state_dir)
    config._source_path = absolute
    config._state_dir = state_dir
    return config


def state_dir_from(environ: dict[str, str] | os._Environ[str]) -> Path | None:
    """systemd's `StateDirectory=` as it passes it ($STATE_DIRECTORY, the first of a
    colon-separated list), or None outside such a service. The CLI calls this, once."""
    value = environ.get("STATE_DIRECTORY", "").split(":")[0].strip()
    return Path(value) if value else None


def dump_resolved(cfg: Config) -> str:
    """The config as the daemon will use it, as YAML: defaults filled in, paths absolute,
    passwords in source URLs replaced by `***` (so the output is safe to paste into a ticket)."""
    data = cfg.model_dump(mode="json")
    for channel in data["channels"]:
        channel["source"] = redact(channel["source"])
    origin = f" from {cfg.source_path}" if cfg.source_path is not None else ""
    header = f"# ad-detector: resolved configuration{origin}\n"
    return header + yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)
