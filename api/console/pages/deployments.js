// Deployments: the list, and one deployment with its live progress, cancel and delete.

import { del, get } from "../api.js";
import { alertBox, confirmAction, el, short, status, when } from "../dom.js";
import { FINAL } from "../progress.js";
import { poller, runPanel } from "./runs.js";

export async function deploymentsPage(main) {
  const { deployments } = await get("/deployments");
  const rows = deployments.map((d) => el("tr", { "data-deployment-id": d.id },
    el("th", { scope: "row" }, el("a", { href: `#/deployments/${d.id}` }, short(d.id))),
    el("td", {}, el("a", { href: `#/transfers/${d.transfer_id}` }, short(d.transfer_id))),
    el("td", {}, d.instances.join(", ")),
    el("td", {}, status(d.last_execution_status)),
    el("td", {}, when(d.created_at))));
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 5 }, "No deployments yet.")));
  main.replaceChildren(el("h1", { tabindex: -1 }, "Deployments"),
    el("table", { id: "deployments" }, el("caption", {}, "Deployments of this project"),
      el("thead", {}, el("tr", {}, ["Id", "Transfer", "Instances", "Status", "Created"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, rows)));
}

export async function deploymentPage(main, [id], ctx) {
  const error = alertBox("deployment-error");
  const info = el("dl", { id: "deployment-summary", class: "summary" });
  const panel = runPanel("deployment", "Deployment");
  const remove = el("button", { type: "button", id: "delete-deployment", class: "danger", hidden: true }, "Delete deployment");
  remove.addEventListener("click", async () => {
    if (!(await confirmAction(`Delete deployment ${short(id)}?`, "Delete deployment"))) return;
    try {
      await del(`/deployments/${id}`);
      location.hash = "#/deployments";
    } catch (e) {
      error.show(e.message);
    }
  });
  const step = async () => {
    const { deployment: d } = await get(`/deployments/${id}`);
    const item = (k, v) => [el("dt", {}, k), el("dd", {}, v)];
    info.replaceChildren(...[
      item("Id", el("code", {}, d.id)),
      item("Transfer", el("a", { href: `#/transfers/${d.transfer_id}` }, short(d.transfer_id))),
      item("Instances", d.instances.join(", ")),
      item("Clone disks", String(d.clone_disks)),
      item("Skip OS morphing", String(d.skip_os_morphing)),
      item("Result", el("code", {}, JSON.stringify(d.transfer_result)))].flat());
    const running = !FINAL.has(d.last_execution_status);
    remove.hidden = running; // deleting is for finished deployments only
    panel.update({ ...d, status: d.last_execution_status, created_at: d.created_at, updated_at: d.updated_at },
      `Deployment ${short(d.id)}`, `/deployments/${id}/actions`, () => kick());
    return running;
  };
  main.replaceChildren(el("h1", { tabindex: -1 }, `Deployment ${short(id)}`), info, error, panel,
    el("div", { class: "buttons" }, remove));
  const kick = poller(ctx, step, (e) => error.show(e.message));
  await kick();
}
