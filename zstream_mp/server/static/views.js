"use strict";
// How one run's events are shown: rows of the events table, log lines, per-worker
// progress with rate and ETA, token cards. Pure builders over the page's state; run.js
// decides when to call them. Every event value reaches the DOM as text.
const LEVELS = { TRACE: 5, DEBUG: 10, INFO: 20, WARNING: 30, WARN: 30, ERROR: 40, CRITICAL: 50, FATAL: 50 };
const TOKEN_CHARS = 4000;
const RATE_WINDOW_S = 30;

const views = {
  levelOf(p) {
    const name = String(p.level ?? p.levelname ?? "INFO").toUpperCase();
    const no = typeof p.levelno === "number" ? p.levelno : (LEVELS[name] ?? 20);
    const cls = no >= 50 ? "critical" : no >= 40 ? "error" : no >= 30 ? "warning" : no >= 20 ? "info" : "debug";
    return { name, no, cls };
  },

  isLog(ev) {
    const p = ev.payload;
    return ev.kind === "log" || (typeof p.message === "string" && typeof p.level === "string");
  },

  timeCell(t) {
    return zs.el("td", { class: "time", title: zs.stamp(t) }, zs.el("time", {}, zs.hms(t)));
  },

  row(ev) {
    if (ev.control) {
      return zs.el("tr", { class: ev.control }, views.timeCell(ev.t), zs.el("td", { colspan: "6" }, ev.text));
    }
    return zs.el("tr", { "data-id": ev.id, "data-kind": ev.kind },
      views.timeCell(ev.t),
      zs.el("td", {}, zs.el("code", {}, ev.id)), zs.el("td", {}, zs.el("span", { class: "kind" }, ev.kind)),
      zs.el("td", {}, ev.step_name || "–"), zs.el("td", {}, ev.correlation_id || "–"),
      zs.el("td", {}, ev.index === null || ev.index === undefined ? "–" : ev.index),
      zs.el("td", { class: "payload" }, JSON.stringify(ev.payload)));
  },

  logLine(ev) {
    const p = ev.payload;
    const level = views.levelOf(p);
    const t = typeof p.time === "number" ? p.time : ev.t;
    const line = zs.el("div", { class: "log-line lvl-" + level.cls, "data-id": ev.id, "data-level": level.name },
      zs.el("time", { title: zs.stamp(t) }, zs.hms(t)),
      zs.el("span", { class: "lvl" }, level.name),
      zs.el("span", { class: "logger", title: p.where ? String(p.where) : "" }, String(p.logger ?? ev.step_name ?? "")),
      zs.el("span", { class: "msg" }, String(p.message ?? "")));
    if (p.pid !== undefined) line.append(zs.el("span", { class: "pid" }, "pid " + p.pid));
    if (p.exception) {
      const text = String(p.exception);
      const lines = text.trimEnd().split("\n");
      line.append(zs.el("details", { class: "exc" },
        zs.el("summary", {}, `${lines[lines.length - 1]} (${lines.length} lines)`),
        zs.el("pre", {}, text)));
    }
    return line;
  },

  // One worker's progress, fed by each progress event: fraction, rate and ETA.
  noteProgress(track, f, t) {
    track.f = f;
    track.last = t;
    if (track.first === undefined) track.first = t;
    if (f.done === null) return;
    track.hist.push({ t, done: f.done });
    while (track.hist.length > 2 && t - track.hist[0].t > RATE_WINDOW_S) track.hist.shift();
    if (f.done >= f.total && track.finished === undefined) track.finished = t;
  },

  rateOf(track) {
    const h = track.hist;
    if (h.length < 2) return null;
    const dt = h[h.length - 1].t - h[0].t;
    return dt > 0.2 ? (h[h.length - 1].done - h[0].done) / dt : null;
  },

  progressRow(worker, track, now, ended) {
    const f = track.f;
    const label = f.done !== null ? `${zs.number(f.done)}/${zs.number(f.total)} · ${Math.round(f.pct)}%` : `${Math.round(f.pct)}%`;
    const rate = views.rateOf(track);
    let pace = "";
    if (f.pct >= 100) pace = track.finished !== undefined ? `done in ${zs.duration(track.finished - track.first)}` : "done";
    else if (ended) pace = "stopped";
    else if (now - track.last > 10) pace = `no update for ${zs.duration(now - track.last)}`;
    else if (rate && rate > 0 && f.done !== null) pace = `${zs.rate(rate)}/s · ETA ${zs.duration((f.total - f.done) / rate)}`;
    else pace = rate === 0 ? "0/s" : "…";
    const fill = zs.el("span", {});
    fill.style.width = f.pct + "%"; // CSSOM, not a style attribute: the page's CSP forbids those
    return zs.el("div", { class: "bar-row" + (f.pct >= 100 ? " done" : ""), "data-worker": worker,
      "data-pct": String(Math.round(f.pct)) },
      zs.el("span", { class: "worker", title: worker }, worker),
      zs.el("div", { class: "bar" }, fill),
      zs.el("span", { class: "bar-label" }, label),
      zs.el("span", { class: "pace" }, pace));
  },

  // A token card (a <details>, so a person can fold it) with its text kept under a cap.
  tokenCard(corr, card) {
    if (!card.node) {
      card.text = zs.el("div", { class: "token-text" });
      card.meta = zs.el("span", { class: "muted" });
      card.node = zs.el("details", { class: "token-stream", "data-correlation": corr, open: "" },
        zs.el("summary", {}, zs.el("b", {}, corr), " ", card.meta), card.text);
    }
    const text = card.parts.slice().sort((a, b) => a.index - b.index || a.seq - b.seq).map((p) => p.text).join("");
    const shown = text.length > TOKEN_CHARS ? "…" + text.slice(-TOKEN_CHARS) : text;
    const atEnd = card.text.scrollHeight - card.text.scrollTop - card.text.clientHeight < 8;
    card.text.textContent = shown;
    if (atEnd) card.text.scrollTop = card.text.scrollHeight;
    card.meta.textContent = `${zs.number(card.parts.length)} tokens · ${zs.number(text.length)} chars` +
      (card.last ? ` · ${zs.hms(card.last)}` : "");
    return card.node;
  },
};
