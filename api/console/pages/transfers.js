// Transfers: the list, and one transfer with its executions, execute, deploy and delete.

import { del, get, post } from "../api.js";
import { alertBox, confirmAction, el, short, status, when } from "../dom.js";
import { FINAL } from "../progress.js";
import { poller, runPanel } from "./runs.js";
import { schedulesSection } from "./schedules.js";

export async function transfersPage(main) {
  const [{ transfers }, { endpoints }] = await Promise.all([get("/transfers"), get("/endpoints")]);
  const names = new Map(endpoints.map((ep) => [ep.id, ep.name]));
  const rows = transfers.map((t) => el("tr", { "data-transfer-id": t.id },
    el("th", { scope: "row" }, el("a", { href: `#/transfers/${t.id}` }, short(t.id))),
    el("td", {}, t.instances.join(", ")),
    el("td", {}, names.get(t.origin_endpoint_id) ?? short(t.origin_endpoint_id)),
    el("td", {}, names.get(t.destination_endpoint_id) ?? short(t.destination_endpoint_id)),
    el("td", {}, t.scenario),
    el("td", {}, status(t.last_execution_status)),
    el("td", {}, when(t.created_at))));
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 7 }, "No transfers yet.")));
  main.replaceChildren(el("h1", { tabindex: -1 }, "Transfers"),
    el("p", {}, el("a", { href: "#/transfers/new", class: "button" }, "New transfer")),
    el("table", { id: "transfers" }, el("caption", {}, "Transfers of this project"),
      el("thead", {}, el("tr", {}, ["Id", "Instances", "Source", "Destination", "Scenario", "Last execution", "Created"]
        .map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, rows)));
}

function summary(t, names) {
  const item = (k, v) => [el("dt", {}, k), el("dd", {}, v)];
  return el("dl", { id: "transfer-summary", class: "summary" },
    item("Id", el("code", {}, t.id)),
    item("Instances", t.instances.join(", ")),
    item("Source", names.get(t.origin_endpoint_id) ?? t.origin_endpoint_id),
    item("Destination", names.get(t.destination_endpoint_id) ?? t.destination_endpoint_id),
    item("Scenario", t.scenario),
    item("Last execution", status(t.last_execution_status)),
    item("Destination environment", el("code", {}, JSON.stringify(t.destination_environment))),
    item("Source environment", el("code", {}, JSON.stringify(t.source_environment))),
    item("Network map", el("code", {}, JSON.stringify(t.network_map))),
    t.notes ? item("Notes", t.notes) : null);
}

export async function transferPage(main, [id], ctx) {
  const { endpoints } = await get("/endpoints");
  const names = new Map(endpoints.map((ep) => [ep.id, ep.name]));
  const error = alertBox("transfer-error");
  const summarySlot = el("div", {});
  const execRows = el("tbody", {});
  const panel = runPanel("execution", "Execution");
  const schedules = schedulesSection(id);
  panel.hidden = true;
  let selected = null;
  let kick = () => {};

  // Disabled until the first answer says whether an execution is running.
  const execute = el("button", { type: "button", id: "execute", disabled: true }, "Execute");
  const cloneDisks = el("input", { type: "checkbox", id: "deploy-clone-disks", checked: true });
  const deploySkip = el("input", { type: "checkbox", id: "deploy-skip-os-morphing" });
  const deploy = el("button", { type: "submit", id: "deploy", disabled: true }, "Deploy");
  const remove = el("button", { type: "button", id: "delete-transfer", class: "danger", hidden: true }, "Delete transfer");

  execute.addEventListener("click", async () => {
    error.show("");
    try {
      const { execution } = await post(`/transfers/${id}/executions`, { execution: {} });
      selected = execution.id;
      kick();
    } catch (e) {
      error.show(e.message);
    }
  });
  const deployForm = el("form", { id: "deploy-form", class: "inline" },
    el("div", { class: "check" }, cloneDisks, el("label", { for: "deploy-clone-disks" }, "Clone disks (keep the replica)")),
    el("div", { class: "check" }, deploySkip, el("label", { for: "deploy-skip-os-morphing" }, "Skip OS morphing")),
    deploy);
  deployForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.show("");
    try {
      const { deployment } = await post("/deployments", { deployment: {
        transfer_id: id, clone_disks: cloneDisks.checked, skip_os_morphing: deploySkip.checked } });
      location.hash = `#/deployments/${deployment.id}`;
    } catch (e) {
      error.show(e.message);
    }
  });
  remove.addEventListener("click", async () => {
    if (!(await confirmAction(`Delete transfer ${short(id)} and its executions?`, "Delete transfer"))) return;
    try {
      await del(`/transfers/${id}`);
      location.hash = "#/transfers";
    } catch (e) {
      error.show(e.message);
    }
  });

  const step = async () => {
    const { transfer } = await get(`/transfers/${id}`);
    summarySlot.replaceChildren(summary(transfer, names));
    if (!deploySkip.dataset.touched) deploySkip.checked = transfer.skip_os_morphing;
    const executions = [...transfer.executions].sort((a, b) => b.number - a.number);
    if (!selected && executions.length) selected = executions[0].id;
    const active = executions.some((e) => !FINAL.has(e.status));
    execute.disabled = active;
    deploy.disabled = active;
    remove.hidden = active; // the API refuses to delete a transfer while an execution runs
    execRows.replaceChildren(...executions.map((e) => el("tr", { "data-execution-id": e.id, class: e.id === selected ? "selected" : null },
      el("th", { scope: "row" }, `#${e.number}`),
      el("td", {}, e.type),
      el("td", {}, status(e.status)),
      el("td", {}, when(e.created_at)),
      el("td", {}, el("button", { type: "button", onclick: () => { selected = e.id; kick(); } }, "Show")))));
    if (!executions.length) execRows.append(el("tr", {}, el("td", { colspan: 5 }, "Not executed yet.")));
    if (!selected) return active;
    const { execution } = await get(`/transfers/${id}/executions/${selected}`);
    panel.hidden = false;
    panel.update(execution, `Execution #${execution.number}`,
      `/transfers/${id}/executions/${execution.id}/actions`, () => kick());
    return active || !FINAL.has(execution.status);
  };
  deploySkip.addEventListener("change", () => { deploySkip.dataset.touched = "1"; });

  main.replaceChildren(
    el("h1", { tabindex: -1 }, `Transfer ${short(id)}`),
    summarySlot,
    el("div", { class: "buttons" }, execute, remove),
    el("h2", {}, "Deploy"), deployForm,
    error,
    el("table", { id: "executions" }, el("caption", {}, "Executions"),
      el("thead", {}, el("tr", {}, ["Number", "Type", "Status", "Started", ""].map((h) => el("th", { scope: "col" }, h)))),
      execRows),
    panel,
    schedules.node);
  kick = poller(ctx, step, (e) => error.show(e.message));
  await Promise.all([kick(), schedules.refresh().catch((e) => error.show(e.message))]);
}
