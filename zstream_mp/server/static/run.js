"use strict";
// One run, live: an EventSource on the run's stream, resumed with Last-Event-ID by the
// browser (and with ?since= when the page has to open a new one), de-duplicated by id.
const runId = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");
const MAX_ROWS = 10000;
const view = {
  ids: new Set(), events: [], count: 0, dupes: 0, gaps: 0, reconnects: 0, lastId: null,
  progress: new Map(), tokens: new Map(), kinds: new Set(), steps: new Set(), corrs: new Set(),
  arrivals: [], ended: false, shutdown: false, source: null, dirty: new Set(),
};
const $ = (id) => document.getElementById(id);
document.title = "zstream-mp · " + runId.slice(0, 8);
$("run-id").textContent = runId;

function setState(state, text) {
  const badge = $("state");
  badge.className = "badge " + state;
  badge.textContent = text || state;
  document.body.dataset.state = state;
}

function notice(kind, text) {
  $("notices").append(zs.el("div", { class: "notice " + kind }, text));
}

function filters() {
  return { kind: $("f-kind").value, step: $("f-step").value, corr: $("f-corr").value.trim() };
}

function matches(ev, f) {
  if (ev.control) return true;
  return (!f.kind || ev.kind === f.kind) && (!f.step || ev.step_name === f.step) &&
    (!f.corr || ev.correlation_id === f.corr);
}

function row(ev) {
  if (ev.control) {
    return zs.el("tr", { class: ev.control }, zs.el("td", { colspan: "6" }, ev.text));
  }
  return zs.el("tr", { "data-id": ev.id },
    zs.el("td", {}, zs.el("code", {}, ev.id)), zs.el("td", {}, ev.kind),
    zs.el("td", {}, ev.step_name || "–"), zs.el("td", {}, ev.correlation_id || "–"),
    zs.el("td", {}, ev.index === null || ev.index === undefined ? "–" : ev.index),
    zs.el("td", { class: "payload" }, JSON.stringify(ev.payload)));
}

function addOption(selectId, set, value) {
  if (value === null || value === undefined || set.has(value)) return;
  set.add(value);
  const target = $(selectId);
  target.append(zs.el("option", { value }, value));
}

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

function onEvent(msg) {
  const id = msg.lastEventId;
  if (id) view.lastId = id;
  if (!id || view.ids.has(id)) { view.dupes += 1; schedule(); return; }
  let data;
  try { data = JSON.parse(msg.data); } catch (_) { return; }
  view.ids.add(id);
  const ev = { id, kind: data.kind, step_name: data.step_name, correlation_id: data.correlation_id,
    index: data.index, payload: data.payload || {} };
  view.events.push(ev);
  view.count += 1;
  view.arrivals.push(performance.now());
  addOption("f-kind", view.kinds, ev.kind);
  addOption("f-step", view.steps, ev.step_name);
  if (ev.correlation_id && !view.corrs.has(ev.correlation_id)) {
    view.corrs.add(ev.correlation_id);
    $("corr-ids").append(zs.el("option", { value: ev.correlation_id }));
  }
  if (ev.kind === "progress") {
    const f = fractionOf(ev.payload);
    if (f) { view.progress.set(workerOf(ev), f); view.dirty.add("progress"); }
  } else if (ev.kind === "token") {
    const corr = ev.correlation_id || "(no correlation id)";
    const p = ev.payload;
    const text = String(p.text ?? p.token ?? p.delta ?? p.content ?? "");
    const parts = view.tokens.get(corr) || [];
    parts.push({ index: typeof ev.index === "number" ? ev.index : Infinity, seq: view.count, text });
    view.tokens.set(corr, parts);
    view.dirty.add("tokens");
  }
  view.pending.push(ev);
  schedule();
}

function onControl(kind, text) {
  const ev = { control: kind, text };
  view.events.push(ev);
  view.pending.push(ev);
  schedule();
}

view.pending = [];
let scheduled = false;
function schedule() {
  if (scheduled) return;
  scheduled = true;
  requestAnimationFrame(render);
  setTimeout(render, 250); // also when the tab is hidden (no animation frames)
}

function renderProgress() {
  const box = $("progress");
  $("progress-section").hidden = view.progress.size === 0;
  const rows = [...view.progress.entries()].sort((a, b) => a[0].localeCompare(b[0], undefined, { numeric: true }));
  box.replaceChildren(...rows.map(([worker, f]) => {
    const label = f.done !== null ? `${f.done}/${f.total} · ${Math.round(f.pct)}%` : `${Math.round(f.pct)}%`;
    const fill = zs.el("span", {});
    fill.style.width = f.pct + "%"; // CSSOM, not a style attribute: the page's CSP forbids those
    return zs.el("div", { class: "bar-row" + (f.pct >= 100 ? " done" : ""), "data-worker": worker,
      "data-pct": String(Math.round(f.pct)) },
      zs.el("span", {}, worker),
      zs.el("div", { class: "bar" }, fill),
      zs.el("span", { class: "bar-label" }, label));
  }));
}

function renderTokens() {
  $("tokens-section").hidden = view.tokens.size === 0;
  $("tokens").replaceChildren(...[...view.tokens.entries()].map(([corr, parts]) => {
    const text = parts.slice().sort((a, b) => a.index - b.index || a.seq - b.seq).map((p) => p.text).join("");
    const shown = text.length > 4000 ? "…" + text.slice(-4000) : text;
    return zs.el("div", { class: "token-stream", "data-correlation": corr },
      zs.el("b", {}, corr), zs.el("span", { class: "muted" }, ` ${parts.length} tokens  `), shown);
  }));
}

function renderTable(full) {
  const tbody = $("events");
  const f = filters();
  if (full) {
    tbody.replaceChildren();
    view.pending = view.events.slice();
  }
  const rows = view.pending.filter((ev) => matches(ev, f)).map(row);
  view.pending = [];
  tbody.append(...rows);
  while (tbody.childElementCount > MAX_ROWS) tbody.firstElementChild.remove();
  const shown = tbody.querySelectorAll("tr[data-id]").length;
  $("shown").textContent = shown === view.count ? "" : `showing ${shown} of ${view.count}`;
}

function render() {
  scheduled = false;
  renderTable(false);
  if (view.dirty.has("progress")) renderProgress();
  if (view.dirty.has("tokens")) renderTokens();
  view.dirty.clear();
  $("count").textContent = view.count;
  $("gaps").textContent = view.gaps;
  $("dupes").textContent = view.dupes;
  $("reconnects").textContent = view.reconnects;
  document.body.dataset.count = String(view.count);
  document.body.dataset.dupes = String(view.dupes);
}

setInterval(() => {
  const now = performance.now();
  while (view.arrivals.length && now - view.arrivals[0] > 5000) view.arrivals.shift();
  $("rate").textContent = Math.round(view.arrivals.length / 5);
}, 1000);

for (const id of ["f-kind", "f-step", "f-corr"]) {
  $(id).addEventListener("input", () => renderTable(true));
}

function connect() {
  if (view.ended) return;
  const base = "/ui/api/runs/" + encodeURIComponent(runId) + "/stream";
  const source = new EventSource(view.lastId ? base + "?since=" + encodeURIComponent(view.lastId) : base);
  view.source = source;
  source.onopen = () => setState("live");
  source.onmessage = onEvent;
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
  connect();
}
start();
