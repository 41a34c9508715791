// Forms generated from the providers' JSON schemas (GET /providers/{platform}/schemas/{type}).

import { el } from "./dom.js";

const SECRET = /pass|secret|token|key|credential/i;

export class FieldError extends Error {
  constructor(field, message) {
    super(message);
    this.field = field;
  }
}

function inputFor(id, name, prop) {
  if (Array.isArray(prop.enum)) {
    return el("select", { id, name },
      el("option", { value: "" }, "(default)"),
      prop.enum.map((v) => el("option", { value: JSON.stringify(v) }, String(v))));
  }
  switch (prop.type) {
    case "boolean":
      // Three states: unset leaves the provider's default, which a checkbox cannot say.
      return el("select", { id, name },
        el("option", { value: "" }, "(default)"),
        el("option", { value: "true" }, "yes"),
        el("option", { value: "false" }, "no"));
    case "integer":
    case "number":
      return el("input", { id, name, type: "number", step: prop.type === "integer" ? "1" : "any",
                           min: prop.minimum });
    case "object":
    case "array":
      return el("textarea", { id, name, rows: 3, placeholder: prop.type === "object" ? "{}" : "[]",
                              spellcheck: "false" });
    default:
      return el("input", { id, name, type: SECRET.test(name) ? "password" : "text", autocomplete: "off" });
  }
}

function readValue(name, prop, input) {
  const raw = input.value.trim();
  if (raw === "") return undefined;
  if (Array.isArray(prop.enum)) return JSON.parse(raw);
  switch (prop.type) {
    case "boolean":
      return raw === "true";
    case "integer":
    case "number": {
      const n = Number(raw);
      // Not a number: send it as typed, so the API's own message explains what it wants.
      return Number.isFinite(n) ? n : raw;
    }
    case "object":
    case "array":
      try {
        return JSON.parse(raw);
      } catch {
        throw new FieldError(name, `${name}: not valid JSON`);
      }
    default:
      return raw;
  }
}

/**
 * Fields for every property of ``schema`` (a JSON textarea when it lists none), each with a label and
 * an error line of its own. ``read()`` gives the object of the fields that were filled in.
 */
export function schemaForm(schema, idPrefix, legend) {
  const props = schema?.properties ?? {};
  const required = new Set(schema?.required ?? []);
  const fields = new Map();
  const box = el("fieldset", { class: "schema-form", id: idPrefix }, el("legend", {}, legend));
  const free = Object.keys(props).length === 0;
  const add = (name, prop) => {
    const id = `${idPrefix}-${name}`;
    const input = inputFor(id, name, prop);
    const error = el("p", { class: "field-error", id: `${id}-error`, role: "alert", hidden: true });
    const hint = prop.description ? el("small", { id: `${id}-hint` }, prop.description) : null;
    input.setAttribute("aria-describedby", [hint && hint.id, error.id].filter(Boolean).join(" "));
    if (required.has(name)) input.setAttribute("aria-required", "true");
    box.append(el("div", { class: "field" },
      el("label", { for: id }, free ? "JSON" : name, required.has(name) ? el("span", { class: "req", title: "required" }, " *") : null),
      input, hint, error));
    fields.set(name, { prop, input, error });
  };
  if (free) add("json", { type: "object", description: "JSON object (the provider publishes no fields)" });
  for (const [name, prop] of Object.entries(props)) add(name, prop);

  return {
    node: box,
    read() {
      if (free) return readValue("json", { type: "object" }, fields.get("json").input) ?? {};
      const out = {};
      for (const [name, { prop, input }] of fields) {
        const value = readValue(name, prop, input);
        if (value !== undefined) out[name] = value;
      }
      return out;
    },
    clearErrors() {
      for (const { error, input } of fields.values()) {
        error.hidden = true;
        error.textContent = "";
        input.removeAttribute("aria-invalid");
      }
    },
    /** Put ``message`` beside each field it names; true when it named one. */
    showError(message, field) {
      const named = field ? [field] : [...fields.keys()].filter((n) => new RegExp(`\\b${n}\\b`).test(message));
      for (const name of named) {
        const f = fields.get(name) ?? (free ? fields.get("json") : null);
        if (!f) continue;
        f.error.textContent = message;
        f.error.hidden = false;
        f.input.setAttribute("aria-invalid", "true");
      }
      return named.some((n) => fields.has(n)) || (free && named.length > 0);
    },
    focusFirst() {
      [...fields.values()][0]?.input.focus();
    },
  };
}
