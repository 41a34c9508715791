// Execution progress from the tasks' Coriolis progress updates: a bar for the whole and a task table.

import { el, status } from "./dom.js";

/** Execution statuses after which nothing changes (core/statuses.py FINAL_STATUSES). */
export const FINAL = new Set(["COMPLETED", "ERROR", "CANCELED"]);
const TASK_DONE = new Set(["COMPLETED", "ERROR", "CANCELED", "FORCE_CANCELED", "UNSCHEDULED"]);

function lastProgress(task) {
  const updates = task.progress_updates ?? [];
  return updates.length ? updates.reduce((a, b) => (b.index >= a.index ? b : a)) : null;
}

function taskFraction(task) {
  if (task.status === "COMPLETED") return 1;
  if (TASK_DONE.has(task.status)) return 0;
  const p = lastProgress(task);
  return p && p.total_steps ? Math.min(1, p.current_step / p.total_steps) : 0;
}

/** Whole percent done: each task counts the same; a task counts fully only once COMPLETED. */
export function percent(tasks) {
  if (!tasks?.length) return 0;
  const done = tasks.reduce((sum, t) => sum + taskFraction(t), 0) / tasks.length;
  return Math.floor(done * 100);
}

export function progressBar(id, label) {
  const bar = el("progress", { id, max: 100, value: 0, "aria-label": label });
  const text = el("span", { class: "percent", id: `${id}-text`, "aria-live": "polite" }, "0 %");
  const node = el("div", { class: "progress" }, bar, text);
  node.update = (value) => {
    bar.value = value;
    text.textContent = `${value} %`;
  };
  return node;
}

export function taskTable(tasks, id = "tasks") {
  const rows = (tasks ?? []).map((t) => {
    const p = lastProgress(t);
    const events = t.events ?? [];
    const last = events.length ? events[events.length - 1].message : "";
    const fraction = p && p.total_steps ? Math.min(100, Math.floor((100 * p.current_step) / p.total_steps)) : null;
    return el("tr", { "data-task-type": t.task_type, "data-instance": t.instance },
      el("td", {}, t.index),
      el("th", { scope: "row" }, t.task_type),
      el("td", {}, t.instance),
      el("td", { class: "task-status" }, status(t.status)),
      el("td", {},
        fraction === null ? "" : el("progress", { max: 100, value: fraction, "aria-label": `${t.task_type} progress` }),
        p?.message ? el("small", {}, ` ${p.message}`) : ""),
      el("td", {},
        events.length > 1
          ? el("details", {}, el("summary", {}, last), el("ol", {}, events.map((e) => el("li", {}, `${e.level ?? ""} ${e.message}`))))
          : last,
        t.exception_details ? el("pre", { class: "error" }, t.exception_details) : ""));
  });
  return el("table", { id, class: "tasks" },
    el("caption", {}, "Tasks"),
    el("thead", {}, el("tr", {}, ["#", "Task", "Instance", "Status", "Progress", "Events"].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows));
}
