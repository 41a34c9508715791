// What transfers' executions and deployments share: a live progress panel, cancel buttons, polling.

import { post } from "../api.js";
import { alertBox, confirmAction, el, status, when } from "../dom.js";
import { FINAL, percent, progressBar, taskTable } from "../progress.js";

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
/** Between two polls: the API's progress updates come every few seconds; faster gains nothing. */
export const POLL_MS = 1000;

/**
 * Run ``step`` every POLL_MS while it returns true and the page is still shown. ``kick()`` after a
 * user action: it starts the loop, or, when a step is under way (whose answer may predate the
 * action), makes the loop run one more step at once whatever that step returns.
 */
export function poller(ctx, step, onError) {
  let running = false;
  let again = false;
  const kick = async () => {
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      while (ctx.alive()) {
        again = false;
        let more = true;
        try {
          more = await step();
        } catch (e) {
          onError(e);
        }
        if (!ctx.alive() || (!more && !again)) break;
        if (!again) await sleep(POLL_MS);
      }
    } finally {
      running = false;
    }
  };
  return kick;
}

/**
 * A panel for one execution: status, a bar over all its tasks and the task table. ``cancelPath`` is
 * where its cancel action is posted; ``after`` runs when a cancel was accepted.
 */
export function runPanel(id, title) {
  const heading = el("h2", { id: `${id}-title` }, title);
  const statusLine = el("p", { id: `${id}-status` });
  const bar = progressBar(`${id}-progress`, `${title} progress`);
  const error = alertBox(`${id}-error`);
  const buttons = el("div", { class: "buttons" });
  const tableSlot = el("div", {});
  const node = el("section", { id, class: "run", "aria-labelledby": heading.id },
    heading, statusLine, bar, buttons, error, tableSlot);
  node.error = error;
  node.update = (run, heading_text, cancelPath, after) => {
    heading.textContent = heading_text;
    statusLine.replaceChildren("Status: ", status(run.status), ` · started ${when(run.created_at)}`,
      run.updated_at ? ` · updated ${when(run.updated_at)}` : "");
    bar.update(percent(run.tasks));
    tableSlot.replaceChildren(taskTable(run.tasks, `${id}-tasks`));
    buttons.replaceChildren();
    if (!FINAL.has(run.status) && cancelPath) {
      const cancel = (force) => async () => {
        const what = force ? "Force-cancel (terminate at once, without cleanup)" : "Cancel";
        if (!(await confirmAction(`${what} ${heading_text}?`, force ? "Force cancel" : "Cancel it"))) return;
        try {
          await post(cancelPath, { cancel: { force } });
          error.show("");
          after();
        } catch (e) {
          error.show(e.message);
        }
      };
      buttons.append(
        el("button", { type: "button", id: `${id}-cancel`, class: "danger", onclick: cancel(false) }, "Cancel"),
        el("button", { type: "button", id: `${id}-force-cancel`, class: "danger", onclick: cancel(true) }, "Force cancel"));
    }
  };
  return node;
}
