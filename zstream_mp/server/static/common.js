"use strict";
// Shared by the pages: the read-token form, JSON fetches that send the session cookie,
// DOM and SVG builders (text only: nothing from an event is ever parsed as markup) and
// time formatting.
const SVG_NS = "http://www.w3.org/2000/svg";
const pad2 = (n) => String(n).padStart(2, "0");
const zs = {
  async getJSON(url, signal) {
    const resp = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" }, signal });
    let body = null;
    try { body = await resp.json(); } catch (_) { body = null; }
    return { status: resp.status, body };
  },
  detail(body) {
    const d = body && body.detail !== undefined ? body.detail : body;
    if (Array.isArray(d) && d.length === 2) return String(d[1]).split("\n")[0];
    return typeof d === "string" ? d : JSON.stringify(d);
  },
  // Shows the token form; resolves once the server has set the cookie.
  askToken(message) {
    const form = document.getElementById("login");
    const err = document.getElementById("login-error");
    form.hidden = false;
    err.textContent = message || "";
    return new Promise((resolve) => {
      form.onsubmit = async (ev) => {
        ev.preventDefault();
        const token = document.getElementById("token").value;
        const resp = await fetch("/ui/session", {
          method: "POST", credentials: "same-origin",
          headers: { "Content-Type": "application/json" }, body: JSON.stringify({ token }),
        });
        if (resp.status === 204) { form.hidden = true; document.getElementById("token").value = ""; resolve(); }
        else { let b = null; try { b = await resp.json(); } catch (_) {} err.textContent = zs.detail(b); }
      };
    });
  },
  // GET with the cookie; asks for a token on 401/403 and retries.
  async authedJSON(url, signal) {
    for (;;) {
      const r = await zs.getJSON(url, signal);
      if (r.status !== 401 && r.status !== 403) return r;
      await zs.askToken(r.status === 403 ? "This token cannot read." : "");
    }
  },
  el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v; else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  },
  svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  },
  // Epoch seconds as local HH:MM:SS ("–" when unknown).
  hms(t) {
    if (typeof t !== "number" || !isFinite(t)) return "–";
    const d = new Date(t * 1000);
    return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
  },
  // Epoch seconds as local "YYYY-MM-DD HH:MM:SS.mmm", for tooltips.
  stamp(t) {
    if (typeof t !== "number" || !isFinite(t)) return "";
    const d = new Date(t * 1000);
    return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${zs.hms(t)}.` +
      String(d.getMilliseconds()).padStart(3, "0");
  },
  // The date part when it is not today, for the run list.
  day(t) {
    const d = new Date(t * 1000);
    const now = new Date();
    if (d.toDateString() === now.toDateString()) return "today";
    return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())}`;
  },
  // Seconds as "12s", "2m 05s", "1h 02m".
  duration(s) {
    if (typeof s !== "number" || !isFinite(s) || s < 0) return "–";
    s = Math.floor(s);
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${pad2(s % 60)}s`;
    return `${Math.floor(s / 3600)}h ${pad2(Math.floor(s / 60) % 60)}m`;
  },
  number(n) { return typeof n === "number" ? n.toLocaleString("en-US") : "–"; },
  // A rate with sensible precision: 0, 0.4, 12, 1.2k.
  rate(r) {
    if (!isFinite(r) || r <= 0) return "0";
    if (r < 10) return r.toFixed(1).replace(/\.0$/, "");
    if (r < 1000) return String(Math.round(r));
    return (r / 1000).toFixed(1) + "k";
  },
};
