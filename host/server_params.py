"""What a request of the HTTP API brings (host/server.py): its JSON body, decoded as the route's
body type (defined here) with a 400 naming what is wrong, and the query parameters that bound
how much one request reads (a read token may ask for the logs, the balance history and the
alerts, never for all of them at once); and how an answer shows what plugins said."""

from __future__ import annotations

import codecs
import datetime as dt
import json
import math
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web

from .api_args import Timeout
from .errors import MAX_TIMEOUT, HostError
from .info import json_default
from .plugins.settings import redacted

# The most entries one read answers (a larger ``limit`` is cut to it): a plugin's log, the balance
# history (also its default), the balance alerts.
MAX_LOG_ENTRIES, MAX_HISTORY_POINTS, MAX_ALERTS = 1000, 10_000, 1000

JSON = msgspec.json.Encoder(enc_hook=json_default)  # every answer's body

# msgspec says "Input data was truncated" of a whole body whose last string ends in "\ud800"
_LONE_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])")


def error_doc(type_: str, message: str) -> dict[str, Any]:
    """Every error answer's body: its kind named twice, ``type`` (this API's) and ``name`` (seed
    001's envelope, ``{"error": {"name": "PayloadTooLarge", "message": ...}}``, which Isolate clients read)."""
    return {"error": {"name": type_, "type": type_, "message": message}}


def host_error_doc(exc: HostError) -> dict[str, Any]:
    """``error_doc`` of a HostError: its own fields, ``name`` its type's (a PluginError's own is its
    JavaScript error's)."""
    return {"error": {"name": type(exc).__name__, **exc.to_dict()}}


def bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps(error_doc("BadRequest", message)), content_type="application/json")


def _utf8(raw: bytes, charset: str | None) -> bytes:
    """The body as UTF-8, as its client wrote it: a BOM first is dropped (RFC 8259 lets a parser
    ignore it; PowerShell 5 writes one), a ``charset`` other than UTF-8 (or a UTF-16 BOM) decoded.
    A 400 naming the charset when the body cannot be read so."""
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    elif raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        charset = "utf-16"
    if charset is None or charset.lower().replace("_", "-") in ("utf-8", "utf8", "us-ascii", "ascii"):
        return raw
    try:
        return raw.decode(charset).encode("utf-8", "surrogatepass")
    except LookupError:
        raise bad_request(f"the body's charset {charset[:40]!r} is not one this server knows: send UTF-8") from None
    except UnicodeError as exc:  # a decode error, or a codec that fails another way (punycode, idna)
        where = f" (byte {exc.start})" if isinstance(exc, UnicodeDecodeError) else ""
        raise bad_request(f"the body is not {charset[:40]} text as its Content-Type says{where}: "
                          "send UTF-8") from None


# Request bodies, decoded and validated at the edge by msgspec: a wrong type or a value out of
# range is a 400 naming the field, never a handler's isinstance chain.
Millis = Annotated[float, msgspec.Meta(gt=0, le=MAX_TIMEOUT * 1000)]


class CallBody(msgspec.Struct, forbid_unknown_fields=True):
    args: list[Any] = []
    timeout: Timeout | None = None  # > 0: 0 or less kills the worker


class ExecuteBody(msgspec.Struct):  # the Isolate engine's request
    code: str
    input: Any = msgspec.UNSET  # left out: the entry gets `undefined`; null: `null`
    language: Literal["javascript", "typescript"] = "javascript"
    entry: str | None = None
    timeout: Millis | None = None  # milliseconds
    permissions: Any = None
    tools: list[Any] | None = None  # names, or [name, settings] (read by ToolRegistry.read)


class ApproveBody(msgspec.Struct):
    grants: list[str] | None = None  # what the operator was shown; None: whatever waits


class StationBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /api/stations``: a provider plugin and its config, or a pasted usage script."""

    name: str
    plugin: str | None = None
    script: str | None = None
    title: str | None = None
    lowBalance: float | None = None
    config: dict[str, Any] = {}


class PrivateNetworkBody(msgspec.Struct, forbid_unknown_fields=True):
    allow: bool  # said, never assumed: an empty POST must not open the private network


class ImportBody(msgspec.Struct):
    document: dict[str, Any]
    passphrase: str | None = None
    replace: bool = False


def instant(text: str) -> dt.datetime:
    """``2026-11-23T10:00:00Z`` (no zone: UTC) or unix seconds."""
    try:
        seconds = float(text)
    except ValueError:
        t = dt.datetime.fromisoformat(text)
        return t if t.tzinfo else t.replace(tzinfo=dt.UTC)
    try:
        return dt.datetime.fromtimestamp(seconds, dt.UTC)
    except (OverflowError, OSError, ValueError):  # inf, nan, 1e300: no instant
        raise ValueError(f"{text[:40]!r} is no time a date can hold") from None


async def body_of(request: web.Request, type_: Any = Any, *, for_js: str | bool = False) -> Any:
    """The JSON body (``{}`` when there is none) decoded as ``type_``; a 400 naming the field
    that is wrong, or saying why the JSON is not. ``for_js``: the field that goes to JavaScript
    as it is (call arguments, /execute's input), or True for the whole body (an event's payload),
    its integers as ``JSON.parse`` reads them."""
    raw = _utf8(await request.read(), request.charset)  # (HTTPRequestEntityTooLarge passes on)
    try:
        body = msgspec.json.decode(raw or b"{}", type=type_)
        if for_js and _LONG_INTEGER.search(raw):  # (too deep to walk: a RecursionError, said below)
            body = js_numbers(body) if for_js is True else \
                msgspec.structs.replace(body, **{for_js: js_numbers(getattr(body, for_js))})
        return body
    except msgspec.ValidationError as exc:
        text = str(exc)
        where = text.rsplit(" - at `$", 1)
        said = f"body{where[1].rstrip('`')}: {where[0]}" if len(where) == 2 else f"body: {text}"
        if type_ is CallBody and "unknown field" in text:  # {"name": "bob"}: an argument sent by name
            said += ' (a call\'s body is {"args": [...], "timeout": seconds}: the arguments go in "args", in order)'
        raise bad_request(said) from None
    except (msgspec.DecodeError, RecursionError) as exc:
        why = str(exc)
        if why.endswith("truncated") and _LONE_SURROGATE.search(raw):
            why = "a \\u escape of half a UTF-16 surrogate pair with no other half (text holds none)"
        elif why.startswith("Invalid UTF-8"):
            why = f"{why}: send UTF-8, or name the charset in Content-Type"
        raise bad_request(f"invalid JSON: {why}") from None


_LONG_INTEGER = re.compile(rb"\d{16}")  # 2**53 has 16 digits: an integer past it has as many
MAX_SAFE_INTEGER = 2**53 - 1


def js_numbers(value: Any) -> Any:
    """``value`` with each integer past JavaScript's safe range as the double ``JSON.parse``
    makes of it (Infinity past the largest): the wire carries such an int as a 64-bit integer,
    which the worker reads as a ``bigint``, so ``x * 2`` of a snowflake id an Isolate client sent
    threw "Cannot mix BigInt and other types" and JSON.stringify of it failed."""
    if isinstance(value, bool) or not isinstance(value, (int, list, dict)):
        return value
    if isinstance(value, int):
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            return value
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    if isinstance(value, dict):
        return {k: js_numbers(v) for k, v in value.items()}
    return [js_numbers(v) for v in value]


_YES, _NO = frozenset({"1", "true", "yes", "on"}), frozenset({"0", "false", "no", "off", ""})


def flag_param(request: web.Request, name: str) -> bool:
    """A yes/no query parameter (``?refresh=1``): 1/true/yes/on or 0/false/no/off in any case, no
    when not given. Anything else, or values that disagree (``?replace=1&replace=0``), is a 400
    naming it: read as no, ``?replace=True`` merged a config its client meant to replace."""
    said = {v.strip().lower() for v in request.query.getall(name, [])}
    if not said <= _YES | _NO:
        raise bad_request(f"{name} must be 1/true/yes/on or 0/false/no/off, got {sorted(said - _YES - _NO)[0][:40]!r}")
    if said & _YES and said & _NO:
        raise bad_request(f"{name} is given more than once, with values that disagree")
    return bool(said & _YES)


def _one(request: web.Request, name: str) -> str | None:
    """A query parameter given once (or repeated alike); a 400 naming it when its values disagree
    (helper-111: ?limit=1&limit=2 took the first, as yes/no parameters no longer do)."""
    said = request.query.getall(name, [])
    if len({v.strip() for v in said}) > 1:
        raise bad_request(f"{name} is given more than once, with values that disagree")
    return said[0] if said else None


def after_param(request: web.Request) -> int:
    """The ``after`` query parameter of a log read: the last sequence number read (0 when not
    given); a 400 naming it when it is not a whole number of 0 or more (before: -1 named the
    Python method's argument, 5,000 digits were a 500: int() refuses 4,301 or more)."""
    text = _one(request, "after") or "0"
    digits = text.strip()
    if not (digits.isascii() and digits.isdigit() and len(digits) <= 19 and int(digits) < 2**63):
        raise bad_request(f"after must be a whole number of 0 or more (the last sequence number read), got {text[:40]!r}")
    return int(digits)


def shown(data: dict[str, Any], masked: Callable[[str], str], *paths: tuple[str, ...]) -> web.Response:
    """``data`` as JSON, with the secrets of plugins' configs masked where each of ``paths`` leads
    (keys, ``"*"`` for every item of a list): what plugins answered (it may echo their config),
    never the host's own keys and values around it (a secret "result" masked every envelope's
    key, "value" every event reply's, a plugin's id its name): encoded once, and those parts
    walked (``redacted``) only when the text holds a secret or an escape, which could hide one."""
    body = JSON.encode(data)
    text = body.decode()
    if "\\" in text or masked(text) != text:
        shown = msgspec.json.decode(body)  # what is sent, as plain values
        for path in paths:
            _mask_at(shown, path, masked)
        body = JSON.encode(shown)
    return web.Response(body=body, content_type="application/json")


def _mask_at(doc: Any, path: tuple[str, ...], masked: Callable[[str], str]) -> None:
    """``redacted`` on what ``path`` leads to inside ``doc`` (a dict or list), in place."""
    step, rest = path[0], path[1:]
    keys = range(len(doc)) if step == "*" and isinstance(doc, list) else \
        [step] if isinstance(doc, dict) and step in doc else []
    for key in keys:
        if rest:
            if isinstance(doc[key], (dict, list)):
                _mask_at(doc[key], rest, masked)
        else:
            doc[key] = redacted(doc[key], masked)


def limit_param(request: web.Request, default: int, cap: int) -> int:
    """The ``limit`` query parameter: ``default`` when not given, at most ``cap`` (a larger one is
    taken as ``cap``, as "at most" says); a 400 naming it when it is not a whole number of 0 or
    more (the databases read a negative LIMIT as none)."""
    text = _one(request, "limit")
    if text is None:
        return default
    if not (text.isascii() and text.strip().isdigit()):
        raise bad_request(f"limit must be a whole number of 0 or more (at most {cap} are given), got {text[:40]!r}")
    digits = text.strip()
    return cap if len(digits) > 19 else min(int(digits), cap)  # (int() of 4,301 digits or more raises)


__all__ = ["JSON", "MAX_ALERTS", "MAX_HISTORY_POINTS", "MAX_LOG_ENTRIES", "ApproveBody", "CallBody", "ExecuteBody",
           "ImportBody", "PrivateNetworkBody", "StationBody", "after_param", "bad_request", "body_of", "error_doc",
           "flag_param", "instant", "limit_param", "shown"]
