"""A name that ends in a newline (helper-97's finding): Python's ``$`` also matches before a final
newline, so a plugin id ``"calc\\n"`` passed ``^...$`` and loaded beside ``calc``, listed as a
second "calc" wherever the newline does not show, out of reach of ``[plugins.calc]``. Every
pattern that validates a name anchors at the very end (``\\Z``)."""

from __future__ import annotations

import pytest

from host.balances.stations import name_fault
from host.plugins.manifest import InvalidManifest, parse_manifest
from host.security.grant_entries import net_entry_problem

GOOD = {"id": "calc", "name": "Calc", "version": "1.0.0", "apiVersion": "1.0"}


def test_a_plugin_id_ending_in_a_newline_is_refused():
    parse_manifest(GOOD, ["add"], path="calc.js", expected_id="calc")
    with pytest.raises(InvalidManifest, match="is not a valid id"):
        parse_manifest({**GOOD, "id": "calc\n"}, ["add"], path="calc\n.js", expected_id="calc\n")


@pytest.mark.parametrize("field", [{"capabilities": ["message.incoming\n"]},
                                   {"permissions": {"net": ["{config.baseUrl}\n"]}}])
def test_an_event_or_config_reference_ending_in_a_newline_is_refused(field):
    with pytest.raises(InvalidManifest):
        parse_manifest({**GOOD, **field}, ["add", "onEvent"], path="calc.js", expected_id="calc")


def test_a_station_name_and_a_grant_ending_in_a_newline_are_refused():
    assert name_fault("relay") is None and name_fault("relay\n") is not None
    assert net_entry_problem("api.example.com") is None
    assert net_entry_problem("api.example.com\n") is not None
