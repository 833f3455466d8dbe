"use strict";
// The run list: refreshed every two seconds.
async function refresh() {
  const r = await zs.authedJSON("/ui/api/runs");
  const tbody = document.querySelector("#runs tbody");
  if (r.status !== 200) { tbody.replaceChildren(zs.el("tr", {}, zs.el("td", { colspan: "4", class: "error" }, zs.detail(r.body)))); return; }
  const runs = r.body.runs;
  document.getElementById("empty").hidden = runs.length > 0;
  tbody.replaceChildren(...runs.slice().reverse().map((run) => zs.el("tr", { "data-run": run.id },
    zs.el("td", {}, zs.el("a", { href: "/runs/" + encodeURIComponent(run.id) }, zs.el("code", {}, run.id))),
    zs.el("td", {}, run.ended ? "ended" : "live"),
    zs.el("td", {}, run.subscribers),
    zs.el("td", {}, run.last_event_id || "–"))));
}
refresh();
setInterval(refresh, 2000);
