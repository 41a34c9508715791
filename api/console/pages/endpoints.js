// Endpoints: the list, a create form generated from the provider's connection schema, validate,
// delete, and an endpoint's instances with a search.

import { ApiError, del, get, post } from "../api.js";
import { alertBox, confirmAction, el, short, when } from "../dom.js";
import { schemaForm } from "../forms.js";

/** Platforms that can be endpoints: Coriolis provider type bit 16 (connection schema). */
async function endpointPlatforms() {
  const { providers } = await get("/providers");
  return Object.entries(providers).filter(([, p]) => p.types.includes(16)).map(([name]) => name).sort();
}

function createForm(platforms, onCreated) {
  const name = el("input", { id: "endpoint-name", name: "name", required: true, autocomplete: "off" });
  const nameError = el("p", { class: "field-error", id: "endpoint-name-error", role: "alert", hidden: true });
  name.setAttribute("aria-describedby", nameError.id);
  const description = el("input", { id: "endpoint-description", name: "description", autocomplete: "off" });
  const type = el("select", { id: "endpoint-type", name: "type", required: true },
    el("option", { value: "" }, "choose a platform"), platforms.map((p) => el("option", { value: p }, p)));
  const slot = el("div", { id: "connection-slot" });
  const formError = alertBox("endpoint-form-error");
  let connection = null;

  type.addEventListener("change", async () => {
    slot.replaceChildren();
    connection = null;
    if (!type.value) return;
    try {
      const { schemas } = await get(`/providers/${encodeURIComponent(type.value)}/schemas/16`);
      connection = schemaForm(schemas.connection_info_schema, "connection", "Connection");
      slot.replaceChildren(connection.node);
    } catch (e) {
      formError.show(e.message);
    }
  });

  const form = el("form", { id: "endpoint-form", novalidate: true, "aria-labelledby": "endpoint-form-title" },
    el("h2", { id: "endpoint-form-title" }, "New endpoint"),
    el("div", { class: "field" }, el("label", { for: "endpoint-name" }, "Name"), name, nameError),
    el("div", { class: "field" }, el("label", { for: "endpoint-type" }, "Platform"), type),
    el("div", { class: "field" }, el("label", { for: "endpoint-description" }, "Description"), description),
    slot, formError,
    el("button", { type: "submit", id: "endpoint-create" }, "Create endpoint"));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    formError.show("");
    nameError.hidden = true;
    connection?.clearErrors();
    let info = {};
    try {
      info = connection ? connection.read() : {};
    } catch (e) {
      if (!connection?.showError(e.message, e.field)) formError.show(e.message);
      return;
    }
    // Nothing is checked here that the API checks: its 4xx message is what the user sees.
    const body = { endpoint: { name: name.value.trim(), type: type.value, connection_info: info,
                               description: description.value.trim() || null } };
    try {
      const { endpoint } = await post("/endpoints", body);
      form.reset();
      slot.replaceChildren();
      connection = null;
      onCreated(endpoint);
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      let placed = connection?.showError(e.message) ?? false;
      if (/\bname\b/.test(e.message) && !placed) {
        nameError.textContent = e.message;
        nameError.hidden = false;
        placed = true;
      }
      if (!placed) formError.show(e.message);
    }
  });
  return form;
}

function endpointRow(ep, refresh) {
  const result = el("span", { class: "validation", "aria-live": "polite" });
  const validate = async () => {
    result.textContent = "checking…";
    try {
      const out = await post(`/endpoints/${ep.id}/actions`, { "validate-connection": null });
      const v = out["validate-connection"];
      result.textContent = v.valid ? "valid" : `invalid: ${v.message}`;
      result.className = `validation ${v.valid ? "ok" : "bad"}`;
    } catch (e) {
      result.textContent = e.message;
      result.className = "validation bad";
    }
  };
  const remove = async () => {
    if (!(await confirmAction(`Delete endpoint ${ep.name}?`, "Delete endpoint"))) return;
    try {
      await del(`/endpoints/${ep.id}`);
      refresh();
    } catch (e) {
      result.textContent = e.message; // e.g. still used by a transfer: the API says so
      result.className = "validation bad";
    }
  };
  return el("tr", { "data-endpoint-id": ep.id },
    el("th", { scope: "row" }, ep.name),
    el("td", {}, ep.type),
    el("td", {}, ep.description ?? ""),
    el("td", {}, el("code", { title: ep.id }, short(ep.id))),
    el("td", {}, when(ep.created_at)),
    el("td", { class: "actions" },
      el("a", { href: `#/endpoints/${ep.id}/instances` }, "Instances"),
      el("button", { type: "button", onclick: validate }, "Validate"),
      el("button", { type: "button", class: "danger", onclick: remove }, "Delete"),
      result));
}

export async function endpointsPage(main) {
  const list = el("tbody", { id: "endpoint-rows" });
  const table = el("table", { id: "endpoints" },
    el("caption", {}, "Endpoints of this project"),
    el("thead", {}, el("tr", {}, ["Name", "Platform", "Description", "Id", "Created", ""].map((h) => el("th", { scope: "col" }, h)))),
    list);
  const refresh = async () => {
    const { endpoints } = await get("/endpoints");
    list.replaceChildren(...endpoints.map((ep) => endpointRow(ep, refresh)));
    if (!endpoints.length) list.append(el("tr", {}, el("td", { colspan: 6 }, "No endpoints yet.")));
  };
  main.replaceChildren(el("h1", { tabindex: -1 }, "Endpoints"), table, createForm(await endpointPlatforms(), refresh));
  await refresh();
}

export function instanceLabel(vm) {
  const disks = vm.devices?.disks ?? [];
  const gib = disks.reduce((s, d) => s + (d.size_bytes ?? 0), 0) / 1024 ** 3;
  return `${vm.name} — ${vm.num_cpu} vCPU, ${vm.memory_mb} MiB, ${disks.length} disk(s), ${gib.toFixed(1)} GiB, ${vm.os_type}`;
}

export async function instancesPage(main, [endpointId]) {
  const { endpoint } = await get(`/endpoints/${endpointId}`);
  const search = el("input", { id: "instance-search", type: "search", name: "name" });
  const error = alertBox("instances-error");
  const list = el("ul", { id: "instances" });
  const load = async () => {
    error.show("");
    list.replaceChildren(el("li", {}, "loading…"));
    try {
      const q = search.value.trim() ? `?name=${encodeURIComponent(search.value.trim())}` : "";
      const { instances } = await get(`/endpoints/${endpointId}/instances${q}`);
      list.replaceChildren(...instances.map((vm) => el("li", {}, instanceLabel(vm))));
      if (!instances.length) list.append(el("li", {}, "No instance matches."));
    } catch (e) {
      list.replaceChildren();
      error.show(e.message);
    }
  };
  const form = el("form", { role: "search", onsubmit: (e) => { e.preventDefault(); load(); } },
    el("label", { for: "instance-search" }, "Name contains "), search, el("button", { type: "submit" }, "Search"));
  main.replaceChildren(el("h1", { tabindex: -1 }, `Instances of ${endpoint.name}`), form, error, list);
  await load();
}
