"""Per-plugin config: schema validation, secret masking and redaction, the config store."""

from __future__ import annotations

import os
import stat

import msgspec
import pytest

from host import InvalidConfig
from host.plugins.manifest import ConfigField
from host.plugins.settings import MASK, ConfigStore, apply_schema, mask, redact, secret_values

SCHEMA = {
    "apiKey": ConfigField(type="string", required=True, secret=True),
    "baseUrl": ConfigField(type="string", default="https://api.example.com"),
    "limit": ConfigField(type="integer", default=10),
    "ratio": ConfigField(type="number"),
    "verbose": ConfigField(type="boolean", default=False),
    "mode": ConfigField(type="string", enum=["fast", "safe"], default="safe"),
}


def test_defaults_fill_in_and_valid_values_pass():
    out = apply_schema(SCHEMA, {"apiKey": "sk-123456", "ratio": 1}, plugin="p")
    assert out == {"apiKey": "sk-123456", "baseUrl": "https://api.example.com", "limit": 10, "ratio": 1,
                   "verbose": False, "mode": "safe"}


@pytest.mark.parametrize(("values", "message"), [
    ({}, "config.apiKey: is required"),
    ({"apiKey": "k" * 8, "limit": "10"}, "config.limit: '10' is not of type integer"),
    ({"apiKey": "k" * 8, "limit": True}, "config.limit: True is not of type integer"),
    ({"apiKey": "k" * 8, "ratio": "x"}, "config.ratio: 'x' is not of type number"),
    ({"apiKey": "k" * 8, "mode": "turbo"}, "config.mode: 'turbo' is not one of ['fast', 'safe']"),
    ({"apiKey": "k" * 8, "colour": "red"}, "config.colour: not in the plugin's configSchema"),
    ({"apiKey": 12345678}, "config.apiKey: the value is not of type string"),
])
def test_invalid_values_name_the_field(values, message):
    with pytest.raises(InvalidConfig) as e:
        apply_schema(SCHEMA, values, plugin="p")
    assert message in str(e.value)


def test_a_wrong_secret_is_never_echoed_in_the_error():
    with pytest.raises(InvalidConfig) as e:
        apply_schema({"token": ConfigField(type="string", secret=True, enum=["a"])}, {"token": "hunter2-secret"},
                     plugin="p")
    assert "hunter2" not in str(e.value)


def test_mask_and_redact_hide_secret_values():
    values = {"apiKey": "sk-live-abcdef", "baseUrl": "https://x"}
    assert mask(SCHEMA, values) == {"apiKey": MASK, "baseUrl": "https://x"}
    assert mask(SCHEMA, {"apiKey": None}) == {"apiKey": None}  # not set: no mask to mislead
    assert mask(SCHEMA, {"apiKey": ""}) == {"apiKey": ""}
    secrets = secret_values(SCHEMA, values)
    assert redact("calling with key sk-live-abcdef now", secrets) == f"calling with key {MASK} now"


def test_store_persists_with_private_permissions(tmp_path):
    store = ConfigStore(tmp_path)
    store.set("p", {"apiKey": "k"})
    assert stat.S_IMODE(os.stat(tmp_path / "config.json").st_mode) == 0o600
    assert ConfigStore(tmp_path).get("p") == {"apiKey": "k"}
    assert ConfigStore(tmp_path).get("other") is None


def test_corrupt_store_is_a_typed_error(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(InvalidConfig, match="not valid JSON"):
        ConfigStore(tmp_path)


def test_default_not_in_enum_is_rejected_at_manifest_time():
    from host.plugins.manifest import InvalidManifest, parse_manifest

    with pytest.raises(InvalidManifest, match=r"configSchema\.mode\.default"):
        parse_manifest({"id": "p", "name": "p", "version": "1.0.0", "apiVersion": "1.0",
                        "configSchema": {"mode": {"type": "string", "enum": ["a"], "default": "b"}}},
                       [], path="p.js", expected_id="p")
    assert msgspec.UNSET is ConfigField(type="string").default
