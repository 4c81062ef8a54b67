"use strict";
// The Plugin Host dashboard: plain DOM over the HTTP API, no build step, nothing from another
// origin. Server text (plugin names, config schemas, errors, log lines) is untrusted: it only
// ever reaches the page as textContent or an attribute value, never as markup; it is shown
// bidi-isolated (bdi(), isolated()) so that a right-to-left override in it cannot reorder the
// text around it; a field name of a config schema never becomes a property we read (no lookups
// by name, no methods called on a form once its controls are in it, objects keyed by it built
// with own properties only).

const POLL_MS = 2000;           // plugins and the log view are polled this often, never faster
const LOG_LIMIT = 500;          // entries asked for per log request
const LOG_KEEP = 1000;          // entries kept on the page
const TOKEN_KEY = "plugin-host.admin-token";
const LEVELS = ["debug", "info", "warning", "error"];
const BADGES = new Set([        // states that have a colour; any other text gets a plain badge
  "running", "degraded", "error", "disabled", "stopped", "discovered", "loading", "loaded",
  "closed", "open", "half_open", "success", "timeout", "invalid",
  "starting", "ready", "stopping", "crashed", "pending",
]);

const $ = (selector) => document.querySelector(selector);
const enc = encodeURIComponent;

/** An element with properties (never innerHTML) and children (strings become text nodes). */
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node[key] = value;
  }
  // Through the prototype, in one call: on a <form>, a control named "append" would otherwise
  // replace the method for every child after it.
  Element.prototype.append.call(node, ...children.filter((child) => child != null));
  return node;
}

/** Untrusted text as an element of its own, bidi-isolated from what is around it (and wrapped
 * anywhere, so that one long word cannot widen the page). */
function bdi(text) {
  return el("bdi", { text: String(text) });
}

/** Untrusted text inside a string that can hold no markup (an option, a placeholder, an SVG
 * title): between FIRST STRONG ISOLATE and POP DIRECTIONAL ISOLATE, the bdi of plain text. */
function isolated(text) {
  return `\u2068${text}\u2069`;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text != null) node.textContent = text;
  return node;
}

function badge(text) {
  const node = el("span", { class: "badge", text: String(text) });
  if (BADGES.has(text)) node.classList.add(`is-${text}`);
  return node;
}

// ---------------------------------------------------------------------------------- time

// Server time minus ours, from the Date header: used only when the clocks differ by more than
// that header's one-second grain, so that ages stay right in a browser on another machine.
let clockOffset = 0;

function noteServerDate(response) {
  const date = Date.parse(response.headers.get("Date") || "");
  if (!Number.isNaN(date)) {
    const offset = date - Date.now();
    clockOffset = Math.abs(offset) > 2000 ? offset : 0;
  }
}

function ageText(unixSeconds) {
  const s = Math.max(0, (Date.now() + clockOffset) / 1000 - unixSeconds);
  if (s < 1) return "<1 s";
  if (s < 60) return `${Math.round(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h`;
  return `${Math.floor(s / 86400)} d`;
}

const pad = (n, width = 2) => String(n).padStart(width, "0");
const clock = (d) => `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;

function number(x) {
  if (typeof x !== "number" || !Number.isFinite(x)) return "—";
  return x.toLocaleString("en-US", { maximumFractionDigits: Math.abs(x) < 1 ? 4 : 2 });
}

// ---------------------------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, type, message, token) {
    super(message);
    this.status = status;
    this.type = type;
    this.token = token;  // the token the request was sent with (null: none)
  }
}

/** One request, with the stored token if there is one (a server with a token wants it on
 * reads too); the decoded JSON, or an ApiError with the server's {error: {type, message}}. */
async function api(method, path, body) {
  const headers = {};
  const init = { method, headers, cache: "no-store" };
  if (body instanceof FormData) {
    init.body = body;  // a file upload (packages.js): the browser sets its multipart type
  } else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, "NetworkError", "the server did not answer", token);
  }
  noteServerDate(response);
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    // not JSON: the status says what happened
  }
  if (!response.ok) {
    const err = (data && typeof data.error === "object" && data.error) || {};
    throw new ApiError(response.status, String(err.type || err.name || "HTTPError"),
      String(err.message || `${response.status} ${response.statusText}`), token);
  }
  return data;
}

// ---------------------------------------------------------------------------------- tokens

const pending = new Set();  // what to run again once a token is given

function renderAuth() {
  const set = Boolean(sessionStorage.getItem(TOKEN_KEY));
  $("#auth-state").textContent = set ? "token set" : "no token";
  $("#logout").hidden = !set;
}

/** Open the login form with ``message`` (or, when it is open already, keep what is typed in
 * it: reads that are polled ask again every round). */
function showLogin(message, retry = null) {
  if (retry) pending.add(retry);
  $("#login-message").textContent = message;
  if (!$("#login").hidden) return;
  $("#login").hidden = false;
  $("#token").value = "";
  $("#token").focus();
}

function hideLogin() {
  pending.clear();
  $("#login").hidden = true;
  $("#token").value = "";
}

/** A 401 to a read (``reading``) or a change: ask for a token; ``retry`` (when given) runs once
 * one is given. A request that went out before the current token was given says nothing about
 * it: it is only tried again. */
function tokenRefused(error, reading, retry) {
  const current = sessionStorage.getItem(TOKEN_KEY);
  if (current && current !== error.token) {
    if (retry) setTimeout(retry, 0);  // after the caller has shown this failure
  } else if (current && !reading) {  // kept: a read token, refused a change, still reads
    showLogin("This action needs the admin token: the server refused the token given.", retry);
  } else if (error.token) {
    sessionStorage.removeItem(TOKEN_KEY);
    renderAuth();
    showLogin("The server refused that token: enter the right one to continue.", retry);
  } else if (!reading || $("#login").hidden) {
    showLogin(reading ? "This server needs a token to be read (the admin or the read token): enter it to continue."
      : "This action needs the admin token: enter it to continue.", retry);
  } else if (retry) {
    pending.add(retry);  // the open form keeps its message: a poll failing behind it must not hide a refusal
  }
}

/** A request that the server may refuse without the token (with a token configured, every API
 * request: reads need the admin or the read-only token, changes the admin one): a 401 opens the
 * login form, and ``retry`` (when given) runs once a token is given. */
async function request(method, path, body, retry = null) {
  try {
    return await api(method, path, body);
  } catch (e) {
    if (e.status === 401) {
      tokenRefused(e, method === "GET", retry);
      e.message = method === "GET" ? "token required" : "admin token required";
    }
    throw e;
  }
}

function setupAuth() {
  $("#login").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("#token").value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    const retries = [...pending];
    hideLogin();
    renderAuth();
    for (const retry of retries) retry();
  });
  $("#login-toggle").addEventListener("click", () => {
    if ($("#login").hidden) showLogin("Every request to the API sends this token. It is kept for this tab only.");
    else hideLogin();
  });
  $("#login-cancel").addEventListener("click", hideLogin);
  $("#logout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    renderAuth();
  });
  renderAuth();
}

// ---------------------------------------------------------------------------------- plugins

const rows = new Map();    // "id@version" -> the row's nodes and state
let selected = null;       // the plugin id (or "station:NAME") shown in the config and log panels
let pluginIds = [];        // as last polled
let balancePlugins = [];   // the running plugins with the "balance" capability: station templates
const STATION = "station:";
const stationList = new Map();  // name -> the station as GET /api/stations gives it

/** The plugin whose log and schema a selection shows: a station's provider, else itself. */
function pluginOf(id) {
  if (id == null || !id.startsWith(STATION)) return id;
  const station = stationList.get(id.slice(STATION.length));
  return station ? station.plugin : null;
}

// "approve" last: it appears only while a version waits, and must not shift the buttons that
// are always there (a click meant for restart must never land on it).
const ACTIONS = {
  restart: ["restarting…", "restarted"],
  reload: ["reloading…", "reloaded"],
  enable: ["enabling…", "enabled"],
  disable: ["disabling…", "disabled"],
  approve: ["approving…", "approved"],
};

/** The grants a newer version of the plugin asks for beyond its approved ones (none: []). */
function waitingGrants(info) {
  return Array.isArray(info.pending_approval) ? info.pending_approval : [];
}

function actionAllowed(action, info) {
  const state = info.state;
  if (action === "enable") return state === "disabled" || state === "error" || state === "stopped";
  if (action === "disable") return state !== "disabled";
  if (action === "approve") return waitingGrants(info).length !== 0;
  return true;
}

/** The state's badge and, while a version waits for approval, what it asks for: each grant is
 * the plugin's text (a net host, an env name), so each is a bdi of its own. */
function stateCell(info) {
  const grants = waitingGrants(info);
  const parts = [badge(info.state)];
  if (!grants.length) return parts;
  if (info.state !== "pending") {
    parts.push(" ", el("span", { class: "badge is-pending", text: "pending approval" }));
  }
  parts.push(el("div", { class: "grants" }, el("span", { class: "muted", text: "asks for" }),
    el("ul", {}, ...grants.map((grant) => el("li", {}, bdi(grant))))));
  return parts;
}

function makeRow(key) {
  const row = { key, busy: false, buttons: {} };
  row.idButton = el("button", { type: "button", class: "link", title: "configuration and log",
    onclick: () => selectPlugin(row.id, true) });
  row.name = el("div", { class: "muted" });
  row.error = el("div", { class: "error" });
  row.state = el("td");
  row.version = el("td", { class: "version" });
  row.workers = el("td");
  row.p50 = el("td", { class: "num" });
  row.errorRate = el("td", { class: "num" });
  row.circuit = el("td");
  row.restarts = el("td", { class: "num" });
  row.message = el("div", { class: "action-msg" });
  const actions = el("div", { class: "actions" });
  for (const action of Object.keys(ACTIONS)) {
    row.buttons[action] = el("button", { type: "button", text: action, dataset: { action },
      onclick: () => runAction(row, action) });
    if (action === "approve") {
      row.buttons[action].title = "grant what the waiting version asks for (listed under its state)";
    }
    actions.append(row.buttons[action]);
  }
  if (typeof packageButtons === "function") actions.append(...packageButtons(row));  // packages.js
  row.tr = el("tr", { dataset: { plugin: key } },
    el("td", {}, row.idButton, row.name, row.error), row.state, row.version, row.workers,
    row.p50, row.errorRate, row.circuit, row.restarts, el("td", {}, actions, row.message));
  return row;
}

function workerList(workers) {
  if (!workers.length) return el("span", { class: "muted", text: "—" });
  const list = el("ul", { class: "workers" });
  for (const w of workers) {
    const beat = w.last_heartbeat == null ? "no heartbeat yet" : `♥ ${ageText(w.last_heartbeat)} ago`;
    const whose = w.process == null ? "" : `p${w.process} `;  // serve --processes: each numbers from 1
    list.append(el("li", { dataset: { worker: whose ? `${w.process}.${w.index}` : String(w.index) } },
      el("span", { class: "pid", text: whose + (w.pid == null ? "—" : String(w.pid)) }), " ",
      badge(w.state), " ",
      el("span", { class: "heartbeat muted", text: beat }), " ",
      el("span", { class: "calls muted", text: `${w.calls} call${w.calls === 1 ? "" : "s"}` })));
  }
  return list;
}

function updateRow(row, info, target) {
  row.info = info;
  row.id = info.id;
  row.target = target;
  row.idButton.replaceChildren(bdi(info.id));
  row.name.replaceChildren(...(info.name && info.name !== info.id ? [bdi(info.name)] : []));
  const problem = [];
  if (info.error) problem.push(bdi(info.error));
  if (info.reload_error) problem.push(problem.length ? " · reload failed: " : "reload failed: ", bdi(info.reload_error));
  row.error.replaceChildren(...problem);
  row.state.replaceChildren(...stateCell(info));
  row.version.replaceChildren(info.version == null ? "—" : bdi(info.version));
  row.workers.replaceChildren(workerList(info.workers || []));
  row.p50.textContent = info.latency_p50_ms == null ? "—" : `${info.latency_p50_ms.toFixed(1)} ms`;
  row.errorRate.textContent = info.error_rate == null ? "—" : `${(info.error_rate * 100).toFixed(1)} %`;
  row.circuit.replaceChildren(badge(info.circuit));
  row.restarts.textContent = String(info.restarts);
  row.restarts.title = `${info.crashes} crashes, ${info.timeouts} timeouts`;
  for (const [action, button] of Object.entries(row.buttons)) {
    button.disabled = row.busy || !actionAllowed(action, info);
  }
  const grants = waitingGrants(info);
  row.buttons.approve.hidden = !grants.length;  // there only while a version waits
}

/** The table from one GET /api/plugins; ``asked`` is when that request started: a row that an
 * action answered for since then keeps that newer answer. */
function renderPlugins(list, asked) {
  const counts = new Map();
  for (const info of list) counts.set(info.id, (counts.get(info.id) || 0) + 1);
  const seen = new Set();
  const body = $("#plugins tbody");
  list.forEach((info, i) => {
    const key = info.version ? `${info.id}@${info.version}` : info.id;
    seen.add(key);
    let row = rows.get(key);
    if (!row) {
      row = makeRow(key);
      rows.set(key, row);
    }
    // Several versions of one id: each row acts on its own version.
    if (!(row.answeredAt > asked)) updateRow(row, info, counts.get(info.id) > 1 && info.version ? key : info.id);
    // In the server's order, moving a row only when it is out of place (a move loses focus).
    if (body.children[i] !== row.tr) body.insertBefore(row.tr, body.children[i] || null);
  });
  for (const [key, row] of rows) {
    if (!seen.has(key)) {
      row.tr.remove();
      rows.delete(key);
    }
  }
  $("#plugins").hidden = list.length === 0;
  $("#plugins-empty").hidden = list.length !== 0;
  pluginIds = [...counts.keys()];
  balancePlugins = list.filter((info) => (info.capabilities || []).includes("balance") &&
    (info.state === "running" || info.state === "degraded")).map((info) => info.id);
  renderPluginSelect(pluginIds);
}

async function runAction(row, action) {
  const [doing, done] = ACTIONS[action];
  row.busy = true;
  row.message.className = "action-msg muted";
  row.message.textContent = doing;
  updateRow(row, row.info, row.target);
  try {
    // approve names the grants the operator saw: the server refuses if what waits has changed since
    const body = action === "approve" ? { grants: waitingGrants(row.info) } : undefined;
    const info = await request("POST", `/api/plugins/${enc(row.target)}/${action}`, body,
      () => runAction(row, action));
    row.busy = false;
    row.answeredAt = performance.now();
    updateRow(row, info, row.target);
    row.message.textContent = done;
  } catch (e) {
    row.busy = false;
    updateRow(row, row.info, row.target);
    row.message.className = "action-msg error";
    row.message.replaceChildren(bdi(e.message));
  }
}

async function pollPlugins() {
  const asked = performance.now();
  try {
    // No retry after a 401: the next round asks again (never sooner than POLL_MS).
    renderPlugins(await request("GET", "/api/plugins"), asked);
    setStatus(false, `updated ${clock(new Date())}`);
  } catch (e) {
    setStatus(true, "cannot read the plugins: ", bdi(e.message));
  }
}

function setStatus(bad, ...parts) {
  const status = $("#status");
  status.replaceChildren(...parts);
  status.classList.toggle("error", bad);
  status.classList.toggle("muted", !bad);
}

// ---------------------------------------------------------------------------------- balances

let balanceAges = [];  // [node, unix seconds] re-rendered on every tick

async function loadBalances(refresh) {
  const button = $("#balances-refresh");
  const status = $("#balances-status");
  button.disabled = true;
  status.className = "muted";
  status.textContent = refresh ? "asking every station…" : "loading…";
  try {
    const list = await request("GET", refresh ? "/api/balances?refresh=1" : "/api/balances", undefined,
      () => loadBalances(refresh));
    // after the query: the alerts it raised are recorded by then
    const [stations, alerts] = await Promise.all([request("GET", "/api/stations"),
      request("GET", "/api/balances/alerts?limit=1000")]);
    stationList.clear();
    for (const station of stations) stationList.set(station.name, station);
    renderPluginSelect(pluginIds);
    renderBalances(list, latestAlerts(alerts));
    status.textContent = `updated ${clock(new Date())}`;
  } catch (e) {
    status.className = "error";
    status.replaceChildren(bdi(e.message));
  } finally {
    button.disabled = false;
  }
}

/** The newest alert of each station, when it is still in force (low balance, failing). */
function latestAlerts(alerts) {
  const latest = new Map();
  for (const alert of alerts) latest.set(alert.provider, alert);  // oldest first
  for (const [provider, alert] of latest) {
    if (alert.kind !== "low_balance" && alert.kind !== "failing") latest.delete(provider);
  }
  return latest;
}

function renderBalances(list, alerts = new Map()) {
  const box = $("#balances");
  balanceAges = [];
  box.replaceChildren();
  $("#balances-empty").hidden = list.length !== 0;
  for (const b of list) {
    const age = el("span");
    const updated = Date.parse(b.lastUpdated) / 1000;
    if (!Number.isNaN(updated)) balanceAges.push([age, updated]);
    const chart = el("div", { class: "chart" }, el("p", { class: "muted", text: "loading history…" }));
    // invalid: the station answered with an amount but calls its key or plan invalid (shown, in red)
    const tone = b.invalid ? "bad" : b.status === "success" ? "ok" : b.status === "not_configured" ? "idle" : "bad";
    const card = el("article", { class: `card status-${tone}`,
      dataset: { provider: b.provider } },
      el("div", { class: "card-head" },
        el("h3", {}, bdi(b.providerName || b.provider)), badge(b.invalid ? "invalid" : b.status)),
      el("div", { class: "muted" }, bdi(b.provider)));
    if (b.balance != null || b.unlimited) {
      card.append(el("p", { class: b.invalid ? "amount invalid" : "amount" },
        el("span", { class: "balance", text: b.unlimited ? "unlimited" : number(b.balance) }),
        " ", el("span", { class: "currency" }, bdi(b.currency || ""))));
    }
    if (b.quota != null || b.usedQuota != null) {
      const quota = el("p", { class: "quota", text: `used ${number(b.usedQuota)} of ${number(b.quota)}` });
      if (b.quota > 0 && b.usedQuota != null) {
        quota.append(" ", el("meter", { min: 0, max: b.quota, value: b.usedQuota, high: b.quota * 0.8 }));
      }
      card.append(quota);
    }
    if (b.status === "not_configured") {
      card.append(el("p", { class: "muted" }, "not configured: add an API key (Configure) — ", bdi(b.errorMessage || "")));
    } else if (b.errorMessage) {
      card.append(el("p", { class: "error" }, bdi(b.errorMessage),
        ...(b.errorType ? [" [", bdi(b.errorType), "]"] : [])));
      if (b.errorMessage.includes("allow_private_network") && b.plugin) card.append(privateNetworkOffer(b.plugin));
    }
    const alert = alerts.get(b.provider);
    if (alert) {
      card.classList.add(`alert-${alert.kind}`);
      card.append(el("p", { class: "alert", role: "alert" },
        alert.kind === "low_balance" ? "low balance: " : "failing: ", bdi(alert.message),
        el("span", { class: "muted small", text: ` (since ${clock(new Date(alert.time))})` })));
    }
    card.append(el("p", { class: "muted small" }, "updated ", age, " ago", b.stale ? " (stale: rate limited)" : b.cached ? " (cached)" : ""),
      cardActions(b), chart);
    box.append(card);
    loadHistory(b.provider, chart);
  }
  renderBalanceAges();
}

/** A card's buttons: Configure (the station's config, or its plugin's), and for a station
 * Test connection and (one added here, not in host.toml) Remove. */
function cardActions(b) {
  const station = stationList.get(b.provider);
  const result = el("div", { class: "test-result" });
  const buttons = el("div", { class: "actions" },
    el("button", { type: "button", text: "Configure", onclick: () =>
      selectPlugin(station ? STATION + station.name : b.provider, true) }));
  if (station) {
    buttons.append(el("button", { type: "button", text: "Test connection",
      onclick: (event) => testStation(station.name, event.target, result) }));
    if (station.origin === "added") {
      buttons.append(el("button", { type: "button", text: "Remove",
        onclick: (event) => removeStation(station.name, event.target, result) }));
    }
  }
  return el("div", { class: "card-actions" }, buttons, result);
}

/** A station on a private or loopback address: the admin may let its plugin reach it. */
function privateNetworkOffer(plugin) {
  const note = el("span", { class: "action-msg muted" });
  const button = el("button", { type: "button", class: "private-network",
    text: `Allow private network for ${plugin}`,
    title: "let this plugin reach private and loopback addresses (admin; audited; kept across restarts)",
    onclick: async () => {
      button.disabled = true;
      note.textContent = "allowing…";
      try {
        await request("POST", `/api/plugins/${enc(plugin)}/private-network`, { allow: true });
        await loadBalances(true);
      } catch (e) {
        button.disabled = false;
        note.className = "action-msg error";
        note.replaceChildren(bdi(e.message));
      }
    } });
  return el("div", { class: "card-actions" }, button, " ", note);
}

async function testStation(name, button, box) {
  button.disabled = true;
  box.replaceChildren(el("p", { class: "muted", text: "asking the station…" }));
  try {
    const report = await request("POST", `/api/stations/${enc(name)}/test`, undefined,
      () => testStation(name, button, box));
    const r = report.result;
    const verdict = report.ok ? el("p", { class: "ok" }, "connection works: ", bdi(`${number(r.balance)} ${r.currency || ""}`))
      : el("p", { class: "error" }, bdi(`${r.errorType || (r.invalid ? "invalid" : r.status)}: ${r.errorMessage || ""}`),
        ...(r.invalid ? [" (it answered ", bdi(`${number(r.balance)} ${r.currency || ""}`), ")"] : []));
    box.replaceChildren(verdict,
      el("div", { class: "muted small", text: "requests made" }),
      el("ul", { class: "requests" }, ...report.requests.map((line) => el("li", {}, bdi(line.replace(/^debug: fetchJson /, ""))))),
      el("div", { class: "muted small", text: "shape of the answer" }),
      el("pre", { class: "shape", text: JSON.stringify(report.shape, null, 2) }));
  } catch (e) {
    box.replaceChildren(el("p", { class: "error" }, bdi(e.message)));
  } finally {
    button.disabled = false;
  }
}

async function removeStation(name, button, box) {
  if (!window.confirm(`Remove station ${name}? Its history stays.`)) return;
  button.disabled = true;
  try {
    await request("DELETE", `/api/stations/${enc(name)}`);
    if (selected === STATION + name) selectPlugin(null, false);
    await loadBalances(false);
  } catch (e) {
    button.disabled = false;
    box.replaceChildren(el("p", { class: "error" }, bdi(e.message)));
  }
}

// ---- adding a station: from a provider plugin (its configSchema as the form) or a pasted usage script

const SCRIPT = "";  // the source select's value for a pasted usage script
const SCRIPT_SCHEMA = {
  baseUrl: { type: "string", description: "the station's address: {{baseUrl}} in the script" },
  apiKey: { type: "string", secret: true, description: "{{apiKey}} in the script" },
};
let adding = null;  // {schema, inputs}

function openAddStation() {
  const box = $("#station-add");
  box.hidden = !box.hidden;
  if (box.hidden) return;
  const source = $("#station-source");
  source.replaceChildren(...balancePlugins.map((id) => el("option", { value: id, text: `provider: ${id}` })),
    el("option", { value: SCRIPT, text: "usage script (paste it)" }));
  $("#station-message").textContent = "";
  renderStationFields();
  $("#station-name").focus();
}

async function renderStationFields() {
  const plugin = $("#station-source").value;
  $("#station-script-field").hidden = plugin !== SCRIPT;
  const fields = $("#station-fields");
  fields.replaceChildren(el("p", { class: "muted", text: "loading…" }));
  let schema = SCRIPT_SCHEMA;
  try {
    if (plugin !== SCRIPT) schema = await request("GET", `/api/plugins/${enc(plugin)}/schema`);
  } catch (e) {
    fields.replaceChildren(el("p", { class: "error" }, bdi(e.message)));
    return;
  }
  if ($("#station-source").value !== plugin) return;  // changed meanwhile
  adding = { schema, inputs: Object.create(null) };
  const nodes = [];
  for (const [key, field] of Object.entries(schema)) {
    const input = fieldInput(key, field, {});
    input.id = `station-cfg-${key}`;
    const error = el("span", { class: "field-error", role: "alert" });
    adding.inputs[key] = { input, error };
    nodes.push(el("div", { class: "field", dataset: { field: key } },
      el("label", { htmlFor: input.id }, bdi(field.title || key)),
      el("div", { class: "control" }, input,
        ...(field.description ? [el("div", { class: "muted small" }, bdi(field.description))] : []), error)));
  }
  fields.replaceChildren(...nodes);
}

async function submitStation(event) {
  event.preventDefault();
  if (!adding) return;
  const message = $("#station-message");
  const config = Object.create(null);
  let bad = false;
  for (const [key, field] of Object.entries(adding.schema)) {
    const { input, error } = adding.inputs[key];
    error.textContent = "";
    try {
      const value = readInput(input, field);
      if (value !== null) config[key] = value;
    } catch (e) {
      error.textContent = e.message;
      bad = true;
    }
  }
  if (bad) return;
  const plugin = $("#station-source").value;
  const low = $("#station-low").value.trim();
  const body = { name: $("#station-name").value.trim(), title: $("#station-title").value.trim() || null,
    lowBalance: low === "" ? null : Number(low), config: { ...config } };
  if (plugin === SCRIPT) body.script = $("#station-script").value;
  else body.plugin = plugin;
  message.className = "form-msg";
  message.textContent = "adding…";
  try {
    const station = await request("POST", "/api/stations", body, () => submitStation(event));
    message.className = "form-msg ok";
    message.replaceChildren("added ", bdi(station.name));
    $("#station-add").hidden = true;
    $("#station-form").reset();
    await loadBalances(true);
  } catch (e) {
    message.className = "form-msg error";
    message.replaceChildren(bdi(e.message));
  }
}

function renderBalanceAges() {
  for (const [node, when] of balanceAges) node.textContent = ageText(when);
}

async function loadHistory(provider, box) {
  try {
    const points = await request("GET", `/api/balances/history?provider=${enc(provider)}`, undefined,
      () => box.isConnected && loadHistory(provider, box));
    box.replaceChildren(points.length ? chart(points, provider)
      : el("p", { class: "muted", text: "No history yet." }));
  } catch (e) {
    box.replaceChildren(el("p", { class: "error" }, "history: ", bdi(e.message)));
  }
}

/** Balance over time as an inline SVG: a polyline with both axes labelled. */
function chart(points, provider) {
  const W = 320, H = 150, left = 56, right = 12, top = 12, bottom = 24;
  const data = points.map((p) => [Date.parse(p.time), p.balance])
    .filter(([t, v]) => Number.isFinite(t) && Number.isFinite(v));
  if (!data.length) return el("p", { class: "muted", text: "No history yet." });
  let [t0, t1] = [data[0][0], data[data.length - 1][0]];
  let lo = Math.min(...data.map((d) => d[1]));
  let hi = Math.max(...data.map((d) => d[1]));
  if (hi === lo) {
    const margin = Math.abs(hi) * 0.1 || 1;
    lo -= margin;
    hi += margin;
  }
  if (t1 === t0) {
    t0 -= 30_000;
    t1 += 30_000;
  }
  const x = (t) => left + ((t - t0) / (t1 - t0)) * (W - left - right);
  const y = (v) => top + (1 - (v - lo) / (hi - lo)) * (H - top - bottom);
  const when = (t) => {
    const d = new Date(t);
    if (t1 - t0 > 86_400_000) return `${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
    return t1 - t0 > 3_600_000 ? `${pad(d.getHours())}:${pad(d.getMinutes())}` : clock(d);
  };
  const currency = points[points.length - 1].currency || "";
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "history", role: "img" });
  root.append(svg("title", {},
    `balance history of ${isolated(provider)}${currency ? ` (${isolated(currency)})` : ""}`));
  const axis = { class: "axis" };
  root.append(svg("line", { ...axis, x1: left, y1: top, x2: left, y2: H - bottom }));
  root.append(svg("line", { ...axis, x1: left, y1: H - bottom, x2: W - right, y2: H - bottom }));
  root.append(svg("text", { x: left - 4, y: top + 4, "text-anchor": "end" }, number(hi)));
  root.append(svg("text", { x: left - 4, y: H - bottom, "text-anchor": "end" }, number(lo)));
  root.append(svg("text", { x: left, y: H - 6, "text-anchor": "start" }, when(t0)));
  root.append(svg("text", { x: W - right, y: H - 6, "text-anchor": "end" }, when(t1)));
  root.append(svg("polyline", { class: "line",
    points: data.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ") }));
  const [tl, vl] = data[data.length - 1];
  root.append(svg("circle", { class: "dot", cx: x(tl).toFixed(1), cy: y(vl).toFixed(1), r: 3 }));
  return root;
}

// ---------------------------------------------------------------------------------- plugin panels

function renderPluginSelect(plugins) {
  const select = $("#plugin-select");
  const ids = [...plugins, ...[...stationList.keys()].map((name) => STATION + name)];
  const current = [...select.options].map((o) => o.value);
  if (current.join("\n") !== ids.join("\n")) {
    select.replaceChildren(...ids.map((id) => el("option", { value: id,
      text: id.startsWith(STATION) ? `station ${id.slice(STATION.length)}` : id })));
  }
  if (!ids.includes(selected)) selectPlugin(ids[0] ?? null, false);
  else select.value = selected;
}

function selectPlugin(id, scroll) {
  if (id === selected) {
    if (scroll) $("#plugin-section").scrollIntoView({ behavior: "smooth" });
    return;
  }
  selected = id;
  $("#plugin-select").value = id ?? "";
  loadConfig(id);
  resetLog();
  if (scroll) $("#plugin-section").scrollIntoView({ behavior: "smooth" });
}

// ---- config form, generated from the plugin's configSchema

// The field names are the plugin's, and a form's named controls become properties of the form
// element ("replaceChildren", "onsubmit", ...): #config is a <div>; the <form> made in it for each
// plugin gets its listener before its controls and is never touched after; the controls carry no
// name, are found through form.inputs (no prototype); and every object keyed by field names is
// read with Object.hasOwn and built with own properties only ("__proto__" is a field name too).

let form = null;  // {id, schema, values, inputs: {key: {input, error}}, message, saved}

async function loadConfig(id) {
  const box = $("#config");
  form = null;
  if (id == null) {
    box.replaceChildren(el("p", { class: "muted", text: "No plugin selected." }));
    return;
  }
  box.replaceChildren(el("p", { class: "muted", text: "loading…" }));
  const station = id.startsWith(STATION) ? id.slice(STATION.length) : null;
  const path = station == null ? `/api/plugins/${enc(id)}/config` : `/api/stations/${enc(station)}/config`;
  try {
    const [schema, values] = await Promise.all([
      request("GET", `/api/plugins/${enc(pluginOf(id))}/schema`, undefined, reloadConfig),
      request("GET", path, undefined, reloadConfig)]);
    if (selected === id) renderConfig(id, schema, values, null, path);
  } catch (e) {
    if (selected === id) box.replaceChildren(el("p", { class: "error" }, bdi(e.message)));
  }
}

function reloadConfig() {
  loadConfig(selected);
}

function shown(value) {
  return typeof value === "string" ? value : JSON.stringify(value);
}

/** The stored value of ``key`` is set (the config has it, not its prototype, and not as null). */
function isStored(values, key) {
  return Object.hasOwn(values, key) && values[key] != null;
}

function fieldInput(key, field, values) {
  const has = isStored(values, key);
  const current = has ? values[key] : undefined;
  const hasDefault = Object.hasOwn(field, "default");
  const id = `cfg-${key}`;
  if (field.secret) {
    // Write-only: never prefilled; left empty, the stored secret is kept.
    return el("input", { id, type: "password", autocomplete: "new-password",
      placeholder: has ? "set — leave empty to keep" : "not set" });
  }
  if (Array.isArray(field.enum)) {
    const select = el("select", { id });
    const blank = hasDefault ? `— default (${isolated(shown(field.default))}) —` : "— choose —";
    select.append(el("option", { value: "", text: blank }));
    field.enum.forEach((choice, i) => select.append(el("option", { value: String(i), text: shown(choice) })));
    const index = has ? field.enum.findIndex((choice) => choice === current) : -1;
    select.value = index >= 0 ? String(index) : "";
    return select;
  }
  if (field.type === "boolean") {
    return el("input", { id, type: "checkbox",
      checked: has ? current === true : hasDefault && field.default === true });
  }
  const placeholder = hasDefault ? `default: ${isolated(shown(field.default))}` : "";
  if (field.type === "number" || field.type === "integer") {
    return el("input", { id, type: "number", step: field.type === "integer" ? "1" : "any",
      value: has ? String(current) : "", placeholder });
  }
  if (field.type === "object" || field.type === "array") {
    return el("textarea", { id, rows: 3, spellcheck: false, placeholder: placeholder || "JSON",
      value: has ? JSON.stringify(current, null, 2) : "" });
  }
  return el("input", { id, type: "text", value: has ? shown(current) : "", placeholder });
}

function renderConfig(id, schema, values, saved = null, path = `/api/plugins/${enc(id)}/config`) {
  const box = $("#config");
  const entries = Object.entries(schema || {});
  if (!entries.length) {
    form = null;
    box.replaceChildren(el("p", { class: "muted", text: "This plugin has no configuration." }));
    return;
  }
  form = {
    id, schema, values, path,
    inputs: Object.create(null),  // keyed by the plugin's field names: no prototype to collide with
    message: el("p", { class: "form-msg", role: "status" }),
    submit: el("button", { type: "submit", text: "Save" }),
    saved: el("dl", { class: "saved" }),
  };
  const fields = [];
  for (const [key, field] of entries) {
    const input = fieldInput(key, field, values);
    const error = el("span", { class: "field-error", role: "alert" });
    form.inputs[key] = { input, error };
    const label = el("label", { htmlFor: input.id }, bdi(field.title || key));
    if (field.required) label.append(el("span", { class: "required", text: " *", title: "required" }));
    const extra = [];
    if (field.secret) {
      const isSet = isStored(values, key);  // a stored secret comes back as the mask, "********"
      extra.push(el("span", { class: `secret-state ${isSet ? "is-set" : ""}`, text: isSet ? "set" : "not set" }));
    }
    if (field.description) extra.push(el("div", { class: "muted small" }, bdi(field.description)));
    fields.push(el("div", { class: "field", dataset: { field: key } },
      label, el("div", { class: "control" }, input, ...extra, error)));
  }
  // The listener is added before the controls go in, and nothing is read from the form after.
  const formNode = el("form", { noValidate: true, autocomplete: "off", onsubmit: (event) => {
    event.preventDefault();
    submitConfig();
  } }, ...fields, el("div", { class: "form-foot" }, form.submit, form.message), form.saved);
  box.replaceChildren(formNode);
  if (saved) {
    form.message.className = "form-msg ok";
    form.message.textContent = "saved";
    for (const [key, value] of Object.entries(saved)) {
      form.saved.append(el("dt", {}, bdi(key)), el("dd", {}, value == null ? "—" : bdi(shown(value))));
    }
  }
}

/** The form's values as the PUT body (merge semantics: an empty secret is left out, so the
 * stored one is kept), or the errors by field; checked against the schema as the server will. */
function collectConfig() {
  const body = Object.create(null);
  const errors = Object.create(null);
  for (const [key, field] of Object.entries(form.schema)) {
    const { input } = form.inputs[key];
    const stored = isStored(form.values, key);
    const hasDefault = Object.hasOwn(field, "default");
    let value = null;
    try {
      value = readInput(input, field);
    } catch (e) {
      errors[key] = e.message;
      continue;
    }
    if (value === null) {
      if (field.secret && stored) continue;  // kept as stored
      if (field.required && !hasDefault) errors[key] = "is required";
      else if (stored) body[key] = null;     // cleared: the default applies again
      continue;
    }
    if (Array.isArray(field.enum) && !field.enum.some((choice) => choice === value)) {
      errors[key] = `must be one of ${field.enum.map(shown).join(", ")}`;
      continue;
    }
    body[key] = value;
  }
  return { body, errors };
}

/** An input's value as the schema's type, null when empty; throws the message for a bad one. */
function readInput(input, field) {
  if (!field.secret && Array.isArray(field.enum)) {
    return input.value === "" ? null : field.enum[Number(input.value)];
  }
  if (field.type === "boolean" && !field.secret) return input.checked;
  if (input.validity && input.validity.badInput) throw new Error(`must be ${article(field.type)}`);
  const raw = field.type === "string" ? input.value : input.value.trim();
  if (raw === "") return null;
  switch (field.type) {
    case "number":
    case "integer": {
      const n = Number(raw);
      if (!Number.isFinite(n)) throw new Error(`must be ${article(field.type)}`);
      if (field.type === "integer" && !Number.isInteger(n)) throw new Error("must be an integer");
      return n;
    }
    case "boolean":
      if (raw !== "true" && raw !== "false") throw new Error("must be true or false");
      return raw === "true";
    case "object":
    case "array": {
      let parsed;
      try {
        parsed = JSON.parse(raw);
      } catch {
        throw new Error(`must be a JSON ${field.type}`);
      }
      const isArray = Array.isArray(parsed);
      const ok = field.type === "array" ? isArray : parsed !== null && typeof parsed === "object" && !isArray;
      if (!ok) throw new Error(`must be a JSON ${field.type}`);
      return parsed;
    }
    default:
      return raw;
  }
}

const article = (type) => (type === "integer" ? "an integer" : `a ${type}`);

function showFormErrors(errors, message, bad = true) {
  for (const [key, { input, error }] of Object.entries(form.inputs)) {
    const message = Object.hasOwn(errors, key) ? errors[key] : "";
    error.replaceChildren(...(message ? [bdi(message)] : []));  // empty: hidden by :empty
    input.classList.toggle("invalid", Boolean(message));
    input.setAttribute("aria-invalid", message ? "true" : "false");
  }
  form.message.className = bad ? "form-msg error" : "form-msg";
  form.message.replaceChildren(bdi(message));
}

async function submitConfig() {
  if (!form) return;
  const current = form;
  const { body, errors } = collectConfig();
  form.saved.replaceChildren();
  if (Object.keys(errors).length) {
    showFormErrors(errors, "Fix the marked fields.");
    return;
  }
  showFormErrors({}, "saving…", false);
  current.submit.disabled = true;
  try {
    const saved = await request("PUT", current.path, body, submitConfig);
    if (form === current) renderConfig(current.id, current.schema, saved, saved, current.path);
  } catch (e) {
    if (form !== current) return;
    current.submit.disabled = false;
    // "config.region: 'mars' is not one of [...]" (after the plugin's "id: ") names a field.
    const named = /(?:^|:\s)config\.([^:\s]+):\s*(.*)$/s.exec(e.message);
    if (named && current.inputs[named[1]]) showFormErrors(Object.fromEntries([named.slice(1)]), "Not saved.");
    else showFormErrors({}, e.message);
  }
}

// ---- log view

const log = { id: null, level: "debug", after: 0, generation: 0, busy: false };

function resetLog() {
  log.id = pluginOf(selected);
  log.level = $("#log-level").value;
  log.after = 0;
  log.generation += 1;
  log.busy = false;
  $("#log").replaceChildren();
  $("#log-empty").hidden = false;
  pollLog();
}

async function pollLog() {
  if (log.id == null || log.busy) return;
  const { id, level, generation } = log;
  log.busy = true;
  try {
    const data = await request("GET",  // after a 401, the next round asks again
      `/api/plugins/${enc(id)}/logs?level=${level}&after=${log.after}&limit=${LOG_LIMIT}`);
    if (generation !== log.generation) return;  // another plugin or level meanwhile
    appendLog(data.entries.filter((entry) => entry.seq > log.after));
    log.after = Math.max(log.after, data.last);
  } catch (e) {
    if (generation !== log.generation) return;
    $("#log-empty").hidden = false;
    $("#log-empty").replaceChildren("cannot read the log: ", bdi(e.message));
  } finally {
    if (generation === log.generation) log.busy = false;
  }
}

function appendLog(entries) {
  const list = $("#log");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 8;
  for (const entry of entries) {
    const level = LEVELS.includes(entry.level) ? entry.level : "info";
    const when = new Date(entry.time * 1000);
    list.append(el("li", { class: `level-${level}`, dataset: { seq: String(entry.seq) } },
      el("span", { class: "time", text: `${clock(when)}.${pad(when.getMilliseconds(), 3)}` }),
      el("span", { class: "level", text: level }),
      // serve --processes: each process numbers its workers from 1, so say whose it is
      el("bdi", { class: "source", text: (entry.process == null ? "" : `p${entry.process} `) + (entry.worker || entry.plugin) }),
      el("bdi", { class: "message", text: entry.message })));
  }
  while (list.children.length > LOG_KEEP) list.firstElementChild.remove();
  const empty = $("#log-empty");
  empty.textContent = "No log entries.";
  empty.hidden = list.children.length !== 0;
  if (atBottom) list.scrollTop = list.scrollHeight;
}

// ---------------------------------------------------------------------------------- start

async function tick() {
  await Promise.all([pollPlugins(), pollLog()]);
  renderBalanceAges();
  setTimeout(tick, POLL_MS);  // counted from the end of this round: never faster than POLL_MS
}

function start() {
  setupAuth();
  $("#plugin-select").addEventListener("change", (event) => selectPlugin(event.target.value, false));
  $("#log-level").addEventListener("change", resetLog);
  $("#balances-refresh").addEventListener("click", () => loadBalances(true));
  $("#station-add-toggle").addEventListener("click", openAddStation);
  $("#station-source").addEventListener("change", renderStationFields);
  $("#station-form").addEventListener("submit", submitStation);
  $("#station-cancel").addEventListener("click", () => { $("#station-add").hidden = true; });
  loadConfig(null);
  loadBalances(false);
  tick();
}

start();
