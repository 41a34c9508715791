// One-shot migrations (``/migrations``): the list, and one migration with its live progress.

import { del, get } from "../api.js";
import { alertBox, confirmAction, el, short, status, when } from "../dom.js";
import { FINAL } from "../progress.js";
import { poller, runPanel } from "./runs.js";

export async function migrationsPage(main) {
  const { migrations } = await get("/migrations");
  const rows = migrations.map((m) => el("tr", { "data-migration-id": m.id },
    el("th", { scope: "row" }, el("a", { href: `#/migrations/${m.id}` }, short(m.id))),
    el("td", {}, m.instances.join(", ")),
    el("td", {}, status(m.last_execution_status)),
    el("td", {}, when(m.created_at))));
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 4 }, "No migrations yet.")));
  main.replaceChildren(el("h1", { tabindex: -1 }, "Migrations"),
    el("p", {}, "One-shot migrations; start one from the ", el("a", { href: "#/transfers/new" }, "new transfer wizard"), "."),
    el("table", { id: "migrations" }, el("caption", {}, "Migrations of this project"),
      el("thead", {}, el("tr", {}, ["Id", "Instances", "Status", "Created"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, rows)));
}

export async function migrationPage(main, [id], ctx) {
  const error = alertBox("migration-error");
  const panel = runPanel("migration", "Migration");
  const remove = el("button", { type: "button", id: "delete-migration", class: "danger", hidden: true }, "Delete migration");
  remove.addEventListener("click", async () => {
    if (!(await confirmAction(`Delete migration ${short(id)}?`, "Delete migration"))) return;
    try {
      await del(`/migrations/${id}`);
      location.hash = "#/migrations";
    } catch (e) {
      error.show(e.message);
    }
  });
  const step = async () => {
    const { migration: m } = await get(`/migrations/${id}`);
    const running = !FINAL.has(m.last_execution_status);
    remove.hidden = running; // the API deletes finished migrations only
    panel.update({ ...m, status: m.last_execution_status }, `Migration ${short(m.id)} (${m.instances.join(", ")})`,
      `/migrations/${id}/actions`, () => kick());
    return running;
  };
  main.replaceChildren(el("h1", { tabindex: -1 }, `Migration ${short(id)}`), error, panel,
    el("div", { class: "buttons" }, remove));
  const kick = poller(ctx, step, (e) => error.show(e.message));
  await kick();
}
