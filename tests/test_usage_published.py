"""Published cc-switch usage scripts, read as cc-switch reads them (issue 17, fidelity in the
wild): the templates cc-switch ships (and shipped), the examples of its manual, and scripts that
relay stations and tools publish for it, each run unchanged through a real host against a local
fake answering as that provider documents. For each, the headline (balance, unit, quota, used)
must be what cc-switch shows for that answer (the first element of the extractor's result: its
remaining, unit, total and used), the other plans must be in rawData.plans, and the request must
have gone to the right path with the right headers. Nothing leaves 127.0.0.1: a script with an
absolute https URL to a public host has that host (only) rewritten to the fake."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from aiohttp import web

from host import BreakerConfig, PluginSettings, PoolConfig

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# ---------------------------------------------------------------------------------- the scripts
# Verbatim (they are data): a template built from TypeScript is given as cc-switch renders it.

# 1. cc-switch's "General" template (TEMPLATE_TYPES.GENERAL), the default script of a new
#    provider. Source: farion1231/cc-switch src/components/UsageScriptModal.tsx @ 5ca9459 (the
#    same text is in docs/user-manual/{en,zh,ja}/2-providers/2.5-usage-query.md).
GENERAL = '''({
  request: {
    url: "{{baseUrl}}/user/balance",
    method: "GET",
    headers: {
      "Authorization": "Bearer {{apiKey}}",
      "User-Agent": "cc-switch/1.0"
    }
  },
  extractor: function(response) {
    return {
      isValid: response.is_active || true,
      remaining: response.balance,
      unit: "USD"
    };
  }
})'''

# 2. cc-switch's "New API" template (TEMPLATE_TYPES.NEW_API), its i18n placeholders rendered
#    with src/i18n/locales/en.json (usageScript.defaultPlan "Default Plan",
#    usageScript.queryFailedMessage "Query failed"). Source: farion1231/cc-switch
#    src/components/UsageScriptModal.tsx @ 5ca9459. Answered as New API's GET /api/user/self.
NEW_API = '''({
  request: {
    url: "{{baseUrl}}/api/user/self",
    method: "GET",
    headers: {
      "Content-Type": "application/json",
      "Authorization": "Bearer {{accessToken}}",
      "User-Agent": "cc-switch/1.0",
      "New-Api-User": "{{userId}}"
    },
  },
  extractor: function (response) {
    if (response.success && response.data) {
      return {
        planName: response.data.group || "Default Plan",
        remaining: response.data.quota / 500000,
        used: response.data.used_quota / 500000,
        total: (response.data.quota + response.data.used_quota) / 500000,
        unit: "USD",
      };
    }
    return {
      isValid: false,
      invalidMessage: response.message || "Query failed"
    };
  },
})'''

# 3. cc-switch's "Custom" template (TEMPLATE_TYPES.CUSTOM): a skeleton with an empty URL, which
#    cc-switch refuses ("Invalid request URL"). Source: as above.
CUSTOM = '''({
  request: {
    url: "",
    method: "GET",
    headers: {}
  },
  extractor: function(response) {
    return {
      remaining: 0,
      unit: "USD"
    };
  }
})'''

# 4. The config-format example cc-switch shows under the editor (usageScript.configFormat):
#    a POST without a body. Source: farion1231/cc-switch src/components/UsageScriptModal.tsx
#    @ 5ca9459 (the <pre> of the help panel).
HELP = '''({
  request: {
    url: "{{baseUrl}}/api/usage",
    method: "POST",
    headers: {
      "Authorization": "Bearer {{apiKey}}",
      "User-Agent": "cc-switch/1.0"
    }
  },
  extractor: function(response) {
    return {
      isValid: !response.error,
      remaining: response.balance,
      unit: "USD"
    };
  }
})'''

# 5. The New API example of the Chinese user manual (no User-Agent, Chinese defaults).
#    Source: farion1231/cc-switch docs/user-manual/zh/2-providers/2.5-usage-query.md @ 5ca9459.
DOCS_ZH_NEW_API = '''({
  request: {
    url: "{{baseUrl}}/api/user/self",
    method: "GET",
    headers: {
      "Content-Type": "application/json",
      "Authorization": "Bearer {{accessToken}}",
      "New-Api-User": "{{userId}}"
    },
  },
  extractor: function (response) {
    if (response.success && response.data) {
      return {
        planName: response.data.group || "默认套餐",
        remaining: response.data.quota / 500000,
        used: response.data.used_quota / 500000,
        total: (response.data.quota + response.data.used_quota) / 500000,
        unit: "USD",
      };
    }
    return {
      isValid: false,
      invalidMessage: response.message || "查询失败"
    };
  },
})'''

# 6. The first config-format example cc-switch shipped: a POST with a JSON body and a line
#    comment after it. Source: farion1231/cc-switch src/components/UsageScriptModal.tsx
#    @ 3e4df2c96 (2025-10-15; shown until bafddb8e5, 2025-11-04).
HELP_2025 = '''({
  request: {
    url: "{{baseUrl}}/api/usage",
    method: "POST",
    headers: {
      "Authorization": "Bearer {{apiKey}}",
      "User-Agent": "cc-switch/1.0"
    },
    body: JSON.stringify({ key: "value" })  // 可选
  },
  extractor: function(response) {
    // response 是 API 返回的 JSON 数据
    return {
      isValid: !response.error,
      remaining: response.balance,
      unit: "USD"
    };
  }
})'''

# 7. cc-switch's first "NewAPI" template: New API's per-key GET /api/usage/token, an unlimited
#    key shown as total -1 (cc-switch renders a total of -1 as "∞") and no remaining.
#    Source: farion1231/cc-switch src/components/UsageScriptModal.tsx @ 3e4df2c96 (2025-10-15,
#    until 55223bdd4, 2025-10-30).
TOKEN_2025 = '''({
  request: {
    url: "{{baseUrl}}/api/usage/token",
    method: "GET",
    headers: {
      Authorization: "Bearer {{apiKey}}",
    },
  },
  extractor: function (response) {
    if (response.code) {
      if (response.data.unlimited_quota) {
        return {
          planName: response.data.name,
          total: -1,
          used: response.data.total_used / 500000,
          unit: "USD",
        };
      }
      return {
        isValid: true,
        planName: response.data.name,
        total: response.data.total_granted / 500000,
        used: response.data.total_used / 500000,
        remaining: response.data.total_available / 500000,
        unit: "USD",
      };
    }
    if (response.error) {
      return {
        isValid: false,
        invalidMessage: response.error.message,
      };
    }
  },
})'''

# 8. cc-switch's MiniMax coding-plan template, rendered with the en labels
#    (buildMiniMaxUsageTemplate with usageScript.* of src/i18n/locales/en.json @ ebc4cfd30): the
#    whole URL is {{baseUrl}} (cc-switch fills in https://www.minimaxi.com/v1/api/openplatform/
#    coding_plan/remains). An array: the 5-hour window first, then the week.
#    Source: farion1231/cc-switch src/config/usageTemplates/minimax.ts @ f8a002bea.
MINIMAX = '''({
  request: {
    url: "{{baseUrl}}",
    method: "GET",
    headers: {
      Authorization: "Bearer {{apiKey}}",
      "User-Agent": "cc-switch/1.0"
    },
  },
  extractor: function (response) {
    if (!response || !response.base_resp || response.base_resp.status_code !== 0) {
      return { isValid: false };
    }

    const models = response.model_remains || [];
    const targetModel = models.find(m => m.model_name && m.model_name.includes("MiniMax-M"));

    if (!targetModel) {
      return { isValid: false };
    }

    const total = Number(targetModel.current_interval_total_count || 0);
    const remaining = Number(targetModel.current_interval_usage_count || 0);
    const used = Math.max(0, total - remaining);
    const remainingMs = Number(targetModel.remains_time || 0);
    const totalMinutes =
      remainingMs > 0 ? Math.max(1, Math.round(remainingMs / 60000)) : 0;
    const resetHours = Math.floor(totalMinutes / 60);
    const resetMinutes = totalMinutes % 60;
    const resetTimeStr =
      totalMinutes > 0
        ? (() => {
            const durationParts = [];
            if (resetHours > 0) {
              durationParts.push(resetHours + " " + "hr");
            }
            if (resetMinutes > 0) {
              durationParts.push(resetMinutes + " " + "min");
            }
            const timeLabel = durationParts.join(" ");
            return "Resets in {{time}}".replace("{{time}}", timeLabel);
          })()
        : undefined;

    const weeklyTotal = Number(targetModel.current_weekly_total_count || 0);
    const weeklyRemaining = Number(targetModel.current_weekly_usage_count || 0);
    const result = [
      {
        isValid: true,
        planName: targetModel.model_name || "5-hour quota",
        remaining: remaining,
        used: used,
        total: total,
        unit: "times",
        extra: resetTimeStr
      }
    ];

    if (weeklyTotal > 0) {
      const weeklyUsed = Math.max(0, weeklyTotal - weeklyRemaining);
      result.push({
        isValid: true,
        planName: (targetModel.model_name || "5-hour quota") + " · " + "Weekly quota",
        remaining: weeklyRemaining,
        used: weeklyUsed,
        total: weeklyTotal,
        unit: "times"
      });
    }

    return result;
  },
});'''

# 9. cc-switch's Zhipu (GLM coding plan) template, rendered with the en labels: an arrow-function
#    extractor, optional chaining, percentages with no total, three plans.
#    Source: farion1231/cc-switch src/config/usageTemplates/zhipu.ts @ f8a002bea.
ZHIPU = '''({
  request: {
    url: "{{baseUrl}}",
    method: "GET",
    headers: {
      "Authorization": "{{apiKey}}",
      "Content-Type": "application/json"
    }
  },
  extractor: (response) => {
    if (response.success && response.data) {
      const limits = Array.isArray(response.data.limits) ? response.data.limits : [];
      const level = response.data.level || "unknown";
      const formatResetTime = (limit) => {
        const resetDate = limit?.nextResetTime ? new Date(limit.nextResetTime) : null;
        if (!resetDate || Number.isNaN(resetDate.getTime())) {
          return undefined;
        }
        return (
          resetDate.getFullYear() +
          "-" +
          String(resetDate.getMonth() + 1).padStart(2, "0") +
          "-" +
          String(resetDate.getDate()).padStart(2, "0") +
          " " +
          String(resetDate.getHours()).padStart(2, "0") +
          ":" +
          String(resetDate.getMinutes()).padStart(2, "0") +
          " " +
          "reset"
        );
      };

      const tokenLimits = limits.filter((l) => l.type === "TOKENS_LIMIT");
      const quota5Hours = tokenLimits[0];
      const weeklyQuota = tokenLimits[1];

      const mcp = limits.find((l) => l.type === "TIME_LIMIT");

      const result = [];

      if (quota5Hours) {
        result.push({
          planName: level.toUpperCase() + " · " + "5-hour quota",
          remaining: 100 - (quota5Hours?.percentage || 0),
          used: quota5Hours?.percentage || 0,
          extra: formatResetTime(quota5Hours),
          unit: "%",
        });
      }

      if (weeklyQuota) {
        result.push({
          planName: level.toUpperCase() + " · " + "Weekly quota",
          remaining: 100 - (weeklyQuota?.percentage || 0),
          used: weeklyQuota?.percentage || 0,
          extra: formatResetTime(weeklyQuota),
          unit: "%",
        });
      }

      if (mcp) {
        result.push({
          planName: "MCP monthly",
          remaining: mcp.remaining || 0,
          used: mcp.currentValue || 0,
          total: mcp.usage || 1000,
          unit: "times",
        });
      }

      return result;
    }
    return [
      {
        isValid: false,
        invalidMessage: response.msg || "Query failed"
      }
    ];
  }
})'''

# 10. Cline Pass: the script Cline Pass Switcher puts in the ccswitch:// deep link (USAGE_SCRIPT,
#     the lines joined with "\n"); {{baseUrl}} is https://api.cline.bot/api. One plan: the tightest
#     of the 5-hour / weekly / monthly windows. Source: lnsane/cline-pass-switcher-desktop
#     src/renderer/js/ccswitch.js @ 44de8948.
CLINE_PASS = '''({
  request: {
    url: "{{baseUrl}}/v1/users/me/plan/usage-limits",
    method: "GET",
    headers: {
      accept: "*/*",
      Authorization: "Bearer {{apiKey}}",
      "User-Agent": "cc-switch/1.0",
    },
  },
  extractor: function (response) {
    var WINDOWS = [
      { key: "five_hour", label: "5小时" },
      { key: "weekly", label: "本周" },
      { key: "monthly", label: "本月" },
    ];

    var body = response;
    if (typeof body === "string") {
      try { body = JSON.parse(body); } catch (e) { body = null; }
    }
    if (!body || typeof body !== "object") {
      return { isValid: false, invalidMessage: "响应无法解析" };
    }

    var data = body.data || body;
    var limits = data && data.limits;

    if (body.success === false || !Array.isArray(limits)) {
      return {
        isValid: false,
        invalidMessage: body.error || body.message || "套餐不可用或凭证已失效",
      };
    }
    if (limits.length === 0) {
      return { isValid: false, invalidMessage: "未返回额度信息" };
    }

    var byType = {};
    for (var i = 0; i < limits.length; i++) {
      var item = limits[i];
      var pct = Number(item && item.percentUsed);
      if (!item || !item.type || isNaN(pct)) continue;
      byType[item.type] = { pct: pct, resetsAt: item.resetsAt };
    }

    var order = [];
    for (var w = 0; w < WINDOWS.length; w++) {
      if (byType[WINDOWS[w].key]) order.push(WINDOWS[w].key);
    }
    for (var t in byType) {
      if (order.indexOf(t) === -1) order.push(t);
    }
    if (order.length === 0) {
      return { isValid: false, invalidMessage: "额度字段格式异常" };
    }

    function label(key) {
      for (var w = 0; w < WINDOWS.length; w++) {
        if (WINDOWS[w].key === key) return WINDOWS[w].label;
      }
      return key;
    }
    function countdown(iso) {
      var ms = Date.parse(iso) - Date.now();
      if (isNaN(ms) || ms <= 0) return "";
      var mins = Math.floor(ms / 60000);
      var days = Math.floor(mins / 1440);
      var hours = Math.floor((mins % 1440) / 60);
      mins = mins % 60;
      if (days > 0) return days + "天" + hours + "小时后重置";
      if (hours > 0) return hours + "小时" + mins + "分后重置";
      return mins + "分钟后重置";
    }

    // 以最紧张的窗口作为剩余额度口径
    var worstKey = order[0];
    for (var o = 1; o < order.length; o++) {
      if (byType[order[o]].pct > byType[worstKey].pct) worstKey = order[o];
    }

    var parts = [];
    for (var p = 0; p < order.length; p++) {
      var k = order[p];
      var cd = countdown(byType[k].resetsAt);
      parts.push(label(k) + "已用 " + byType[k].pct + "%" + (cd ? "，" + cd : ""));
    }

    var used = Math.round(byType[worstKey].pct * 100) / 100;
    return {
      isValid: true,
      planName: "Cline Pass",
      unit: "%",
      total: 100,
      used: used,
      remaining: Math.max(0, Math.round((100 - used) * 100) / 100),
      extra: parts.join(" | "),
    };
  },
})'''

# 11. sub2api's "import to CC Switch" script as first published: it reads response.balance, which
#     sub2api's own GET /v1/usage never sends (it answers isValid/planName/remaining/unit), so
#     cc-switch shows a bare "USD" with no amount. Source: Wei-Shaw/sub2api
#     frontend/src/views/user/KeysView.vue @ d3e73f12 (2025-12-27); the answer's shape from
#     backend/internal/handler/gateway_handler.go (Usage) at the same commit.
SUB2API_2025 = '''({
    request: {
      url: "{{baseUrl}}/v1/usage",
      method: "GET",
      headers: { "Authorization": "Bearer {{apiKey}}" }
    },
    extractor: function(response) {
      return {
        isValid: response.is_active || true,
        remaining: response.balance,
        unit: "USD"
      };
    }
  })'''

# 12. sub2api's current script: optional chaining, "??", a shorthand property.
#     Source: Wei-Shaw/sub2api frontend/src/views/user/KeysView.vue @ 01b23767.
SUB2API = '''({
    request: {
      url: "{{baseUrl}}/v1/usage",
      method: "GET",
      headers: { "Authorization": "Bearer {{apiKey}}" }
    },
    extractor: function(response) {
      const remaining = response?.remaining ?? response?.quota?.remaining ?? response?.balance;
      const unit = response?.unit ?? response?.quota?.unit ?? "USD";
      return {
        isValid: response?.is_active ?? response?.isValid ?? true,
        remaining,
        unit
      };
    }
  })'''

# 13. The BistroCode preset of a cc-switch fork's universal providers (New API's documented
#     GET /api/usage/token/, unlimited keys as remaining and total -1). Source: a
#     src/config/universalProviderPresets.ts (createUniversalProviderFromPreset, usage_script.code)
#     found in the public code index; which fork holds it could not be resolved.
BISTROCODE = '''({
  request: {
    url: "{{baseUrl}}/api/usage/token/",
    method: "GET",
    headers: {
      "Content-Type": "application/json",
      "Authorization": "Bearer {{apiKey}}",
      "User-Agent": "BistroCode/1.0"
    }
  },
  extractor: function (response) {
    if ((response.code === true || response.success === true) && response.data) {
      const quotaPerUnit = 500000;
      const unlimited = response.data.unlimited_quota === true;
      return {
        planName: response.data.name || "BistroCode",
        remaining: unlimited ? -1 : response.data.total_available / quotaPerUnit,
        used: response.data.total_used / quotaPerUnit,
        total: unlimited ? -1 : response.data.total_granted / quotaPerUnit,
        unit: "USD"
      };
    }
    return {
      isValid: false,
      invalidMessage: response.message || "Query failed"
    };
  }
})'''

# 14. A DeepSeek balance example written for cc-switch's script format by another app
#     (User-Agent braid/1.0; BALANCE_SCRIPT_EXAMPLE): single quotes, a comment between the
#     properties, and an absolute https URL. Its host is rewritten to the fake by the test
#     (`braid_deepseek`), nothing else. Source: a TypeScript module in the public code index whose
#     repository could not be resolved. Answered as DeepSeek's documented GET /user/balance.
BRAID_DEEPSEEK = '''({
  request: {
    url: 'https://api.deepseek.com/user/balance',
    method: 'GET',
    headers: {
      Authorization: 'Bearer {{apiKey}}',
      'User-Agent': 'braid/1.0',
    },
  },
  // response 是接口返回的 JSON；返回 { isValid, remaining, unit } 即可
  extractor: function (response) {
    var info = response.balance_infos && response.balance_infos[0];
    return {
      isValid: !response.error && response.is_available === true,
      remaining: info && info.total_balance ? parseFloat(info.total_balance) : null,
      unit: info && info.currency ? info.currency : '',
    };
  },
})'''


# ----------------------------------------------------------------------------- the test harness

SCRIPTS = {  # plugin id -> script; two ids may run one script against different answers
    "general": GENERAL, "newapi": NEW_API, "custom": CUSTOM, "help": HELP, "docs_zh": DOCS_ZH_NEW_API,
    "docs_zh_denied": DOCS_ZH_NEW_API, "help_2025": HELP_2025, "token_2025": TOKEN_2025,
    "token_2025_unlimited": TOKEN_2025, "minimax": MINIMAX, "zhipu": ZHIPU, "clinepass": CLINE_PASS,
    "sub2api_2025": SUB2API_2025, "sub2api": SUB2API, "bistrocode": BISTROCODE,
    "bistrocode_unlimited": BISTROCODE, "braid_deepseek": BRAID_DEEPSEEK,
}

# New API's GET /api/user/self (QuantumNous/new-api controller/user.go GetSelf), trimmed.
NEW_API_SELF = {"success": True, "message": "", "data": {
    "id": 42, "username": "alice", "display_name": "alice", "role": 1, "status": 1, "email": "",
    "group": "vip", "quota": 6_250_000, "used_quota": 1_250_000, "request_count": 321, "aff_code": "x1"}}
# New API's GET /api/usage/token (controller/token.go GetTokenUsage; docs: GET /api/usage/token/).
TOKEN_USAGE = {"code": True, "message": "ok", "data": {
    "object": "token_usage", "name": "work", "total_granted": 10_000_000, "total_used": 2_500_000,
    "total_available": 7_500_000, "unlimited_quota": False, "model_limits": {}, "model_limits_enabled": False,
    "expires_at": 0}}
# An unlimited key, as New API reports it (remain goes negative, granted stays 0).
TOKEN_USAGE_UNLIMITED = {"code": True, "message": "ok", "data": {
    "object": "token_usage", "name": "Key2", "total_granted": 0, "total_used": 27_099_744,
    "total_available": -27_099_744, "unlimited_quota": True, "model_limits": {}, "model_limits_enabled": False,
    "expires_at": 0}}
# sub2api's GET /v1/usage for a wallet-balance key.
SUB2API_USAGE = {"isValid": True, "planName": "钱包余额", "remaining": 12.34, "unit": "USD"}

MINIMAX_PATH = "/minimax/v1/api/openplatform/coding_plan/remains"
ZHIPU_PATH = "/zhipu/api/monitor/usage/quota/limit"


def settings(base: str, **values) -> PluginSettings:
    return PluginSettings(config={"baseUrl": base, **values}, allow_private_network=True,
                          breaker=BreakerConfig(enabled=False))


def plugins_for(url: str) -> dict[str, PluginSettings]:
    """Each station's own path on the fake, so that every request is told apart by its path."""
    def at(name: str, **values) -> PluginSettings:
        return settings(f"{url}/{name}", **values)

    return {
        "general": at("general", apiKey="sk-general"),
        "newapi": at("newapi", accessToken="at-newapi", userId="42"),
        "custom": at("custom", apiKey="sk-custom"),
        "help": at("help", apiKey="sk-help"),
        "docs_zh": at("docs_zh", accessToken="at-zh", userId="7"),
        "docs_zh_denied": at("docs_zh_denied", accessToken="at-stale", userId="7"),
        "help_2025": at("help_2025", apiKey="sk-body"),
        "token_2025": at("token_2025", apiKey="sk-token"),
        "token_2025_unlimited": at("token_2025_unlimited", apiKey="sk-token-unl"),
        "minimax": settings(url + MINIMAX_PATH, apiKey="mm-key"),
        "zhipu": settings(url + ZHIPU_PATH, apiKey="zp-key.secret"),
        "clinepass": at("clinepass/api", apiKey="cp-key"),
        "sub2api_2025": at("sub2api_2025", apiKey="sk-s2a-old"),
        "sub2api": at("sub2api", apiKey="sk-s2a"),
        "bistrocode": at("bistrocode", apiKey="sk-bistro"),
        "bistrocode_unlimited": at("bistrocode_unlimited", apiKey="sk-bistro-unl"),
        "braid_deepseek": settings(url, apiKey="sk-deepseek"),  # the URL is in the script
    }


def later(**delta) -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(**delta)


@pytest.fixture
def stations(plugin_dir, fake_http):
    f = fake_http
    reset_ms = int(later(hours=3).timestamp() * 1000)
    for name, script in SCRIPTS.items():
        if name == "braid_deepseek":  # only the host of its absolute URL changes: to the fake's
            script = script.replace("https://api.deepseek.com/", f.url + "/")
        (plugin_dir.root / f"{name}.usage.js").write_text(script, encoding="utf-8")

    f.json("GET", "/general/user/balance", {"is_active": True, "balance": 23.45})
    f.json("GET", "/newapi/api/user/self", NEW_API_SELF)
    f.json("POST", "/help/api/usage", {"balance": 7.5})
    f.json("GET", "/docs_zh/api/user/self", {**NEW_API_SELF, "data": {**NEW_API_SELF["data"], "group": ""}})
    f.route("GET", "/docs_zh_denied/api/user/self", lambda request: web.json_response(  # UTF-8, as Go sends it
        {"success": False, "message": "无权进行此操作，access token 无效"}, status=401,
        dumps=lambda o: json.dumps(o, ensure_ascii=False)))
    bodies: list[str] = []

    async def help_2025(request: web.Request) -> web.Response:
        bodies.append(await request.text())
        return web.json_response({"balance": 0.75})

    f.route("POST", "/help_2025/api/usage", help_2025)
    f.json("GET", "/token_2025/api/usage/token", TOKEN_USAGE)
    f.json("GET", "/token_2025_unlimited/api/usage/token", TOKEN_USAGE_UNLIMITED)
    f.json("GET", MINIMAX_PATH, {
        "model_remains": [{
            "start_time": 1_767_225_600_000, "end_time": 1_767_243_600_000, "remains_time": 8_340_000,
            "current_interval_total_count": 1500, "current_interval_usage_count": 1320, "model_name": "MiniMax-M2",
            "current_weekly_total_count": 15000, "current_weekly_usage_count": 14100}],
        "base_resp": {"status_code": 0, "status_msg": "success"}})
    f.json("GET", ZHIPU_PATH, {"code": 200, "msg": "操作成功", "success": True, "data": {"level": "pro", "limits": [
        {"type": "TIME_LIMIT", "unit": 5, "number": 1, "usage": 1000, "currentValue": 130, "remaining": 870,
         "percentage": 13, "nextResetTime": reset_ms, "usageDetails": [{"modelCode": "search-prime", "usage": 130}]},
        {"type": "TOKENS_LIMIT", "unit": 3, "number": 5, "percentage": 23, "nextResetTime": reset_ms},
        {"type": "TOKENS_LIMIT", "unit": 6, "number": 1, "percentage": 41, "nextResetTime": reset_ms}]}})
    f.json("GET", "/clinepass/api/v1/users/me/plan/usage-limits", {"success": True, "data": {"limits": [
        {"type": "five_hour", "percentUsed": 37.5, "resetsAt": later(hours=2, minutes=30).isoformat()},
        {"type": "weekly", "percentUsed": 62.25, "resetsAt": later(days=3, hours=4).isoformat()},
        {"type": "monthly", "percentUsed": 20, "resetsAt": later(days=20).isoformat()}]}})
    f.json("GET", "/sub2api_2025/v1/usage", SUB2API_USAGE)
    f.json("GET", "/sub2api/v1/usage", SUB2API_USAGE)
    f.json("GET", "/bistrocode/api/usage/token/", TOKEN_USAGE)
    f.json("GET", "/bistrocode_unlimited/api/usage/token/", TOKEN_USAGE_UNLIMITED)
    f.json("GET", "/user/balance", {"is_available": True, "balance_infos": [
        {"currency": "CNY", "total_balance": "110.00", "granted_balance": "10.00", "topped_up_balance": "100.00"}]})
    return bodies


# What cc-switch shows for each answer: the first element's remaining (None: not shown), unit,
# total and used, and whether the station sets no limit (a remaining or total of -1: "∞").
#        id: (balance, unit, quota, used, unlimited, planName of the headline)
HEADLINES = {
    "general": (23.45, "USD", None, None, False, None),
    "newapi": (12.5, "USD", 15.0, 2.5, False, "vip"),
    "help": (7.5, "USD", None, None, False, None),
    "docs_zh": (12.5, "USD", 15.0, 2.5, False, "默认套餐"),
    "help_2025": (0.75, "USD", None, None, False, None),
    "token_2025": (15.0, "USD", 20.0, 5.0, False, "work"),
    "token_2025_unlimited": (None, "USD", None, 54.199488, True, "Key2"),
    "minimax": (1320.0, "times", 1500.0, 180.0, False, "MiniMax-M2"),
    "zhipu": (77.0, "%", None, 23.0, False, "PRO · 5-hour quota"),
    "clinepass": (37.75, "%", 100.0, 62.25, False, "Cline Pass"),
    "sub2api": (12.34, "USD", None, None, False, None),
    "bistrocode": (15.0, "USD", 20.0, 5.0, False, "work"),
    "bistrocode_unlimited": (None, "USD", None, 54.199488, True, "Key2"),
    "braid_deepseek": (110.0, "CNY", None, None, False, None),
}

# (method, path) each station's script must have asked, and headers it must have sent.
REQUESTS = {
    "general": ("GET", "/general/user/balance", {"Authorization": "Bearer sk-general", "User-Agent": "cc-switch/1.0"}),
    "newapi": ("GET", "/newapi/api/user/self", {
        "Authorization": "Bearer at-newapi", "New-Api-User": "42", "Content-Type": "application/json",
        "User-Agent": "cc-switch/1.0"}),
    "help": ("POST", "/help/api/usage", {"Authorization": "Bearer sk-help", "User-Agent": "cc-switch/1.0"}),
    "docs_zh": ("GET", "/docs_zh/api/user/self", {"Authorization": "Bearer at-zh", "New-Api-User": "7"}),
    "docs_zh_denied": ("GET", "/docs_zh_denied/api/user/self", {"Authorization": "Bearer at-stale"}),
    "help_2025": ("POST", "/help_2025/api/usage", {"Authorization": "Bearer sk-body"}),
    "token_2025": ("GET", "/token_2025/api/usage/token", {"Authorization": "Bearer sk-token"}),
    "token_2025_unlimited": ("GET", "/token_2025_unlimited/api/usage/token", {"Authorization": "Bearer sk-token-unl"}),
    "minimax": ("GET", MINIMAX_PATH, {"Authorization": "Bearer mm-key", "User-Agent": "cc-switch/1.0"}),
    "zhipu": ("GET", ZHIPU_PATH, {"Authorization": "zp-key.secret", "Content-Type": "application/json"}),
    "clinepass": ("GET", "/clinepass/api/v1/users/me/plan/usage-limits", {
        "Authorization": "Bearer cp-key", "Accept": "*/*", "User-Agent": "cc-switch/1.0"}),
    "sub2api_2025": ("GET", "/sub2api_2025/v1/usage", {"Authorization": "Bearer sk-s2a-old"}),
    "sub2api": ("GET", "/sub2api/v1/usage", {"Authorization": "Bearer sk-s2a"}),
    "bistrocode": ("GET", "/bistrocode/api/usage/token/", {
        "Authorization": "Bearer sk-bistro", "User-Agent": "BistroCode/1.0", "Content-Type": "application/json"}),
    "bistrocode_unlimited": ("GET", "/bistrocode_unlimited/api/usage/token/", {"Authorization": "Bearer sk-bistro-unl"}),
    "braid_deepseek": ("GET", "/user/balance", {"Authorization": "Bearer sk-deepseek", "User-Agent": "braid/1.0"}),
}


def headline(b) -> tuple:
    plans = (b.raw_data or {}).get("plans") or [{}]
    return (b.balance, b.currency, b.quota, b.used_quota, b.unlimited, plans[0].get("planName"))


async def test_published_scripts_show_what_cc_switch_shows(stations, make_host, fake_http):
    bodies = stations
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1), plugins=plugins_for(fake_http.url)) as h:
        infos = {i.id: i for i in h.plugins()}
        results = {b.provider: b for b in await h.query_balances(refresh=True)}

    # The skeleton with an empty URL is refused, as cc-switch refuses it; every other one runs.
    assert infos["custom"].state == "error" and "request.url" in (infos["custom"].error or "")
    assert all(i.state == "running" for pid, i in infos.items() if pid != "custom"), {
        pid: i.error for pid, i in infos.items() if i.state != "running"}

    # Every headline at once, so that one misread does not hide another.
    got = {pid: headline(results[pid]) if results[pid].status == "success" else
           (results[pid].status, results[pid].error_type, results[pid].error_message) for pid in HEADLINES}
    assert got == HEADLINES

    # ... and each request as the script wrote it.
    for pid, (method, path, headers) in REQUESTS.items():
        sent = [(m, p, hs) for m, p, hs in fake_http.requests if p.split("?")[0] == path]
        assert len(sent) == 1, (pid, [p for _, p, _ in fake_http.requests])
        m, _, hs = sent[0]
        assert m == method, pid
        assert {k: hs.get(k) for k in headers} == headers, pid
    assert bodies == ['{"key":"value"}']  # JSON.stringify({ key: "value" }), sent as the script's body

    # The other plans are listed, in the script's order.
    plans = {pid: [(p.get("planName"), p.get("remaining"), p.get("unit")) for p in results[pid].raw_data["plans"]]
             for pid in ("minimax", "zhipu")}
    assert plans["minimax"] == [("MiniMax-M2", 1320, "times"), ("MiniMax-M2 · Weekly quota", 14100, "times")]
    assert plans["zhipu"] == [("PRO · 5-hour quota", 77, "%"), ("PRO · Weekly quota", 59, "%"),
                              ("MCP monthly", 870, "times")]
    minimax = results["minimax"].raw_data["plans"][0]
    assert minimax["extra"] == "Resets in 2 hr 19 min"  # remains_time 8,340,000 ms
    assert results["zhipu"].raw_data["plans"][0]["extra"].endswith(" reset")
    cline = results["clinepass"].raw_data["plans"][0]["extra"]
    assert cline.startswith("5小时已用 37.5%，2小时") and "本周已用 62.25%，3天" in cline, cline

    # A station refusing the token (401): cc-switch shows "HTTP 401 : <body>"; here an AUTH_ERROR
    # quoting the same body.
    b = results["docs_zh_denied"]
    assert (b.status, b.error_type) == ("error", "AUTH_ERROR") and "access token 无效" in b.error_message

    # sub2api's first script reads a field sub2api never sends: cc-switch shows "USD" and no
    # amount at all; a balance result cannot be valid and empty, so it is an error naming why.
    b = results["sub2api_2025"]
    assert (b.status, b.error_type) == ("error", "PARSE_ERROR"), b
    assert "neither a remaining nor a used amount" in b.error_message
