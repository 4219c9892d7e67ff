"""Request limits that are not a plain setting: how deeply JSON bodies may nest."""
from __future__ import annotations

from typing import Any

from flask.json.provider import DefaultJSONProvider

# Our schemas nest a few levels at most; anything deeper is an attack on the parser
# (or on marshmallow's recursion), refused before any schema sees it.
MAX_JSON_DEPTH = 32


def json_depth(value: Any) -> int:
    """Nesting depth of a decoded JSON value, walked without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_JSON_DEPTH:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


class DepthLimitedJSONProvider(DefaultJSONProvider):
    """Flask's JSON, refusing bodies nested deeper than MAX_JSON_DEPTH. A ValueError
    here is what Flask and webargs answer as a malformed body (400). Keys go out in the
    order the schemas dump them: sorting them costs time on every response and tells
    a client nothing."""

    sort_keys = False

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            value = super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
        if json_depth(value) > MAX_JSON_DEPTH:
            raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        return value
