"""Plugin Host: run untrusted JavaScript/TypeScript plugins in sandboxed Deno workers."""

from . import _early_stop

if _early_stop.is_cli():  # before the imports below: a stop signal meanwhile ends the CLI quietly
    _early_stop.install()

from .balances.history import BalancePoint
from .balances.result import BalanceResult
from .config import (
    BalancesConfig,
    BreakerConfig,
    CacheConfig,
    CryptoToolConfig,
    EventsConfig,
    ExecuteConfig,
    HealthConfig,
    HostConfig,
    PluginSettings,
    PolicyConfig,
    PoolConfig,
    RateLimitConfig,
    RetryConfig,
    SecurityConfig,
    ServerConfig,
    UsageScriptConfig,
    WorkerLimits,
)
from .config_file import load_config
from .errors import (
    ApprovalChanged,
    CallCancelled,
    CallTimeout,
    CircuitOpen,
    DbError,
    DbRefused,
    DbUnavailable,
    ExecuteRefused,
    FunctionNotFound,
    GrantRefused,
    HandshakeError,
    HookFailed,
    HostClosed,
    HostError,
    InvalidArguments,
    InvalidCode,
    InvalidConfig,
    PayloadTooLarge,
    PermissionDenied,
    PluginError,
    PluginNotFound,
    PluginUnavailable,
    PolicyStorageError,
    ProtocolError,
    RateLimited,
    ResourceLimitExceeded,
    SecretsError,
    SpawnFailed,
    StateError,
    StateFileDamaged,
    StateUnavailable,
    StationNotFound,
    StorageError,
    StorageFull,
    ToolFailed,
    WorkerCrashed,
    WrongThread,
)
from .execute import ExecuteResult, LogEntry
from .execute_config import HooksConfig, ToolConfig
from .execute_hooks import ExecuteRequest
from .info import EventReply, PluginInfo, WorkerInfo
from .plugin_host import PluginHost
from .plugins.lifecycle import PluginEvent
from .plugins.package_archive import Package, PackageRefused, PackagesConfig
from .policy.scheduler import SchedulerStats
from .security.permissions import Permissions
from .sync import SyncPluginHost

__version__ = "0.1.0"

__all__ = [
    "ApprovalChanged", "ExecuteRefused", "ExecuteRequest", "HookFailed", "HooksConfig", "ToolConfig", "ToolFailed",
    "BalancePoint", "BalanceResult", "BalancesConfig", "BreakerConfig", "CacheConfig", "PolicyConfig", "PolicyStorageError",
    "SecurityConfig", "ServerConfig", "load_config", "RateLimitConfig", "RetryConfig",
    "CallCancelled", "CallTimeout", "EventsConfig", "HealthConfig", "CircuitOpen", "EventReply", "UsageScriptConfig", "CryptoToolConfig", "ExecuteConfig", "ExecuteResult",
    "DbError", "DbRefused", "DbUnavailable", "FunctionNotFound", "GrantRefused", "HandshakeError", "HostClosed", "HostConfig", "HostError", "InvalidArguments", "InvalidCode", "InvalidConfig",
    "LogEntry", "Package", "PackageRefused", "PackagesConfig", "PayloadTooLarge", "PermissionDenied", "Permissions", "PluginError", "PluginEvent", "PluginHost",
    "PluginInfo", "PluginNotFound", "PluginSettings", "PluginUnavailable", "PoolConfig",
    "ProtocolError", "RateLimited", "ResourceLimitExceeded", "SchedulerStats", "SecretsError", "SpawnFailed", "StateError", "StateFileDamaged", "StationNotFound", "StateUnavailable", "StorageError", "StorageFull", "SyncPluginHost", "WorkerCrashed", "WorkerInfo", "WorkerLimits", "WrongThread",
]
