"use strict";
// The run list, newest first, one page at a time. It refreshes the page shown every two
// seconds after the previous answer arrived (never two requests at once), and not while
// the tab is hidden.
const PAGE_SIZE = 50;
const REFRESH_MS = 2000;
const TIMEOUT_MS = 10000;
const pager = { cursors: [null], at: 0, next: null, timer: null, busy: false };
const $ = (id) => document.getElementById(id);

function runRow(run) {
  const started = typeof run.started === "number" ? run.started : null;
  const now = Date.now() / 1000;
  const steps = (run.steps || []).join(", ") + (run.step_count > (run.steps || []).length ? ` +${run.step_count - run.steps.length}` : "");
  const last = typeof run.last_event === "number" ? run.last_event : null;
  return zs.el("tr", { "data-run": run.id, "data-state": run.state || (run.ended ? "ended" : "live") },
    zs.el("td", {}, zs.el("a", { href: "/runs/" + encodeURIComponent(run.id), title: run.id },
      zs.el("code", {}, run.id.slice(0, 8)), zs.el("span", { class: "muted id-rest" }, run.id.slice(8)))),
    zs.el("td", {}, zs.el("span", { class: "badge " + (run.state || "live") }, run.state || (run.ended ? "ended" : "live"))),
    zs.el("td", { class: "started", title: zs.stamp(started) },
      started === null ? "–" : zs.el("span", {}, zs.el("span", { class: "muted day" }, zs.day(started) + " "), zs.el("time", {}, zs.hms(started)))),
    zs.el("td", { class: "n events" }, zs.number(run.events ?? 0)),
    zs.el("td", { class: "steps" }, steps || "–"),
    zs.el("td", { class: "n processes" }, run.processes ?? 0),
    zs.el("td", { class: "last", title: zs.stamp(last) }, last === null ? "–" : `${zs.duration(Math.max(0, now - last))} ago`),
    zs.el("td", { class: "n" }, run.subscribers ?? 0));
}

async function refresh() {
  clearTimeout(pager.timer);
  if (pager.busy) return;
  pager.busy = true;
  const cursor = pager.cursors[pager.at];
  const url = `/ui/api/runs?order=newest&limit=${PAGE_SIZE}` + (cursor ? "&cursor=" + encodeURIComponent(cursor) : "");
  const abort = new AbortController();
  const timeout = setTimeout(() => abort.abort(), TIMEOUT_MS);
  try {
    const r = await zs.authedJSON(url, abort.signal);
    const tbody = document.querySelector("#runs tbody");
    if (r.status !== 200) {
      tbody.replaceChildren(zs.el("tr", {}, zs.el("td", { colspan: "8", class: "error" }, zs.detail(r.body))));
    } else {
      const runs = r.body.runs || [];
      pager.next = r.body.next || null;
      $("empty").hidden = runs.length > 0 || pager.at > 0;
      tbody.replaceChildren(...runs.map(runRow));
      $("updated").textContent = "updated " + zs.hms(Date.now() / 1000);
    }
  } catch (_) {
    $("updated").textContent = "server not answering; retrying";
  } finally {
    clearTimeout(timeout);
    pager.busy = false;
    $("newer").disabled = pager.at === 0;
    $("older").disabled = !pager.next;
    $("page-label").textContent = `page ${pager.at + 1}`;
    document.body.dataset.refreshed = String((Number(document.body.dataset.refreshed) || 0) + 1);
    if (!document.hidden) pager.timer = setTimeout(refresh, REFRESH_MS);
  }
}

$("older").addEventListener("click", () => {
  if (!pager.next || pager.busy) return;
  pager.cursors[pager.at + 1] = pager.next;
  pager.at += 1;
  refresh();
});
$("newer").addEventListener("click", () => {
  if (pager.at === 0 || pager.busy) return;
  pager.at -= 1;
  refresh();
});
document.addEventListener("visibilitychange", () => { if (!document.hidden && !pager.busy) refresh(); });
refresh();
