"""The constraints a ``configSchema`` field may add to its type (the JSON Schema keywords plugin
authors know): ``minimum``/``maximum`` for numbers, ``minLength``/``maxLength``, ``pattern`` and
``format`` (``url``, ``email``) for strings. Checked once when the manifest loads (the rules
themselves, and the default against them) and on every config the operator stores.

``pattern`` is the plugin's text, run on the host: it is matched with the ``regex`` module under
a time limit, so that a pattern built to backtrack for ever cannot hold the host's event loop;
and all the matches of one check (a manifest, a config) share one budget, so that many fields
each just under the limit cannot either (100 such fields held it 3.3 s)."""

from __future__ import annotations

import math
import time
from typing import Any
from urllib.parse import urlsplit

import regex

PATTERN_TIMEOUT = 0.05    # seconds one match may take
PATTERNS_TIMEOUT = 0.1    # seconds all the matches of one manifest check or one config may take
MAX_REPEAT = 10_000       # product of a pattern's counted repeats ({n} and {n,m}: their upper bounds)
_COUNTED = regex.compile(r"\{\s*(\d*)\s*(,?)\s*(\d*)\s*\}")
MAX_PATTERN = 1000        # characters
FORMATS = ("url", "email")
# With the "." in the pattern (^[^@\s]+@[^@\s]+\.[^@\s]+$), "a@" + "." * 32768 + "@" took 7 s: the
# domain is matched whole and its "." (not first, not last) looked for in it.
_EMAIL = regex.compile(r"^[^@\s]+@([^@\s]+)\Z")


def rule_problem(field: Any) -> str | None:
    """What is wrong with the rules of ``field`` (a ConfigField) itself, or None."""
    numeric = field.type in ("number", "integer")
    if (field.minimum is not None or field.maximum is not None) and not numeric:
        return f"minimum and maximum apply to numbers, not to a {field.type}"
    if field.type != "string" and (field.min_length is not None or field.max_length is not None
                                   or field.pattern is not None or field.format is not None):
        return f"minLength, maxLength, pattern and format apply to strings, not to a {field.type}"
    if any(b is not None and not math.isfinite(b) for b in (field.minimum, field.maximum)):
        return "minimum and maximum must be finite numbers"
    if field.minimum is not None and field.maximum is not None and field.minimum > field.maximum:
        return f"minimum {field.minimum:g} is above maximum {field.maximum:g}"
    if field.min_length is not None and field.max_length is not None and field.min_length > field.max_length:
        return f"minLength {field.min_length} is above maxLength {field.max_length}"
    if any(n is not None and n < 0 for n in (field.min_length, field.max_length)):
        return "minLength and maxLength must be 0 or more"
    if field.format is not None and field.format not in FORMATS:
        return f"format {field.format!r} is not one of {', '.join(FORMATS)}"
    if field.pattern is not None:
        if len(field.pattern) > MAX_PATTERN:
            return f"pattern is longer than {MAX_PATTERN} characters"
        repeats = [int(high or (MAX_REPEAT + 1 if comma else low or 1)) for low, comma, high in _COUNTED.findall(field.pattern)]
        if math.prod(repeats) > MAX_REPEAT:  # compiling (a{300}){300}... alone would hold the host
            return f"pattern repeats too much ({'×'.join(map(str, repeats))} over {MAX_REPEAT})"
        try:
            regex.compile(field.pattern)
        except regex.error as exc:
            return f"pattern {field.pattern[:80]!r} is not a regular expression ({exc})"
    return None


def patterns_deadline() -> float:
    """The ``time.monotonic()`` past which no more values of one check are matched to a pattern
    (one deadline for a manifest's defaults, one for a config's values)."""
    return time.monotonic() + PATTERNS_TIMEOUT


def value_problem(field: Any, value: Any, deadline: float | None = None) -> str | None:
    """How ``value`` (already of the field's type) breaks the field's rules, naming the rule; or
    None. Never includes the value itself (it may be a secret). A ``pattern`` is matched for at
    most PATTERN_TIMEOUT and never past ``deadline`` (``patterns_deadline``)."""
    if field.type in ("number", "integer"):
        if field.minimum is not None and value < field.minimum:
            return f"is below the minimum {field.minimum:g}"
        if field.maximum is not None and value > field.maximum:
            return f"is above the maximum {field.maximum:g}"
        return None
    if field.type != "string":
        return None
    if field.min_length is not None and len(value) < field.min_length:
        return f"is shorter than minLength {field.min_length}"
    if field.max_length is not None and len(value) > field.max_length:
        return f"is longer than maxLength {field.max_length}"
    if field.pattern is not None:
        left = PATTERN_TIMEOUT if deadline is None else deadline - time.monotonic()
        try:  # (a timeout of 0 times out at once; a negative one would be none)
            found = regex.search(field.pattern, value, timeout=max(0.0, min(PATTERN_TIMEOUT, left))) is not None
        except TimeoutError:
            return f"could not be checked against pattern {field.pattern[:80]!r} in time"
        if not found:
            return f"does not match pattern {field.pattern[:80]!r}"
    if field.format == "url" and not _is_url(value):
        return "is not an http(s) URL (format: url)"
    if field.format == "email" and not ((m := _EMAIL.match(value)) and "." in m[1][1:-1]):
        return "is not an email address (format: email)"
    return None


def shown(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, for an error about a value of any size (its
    type when repr() refuses it: an integer past 4,300 digits, inside a list too)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    try:
        text = repr(value)
    except Exception:
        return type(value).__name__
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def _is_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
        return parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:
        return False


__all__ = ["FORMATS", "patterns_deadline", "rule_problem", "shown", "value_problem"]
