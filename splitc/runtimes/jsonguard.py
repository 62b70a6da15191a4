"""JSON from outside (a payload header, plan.json), parsed only after its size and nesting depth are bounded.

``json.loads`` recurses once per bracket: a few kilobytes of ``[[[[...`` raise RecursionError (or worse, in a
thread with a small stack). :func:`loads` measures the depth first, in linear time: strings are blanked with one
regular expression (possessive, so an unterminated string costs one pass, not one per quote), then the running
sum of opening minus closing brackets is taken with numpy.
"""

from __future__ import annotations

import json
import re

import numpy as np

_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"?', re.DOTALL)  # a JSON string, or the rest of an unterminated one
_OPEN = np.zeros(256, np.int8)
_OPEN[[ord("["), ord("{")]] = 1
_OPEN[[ord("]"), ord("}")]] = -1


class JSONLimitError(ValueError):
    """Not JSON, or JSON beyond the bounds the caller set; the message is one line."""


def depth(data: bytes) -> int:
    """The deepest bracket nesting of ``data`` outside strings (an upper bound of what json.loads would recurse)."""
    bare = _STRING.sub(b"", data)
    if not bare:
        return 0
    steps = _OPEN[np.frombuffer(bare, np.uint8)]
    return int(np.cumsum(steps, dtype=np.int64).max(initial=0))


def loads(data: bytes | bytearray | memoryview, *, max_bytes: int, max_depth: int):
    """``json.loads(data)`` for data of at most ``max_bytes`` nested at most ``max_depth`` deep; JSONLimitError otherwise."""
    data = bytes(data)
    if len(data) > max_bytes:
        raise JSONLimitError(f"{len(data)} bytes, more than the {max_bytes} allowed")
    try:  # UTF-8 only: then every byte < 0x80 is the character it looks like, which depth() relies on
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise JSONLimitError(f"not UTF-8 ({e.reason} at byte {e.start})") from None
    found = depth(data)
    if found > max_depth:
        raise JSONLimitError(f"nested {found} deep, more than the {max_depth} allowed")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        raise JSONLimitError(f"not valid JSON ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
