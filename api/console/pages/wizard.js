// The "new transfer" wizard: endpoints, instances, network and storage maps, environments, options.
// One form in steps (fieldsets) so that every choice stays visible until the transfer is created.

import { ApiError, get, post } from "../api.js";
import { alertBox, el } from "../dom.js";
import { schemaForm } from "../forms.js";
import { instanceLabel } from "./endpoints.js";

async function schemaOf(platform, type) {
  try {
    const { schemas } = await get(`/providers/${encodeURIComponent(platform)}/schemas/${type}`);
    return Object.values(schemas)[0];
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) return { type: "object" }; // this provider has none
    throw e;
  }
}

function endpointSelect(id, endpoints) {
  return el("select", { id, required: true },
    el("option", { value: "" }, "choose an endpoint"),
    endpoints.map((ep) => el("option", { value: ep.id }, `${ep.name} (${ep.type})`)));
}

export async function wizardPage(main) {
  const { endpoints } = await get("/endpoints");
  const byId = new Map(endpoints.map((ep) => [ep.id, ep]));
  const origin = endpointSelect("origin", endpoints);
  const destination = endpointSelect("destination", endpoints);
  const formError = alertBox("wizard-error");
  const search = el("input", { id: "wizard-instance-search", type: "search" });
  const instanceList = el("div", { id: "wizard-instances", role: "group", "aria-label": "Instances" }, "Choose a source first.");
  const networkSlot = el("div", { id: "network-map" }, "Choose instances and a destination first.");
  const storage = el("select", { id: "storage-default" }, el("option", { value: "" }, "(provider default)"));
  const destSlot = el("div", { id: "destination-env-slot" });
  const srcSlot = el("div", { id: "source-env-slot" });
  const scenario = el("select", { id: "scenario" },
    el("option", { value: "replica" }, "replica (sync now, deploy later)"),
    el("option", { value: "live_migration" }, "live migration"));
  const skipMorphing = el("input", { id: "skip-os-morphing", type: "checkbox" });
  const notes = el("input", { id: "notes", autocomplete: "off" });
  let instances = [];
  let destNetworks = [];
  let destEnv = null;
  let srcEnv = null;
  const netSelects = new Map();

  const chosen = () => [...instanceList.querySelectorAll("input[type=checkbox]:checked")].map((c) => c.value);

  const drawNetworks = () => {
    const names = new Set();
    for (const vm of instances.filter((i) => chosen().includes(i.name))) {
      for (const nic of vm.devices?.nics ?? []) names.add(nic.network_name);
    }
    netSelects.clear();
    if (!names.size) {
      networkSlot.replaceChildren("The chosen instances have no network interfaces (or none is chosen yet).");
      return;
    }
    networkSlot.replaceChildren(...[...names].sort().map((name, i) => {
      const select = el("select", { id: `network-${i}` },
        el("option", { value: "" }, "(not mapped)"),
        destNetworks.map((n) => el("option", { value: n.id }, n.name)));
      netSelects.set(name, select);
      return el("div", { class: "field" }, el("label", { for: `network-${i}` }, `${name} →`), select);
    }));
  };

  const loadInstances = async () => {
    if (!origin.value) return;
    instanceList.replaceChildren("loading…");
    try {
      const q = search.value.trim() ? `?name=${encodeURIComponent(search.value.trim())}` : "";
      ({ instances } = await get(`/endpoints/${origin.value}/instances${q}`));
      instanceList.replaceChildren(...instances.map((vm, i) => el("div", { class: "check" },
        el("input", { type: "checkbox", id: `instance-${i}`, value: vm.name, onchange: drawNetworks }),
        el("label", { for: `instance-${i}` }, instanceLabel(vm)))));
      if (!instances.length) instanceList.append("No instance found.");
    } catch (e) {
      instanceList.replaceChildren(el("span", { class: "error", role: "alert" }, e.message));
    }
    drawNetworks();
  };

  origin.addEventListener("change", async () => {
    await loadInstances();
    srcSlot.replaceChildren();
    srcEnv = null;
    if (!origin.value) return;
    srcEnv = schemaForm(await schemaOf(byId.get(origin.value).type, 8), "source-env", "Source environment");
    srcSlot.replaceChildren(srcEnv.node);
  });
  destination.addEventListener("change", async () => {
    destSlot.replaceChildren();
    destEnv = null;
    destNetworks = [];
    storage.replaceChildren(el("option", { value: "" }, "(provider default)"));
    if (!destination.value) return drawNetworks();
    const ep = byId.get(destination.value);
    const [schema, networks, stor] = await Promise.all([
      schemaOf(ep.type, 4),
      get(`/endpoints/${ep.id}/networks`).then((r) => r.networks).catch(() => []),
      get(`/endpoints/${ep.id}/storage`).then((r) => r.storage).catch(() => null),
    ]);
    destNetworks = networks;
    for (const b of stor?.storage_backends ?? []) storage.append(el("option", { value: b.id }, b.name));
    // The network map has its own step; the schema's copy of it would say the same twice.
    const props = { ...(schema.properties ?? {}) };
    delete props.network_map;
    destEnv = schemaForm({ ...schema, properties: props }, "destination-env", "Destination environment");
    destSlot.replaceChildren(destEnv.node);
    drawNetworks();
  });

  const form = el("form", { id: "wizard", novalidate: true },
    el("fieldset", {}, el("legend", {}, "1. Source and destination"),
      el("div", { class: "field" }, el("label", { for: "origin" }, "Source endpoint"), origin),
      el("div", { class: "field" }, el("label", { for: "destination" }, "Destination endpoint"), destination)),
    el("fieldset", {}, el("legend", {}, "2. Instances"),
      el("div", { class: "field" }, el("label", { for: "wizard-instance-search" }, "Name contains"),
        el("span", { class: "search" }, search, el("button", { type: "button", onclick: loadInstances }, "Search"))),
      instanceList),
    el("fieldset", {}, el("legend", {}, "3. Network map"), networkSlot),
    el("fieldset", {}, el("legend", {}, "4. Storage"),
      el("div", { class: "field" }, el("label", { for: "storage-default" }, "Default storage backend"), storage)),
    el("fieldset", {}, el("legend", {}, "5. Environments"), destSlot, srcSlot),
    el("fieldset", {}, el("legend", {}, "6. Scenario (transfers) and options"),
      el("div", { class: "field" }, el("label", { for: "scenario" }, "Scenario"), scenario),
      el("div", { class: "check" }, skipMorphing, el("label", { for: "skip-os-morphing" }, "Skip OS morphing")),
      el("div", { class: "field" }, el("label", { for: "notes" }, "Notes"), notes)),
    formError,
    el("div", { class: "buttons" },
      el("button", { type: "submit", id: "create-transfer", value: "transfer" }, "Create transfer"),
      el("button", { type: "submit", id: "create-migration", value: "migration" }, "Migrate once (one-shot migration)")));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    formError.show("");
    destEnv?.clearErrors();
    srcEnv?.clearErrors();
    let destination_environment;
    let source_environment;
    try {
      destination_environment = destEnv?.read() ?? {};
      source_environment = srcEnv?.read() ?? {};
    } catch (e) {
      if (!(destEnv?.showError(e.message, e.field) || srcEnv?.showError(e.message, e.field))) formError.show(e.message);
      return;
    }
    const network_map = {};
    for (const [name, select] of netSelects) if (select.value) network_map[name] = select.value;
    const fields = {
      origin_endpoint_id: origin.value, destination_endpoint_id: destination.value, instances: chosen(),
      destination_environment, source_environment, network_map,
      storage_mappings: storage.value ? { default: storage.value } : {},
      skip_os_morphing: skipMorphing.checked, notes: notes.value.trim() || null,
    };
    try {
      if (event.submitter?.value === "migration") {
        // The same choices as a one-shot migration: no replica kept, no scenario.
        const created = await post("/migrations", { migration: fields });
        location.hash = `#/migrations/${created.migration.id}`;
      } else {
        const created = await post("/transfers", { transfer: { ...fields, scenario: scenario.value } });
        location.hash = `#/transfers/${created.transfer.id}`;
      }
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      // An environment's key named in the message: shown at that field too.
      const placed = [destEnv, srcEnv].map((f) => f?.showError(e.message) ?? false).some(Boolean);
      formError.show(placed ? `Not created: ${e.message}` : e.message);
    }
  });
  main.replaceChildren(el("h1", { tabindex: -1 }, "New transfer"), form);
}
