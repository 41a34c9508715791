// A transfer's schedules (Temporal Schedules behind the API): list, create, enable/disable, delete.

import { ApiError, call, del, get, post } from "../api.js";
import { alertBox, confirmAction, el, short, when } from "../dom.js";
import { schemaForm } from "../forms.js";

/** The Coriolis cron fields; the API says which values it takes (its message lands beside the field). */
const CRON = {
  type: "object",
  properties: Object.fromEntries([
    ["minute", "0–59"], ["hour", "0–23 (UTC)"], ["dom", "day of month, 1–31"], ["month", "1–12"],
    ["dow", "day of week, 0–6 (0 is Sunday, as in cron)"],
  ].map(([name, hint]) => [name, { type: "integer", description: `${hint}; empty: every` }])),
};

function cronText(s) {
  return ["minute", "hour", "dom", "month", "dow"].map((k) => s[k] ?? "*").join(" ");
}

export function schedulesSection(transferId) {
  const rows = el("tbody", {});
  const error = alertBox("schedules-error");
  const cron = schemaForm(CRON, "schedule", "When");
  const enabled = el("input", { type: "checkbox", id: "schedule-enabled", checked: true });
  const autoDeploy = el("input", { type: "checkbox", id: "schedule-auto-deploy" });
  const expires = el("input", { type: "datetime-local", id: "schedule-expires" });
  const formError = alertBox("schedule-form-error");
  const base = `/transfers/${transferId}/schedules`;

  const refresh = async () => {
    const { schedules } = await get(`${base}?show_expired=true`);
    rows.replaceChildren(...schedules.map((s) => el("tr", { "data-schedule-id": s.id },
      el("th", { scope: "row" }, el("code", { title: s.id }, short(s.id))),
      el("td", {}, el("code", {}, cronText(s.schedule))),
      el("td", { class: "schedule-enabled" }, s.enabled ? "enabled" : "disabled"),
      el("td", {}, s.auto_deploy ? "yes" : "no"),
      el("td", {}, when(s.expiration_date)),
      el("td", { class: "actions" },
        el("button", { type: "button", onclick: () => toggle(s) }, s.enabled ? "Disable" : "Enable"),
        el("button", { type: "button", class: "danger", onclick: () => remove(s) }, "Delete")))));
    if (!schedules.length) rows.append(el("tr", {}, el("td", { colspan: 6 }, "No schedules.")));
  };
  const toggle = async (s) => {
    try {
      await call("PUT", `${base}/${s.id}`, { enabled: !s.enabled });
      await refresh();
    } catch (e) {
      error.show(e.message);
    }
  };
  const remove = async (s) => {
    if (!(await confirmAction(`Delete schedule ${short(s.id)} (${cronText(s.schedule)})?`, "Delete schedule"))) return;
    try {
      await del(`${base}/${s.id}`);
      await refresh();
    } catch (e) {
      error.show(e.message);
    }
  };

  const form = el("form", { id: "schedule-form", novalidate: true },
    cron.node,
    el("div", { class: "check" }, enabled, el("label", { for: "schedule-enabled" }, "Enabled")),
    el("div", { class: "check" }, autoDeploy, el("label", { for: "schedule-auto-deploy" }, "Deploy after each execution")),
    el("div", { class: "field" }, el("label", { for: "schedule-expires" }, "Expires (local time)"), expires),
    formError,
    el("button", { type: "submit", id: "schedule-create" }, "Add schedule"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    formError.show("");
    cron.clearErrors();
    try {
      const body = { schedule: cron.read(), enabled: enabled.checked, auto_deploy: autoDeploy.checked,
                     expiration_date: expires.value ? new Date(expires.value).toISOString() : null };
      await post(base, body);
      form.reset();
      await refresh();
    } catch (e) {
      if (!(e instanceof ApiError) && !e.field) throw e;
      if (!cron.showError(e.message, e.field)) formError.show(e.message);
    }
  });

  const node = el("section", { id: "schedules", "aria-labelledby": "schedules-title" },
    el("h2", { id: "schedules-title" }, "Schedules"),
    el("table", {}, el("caption", {}, "Schedules of this transfer"),
      el("thead", {}, el("tr", {}, ["Id", "Cron (m h dom mon dow)", "State", "Auto-deploy", "Expires", ""]
        .map((h) => el("th", { scope: "col" }, h)))),
      rows),
    error, form);
  return { node, refresh };
}
