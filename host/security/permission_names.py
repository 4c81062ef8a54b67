"""What other sandboxes and habits call a kind of permission (Deno's flags, Node's and
browsers' words), for the errors that refuse them: a plugin's ``permissions: { network }``, an
operator's ``[plugins.ID.permissions] environment``, each told this host's name for the kind."""

from __future__ import annotations

import difflib
import re

KINDS = ("net", "read", "write", "env", "run", "ffi", "sys")

# What other sandboxes and habits call a kind of permission -> this host's name for it.
KIND_SPELLINGS = {
    "network": "net", "internet": "net", "hosts": "net", "http": "net", "fetch": "net", "allowNet": "net",
    "environment": "env", "envVars": "env", "variables": "env", "allowEnv": "env",
    "file": "read", "files": "read", "fs": "read", "filesystem": "read", "allowRead": "read",
    "allowWrite": "write", "exec": "run", "spawn": "run", "subprocess": "run", "command": "run",
    "commands": "run", "allowRun": "run", "system": "sys", "allowSys": "sys", "allowFfi": "ffi",
    "dlopen": "ffi", "native": "ffi", "private": "allowPrivateNetwork",
    "allow_private_network": "allowPrivateNetwork", "privateNetwork": "allowPrivateNetwork",
}


def kind_hint(message: str) -> str:
    """For msgspec's "unknown field `network`" in a permissions object: the kind meant."""
    found = re.search(r"unknown field `([^`]+)`", message)
    if found is None:
        return ""
    name = found.group(1)
    kinds = [*KINDS, "allowPrivateNetwork"]
    meant = KIND_SPELLINGS.get(name) or KIND_SPELLINGS.get(name.lower()) or next(
        iter(difflib.get_close_matches(name.lower(), kinds, 1, 0.7)), None)
    said = f"did you mean `{meant}`? " if meant else ""
    return f" ({said}the kinds are {', '.join(kinds)})"


def override_hint(name: str, where: str) -> str:
    """For an operator's ``[plugins.ID.permissions] NAME`` that is no kind: the setting meant."""
    if name.replace("_", "").lower() == "allowprivatenetwork":
        return (f" (the operator's opt-in to private addresses is {where.removesuffix('.permissions')}"
                ".allow_private_network = true, beside the permissions table)")
    return f" (did you mean `{kind}`?)" if (kind := KIND_SPELLINGS.get(name)) in KINDS else ""


__all__ = ["KIND_SPELLINGS", "KINDS", "kind_hint", "override_hint"]
