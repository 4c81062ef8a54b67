"""Plugin Host: run untrusted JavaScript/TypeScript plugins in sandboxed Deno workers."""

from .config import ExecuteConfig, HostConfig, PluginSettings, PoolConfig, WorkerLimits
from .errors import (
    CallCancelled,
    CallTimeout,
    CircuitOpen,
    FunctionNotFound,
    HandshakeError,
    HostClosed,
    HostError,
    InvalidConfig,
    PayloadTooLarge,
    PermissionDenied,
    PluginError,
    PluginNotFound,
    PluginUnavailable,
    ProtocolError,
    RateLimited,
    WorkerCrashed,
)
from .permissions import Permissions
from .plugin_host import ExecuteResult, LogEntry, PluginHost, PluginInfo, WorkerInfo
from .sync import SyncPluginHost

__version__ = "0.1.0"

__all__ = [
    "CallCancelled", "CallTimeout", "CircuitOpen", "ExecuteConfig", "ExecuteResult",
    "FunctionNotFound", "HandshakeError", "HostClosed", "HostConfig", "HostError", "InvalidConfig",
    "LogEntry", "PayloadTooLarge", "PermissionDenied", "Permissions", "PluginError", "PluginHost",
    "PluginInfo", "PluginNotFound", "PluginSettings", "PluginUnavailable", "PoolConfig",
    "ProtocolError", "RateLimited", "SyncPluginHost", "WorkerCrashed", "WorkerInfo", "WorkerLimits",
]
