"""The facade's argument check: each public method of ``PluginHost`` has its arguments checked
against its own type hints before anything runs, so that a caller's mistake (a plugin id that is
not a string, a NaN timeout, a limit beyond 64 bits, a config dict with keys that are not strings)
is an ``InvalidArguments`` naming the method and the argument: never an AttributeError from deep
inside, and never a frame the worker cannot read (a function name that was not a string crashed
the worker, and five such calls put the plugin in ``error``).

The hints are the contract: a constrained one (``Timeout``, ``Limit``) is checked with its range.
Arguments hinted ``Any`` (a call's arguments, a payload) are the codec's to judge, and a callable
is not checked. A plain value costs a ``type(v) in set`` per argument; one with a range (a timeout)
a msgspec convert into a Struct of one field, whose checker msgspec caches (0.4 µs; the hint
itself would be compiled again each time, 3 µs). Measured on ``call``: about 1 µs of its ~50."""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable
from threading import get_ident
from typing import Annotated, Any

import msgspec
from anyio.lowlevel import checkpoint
from msgspec import Meta

from .config_types import Port
from .errors import MAX_TIMEOUT, HostError, InvalidArguments, check_timeout
from .run_once import caller_check

# A caller's deadline in seconds (InvalidConfig past its range, as ``check_timeout`` says).
Timeout = Annotated[float, Meta(gt=0, le=MAX_TIMEOUT)]
Wait = Annotated[float, Meta(ge=0, le=MAX_TIMEOUT)]  # how long to wait; 0: look now
Limit = Annotated[int, Meta(ge=0, le=2**63 - 1)]      # a count a query stops at, or an offset
Priority = Annotated[int, Meta(ge=-(10**6), le=10**6)]  # a call's place in the queues: higher first


class _Range(typing.NamedTuple):
    """A constrained number (``Timeout``, ``Limit``): checked here, without msgspec, when it holds."""
    types: frozenset[type]
    meta: Meta

    def holds(self, v: Any) -> bool:  # NaN compares false: left to msgspec, which says why
        m = self.meta
        return (type(v) in self.types and (m.gt is None or v > m.gt) and (m.ge is None or v >= m.ge)
                and (m.lt is None or v < m.lt) and (m.le is None or v <= m.le))


class _Param(typing.NamedTuple):
    name: str
    hint: Any
    fast: frozenset[type]  # types that pass as they are, with no range to check
    box: type[msgspec.Struct] | None  # a Struct of one field of that hint: msgspec caches how to check it
    range: _Range | None = None  # a number in range passes too

    def in_range(self, value: Any) -> bool:
        """Whether ``value`` is a number within ``range``: it passes without asking msgspec."""
        return self.range is not None and self.range.holds(value)


def _members(hint: Any) -> tuple[Any, ...]:
    return typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)


def _fast_types(hint: Any) -> frozenset[type]:
    """The exact types that pass ``hint`` as they are: those of its plain members (a constrained
    one, ``Annotated``, has none: its range is checked every time)."""
    out: set[type] = set()
    for a in _members(hint):
        if a is None or a is type(None):
            out.add(type(None))
        elif a in (str, bool, int) or (isinstance(a, type) and issubclass(a, msgspec.Struct)):
            out.add(a)
        elif a is float:
            out |= {float, int}  # an int is a float here, as for msgspec
    return frozenset(out)


def _range(hint: Any) -> _Range | None:
    """The range of ``hint``'s constrained number member (``Timeout | None``: Timeout's), if any."""
    for a in _members(hint):
        if typing.get_origin(a) is Annotated:
            base, *metas = typing.get_args(a)
            if base in (int, float) and len(metas) == 1 and isinstance(metas[0], Meta):
                return _Range(frozenset({int, float} if base is float else {int}), metas[0])
    return None


def _params(fn: Callable[..., Any]) -> tuple[list[_Param], dict[str, _Param]]:
    """The checked parameters of ``fn`` by position (up to ``*args``) and by name."""
    hints = {name: _resolved(text, fn) for name, text in fn.__annotations__.items()}
    positional: list[_Param] = []
    by_name: dict[str, _Param] = {}
    params = list(inspect.signature(fn).parameters.values())[1:]  # self
    open_positions = True
    for p in params:
        if p.kind is p.VAR_POSITIONAL or p.kind is p.VAR_KEYWORD:
            open_positions = False
            continue
        hint = hints.get(p.name, Any)
        try:
            info = msgspec.inspect.type_info(hint)
        except (TypeError, ValueError):
            info = None
        checked = info is not None and not isinstance(info, (msgspec.inspect.AnyType, msgspec.inspect.CustomType))
        param = (_Param(p.name, hint, _fast_types(hint), msgspec.defstruct(p.name, [(p.name, hint)]), _range(hint))
                 if checked else _Param(p.name, None, frozenset(), None))
        if open_positions and p.kind is p.POSITIONAL_OR_KEYWORD:
            positional.append(param)
        by_name[p.name] = param
    return positional, by_name


def _resolved(hint: Any, fn: Callable[..., Any]) -> Any:
    """An annotation (a string, under ``from __future__ import annotations``) as a type; Any
    when it names what only type checkers import."""
    if not isinstance(hint, str):
        return hint
    try:
        return eval(hint, fn.__globals__)  # our own annotations
    except NameError:
        return Any


def _check(where: str, param: _Param, value: Any) -> None:
    """Raise the error ``value`` earns for ``param`` (InvalidArguments naming them), if any."""
    assert param.box is not None
    try:
        msgspec.convert({param.name: value}, param.box, strict=True)
    except (msgspec.ValidationError, TypeError, ValueError, RecursionError) as exc:
        if Timeout in typing.get_args(param.hint) or param.hint is Timeout:
            check_timeout(value, what=param.name)  # raises InvalidConfig, the message callers know
        raise InvalidArguments(f"{where}: argument `{param.name}`: {_reason(exc, param.name)} "
                               f"(got {_shown(value)})") from None


def _reason(exc: BaseException, name: str) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deep"
    text = str(exc).replace("`null`", "`None`").removesuffix(f" - at `$.{name}`")
    return text.replace(f"`$.{name}", "`$")


def _shown(value: Any) -> str:
    text = repr(value) if isinstance(value, (int, float, bool)) or value is None else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def checking(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` (a method) with its arguments checked against its hints first; a coroutine method
    also with its caller's thread and whether the host serves (run_once.caller_check)."""
    positional, by_name = _params(fn)
    where = fn.__qualname__
    if all(p.box is None for p in by_name.values()):
        if not inspect.iscoroutinefunction(fn):
            return fn
        positional, by_name = [], {}

    def check(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Raise for the first argument its hint refuses; those that pass go on as given."""
        # inline: the call path's arguments (a str, a plain type) pass with no method call
        for p, v in zip(positional, args[1:], strict=False):
            if p.box is not None and type(v) not in p.fast and not p.in_range(v):
                _check(where, p, v)
        for name, value in kwargs.items():
            param = by_name.get(name)
            if param is not None and param.box is not None and type(value) not in param.fast \
                    and not param.in_range(value):
                _check(where, param, value)

    if inspect.iscoroutinefunction(fn):
        any_time = getattr(fn, "any_time", False)

        @functools.wraps(fn)
        async def wrapper_async(*args: Any, **kwargs: Any) -> Any:
            try:
                once = getattr(args[0], "_once", None)
                if once is not None and once.thread != get_ident():  # the entering thread, serving, passes at once
                    caller_check(args[0], where, any_time)
                check(args, kwargs)
                return await fn(*args, **kwargs)
            except HostError:
                # A refusal said at once (a disabled plugin, a bad argument) still lets the loop turn:
                # a caller retrying in a loop starved every other task, its own timeout included.
                # (Not in a forked child: its copy of the loop would poll the parent's sockets.)
                if getattr(once, "state", None) != "forked":
                    await checkpoint()
                raise
        return wrapper_async

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        check(args, kwargs)
        return fn(*args, **kwargs)
    return wrapper


def any_time(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A coroutine method that may be awaited whether the host serves or not (``aclose``); the
    others are a HostClosed before its start and once its close began (run_once.py)."""
    fn.any_time = True  # type: ignore[attr-defined]
    return fn


def checked_api(cls: type) -> type:
    """Every public method of ``cls`` checking its arguments (see the module's docstring)."""
    for name, member in list(vars(cls).items()):
        if not name.startswith("_") and inspect.isfunction(member):
            setattr(cls, name, checking(member))
    return cls


__all__ = ["Limit", "Priority", "Port", "Timeout", "Wait", "any_time", "checked_api"]
