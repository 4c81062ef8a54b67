"""worker_runtime/protocol.ts mirrors host/protocol.py: the same messages, tags and fields
(required and optional), the same ErrorInfo and Limits, the same handshake constants. Read from
msgspec's schema of the Python side and from the TypeScript module run by Deno, so a field added
on one side only fails here (issue 16)."""

from __future__ import annotations

import json
import subprocess
import typing
from pathlib import Path

import msgspec
import pytest

from host import protocol as p
from host.runtime import find_deno

pytestmark = pytest.mark.timeout(60)

PROTOCOL_TS = Path(__file__).resolve().parents[1] / "worker_runtime" / "protocol.ts"


def typescript_side() -> dict:
    code = (f'import * as p from "{PROTOCOL_TS.as_uri()}";\n'
            "console.log(JSON.stringify({ messages: p.MESSAGES, structs: p.STRUCTS,"
            " cookie: p.MAGIC_COOKIE, version: p.PROTOCOL_VERSION, hooks: p.HOOKS }));")
    out = subprocess.run([find_deno(), "eval", "--no-config", "--quiet", code], capture_output=True,
                         text=True, timeout=50, check=True)
    return json.loads(out.stdout)


def python_side() -> tuple[dict, dict]:
    """{name: (tag, required, optional)} of every message, {name: fields} of ErrorInfo and Limits."""
    messages = {}
    for cls in typing.get_args(p.Message):
        info = msgspec.inspect.type_info(cls)
        assert isinstance(info, msgspec.inspect.StructType)
        required = [f.name for f in info.fields if f.required]
        optional = [f.name for f in info.fields if not f.required]
        messages[cls.__name__] = (info.tag, required, optional)
    structs = {cls.__name__: [f.name for f in msgspec.inspect.type_info(cls).fields]
               for cls in (p.ErrorInfo, p.Signature, p.Limits)}
    return messages, structs


def test_protocol_ts_has_every_message_with_the_same_tag_and_fields():
    ts = typescript_side()
    messages, structs = python_side()
    assert sorted(ts["messages"]) == sorted(messages)
    for name, (tag, required, optional) in messages.items():
        mirror = ts["messages"][name]
        assert mirror["tag"] == tag, name
        assert mirror["required"] == required, name
        assert mirror["optional"] == optional, name
    assert ts["structs"] == structs
    assert (ts["cookie"], ts["version"]) == (p.MAGIC_COOKIE, p.PROTOCOL_VERSION)
    assert ts["hooks"] == p.HOOKS  # the lifecycle hooks a `hook` message may name


def test_the_schema_and_the_mirror_agree_on_what_a_frame_may_carry():
    # msgspec's JSON schema of the union: every message's properties are exactly the mirror's
    schema = msgspec.json.schema(p.Message)["$defs"]
    ts = typescript_side()["messages"]
    for name, mirror in ts.items():
        props = set(schema[name]["properties"]) - {"type"}
        assert props == set(mirror["required"]) | set(mirror["optional"]), name
        assert set(schema[name].get("required", [])) - {"type"} == set(mirror["required"]), name
