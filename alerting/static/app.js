// Review page: list and filter alerts, open one, record the analyst's verdict.
// Plain DOM, no framework; every value from the API goes in with textContent.
"use strict";

const KEY_STORAGE = "alerting.apiKey";
const PAGE_SIZE = 25;
const state = { offset: 0, total: 0, params: new URLSearchParams(), selected: null, pending: null };
const $ = (id) => document.getElementById(id);

function utc(iso) {
  if (!iso) return "—";
  return iso.replace("T", " ").replace(/(\.\d+)?(Z|\+00:00)$/, "");
}

function money(amount, currency) {
  if (amount === null || amount === undefined) return "—";
  if (!currency) return Number(amount).toFixed(2);
  try {
    return new Intl.NumberFormat("en", { style: "currency", currency }).format(amount);
  } catch (_err) {
    return `${Number(amount).toFixed(2)} ${currency}`;
  }
}

function statusText(alert) {
  return alert.status === "reviewed" ? `Reviewed: ${alert.verdict}` : "Open";
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function say(text, isError = false) {
  const box = $("message");
  box.textContent = text;
  box.classList.toggle("error", isError);
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  let body = null;
  try {
    body = await response.json();
  } catch (_err) {
    body = null;
  }
  if (!response.ok) {
    const detail = body && body.detail;
    const text = Array.isArray(detail)
      ? detail.map((d) => `${(d.loc || []).slice(-1)[0]}: ${d.msg}`).join("; ")
      : detail || response.statusText;
    const error = new Error(text);
    error.status = response.status;
    throw error;
  }
  return body;
}

// datetime-local gives "YYYY-MM-DDTHH:MM[:SS]"; the page treats it as UTC.
function utcParam(value) {
  if (!value) return null;
  return (value.length === 16 ? `${value}:00` : value) + "Z";
}

function readFilters() {
  const form = $("filters");
  const params = new URLSearchParams();
  const user = form.elements.user_id.value.trim();
  if (user) params.set("user_id", user);
  for (const box of form.querySelectorAll("input[name=severity]:checked")) {
    params.append("severity", box.value);
  }
  if (form.elements.status.value) params.set("status", form.elements.status.value);
  const from = utcParam(form.elements.from.value);
  const to = utcParam(form.elements.to.value);
  if (from) params.set("from", from);
  if (to) params.set("to", to);
  return params;
}

async function loadAlerts() {
  const params = new URLSearchParams(state.params);
  params.set("limit", PAGE_SIZE);
  params.set("offset", state.offset);
  let page;
  try {
    page = await api(`/alerts?${params}`);
  } catch (err) {
    say(`Could not load alerts: ${err.message}`, true);
    return;
  }
  state.total = page.total;
  const body = $("alerts").tBodies[0];
  body.replaceChildren(...page.items.map(row));
  const first = page.total ? page.offset + 1 : 0;
  const last = page.offset + page.items.length;
  $("alerts-caption").textContent = page.total
    ? `Alerts ${first}–${last} of ${page.total}, newest first`
    : "No alerts match these filters";
  $("page-info").textContent = page.total ? `${first}–${last} of ${page.total}` : "";
  $("prev").disabled = page.offset === 0;
  $("next").disabled = page.next_offset === null;
}

function row(alert) {
  const tr = document.createElement("tr");
  tr.dataset.alertId = alert.alert_id;
  if (alert.alert_id === state.selected) tr.classList.add("selected");
  const open = el("button", utc(alert.event_time), "row-open");
  open.type = "button";
  open.setAttribute("aria-label", `Open alert for ${alert.user_id} at ${utc(alert.event_time)}`);
  if (alert.alert_id === state.selected) open.setAttribute("aria-current", "true");
  open.addEventListener("click", () => openAlert(alert.alert_id));
  const first = document.createElement("td");
  first.append(open);
  const sev = document.createElement("td");
  sev.append(el("span", alert.severity, `badge sev-${alert.severity}`));
  const status = el("td", statusText(alert), `status st-${alert.verdict || alert.status}`);
  tr.append(
    first,
    el("td", alert.user_id, "mono"),
    sev,
    el("td", Number(alert.score).toFixed(3), "num"),
    el("td", money(alert.amount, alert.currency), "num"),
    status,
  );
  tr.addEventListener("click", (event) => {
    if (event.target === open) return;
    openAlert(alert.alert_id);
  });
  return tr;
}

async function openAlert(alertId) {
  let alert;
  try {
    alert = await api(`/alerts/${encodeURIComponent(alertId)}`);
  } catch (err) {
    say(`Could not open the alert: ${err.message}`, true);
    return;
  }
  state.selected = alertId;
  for (const tr of $("alerts").tBodies[0].rows) {
    const chosen = tr.dataset.alertId === alertId;
    tr.classList.toggle("selected", chosen);
    const button = tr.querySelector(".row-open");
    if (chosen) button.setAttribute("aria-current", "true");
    else button.removeAttribute("aria-current");
  }
  renderDetail(alert);
  const panel = $("detail");
  panel.hidden = false;
  panel.focus();
}

function renderDetail(a) {
  $("detail-title").textContent = `Alert for user ${a.user_id}`;
  const sev = $("d-severity");
  sev.textContent = a.severity;
  sev.className = `badge sev-${a.severity}`;
  const status = $("d-status");
  status.textContent = statusText(a) + (a.reviewed_at ? ` (${utc(a.reviewed_at)} UTC)` : "");
  status.className = `status st-${a.verdict || a.status}`;
  $("d-score").textContent = Number(a.score).toFixed(3);
  $("d-threshold").textContent = Number(a.threshold).toFixed(3);
  $("d-meter").value = a.score;
  $("d-reasons").replaceChildren(...a.reasons.map((r) => el("li", r.text)));

  const facts = [
    ["Alert id", a.alert_id],
    ["Transaction", a.transaction_id],
    ["Amount", money(a.amount, a.currency)],
    ["Merchant", a.merchant_id || "—"],
    ["Event time (UTC)", utc(a.event_time)],
    ["Scored at (UTC)", utc(a.processed_at)],
    ["Model", `${a.model_name} version ${a.model_version}`],
  ];
  if (a.note) facts.push(["Analyst note", a.note]);
  $("d-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", k), el("dd", v)]));

  const features = Object.entries(a.features || {}).sort(([x], [y]) => x.localeCompare(y));
  $("d-features").tBodies[0].replaceChildren(
    ...features.map(([name, value]) => {
      const tr = document.createElement("tr");
      const shown = value === null ? "missing" : Number(value).toLocaleString("en", { maximumFractionDigits: 4 });
      tr.append(el("td", name, "mono"), el("td", shown, "num"));
      return tr;
    }),
  );
  const deliveries = a.deliveries.length
    ? a.deliveries.map((d) => el("li", `${d.sink}: ${d.state.replace("_", " ")}` +
        (d.attempts > 1 ? ` after ${d.attempts} attempts` : "") +
        (d.last_error ? ` (${d.last_error})` : "")))
    : [el("li", "pending")];
  $("d-deliveries").replaceChildren(...deliveries);
  $("v-note").value = a.note || "";
}

async function sendVerdict(label) {
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (!key) {
    state.pending = label;
    askForKey("");
    return;
  }
  const note = $("v-note").value.trim();
  try {
    const result = await api(`/alerts/${encodeURIComponent(state.selected)}/feedback`, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-API-Key": key },
      body: JSON.stringify(note ? { label, note } : { label }),
    });
    renderDetail(result.alert);
    say(`Marked ${label}. The label was published for transaction ${result.label.transaction_id}.`);
    await loadAlerts();
  } catch (err) {
    if (err.status === 401 || err.status === 403) {
      sessionStorage.removeItem(KEY_STORAGE);
      showKeyState();
      state.pending = label;
      askForKey("That API key was refused. Enter the right one.");
      return;
    }
    say(`The verdict was not saved: ${err.message}`, true);
  }
}

function askForKey(error) {
  $("key-error").textContent = error;
  $("key-input").value = "";
  $("key-dialog").showModal();
  $("key-input").focus();
}

function showKeyState() {
  const has = Boolean(sessionStorage.getItem(KEY_STORAGE));
  $("key-state").textContent = has ? "API key set for this tab" : "No API key set";
  $("key-forget").hidden = !has;
}

function wire() {
  $("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    state.params = readFilters();
    state.offset = 0;
    loadAlerts();
  });
  $("filters").addEventListener("reset", () => {
    state.params = new URLSearchParams();
    state.offset = 0;
    setTimeout(loadAlerts, 0);
  });
  $("prev").addEventListener("click", () => {
    state.offset = Math.max(0, state.offset - PAGE_SIZE);
    loadAlerts();
  });
  $("next").addEventListener("click", () => {
    state.offset += PAGE_SIZE;
    loadAlerts();
  });
  for (const button of document.querySelectorAll("#verdict button[data-label]")) {
    button.addEventListener("click", () => sendVerdict(button.dataset.label));
  }
  $("key-form").addEventListener("submit", (event) => {
    const value = $("key-input").value.trim();
    if (!value) {
      event.preventDefault();
      $("key-error").textContent = "Enter the API key.";
      return;
    }
    sessionStorage.setItem(KEY_STORAGE, value);
    showKeyState();
    const pending = state.pending;
    state.pending = null;
    if (pending) setTimeout(() => sendVerdict(pending), 0);
  });
  $("key-cancel").addEventListener("click", () => {
    state.pending = null;
    $("key-dialog").close();
  });
  $("key-forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORAGE);
    showKeyState();
    say("API key forgotten.");
  });
  showKeyState();
  loadAlerts();
}

document.addEventListener("DOMContentLoaded", wire);
