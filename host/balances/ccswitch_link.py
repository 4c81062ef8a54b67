"""A cc-switch deep link, ``ccswitch://v1/import?resource=provider&app=...&name=...``, as the one
provider cc-switch would add from it (src-tauri/src/deeplink/parser.rs and provider.rs; the user
manual's 5.3-deeplink.md): relays hand such links out with their usage script in ``usageScript``
(base64), switched on only by ``usageEnabled=true``, its values in ``usageApiKey``,
``usageBaseUrl``, ``usageAccessToken`` and ``usageUserId``, else the link's ``apiKey`` and first
``endpoint``. A link holds a key: it is never printed whole (``shown``)."""

from __future__ import annotations

import base64
import binascii
from urllib.parse import SplitResult, parse_qsl, urlsplit

from .ccswitch_sources import CcSwitchUnreadable, Row

SCHEME = "ccswitch://"
APPS = ("claude", "codex", "gemini", "grokbuild", "opencode", "openclaw", "hermes")  # parser.rs
NOT_ENABLED = ("the link does not say usageEnabled=true, so cc-switch would import its usage script switched "
               "off: add usageEnabled=true to the link to import it")


def is_link(text: str) -> bool:
    return text[:len(SCHEME)].lower() == SCHEME


def _split(link: str) -> SplitResult:
    """The link's parts; CcSwitchUnreadable for one no URL parser reads (``ccswitch://[v1/...``)."""
    try:
        return urlsplit(link)
    except ValueError:
        raise CcSwitchUnreadable("not a cc-switch deep link this host can read (it is no URL): "
                                 "copy the whole link again") from None


def shown(link: str) -> str:
    """The link as it may be printed: what it names, none of its values."""
    parts = _split(link)
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    return f"{SCHEME}{parts.netloc}{parts.path} (provider {params.get('name', '?')!r})"


def _decoded(raw: str) -> str:
    """``usageScript`` as cc-switch decodes it (utils.rs decode_base64_param): spaces were '+' (a
    link not percent-encoded), padding may be left off, standard or URL-safe alphabet; UTF-8."""
    text = raw.strip("\r\n").replace(" ", "+")
    text += "=" * (-len(text) % 4)
    for alphabet in (b"+/", b"-_"):
        try:
            return base64.b64decode(text, altchars=alphabet, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            continue
    raise CcSwitchUnreadable("the link's usageScript is not base64 of UTF-8 text: copy the whole link again")


def link_row(link: str) -> tuple[Row, bool]:
    """The provider of a deep link and whether its usage query is switched on; CcSwitchUnreadable
    naming the parameter to change."""
    parts = _split(link)
    if parts.netloc != "v1" or parts.path != "/import":
        raise CcSwitchUnreadable(f"a cc-switch deep link this host cannot read: {SCHEME}{parts.netloc}{parts.path} "
                                 f"(cc-switch's are {SCHEME}v1/import?...)")
    params = dict(parse_qsl(parts.query, keep_blank_values=True))  # the last of a repeated one, as cc-switch
    resource = params.get("resource", "")
    if resource != "provider":
        raise CcSwitchUnreadable(f"a cc-switch deep link of resource={resource[:20]!r}: only a provider's link "
                                 "(resource=provider) holds a usage script")
    for name in ("app", "name"):
        if not params.get(name):
            raise CcSwitchUnreadable(f"the cc-switch deep link has no {name} parameter (cc-switch refuses it too)")
    if params["app"] not in APPS:
        raise CcSwitchUnreadable(f"the cc-switch deep link's app={params['app'][:20]!r} is not one of {', '.join(APPS)}")
    code = _decoded(params["usageScript"]) if params.get("usageScript") else ""
    endpoint = params.get("endpoint", "").split(",")[0]
    usage = {
        "enabled": params.get("usageEnabled") == "true",  # Rust's bool parse: "true" only
        "code": code,
        "apiKey": params.get("usageApiKey", "").strip() or params.get("apiKey", "").strip(),
        "baseUrl": (params.get("usageBaseUrl", "").strip() or endpoint.strip()).rstrip("/"),
        "accessToken": params.get("usageAccessToken", ""),
        "userId": params.get("usageUserId", ""),
        "autoQueryInterval": params.get("usageAutoInterval", ""),  # minutes (provider.rs auto_query_interval)
    }
    row = Row(provider_id=params["name"], app=params["app"], name=params["name"], settings={},
              meta={"usage_script": usage})
    return row, usage["enabled"]


__all__ = ["NOT_ENABLED", "is_link", "link_row", "shown"]
