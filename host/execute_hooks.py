"""The ``[execute.hooks]`` pipeline: Python callables of the operator's around every execution
(the Isolate engine's onValidate / onExecute / onFormat hooks).

- ``validate(request)``: None or True accepts; a string (or False) refuses: ExecuteRefused
  (HTTP 400) naming the hook and carrying the string.
- ``before_execute(request)``: may change the request (its input, say), in place or by
  returning another ExecuteRequest; admission then judges what it returns, so a hook cannot
  take code past ``[execute.allow]``.
- ``after_execute(request, result)``: sees the ExecuteResult; may return another.
- ``format(answer, result)``: the HTTP answer of ``POST /execute`` (a dict of JSON values); may
  return another JSON value to send instead.

Each may be sync (run in a thread) or async and runs within ``[execute.hooks] timeout``. A hook
that raises, times out or returns the wrong type is a HookFailed naming it (a HostError it
raises passes as is): never an unhandled error."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from .errors import ExecuteRefused, HookFailed, HostError
from .execute import ExecuteResult
from .execute_config import HooksConfig
from .execute_tools import call_with_deadline, resolve_callable


class ExecuteRequest(msgspec.Struct):
    """An execution as the hooks see it (``input``: msgspec.UNSET when left out)."""

    code: str
    input: Any = msgspec.UNSET
    entry: str = "default"
    timeout: float | None = None
    permissions: Any = None
    tools: list[str] = []  # what the request asked for
    # what it gets besides, having asked for nothing (the Isolate engine's workers always have Web
    # Crypto: ["crypto"]); a hook may empty it
    default_tools: list[str] = []
    tool_settings: dict[str, Any] = {}  # what [name, settings] in the request's tools said (crypto's)
    language: str = "javascript"
    by: str = "python"


_KINDS = ("validate", "before_execute", "after_execute", "format")


class ExecuteHooks:
    """The operator's hooks, imported once (InvalidConfig naming the setting if one cannot be)."""

    def __init__(self, config: HooksConfig) -> None:
        self.timeout = config.timeout
        self._fns: dict[str, tuple[str, Callable[..., Any]]] = {}
        for kind in _KINDS:
            if spec := getattr(config, kind):
                self._fns[kind] = (spec, resolve_callable(spec, f"[execute.hooks] {kind}"))

    def __bool__(self) -> bool:
        return bool(self._fns)

    async def _run(self, kind: str, *args: Any) -> Any:
        spec, fn = self._fns[kind]
        where = f"[execute.hooks] {kind} ({spec})"
        try:
            done, value = await call_with_deadline(fn, args, self.timeout)
        except HostError:
            raise
        except Exception as exc:  # the operator's hook failing: whatever it raises
            raise HookFailed(f"{where} raised {type(exc).__name__}: {str(exc)[:300]}", plugin="execute") from None
        if not done:
            raise HookFailed(f"{where} did not finish within {self.timeout:g}s ([execute.hooks] timeout)",
                             plugin="execute")
        return value

    async def before(self, request: ExecuteRequest) -> ExecuteRequest:
        """``validate`` then ``before_execute``: the request to admit, or ExecuteRefused."""
        if "validate" in self._fns:
            verdict = await self._run("validate", request)
            if verdict is False or isinstance(verdict, str):
                why = verdict if isinstance(verdict, str) and verdict else "refused"
                raise ExecuteRefused(f"refused by [execute.hooks] validate ({self._fns['validate'][0]}): "
                                     f"{why[:500]}", plugin="execute")
            if verdict not in (None, True):
                raise HookFailed(f"[execute.hooks] validate ({self._fns['validate'][0]}) returned "
                                 f"{type(verdict).__name__}; return None to accept or a message to refuse",
                                 plugin="execute")
        if "before_execute" in self._fns:
            out = await self._run("before_execute", request)
            request = self._typed("before_execute", out, request, ExecuteRequest)
        return request

    async def after(self, request: ExecuteRequest, result: ExecuteResult) -> ExecuteResult:
        if "after_execute" not in self._fns:
            return result
        return self._typed("after_execute", await self._run("after_execute", request, result), result, ExecuteResult)

    async def format(self, answer: dict[str, Any], result: ExecuteResult) -> Any:
        """The HTTP answer to send for ``result``: ``answer`` unless a format hook reshapes it."""
        if "format" not in self._fns:
            return answer
        answer = msgspec.to_builtins(answer)  # plain JSON values: the logs as dicts
        out = await self._run("format", answer, result)
        if out is None:
            return answer
        try:
            msgspec.json.encode(out)
        except (TypeError, ValueError, OverflowError) as exc:
            raise HookFailed(f"[execute.hooks] format ({self._fns['format'][0]}) returned what JSON cannot "
                             f"carry ({exc})", plugin="execute") from None
        return out

    def _typed(self, kind: str, value: Any, default: Any, cls: type) -> Any:
        if value is None:
            return default
        if not isinstance(value, cls):
            raise HookFailed(f"[execute.hooks] {kind} ({self._fns[kind][0]}) returned {type(value).__name__}; "
                             f"return None or an {cls.__name__}", plugin="execute")
        return value


__all__ = ["ExecuteHooks", "ExecuteRequest"]
