"""cc-switch's built-in usage queries, as stations of the provider plugins shipped here.

A provider whose usage script has ``templateType`` ``"balance"`` or ``"token_plan"`` keeps no
code (UsageScriptModal.tsx saves ``code: ""``): cc-switch runs a query of its own, written in
Rust (commands/provider.rs ``query_provider_usage_inner``), with the provider's own key and base
URL (``resolve_native_credentials``; for ZenMux the script's, ``resolve_coding_plan_credentials``).
Which query runs is decided by the base URL alone, by substring, first match wins:

- ``balance`` (services/balance.rs ``detect_provider``): api.deepseek.com, api.stepfun.ai|com,
  api.siliconflow.cn, api.siliconflow.com, openrouter.ai, api.novita.ai;
- ``token_plan`` (services/coding_plan.rs ``get_coding_plan_quota``): ``codingPlanProvider``
  ``zhipu_team`` first, then api.kimi.com/coding, bigmodel.cn, api.z.ai, api.minimaxi.com,
  api.minimax.io, zenmux, volces.com/api/plan|coding.

Each query names its own endpoint (the base URL only picks it), so the station gets the
plugin's base URL for that endpoint, not the provider's. What has no plugin here (ZenMux,
Volcengine, Zhipu's team plan, GitHub Copilot, the official subscriptions) is not imported,
and the plan says why."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .ccswitch_apps import str_at

BALANCE = "balance"
TOKEN_PLAN = "token_plan"

# (substring of the base URL, plugin, its config): cc-switch's order
_BALANCE = (
    ("api.deepseek.com", "deepseek", {"baseUrl": "https://api.deepseek.com"}),
    # cc-switch asks api.stepfun.com, in CNY, for either host (balance.rs query_stepfun)
    ("api.stepfun.ai", "stepfun", {"baseUrl": "https://api.stepfun.com"}),
    ("api.stepfun.com", "stepfun", {"baseUrl": "https://api.stepfun.com"}),
    ("api.siliconflow.cn", "siliconflow", {"baseUrl": "https://api.siliconflow.cn", "currency": "CNY"}),
    ("api.siliconflow.com", "siliconflow", {"baseUrl": "https://api.siliconflow.com", "currency": "USD"}),
    ("openrouter.ai", "openrouter", {"baseUrl": "https://openrouter.ai"}),
    ("api.novita.ai", "novita", {"baseUrl": "https://api.novita.ai"}),
)
_TOKEN_PLAN = (
    ("api.kimi.com/coding", "kimi", {"baseUrl": "https://api.kimi.com/coding"}),
    ("bigmodel.cn", "zhipu", {"baseUrl": "https://open.bigmodel.cn"}),
    ("api.z.ai", "zhipu", {"baseUrl": "https://api.z.ai"}),
    ("api.minimaxi.com", "minimax", {"baseUrl": "https://api.minimaxi.com"}),
    ("api.minimax.io", "minimax", {"baseUrl": "https://api.minimax.io"}),
    ("zenmux", None, "ZenMux's coding plan: no ZenMux plugin here"),
    ("volces.com/api/plan", None, "Volcengine's Agent/Coding Plan (AK/SK signed): no Volcengine plugin here"),
    ("volces.com/api/coding", None, "Volcengine's Agent/Coding Plan (AK/SK signed): no Volcengine plugin here"),
)
# the other queries cc-switch runs itself (commands/provider.rs), and why they stay there
OTHER_BUILTINS = {
    "github_copilot": "cc-switch's GitHub Copilot query (its own OAuth login): no plugin here",
    "official_subscription": "cc-switch's official subscription query (the CLI's own OAuth login): no plugin here",
}


@dataclass(frozen=True, slots=True)
class Builtin:
    """The station a built-in query becomes (``plugin``), or why it cannot be one (``reason``)."""

    plugin: str | None
    config: dict[str, str]
    reason: str = ""


def coding_plan_credentials(usage: dict[str, Any], native: tuple[str, str]) -> tuple[str, str]:
    """(base URL, key) of a token_plan query: the provider's, except ZenMux's, which takes the
    script's when both are set (``resolve_coding_plan_credentials``)."""
    if str_at(usage.get("codingPlanProvider")).lower() != "zenmux":
        return native
    script = (str_at(usage.get("baseUrl")).rstrip("/"), str_at(usage.get("apiKey")))
    if all(script):
        return script
    return native if all(native) else script


def builtin(template: str, usage: dict[str, Any], base_url: str, api_key: str) -> Builtin:
    """What cc-switch would run for a ``template`` query of a provider whose (native, or for
    ZenMux the script's) credentials are ``base_url`` and ``api_key``."""
    if template == TOKEN_PLAN and str_at(usage.get("codingPlanProvider")).lower() == "zhipu_team":
        return Builtin(None, {}, "Zhipu's team plan (organization and project IDs): the zhipu plugin reads "
                                 "the personal plan only")
    table = _BALANCE if template == BALANCE else _TOKEN_PLAN
    url = base_url.lower()
    for needle, plugin, config in table:
        if needle in url:
            if plugin is None:
                return Builtin(None, {}, str(config))
            assert isinstance(config, dict)
            return Builtin(plugin, {**config, **({"apiKey": api_key} if api_key else {})})
    what = "balance" if template == BALANCE else "coding plan"
    if not base_url:
        return Builtin(None, {}, f"no base URL: cc-switch's built-in {what} query picks its provider by it")
    return Builtin(None, {}, f"cc-switch's built-in {what} query knows no provider at this base URL "
                             "(it answers \"Unknown provider\" there too)")


__all__ = ["BALANCE", "OTHER_BUILTINS", "TOKEN_PLAN", "Builtin", "builtin", "coding_plan_credentials"]
