"""The dashboard against hostile plugins, in real headless Chromium over a real ``python -m host
serve`` (the fixtures of tests/e2e/test_dashboard.py): a plugin's manifest, config schema, errors and
log lines are attacker-controlled text. Config field names that shadow a form's methods or
``Object.prototype`` must be inert, very long unbroken text must not widen the page, and
right-to-left overrides must not reorder the text around them."""

from __future__ import annotations

import json

import pytest
import test_dashboard
from playwright.sync_api import Locator, Page, expect
from test_dashboard import VAULT, open_dashboard, row, shot

# The fixtures of test_dashboard.py: its Chromium, its serve subprocess, and its page that fails
# the test on an uncaught error in the page or plugin polls faster than every 2 s.
playwright, browser = test_dashboard.playwright, test_dashboard.browser
serve, page = test_dashboard.serve, test_dashboard.page

# Field names that are methods or properties of a <form> element: its named controls become
# properties of the form element, in place of these.
FORM_NAMES = ("replaceChildren", "append", "onsubmit", "addEventListener", "elements", "submit",
              "querySelector", "className", "textContent", "hidden")
FORMS = "\n".join([
    'export const metadata = { id: "forms", name: "Forms", version: "1.0.0", apiVersion: "1.0",',
    "  configSchema: {",
    *(f'    {name}: {{ type: "string" }},' for name in FORM_NAMES),
    "  } };",
    "export function f() { return 1; }",
])
# Members of Object.prototype; "__proto__" as a computed key, or the object literal would set
# the schema's prototype instead of declaring a field.
PROTO_NAMES = ("__proto__", "constructor", "toString", "hasOwnProperty", "valueOf")
PROTOS = "\n".join([
    'export const metadata = { id: "protos", name: "Protos", version: "1.0.0", apiVersion: "1.0",',
    "  configSchema: {",
    *(f'    [{name!r}]: {{ type: "string" }},' for name in PROTO_NAMES),
    "  } };",
    "export function f() { return 1; }",
])

LONG = 5000
WORD = "W" * 200  # one 200-character word
NAME = "N" * 100  # the longest name a manifest may have, one word (host/plugins/manifest.py MAX_TEXT)
# (the longest version, config field name and field description are 64, 64 and 500 characters)
LONG_ID = "l" * 64  # the longest id a manifest may have
WIDE = f"""
export const metadata = {{
  id: "{LONG_ID}", name: "{NAME}", version: "1.0.0-{"v" * 50}", apiVersion: "1.0",
  capabilities: ["balance"],
  configSchema: {{
    {"k" * 64}: {{ type: "string", title: "{WORD}", description: "{"d" * 500}" }},
    choice: {{ type: "string", enum: ["{"c" * 300}", "short"], default: "{"c" * 300}" }},
    note: {{ type: "string", default: "{"n" * 300}" }},
  }},
}};
export function validateConfig(config) {{
  return config.note === "reject" ? {{ valid: false, message: "{"r" * LONG}" }} : true;
}}
export function queryBalance() {{
  console.log("{"g" * LONG}");
  throw new Error("{"e" * LONG}");
}}
"""
WIDE_BROKEN = f'throw new Error("{"b" * LONG}");\n'

RLO = "\u202e"  # RIGHT-TO-LEFT OVERRIDE: what follows it is shown reversed, up to the paragraph's end
HEBREW = "\u05d0\u05d1\u05d2"  # strong right-to-left letters: allowed in a manifest
SPOOF = f"""
export const metadata = {{
  id: "spoof", name: "Spoof {HEBREW}", version: "1.0.0", apiVersion: "1.0", capabilities: ["balance"],
  configSchema: {{
    mode: {{ type: "string", title: "Mode {HEBREW}", description: "{HEBREW} mode", default: "{HEBREW}" }},
  }},
}};
export function validateConfig(config) {{
  if (config.mode === "field") return {{ valid: false, message: "config.mode: no {RLO}good" }};
  return config.mode === "form" ? {{ valid: false, message: "refused {RLO}form" }} : true;
}}
export function queryBalance() {{
  console.log("log {RLO}line");
  throw new Error("station {RLO}down");
}}
"""
SPOOF_BROKEN = f'throw new Error("load {RLO}failed");\n'

# The text nodes under ``selector``, and the screen box of where ``needle`` is in their text.
TEXT_BOX = """([selector, needle]) => {
  const root = document.querySelector(selector);
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  const nodes = [];
  let text = "";
  while (walker.nextNode()) {
    nodes.push([walker.currentNode, text.length]);
    text += walker.currentNode.data;
  }
  const start = text.indexOf(needle);
  if (start < 0) return null;
  const at = (offset) => {
    const [node, from] = nodes.findLast(([, from]) => from <= offset);
    return [node, offset - from];
  };
  const range = document.createRange();
  range.setStart(...at(start));
  range.setEnd(...at(start + needle.length));
  const box = range.getBoundingClientRect();
  return { left: box.left, right: box.right };
}"""

# Every text node holding one of ``marks``, with what isolates it: "bdi" (the only content of a
# <bdi>), "fsi" (each mark between FIRST STRONG ISOLATE and POP DIRECTIONAL ISOLATE), or the
# start of its parent's markup when nothing does.
ISOLATION = """(marks) => {
  const out = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode;
    if (!marks.some((m) => node.data.includes(m))) continue;
    const parent = node.parentElement;
    const outside = node.data.replace(/\\u2068[^\\u2069]*\\u2069/g, "");
    if (parent.localName === "bdi" && parent.childNodes.length === 1) out.push("bdi");
    else if (!marks.some((m) => outside.includes(m))) out.push("fsi");
    else out.push(parent.outerHTML.slice(0, 120));
  }
  return out;
}"""


# The elements that reach past the viewport's right edge, for the message of a failure.
PAST_THE_EDGE = """() => [...document.body.querySelectorAll("*")]
  .filter((e) => e.getBoundingClientRect().right > document.documentElement.clientWidth)
  .map((e) => `${e.localName}.${e.className} ${Math.round(e.getBoundingClientRect().width)} px`)
  .slice(0, 12)"""


def assert_fits(page: Page, *controls: Locator) -> None:
    """The page is no wider than the viewport and each control lies inside it."""
    width = page.viewport_size["width"]
    scroll = page.evaluate("document.documentElement.scrollWidth")
    assert scroll <= width, f"the page is {scroll} px wide in a {width} px viewport: {page.evaluate(PAST_THE_EDGE)}"
    for control in controls:
        box = control.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width, (control, box)


@pytest.mark.timeout(90)
def test_config_fields_named_like_form_methods_do_not_stick_the_config_panel(page, plugin_dir, serve):
    plugin_dir.add("forms.js", FORMS)
    plugin_dir.add("vault.js", VAULT)
    srv = serve()
    open_dashboard(page, srv)
    config = page.locator("#config")
    for _ in range(2):  # there and back, twice: each switch replaces the whole form
        page.select_option("#plugin-select", "forms")
        expect(config.locator("[data-field]")).to_have_count(len(FORM_NAMES))
        expect(config.locator('[data-field="replaceChildren"] label')).to_have_text("replaceChildren")
        page.select_option("#plugin-select", "vault")
        expect(config.locator('[data-field="apiKey"]')).to_be_visible()
        expect(config.locator('[data-field="replaceChildren"]')).to_have_count(0)

    # and the hostile form itself still saves, with the values of the fields named like methods
    page.select_option("#plugin-select", "forms")
    config.locator('[data-field="submit"] input').fill("a submit")
    config.locator('[data-field="onsubmit"] input').fill("an onsubmit")
    config.get_by_role("button", name="Save", exact=True).click()
    expect(config.locator(".form-msg")).to_have_text("saved")
    assert srv.request("GET", "/api/plugins/forms/config")[1] == {"submit": "a submit", "onsubmit": "an onsubmit"}
    expect(config.locator('[data-field="submit"] input')).to_have_value("a submit")


@pytest.mark.timeout(90)
def test_saving_a_field_named_proto_sends_it_as_an_own_key_and_leaves_the_others_out(page, plugin_dir, serve):
    plugin_dir.add("protos.js", PROTOS)
    srv = serve()
    open_dashboard(page, srv)
    page.select_option("#plugin-select", "protos")
    config = page.locator("#config")
    expect(config.locator("[data-field]")).to_have_count(len(PROTO_NAMES))
    for name in PROTO_NAMES:  # none of them set: Object.prototype's members are no stored values
        expect(config.locator(f'[data-field="{name}"] input')).to_have_value("")

    config.locator('[data-field="__proto__"] input').fill("proto-value")
    with page.expect_request(lambda r: r.method == "PUT") as put:
        config.get_by_role("button", name="Save", exact=True).click()
    sent = put.value.post_data
    assert json.loads(sent) == {"__proto__": "proto-value"}, sent  # the others, never set, left out
    expect(config.locator(".form-msg")).to_have_text("saved")
    assert srv.request("GET", "/api/plugins/protos/config")[1] == {"__proto__": "proto-value"}
    expect(config.locator('[data-field="__proto__"] input')).to_have_value("proto-value")
    expect(config.locator("dl.saved dt")).to_have_text(["__proto__"])

    # set, then cleared: sent as null, so that the stored value goes
    config.locator('[data-field="__proto__"] input').fill("")
    config.locator('[data-field="constructor"] input').fill("built")
    with page.expect_request(lambda r: r.method == "PUT") as put:
        config.get_by_role("button", name="Save", exact=True).click()
    assert json.loads(put.value.post_data) == {"__proto__": None, "constructor": "built"}
    expect(config.locator(".form-msg")).to_have_text("saved")
    assert srv.request("GET", "/api/plugins/protos/config")[1] == {"__proto__": None, "constructor": "built"}


@pytest.mark.timeout(120)
def test_long_unbroken_text_wraps_and_never_widens_the_page(page, plugin_dir, serve):
    plugin_dir.add(f"{LONG_ID}.js", WIDE)
    plugin_dir.add("broken.js", WIDE_BROKEN)
    srv = serve()
    open_dashboard(page, srv)
    wide = row(page, f"{LONG_ID}@1.0.0-{'v' * 50}")
    expect(wide).to_contain_text(NAME)
    expect(page.locator('#plugins tr[data-plugin^="broken"] .error')).to_contain_text("b" * LONG)
    card = page.locator(f'#balances .card[data-provider="{LONG_ID}"]')
    expect(card.locator(".error")).to_contain_text("e" * LONG)
    page.select_option("#plugin-select", LONG_ID)
    config = page.locator("#config")
    expect(config.locator(".field").first).to_contain_text("d" * 500)
    expect(page.locator("#log li", has_text="g" * 4000)).to_have_count(1)  # (the host cuts a line at 4 KiB)
    save = config.get_by_role("button", name="Save", exact=True)
    restart = wide.get_by_role("button", name="restart", exact=True)
    assert_fits(page, save, restart, page.locator("#plugin-select"), page.get_by_role("button", name="Refresh"))

    # the plugin's refusal and the saved values, long as they are, wrap too
    config.locator('[data-field="note"] input').fill("reject")
    save.click()
    expect(config.locator(".form-msg")).to_contain_text("r" * LONG)
    assert_fits(page, save, restart)
    config.locator('[data-field="note"] input').fill("x" * LONG)
    config.locator(f'[data-field="{"k" * 64}"] input').fill("set")
    save.click()
    expect(config.locator(".form-msg")).to_have_text("saved")
    expect(config.locator("dl.saved")).to_contain_text("k" * 64)
    assert_fits(page, save, restart)
    shot(page, "long_text_1400")

    # in a narrower window as well
    page.set_viewport_size({"width": 1000, "height": 1000})
    expect(config.locator(".field").first).to_be_visible()
    assert_fits(page, save, page.locator("#plugin-select"), page.get_by_role("button", name="Refresh"))


@pytest.mark.timeout(120)
def test_right_to_left_override_in_plugin_text_cannot_reorder_the_text_around_it(page, plugin_dir, serve):
    plugin_dir.add("spoof.js", SPOOF)
    plugin_dir.add("broken.js", SPOOF_BROKEN)
    srv = serve()
    open_dashboard(page, srv)
    card = page.locator('#balances .card[data-provider="spoof"]')
    expect(card.locator(".error")).to_contain_text("[Error]")  # what the plugin threw (a plain Error)
    # the override ends with the error message: "[Error]" stays to its right
    message = page.evaluate(TEXT_BOX, ['#balances .card[data-provider="spoof"] .error', f"station {RLO}down"])
    kind = page.evaluate(TEXT_BOX, ['#balances .card[data-provider="spoof"] .error', "[Error]"])
    assert message and kind and kind["left"] >= message["right"] - 0.5, (message, kind)

    expect(page.locator('#plugins tr[data-plugin^="broken"] .error')).to_contain_text(f"load {RLO}failed")
    page.select_option("#plugin-select", "spoof")
    expect(page.locator("#log li", has_text=f"log {RLO}line")).to_have_count(1)
    config = page.locator("#config")
    mode = config.locator('[data-field="mode"]')
    expect(mode.locator("label")).to_contain_text(HEBREW)
    # where no markup can go, between FIRST STRONG ISOLATE and POP DIRECTIONAL ISOLATE
    expect(mode.locator("input")).to_have_attribute("placeholder", f"default: \u2068{HEBREW}\u2069")

    # the plugin's refusal of a config, at the form and next to the field it names
    mode.locator("input").fill("form")
    config.get_by_role("button", name="Save", exact=True).click()
    expect(config.locator(".form-msg")).to_contain_text(f"refused {RLO}form")
    mode.locator("input").fill("field")
    config.get_by_role("button", name="Save", exact=True).click()
    expect(mode.locator(".field-error")).to_have_text(f"no {RLO}good")
    shot(page, "bidi")

    # every piece of plugin text on the page, isolated: the only text of a <bdi>, or between
    # FSI and PDI where no markup can go
    found = page.evaluate(ISOLATION, [RLO, HEBREW])
    assert len(found) >= 8, found  # row name, card name and error, log, label, description, errors
    assert all(how in ("bdi", "fsi") for how in found), [how for how in found if how not in ("bdi", "fsi")]
