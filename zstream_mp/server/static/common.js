"use strict";
// Shared by the pages: the read-token form and JSON fetches that send the session cookie.
const zs = {
  async getJSON(url) {
    const resp = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
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
  async authedJSON(url) {
    for (;;) {
      const r = await zs.getJSON(url);
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
};
