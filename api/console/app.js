// The console's shell: login, navigation and a hash router. Each page is rendered from the REST API.

import { logIn, logOut, session } from "./api.js";
import { alertBox, el } from "./dom.js";
import { endpointsPage, instancesPage } from "./pages/endpoints.js";
import { deploymentPage, deploymentsPage } from "./pages/deployments.js";
import { migrationPage, migrationsPage } from "./pages/migrations.js";
import { transferPage, transfersPage } from "./pages/transfers.js";
import { wizardPage } from "./pages/wizard.js";

const ROUTES = [
  [/^#\/endpoints$/, endpointsPage],
  [/^#\/endpoints\/([^/]+)\/instances$/, instancesPage],
  [/^#\/transfers$/, transfersPage],
  [/^#\/transfers\/new$/, wizardPage],
  [/^#\/transfers\/([^/]+)$/, transferPage],
  [/^#\/deployments$/, deploymentsPage],
  [/^#\/deployments\/([^/]+)$/, deploymentPage],
  [/^#\/migrations$/, migrationsPage],
  [/^#\/migrations\/([^/]+)$/, migrationPage],
];

const main = document.getElementById("main");
const who = document.getElementById("who");
let view = 0; // which rendering is current: a page's polls stop once another page is shown

function loginPage() {
  const project = el("input", { id: "login-project", name: "project", required: true, autocomplete: "off" });
  const token = el("input", { id: "login-token", name: "token", type: "password", autocomplete: "off" });
  const error = alertBox("login-error");
  const form = el("form", { id: "login" },
    el("div", { class: "field" }, el("label", { for: "login-project" }, "Project id"), project),
    el("div", { class: "field" }, el("label", { for: "login-token" }, "Keystone token (leave empty in noauth mode)"), token),
    el("p", {}, el("small", {}, "The console keeps the project id and the token for this browser tab only; it never asks for or stores a password.")),
    error,
    el("button", { type: "submit", id: "login-submit" }, "Log in"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!project.value.trim()) return error.show("A project id is needed.");
    logIn(project.value.trim(), token.value.trim());
    // A deep link opened before logging in is where the user wanted to go.
    const target = location.hash && location.hash !== "#/login" ? location.hash : "#/endpoints";
    if (location.hash === target) render();
    else location.hash = target;
  });
  main.replaceChildren(el("h1", { tabindex: -1 }, "Log in to Sterna"), form);
  project.focus();
}

async function render() {
  const mine = ++view;
  const ctx = { alive: () => mine === view };
  const s = session();
  who.textContent = s ? `project ${s.project}` : "";
  document.getElementById("logout").hidden = !s;
  document.querySelectorAll("nav a").forEach((a) => {
    if (location.hash.startsWith(a.getAttribute("href"))) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  });
  if (!s) return loginPage();
  const hash = location.hash || "#/endpoints";
  const found = ROUTES.map(([re, page]) => [hash.match(re), page]).find(([m]) => m);
  if (!found) {
    main.replaceChildren(el("h1", {}, "Not found"), el("p", {}, el("a", { href: "#/endpoints" }, "Endpoints")));
    return;
  }
  const [match, page] = found;
  main.replaceChildren(el("p", { class: "loading" }, "Loading…"));
  try {
    await page(main, match.slice(1), ctx);
    if (ctx.alive()) main.querySelector("h1")?.focus({ preventScroll: true });
  } catch (e) {
    if (!ctx.alive()) return;
    if (e.status === 401) {
      logOut();
      return loginPage();
    }
    main.replaceChildren(el("h1", {}, "Something went wrong"), el("p", { class: "error", role: "alert" }, e.message));
  }
}

document.getElementById("logout").addEventListener("click", () => {
  logOut();
  location.hash = "#/login";
  render();
});
window.addEventListener("hashchange", render);
render();
