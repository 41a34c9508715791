// Small DOM helpers: elements, status badges, dates and a confirmation dialog.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "text") node.textContent = value;
    else if (key === "value") node.value = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function status(value) {
  return el("span", { class: `status status-${String(value ?? "unknown").toLowerCase()}` }, value ?? "—");
}

export function when(timestamp) {
  if (!timestamp) return "—";
  const d = new Date(timestamp.endsWith("Z") || timestamp.includes("+") ? timestamp : `${timestamp}Z`);
  return Number.isNaN(d.getTime()) ? timestamp : d.toLocaleString();
}

export function short(id) {
  return id ? id.slice(0, 8) : "—";
}

/** A message area that screen readers announce; ``show`` puts an API error (or any text) in it. */
export function alertBox(id) {
  const box = el("p", { class: "error", id, role: "alert", hidden: true });
  box.show = (message) => {
    box.textContent = message;
    box.hidden = !message;
  };
  return box;
}

/** Ask before something that cannot be undone (cancel, force-cancel, delete). Resolves to a boolean. */
export function confirmAction(message, confirmLabel) {
  return new Promise((resolve) => {
    const dialog = el("dialog", { class: "confirm", "aria-labelledby": "confirm-message" });
    const done = (answer) => {
      dialog.close();
      dialog.remove();
      resolve(answer);
    };
    dialog.append(
      el("p", { id: "confirm-message" }, message),
      el("div", { class: "buttons" },
        el("button", { type: "button", class: "danger", onclick: () => done(true) }, confirmLabel),
        el("button", { type: "button", onclick: () => done(false) }, "Go back")),
    );
    dialog.addEventListener("cancel", () => done(false));
    document.body.append(dialog);
    dialog.showModal();
  });
}
