"""Source URLs as people write them: the scheme, and credentials that must never be shown.

Source URLs may carry credentials (`rtsp://user:pass@cam/...`, SRT `passphrase=`), so
everything the daemon prints or puts into an error about a source goes through `redact`.
Pure string functions: no OpenCV, no network, cheap enough for `check-config`.
"""

from __future__ import annotations

import re

SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# userinfo up to the last '@' before the path; a fallback for passwords with a raw '/' in them
_USERINFO_RE = re.compile(r"^(?P<user>[^:/?#@]*):(?P<password>[^/?#]*)@")
_USERINFO_LOOSE_RE = re.compile(r"^(?P<user>[^:/?#@]*):(?P<password>[^?#]*)@")
_SECRET_PARAM_RE = re.compile(
    r"(?i)([?&;](?:pass|passwd|password|passphrase|pwd|secret|token|access_token|auth|key|apikey|api_key|sig|signature)=)[^&;#]*")
_URL_IN_TEXT_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")


def scheme_of(url: str) -> str | None:
    """The lower-case scheme of `url` (`rtsp`), or None for a path without `scheme://`."""
    m = SCHEME_RE.match(url)
    return m.group(1).lower() if m else None


def redact(url: str) -> str:
    """`url` with its password (and secret-looking query values, e.g. SRT's `passphrase`) as `***`.

    Errs on the side of hiding too much: a password containing a raw `/` or `@` is still
    hidden entirely, at the price of sometimes hiding part of the host in such odd URLs.
    Strings that are not URLs (file paths) come back unchanged.
    """
    m = SCHEME_RE.match(url)
    if not m:
        return url
    head, rest = url[:m.end()], url[m.end():]
    # greedy to the last "@" before any ?/#: a raw "@" or "/" inside a password must not leak its tail
    u = _USERINFO_LOOSE_RE.match(rest) or _USERINFO_RE.match(rest)
    if u:
        rest = f"{u.group('user')}:***@{rest[u.end():]}"
    rest = _SECRET_PARAM_RE.sub(r"\1***", rest)
    return head + rest


def redact_text(text: str) -> str:
    """`text` with every URL in it redacted (for messages that may quote a user's value).

    A URL runs to the next whitespace, so a quote inside a password cannot end it early.
    """
    return _URL_IN_TEXT_RE.sub(lambda m: redact(m.group(0)), text)
