"""The ``[execute]`` section: ad-hoc code execution (the Isolate engine's contract), its tools
and the ceiling of what a request may ask for, with the checks HostConfig runs on it."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from .config_types import Amount, Count, Delay, Seconds
from .errors import InvalidConfig
from .security.permissions import Permissions

TOOLS = ("crypto", "channel", "db", "db:write")  # the built-in tools of ``execute`` (db:write: db, and writes)
CRYPTO_METHODS = ("getRandomValues", "randomUUID")
REUSE_PROBE = 0.5  # ExecuteConfig.reuse_probe by default


class CryptoToolConfig(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """The ``crypto`` tool of ``execute`` (as in Isolate): which methods code may use, and how much."""

    subtle: bool = True            # crypto.subtle (digest, sign, ...) available
    methods: list[str] = msgspec.field(default_factory=lambda: list(CRYPTO_METHODS))  # allow-list
    max_bytes: Annotated[int, Meta(ge=1, le=65536)] = 65536        # largest array getRandomValues fills
    max_ops: Count = 1000           # crypto operations per execution


class ToolConfig(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """``[execute.tools.NAME]``: an operator's tool (host/execute_tools.py). ``kind = "host"``:
    ``function`` names a Python callable (``package.module:func``) the host runs for the code.
    ``kind = "module"``: ``module`` is a .js/.ts file whose ``setup(ctx)`` returns what code
    sees, run in the execution's context with ``permissions`` added to its set."""

    kind: Literal["host", "module"] = "host"
    function: str = ""
    timeout: Seconds | None = None  # seconds a call may take at most; None: the execution's deadline
    module: str = ""               # kind = "module": the file (relative to host.toml)
    permissions: Permissions | None = None  # kind = "module": what it needs, within [execute.allow]
    config: dict[str, Any] = {}    # kind = "module": ctx.config of its setup(ctx)


class HooksConfig(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """``[execute.hooks]``: each a ``package.module:function`` (host/execute_hooks.py)."""

    validate: str | None = None
    before_execute: str | None = None
    after_execute: str | None = None
    format: str | None = None
    timeout: Seconds = 5.0  # seconds each hook may take


class ExecuteConfig(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Ad-hoc code execution (the Isolate engine's contract and its cluster: 2 to 8 warm
    workers, reaped after 120 s idle; ``pooled = false`` starts a fresh worker per call)."""

    pooled: bool = True            # warm pooled workers; False = a fresh worker per call
    min_workers: Amount = 2          # kept warm once the first execute (or serve) starts the pool
    max_workers: Count = 8
    idle_timeout: Delay = 120.0
    max_calls_per_worker: Count = 1000  # then a fresh worker (each execution's context is collected)
    # Seconds a pooled worker that ran an execution has to answer a ping before it takes the next:
    # code can leave it spinning after it answered (in microtasks, where no timer runs); one
    # that does not answer is killed and the execution goes to another worker.
    reuse_probe: Seconds = REUSE_PROBE
    # MiB a pooled worker's data segment (its V8 heap and ArrayBuffers, what RLIMIT_DATA bounds)
    # may grow over what it was when ready before it is retired after an execution: code can
    # keep memory alive after it settled, which the next caller would no longer have. 0: never.
    retire_growth_mb: Amount = 64
    # Workers the pool for executions asking no permissions keeps started and ready beside those
    # serving (PoolConfig.spares). None: 2 with pooled = false, so that an execution takes a ready
    # worker instead of waiting for a spawn, and 0 with pooled workers.
    spares: Amount | None = None
    timeout: Seconds = 3.0          # seconds, when a request gives none (Isolate: 3000 ms)
    # The longest a request may ask for: a week of `for (;;) {}` held a worker (and a CPU) that
    # long; beyond it a request is refused (400) naming this setting.
    max_timeout: Seconds = 60.0
    max_code_chars: Count = 100_000  # Isolate's maxSize; longer code is PayloadTooLarge
    crypto: CryptoToolConfig = msgspec.field(default_factory=CryptoToolConfig)
    # The db tool: a sqlite database (a path, or sqlite:///path) or a postgresql:// URL that code
    # asking for "db" may query; None: the tool is refused. $DATABASE_URL sets it when the file
    # does not. Writes (insert, update, delete) need db_writes AND a request asking for "db:write".
    database: str | None = None
    db_max_rows: Count = 1000       # rows a query returns (or an insert takes) at most
    db_writes: bool = False
    db_timeout: Seconds = 5.0       # a statement (or connecting) past this is interrupted: DbUnavailable
    db_max_connections: Count = 8   # connections in use at once (each open transaction holds one)
    db_tx_timeout: Seconds = 5.0    # a transaction still open after this is rolled back (it holds a lock)
    # The most an execution may ask for ([execute.allow], same shape as a plugin's
    # permissions): by default network access to public hosts only (private, loopback and this
    # machine's own addresses stay denied); never files, environment, processes, native code or
    # machine information unless the operator lists them. Beyond it a request is refused (403).
    allow: Permissions = msgspec.field(default_factory=lambda: Permissions(net=True))
    # Distinct permission sets with a pool of their own at once; the least recently used idle
    # one is stopped to make room. Only the set with no permissions keeps min_workers warm.
    max_permission_sets: Count = 8
    tools: dict[str, ToolConfig] = {}  # [execute.tools.NAME]: the operator's tools
    hooks: HooksConfig = msgspec.field(default_factory=HooksConfig)  # [execute.hooks]

    def __post_init__(self) -> None:
        if not isinstance(self.allow, Permissions):  # ExecuteConfig(allow={"net": [...]})
            self.allow = Permissions.parse(self.allow, where="execute.allow")
        try:  # ExecuteConfig(tools={"weather": {"function": ...}}, hooks={...}) from Python
            if isinstance(self.tools, dict):  # anything else: HostConfig's check names it
                self.tools = {k: msgspec.convert(v, ToolConfig, from_attributes=True) for k, v in self.tools.items()}
            self.hooks = msgspec.convert(self.hooks, HooksConfig, from_attributes=True)
        except msgspec.ValidationError as exc:
            raise InvalidConfig(f"execute.tools / execute.hooks: {exc}") from None


_KEY_VALUE = re.compile(r"(?:^|\s)(?:host|hostaddr|port|dbname|user|password|passfile|sslmode|service)\s*=")


def check_execute(x: ExecuteConfig) -> None:
    if x.timeout > x.max_timeout:
        raise InvalidConfig(f"execute: timeout ({x.timeout:g}) must not exceed max_timeout ({x.max_timeout:g})")
    if x.min_workers > x.max_workers:
        raise InvalidConfig(f"execute: min_workers ({x.min_workers}) must not exceed max_workers ({x.max_workers})")
    if x.database is not None:
        from .db_backends import backend_for  # refuses what is neither sqlite nor postgresql
        from .policy.config import check_userinfo

        if "://" not in x.database and _KEY_VALUE.search(x.database):  # was taken for a sqlite file's path
            raise InvalidConfig('execute.database: a libpq "key=value" string is not read; write it as '
                                "postgresql://user:password@host:port/db (the value is not shown: it holds a password)")
        check_userinfo(x.database, "execute.database", libpq=True)
        backend = backend_for(x.database, statement_timeout=x.db_timeout)
        if backend.kind == "postgresql":  # read as libpq will (state_config.check_state)
            from .db_identity import tcp_endpoints

            tcp_endpoints(x.database, "execute.database")
    c = x.crypto
    if unknown := sorted(set(c.methods) - set(CRYPTO_METHODS)):
        raise InvalidConfig(f"execute.crypto.methods: unknown {unknown}; known: {list(CRYPTO_METHODS)}")


__all__ = ["CRYPTO_METHODS", "REUSE_PROBE", "TOOLS", "CryptoToolConfig", "ExecuteConfig", "HooksConfig", "ToolConfig", "check_execute"]
