"""`key=value` log values that stay parseable whatever the text (one helper, used by every output module)."""

from __future__ import annotations

import json
from typing import Any


def kv(value: Any) -> str:
    """A log value: bare when it has no spaces, quotes or '=', else JSON-quoted."""
    if isinstance(value, str) and value and not any(c.isspace() or c in "\"=" for c in value):
        return value
    return json.dumps(value, ensure_ascii=False)
