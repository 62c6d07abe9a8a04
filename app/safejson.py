"""JSON from strangers (request bodies, token payloads): a flat object of valid text, or a
ValueError whose message is safe to show.

The standard parser recurses once per `[`/`{` (1,000 of them raise RecursionError) and turns
the escape "\\ud800" into a lone surrogate, a str that cannot be encoded as UTF-8 and so
fails later, deep in the database driver or the mail code. Both are refused here, before
anything else sees the data.
"""

from __future__ import annotations

import json
import re
from typing import Any

# Everything Closeloop accepts is an object of scalars and lists of strings (depth 2).
MAX_DEPTH = 8
_STRUCTURE = re.compile(r'\\.|["\[\]{}]', re.S)  # escapes are consumed whole: \" is no quote
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class BadJSON(ValueError):
    """Not a JSON object of valid text; the message says why and is safe to show."""


def too_deep(text: str, limit: int = MAX_DEPTH) -> bool:
    """Whether `text` opens more than `limit` arrays/objects at once (strings are skipped).

    Visits only quotes, brackets and escapes, and stops at the first level past the limit."""
    if text.count("[") + text.count("{") <= limit:  # the usual body: nothing to walk
        return False
    depth, in_string = 0, False
    for m in _STRUCTURE.finditer(text):
        ch = m.group()
        if ch == '"':
            in_string = not in_string
        elif in_string or len(ch) == 2:
            continue
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _has_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return _SURROGATE.search(value) is not None
    if isinstance(value, list):
        return any(_has_surrogate(v) for v in value)
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    return False


def loads_object(data: bytes | str, what: str = "The body",
                 text_only: bool = True) -> dict[str, Any]:
    """Parse a JSON object; raise BadJSON for anything else (not UTF-8, not JSON, nested
    deeper than MAX_DEPTH, not an object, or, with `text_only`, a string holding a lone
    surrogate)."""
    if isinstance(data, bytes | bytearray):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise BadJSON(f"{what} is not UTF-8 text.") from None
    else:
        text = data
    if too_deep(text):
        raise BadJSON(f"{what} nests arrays or objects more than {MAX_DEPTH} levels deep.")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise BadJSON(f"{what} is not valid JSON.") from None
    if not isinstance(value, dict):
        raise BadJSON(f"{what} must be a JSON object.")
    # Lone surrogates only come from \uD800-\uDFFF escapes (the text itself is valid UTF-8),
    # so bodies without such an escape skip the walk.
    if text_only and _SURROGATE_ESCAPE.search(text):
        for key, item in value.items():
            if _has_surrogate(key) or _has_surrogate(item):
                name = key.encode("utf-8", "backslashreplace").decode("utf-8")
                raise BadJSON(f"{name[:40]} is not valid text: it contains a lone UTF-16 "
                              "surrogate (\\ud800-\\udfff).")
    return value
