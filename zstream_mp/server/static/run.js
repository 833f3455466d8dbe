"use strict";
// One run, live: an EventSource on the run's stream, resumed with Last-Event-ID by the
// browser (and with ?since= when the page has to open a new one), de-duplicated by id.
// Each event carries the server's receive time; a `clock` frame gives the server's time,
// so events/s counts only events received after this page opened (never the replay).
const runId = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");
const MAX_ROWS = 2000; // rows in the table; filters and search reach every event kept
const MAX_EVENTS = 50000;
const MAX_LOG_LINES = 5000;
const MAX_POINTS = 4000;
const MAX_SERIES = 8;
const RATE_NOW_S = 5;
const CHART_MAX_S = 300;
const CHART_BARS = 60;
const SKIP_FIELDS = new Set(["pid", "time", "thread"]);
const view = {
  ids: new Set(), events: [], count: 0, dupes: 0, gaps: 0, reconnects: 0, lastId: null,
  tracks: new Map(), cards: new Map(), kinds: new Set(), steps: new Set(), corrs: new Set(),
  pids: new Set(), logs: [], pendingLogs: [], fields: new Map(), fieldPicked: false,
  perSecond: new Map(), openAt: null, offset: 0, first: null, last: null, status: null,
  ended: false, shutdown: false, source: null, dirty: new Set(), pending: [], held: 0,
};
const $ = (id) => document.getElementById(id);
document.title = "zstream-mp · run " + runId.slice(0, 8);
$("run-id").textContent = runId;
const serverNow = () => Date.now() / 1000 + view.offset;

function setState(state, text) {
  const badge = $("state");
  badge.className = "badge " + state;
  badge.textContent = text || state;
  document.body.dataset.state = state;
}

function notice(kind, text) {
  $("notices").append(zs.el("div", { class: "notice " + kind }, text));
}

// -- events table ---------------------------------------------------------------------
function filters() {
  return { kind: $("f-kind").value, step: $("f-step").value, corr: $("f-corr").value.trim(),
    search: $("f-search").value.trim().toLowerCase() };
}

function filtering(f) { return Boolean(f.kind || f.step || f.corr || f.search); }

function matches(ev, f) {
  if (ev.control) return !filtering(f);
  if ((f.kind && ev.kind !== f.kind) || (f.step && ev.step_name !== f.step) ||
      (f.corr && ev.correlation_id !== f.corr)) return false;
  if (!f.search) return true;
  if (ev.searchText === undefined) ev.searchText = JSON.stringify(ev.payload).toLowerCase();
  return ev.searchText.includes(f.search);
}

function renderTable(full) {
  const tbody = $("events");
  const f = filters();
  const newest = $("newest-first").checked;
  if (full) {
    tbody.replaceChildren();
    view.pending = view.events.slice();
    view.held = 0;
  } else if (!$("follow").checked) {
    view.held += view.pending.filter((ev) => !ev.control).length;
    view.pending = [];
  }
  // only the rows the table keeps are built (a filter change over 50,000 events builds 10,000)
  const rows = view.pending.filter((ev) => matches(ev, f)).slice(-MAX_ROWS).map(views.row);
  view.pending = [];
  if (newest) {
    rows.reverse();
    tbody.prepend(...rows);
    while (tbody.childElementCount > MAX_ROWS) tbody.lastElementChild.remove();
  } else {
    const box = tbody.closest(".table-box");
    const atEnd = box.scrollHeight - box.scrollTop - box.clientHeight < 8;
    tbody.append(...rows);
    while (tbody.childElementCount > MAX_ROWS) tbody.firstElementChild.remove();
    if (atEnd && $("follow").checked) box.scrollTop = box.scrollHeight;
  }
  const paused = $("paused");
  paused.hidden = view.held === 0;
  paused.textContent = `paused · ${zs.number(view.held)} new`;
  const shown = tbody.querySelectorAll("tr[data-id]").length;
  const active = filtering(f);
  $("shown").hidden = !active && shown === view.count;
  $("shown").textContent = shown === view.count && !active ? "" : `showing ${shown} of ${view.count}`;
  $("capped").hidden = shown < MAX_ROWS;
  $("f-clear").hidden = !active;
  for (const [id, on] of [["f-kind", f.kind], ["f-step", f.step], ["f-corr", f.corr], ["f-search", f.search]]) {
    $(id).closest("label").classList.toggle("active", Boolean(on));
  }
}

// -- logs -----------------------------------------------------------------------------
function logMatches(ev) {
  const min = Number($("log-level").value);
  if (views.levelOf(ev.payload).no < min) return false;
  const term = $("log-search").value.trim().toLowerCase();
  if (!term) return true;
  const p = ev.payload;
  return `${p.message ?? ""} ${p.logger ?? ""}`.toLowerCase().includes(term);
}

function renderLogs(full) {
  const box = $("logs");
  const atEnd = box.scrollHeight - box.scrollTop - box.clientHeight < 8;
  if (full) { box.replaceChildren(); view.pendingLogs = view.logs.slice(); }
  box.append(...view.pendingLogs.filter(logMatches).map(views.logLine));
  view.pendingLogs = [];
  while (box.childElementCount > MAX_LOG_LINES) box.firstElementChild.remove();
  if (atEnd || full) box.scrollTop = box.scrollHeight;
  $("logs-section").hidden = view.logs.length === 0;
  const shown = box.childElementCount;
  $("logs-shown").textContent = shown === view.logs.length ? `${zs.number(shown)} lines` : `${zs.number(shown)} of ${zs.number(view.logs.length)} lines`;
}

// -- progress, tokens -------------------------------------------------------------------
function workerOf(ev) {
  const p = ev.payload || {};
  return String(p.worker ?? ev.correlation_id ?? ev.step_name ?? "progress");
}

function fractionOf(p) {
  const done = p.done ?? p.current ?? p.completed ?? p.n;
  if (typeof done === "number" && typeof p.total === "number" && p.total > 0) {
    return { done, total: p.total, pct: Math.min(100, (100 * done) / p.total) };
  }
  if (typeof p.progress === "number") {
    const pct = p.progress <= 1 ? p.progress * 100 : p.progress;
    return { done: null, total: null, pct: Math.min(100, pct) };
  }
  return null;
}

function renderProgress() {
  $("progress-section").hidden = view.tracks.size === 0;
  const now = view.ended ? (view.last ?? serverNow()) : serverNow();
  const rows = [...view.tracks.entries()].sort((a, b) => a[0].localeCompare(b[0], undefined, { numeric: true }));
  $("progress").replaceChildren(...rows.map(([worker, track]) => views.progressRow(worker, track, now, view.ended)));
  const done = rows.filter(([, t]) => t.f.pct >= 100).length;
  $("progress-summary").textContent = `${done} of ${rows.length} workers done`;
}

function renderTokens() {
  $("tokens-section").hidden = view.cards.size === 0;
  const box = $("tokens");
  for (const [corr, card] of view.cards) {
    if (!card.dirty) continue;
    card.dirty = false;
    const node = views.tokenCard(corr, card);
    if (!node.isConnected) box.append(node);
  }
  $("tokens-summary").textContent = `${view.cards.size} streams`;
}

// -- charts ---------------------------------------------------------------------------
function noteFields(ev, t) {
  const series = ev.correlation_id || ev.step_name || "all";
  for (const [name, v] of Object.entries(ev.payload)) {
    if (typeof v !== "number" || !isFinite(v) || SKIP_FIELDS.has(name)) continue;
    let field = view.fields.get(name);
    if (!field) {
      field = { series: new Map(), points: 0 };
      view.fields.set(name, field);
      $("plot-field").append(zs.el("option", { value: name }, name));
      if (!view.fieldPicked && ($("plot-field").value === "" || name === "loss")) $("plot-field").value = name;
    }
    const key = field.series.has(series) || field.series.size < MAX_SERIES ? series : "other";
    const pts = field.series.get(key) || [];
    pts.push({ t, v });
    if (pts.length > MAX_POINTS) field.series.set(key, pts.filter((_, i) => i % 2 === 0));
    else field.series.set(key, pts);
  }
}

// The last minute in 1 s bars while the page is young, growing to the last 5 minutes
// in 5 s bars: always 60 bars, never a window longer than what the page watched.
function renderRateChart(now) {
  const watched = view.openAt === null ? 0 : now - view.openAt;
  const span = Math.min(CHART_MAX_S, Math.max(60, Math.ceil(watched / 60) * 60));
  const bucket = span / CHART_BARS;
  const buckets = new Array(CHART_BARS).fill(0);
  const start = Math.floor(now) - span + 1;
  for (const [sec, n] of view.perSecond) {
    if (sec < Math.floor(now) - 2 * CHART_MAX_S) view.perSecond.delete(sec);
    else if (sec >= start && sec <= Math.floor(now)) buckets[Math.floor((sec - start) / bucket)] += n;
  }
  const max = charts.bars($("rate-svg"), buckets.map((n) => n / bucket));
  $("rate-max").textContent = `max ${zs.rate(max)}/s`;
  $("rate-window").textContent = `received live, last ${span / 60} min`;
  $("rate-from").textContent = `−${span / 60} min`;
  $("rate-since").textContent = view.openAt ? `live since ${zs.hms(view.openAt)}` : "";
}

function renderFieldChart() {
  const name = $("plot-field").value;
  const field = view.fields.get(name);
  $("field-chart").hidden = view.fields.size === 0;
  if (!field) return;
  let t0 = Infinity, t1 = -Infinity, latest = null;
  for (const pts of field.series.values()) {
    if (pts.length && pts[0].t < t0) t0 = pts[0].t;
    if (pts.length && pts[pts.length - 1].t >= t1) { t1 = pts[pts.length - 1].t; latest = pts[pts.length - 1].v; }
  }
  const range = charts.lines($("field-svg"), field.series, t0, t1);
  $("field-range").textContent = range ? `${charts.formatValue(range[0])} … ${charts.formatValue(range[1])} · latest ${charts.formatValue(latest)}` : "";
  $("field-from").textContent = zs.hms(t0);
  $("field-to").textContent = zs.hms(t1);
  $("field-legend").replaceChildren(...[...field.series.keys()].map((s, i) => {
    const dot = zs.el("span", { class: "dot" });
    dot.style.background = charts.colour(i);
    return zs.el("span", {}, dot, s);
  }));
}

// -- the stream ------------------------------------------------------------------------
function onClock(msg) {
  let now = null;
  try { now = JSON.parse(msg.data).now; } catch (_) { return; }
  if (typeof now !== "number") return;
  view.offset = now - Date.now() / 1000;
  if (view.openAt === null) view.openAt = now;
}

function onEvent(msg) {
  const id = msg.lastEventId;
  if (id) view.lastId = id;
  if (!id || view.ids.has(id)) { view.dupes += 1; schedule(); return; }
  let data;
  try { data = JSON.parse(msg.data); } catch (_) { return; }
  view.ids.add(id);
  const t = typeof data.received_at === "number" ? data.received_at : serverNow();
  const payload = data.payload && typeof data.payload === "object" ? data.payload : {};
  const ev = { id, t, kind: String(data.kind), step_name: data.step_name, correlation_id: data.correlation_id,
    index: data.index, payload };
  view.events.push(ev);
  if (view.events.length > MAX_EVENTS) view.events.splice(0, view.events.length - MAX_EVENTS);
  view.count += 1;
  if (view.openAt !== null && t >= view.openAt) {
    const sec = Math.floor(t);
    view.perSecond.set(sec, (view.perSecond.get(sec) || 0) + 1);
  }
  if (view.first === null || t < view.first) view.first = t;
  if (view.last === null || t > view.last) view.last = t;
  if (typeof payload.pid === "number") view.pids.add(payload.pid);
  addOption("f-kind", view.kinds, ev.kind);
  addOption("f-step", view.steps, ev.step_name);
  if (ev.correlation_id && !view.corrs.has(ev.correlation_id)) {
    view.corrs.add(ev.correlation_id);
    $("corr-ids").append(zs.el("option", { value: ev.correlation_id }));
  }
  if (views.isLog(ev)) {
    view.logs.push(ev);
    view.pendingLogs.push(ev);
    view.dirty.add("logs");
  }
  if (ev.kind === "progress") {
    const f = fractionOf(payload);
    if (f) {
      const worker = workerOf(ev);
      const track = view.tracks.get(worker) || { hist: [] };
      views.noteProgress(track, f, t);
      view.tracks.set(worker, track);
      view.dirty.add("progress");
    }
  } else if (ev.kind === "token") {
    const corr = ev.correlation_id || "(no correlation id)";
    const text = String(payload.text ?? payload.token ?? payload.delta ?? payload.content ?? "");
    const card = view.cards.get(corr) || { parts: [] };
    card.parts.push({ index: typeof ev.index === "number" ? ev.index : Infinity, seq: view.count, text });
    card.last = t;
    card.dirty = true;
    view.cards.set(corr, card);
    view.dirty.add("tokens");
  }
  noteFields(ev, t);
  view.pending.push(ev);
  schedule();
}

function addOption(selectId, set, value) {
  if (value === null || value === undefined || set.has(value)) return;
  set.add(value);
  $(selectId).append(zs.el("option", { value }, value));
}

function onControl(kind, text) {
  const ev = { control: kind, text, t: serverNow() };
  view.events.push(ev);
  view.pending.push(ev);
  schedule();
}

let scheduled = false;
function schedule() {
  if (scheduled) return;
  scheduled = true;
  requestAnimationFrame(render);
  setTimeout(render, 250); // also when the tab is hidden (no animation frames)
}

function renderTimes() {
  const status = view.status || {};
  const firsts = [view.first, status.first_event].filter((t) => typeof t === "number");
  const first = firsts.length ? Math.min(...firsts) : null;
  const lasts = [view.last, status.last_event].filter((t) => typeof t === "number");
  const last = lasts.length ? Math.max(...lasts) : null;
  $("started").textContent = zs.hms(first);
  $("started").title = zs.stamp(first);
  $("last-event").textContent = zs.hms(last);
  $("last-event").title = zs.stamp(last);
  const end = view.ended ? last : serverNow();
  $("elapsed").textContent = first !== null && end !== null ? zs.duration(end - first) : "–";
}

function render() {
  if (!scheduled) return;
  scheduled = false;
  renderTable(false);
  if (view.dirty.has("logs")) renderLogs(false);
  if (view.dirty.has("progress")) renderProgress();
  if (view.dirty.has("tokens")) renderTokens();
  if (view.dirty.has("fields")) renderFieldChart();
  view.dirty.clear();
  $("count").textContent = zs.number(view.count);
  $("gaps").textContent = view.gaps;
  $("dupes").textContent = view.dupes;
  $("reconnects").textContent = view.reconnects;
  $("processes").textContent = Math.max(view.pids.size, (view.status && view.status.processes) || 0);
  $("steps").textContent = view.steps.size;
  $("nav-events").textContent = zs.number(view.count);
  $("nav-logs").textContent = zs.number(view.logs.length);
  $("nav-tokens").textContent = view.cards.size;
  renderTimes();
  document.body.dataset.count = String(view.count);
  document.body.dataset.dupes = String(view.dupes);
}

function tick() {
  const now = serverNow();
  let recent = 0;
  for (let s = Math.floor(now) - RATE_NOW_S + 1; s <= Math.floor(now); s++) recent += view.perSecond.get(s) || 0;
  const rate = recent / RATE_NOW_S;
  $("rate").textContent = zs.rate(rate);
  document.body.dataset.rate = String(rate);
  renderRateChart(now);
  renderFieldChart();
  if (view.tracks.size) renderProgress();
  renderTimes();
}
setInterval(tick, 1000);

for (const id of ["f-kind", "f-step", "f-corr", "f-search", "newest-first"]) {
  $(id).addEventListener("input", () => renderTable(true));
}
$("follow").addEventListener("input", () => { if ($("follow").checked) renderTable(true); });
$("f-clear").addEventListener("click", () => {
  for (const id of ["f-kind", "f-step", "f-corr", "f-search"]) $(id).value = "";
  renderTable(true);
});
for (const id of ["log-level", "log-search"]) $(id).addEventListener("input", () => renderLogs(true));
$("plot-field").addEventListener("input", () => { view.fieldPicked = true; renderFieldChart(); });
$("tokens-toggle").addEventListener("click", () => {
  const cards = [...document.querySelectorAll(".token-stream")];
  const open = !cards.some((c) => c.open);
  for (const c of cards) c.open = open;
  $("tokens-toggle").textContent = open ? "collapse all" : "expand all";
});

async function refreshStatus() {
  const r = await zs.getJSON("/ui/api/runs/" + encodeURIComponent(runId));
  if (r.status === 200 && r.body) { view.status = r.body; schedule(); }
}

function connect() {
  if (view.ended) return;
  const base = "/ui/api/runs/" + encodeURIComponent(runId) + "/stream";
  const source = new EventSource(view.lastId ? base + "?since=" + encodeURIComponent(view.lastId) : base);
  view.source = source;
  source.onopen = () => setState("live");
  source.onmessage = onEvent;
  source.addEventListener("clock", onClock);
  source.addEventListener("cursor", (m) => { if (m.lastEventId) view.lastId = m.lastEventId; });
  source.addEventListener("gap", (m) => {
    let reason = "unknown";
    try { reason = JSON.parse(m.data).reason || reason; } catch (_) {}
    view.gaps += 1;
    if (reason === "shutdown") view.shutdown = true;
    onControl("gap", `gap: ${reason}` + (reason === "shutdown" ? " (the server is shutting down)" : " (events may be missing)"));
  });
  source.addEventListener("end", () => {
    source.close();
    if (view.shutdown) { // the server went away, the run did not end: come back when it does
      view.shutdown = false;
      setState("reconnecting", "server gone, retrying");
      view.reconnects += 1;
      setTimeout(connect, 1000);
      return;
    }
    view.ended = true;
    setState("ended", "run ended");
    onControl("end", "end: the run's stream is complete");
    notice("end", "The run has ended; every event the server holds is shown.");
    view.dirty.add("progress");
    refreshStatus();
  });
  source.onerror = async () => {
    if (view.ended || view.source !== source) return;
    view.reconnects += 1;
    schedule();
    if (source.readyState !== EventSource.CLOSED) { setState("reconnecting"); return; }
    setState("reconnecting");
    const status = await zs.getJSON("/ui/api/runs/" + encodeURIComponent(runId));
    if (status.status === 401 || status.status === 403) await zs.authedJSON("/ui/api/runs/" + encodeURIComponent(runId));
    setTimeout(connect, 1000);
  };
}

async function start() {
  if (!/^[0-9a-fA-F-]{32,36}$/.test(runId)) { setState("error", "bad run id"); notice("error", "This is not a run id."); return; }
  const status = await zs.authedJSON("/ui/api/runs/" + encodeURIComponent(runId));
  if (status.status === 404) notice("gap", "The server has not seen this run yet; waiting for its first events.");
  else if (status.status !== 200) { setState("error"); notice("error", zs.detail(status.body)); return; }
  else view.status = status.body;
  connect();
}
start();
