"""``sterna migration watch`` and the demo: a progress bar until a migration ends, then the task table.

Under the bar, the running task's current sub-step (its newest progress update: "OS morphing: purge
open-vm-tools", "Boot check: userspace at 66s"), so a step that runs for minutes is never a frozen bar.
"""

from __future__ import annotations

import sys
from typing import Any

from client.sdk import SternaClient


def current_substep(migration: dict[str, Any]) -> str:
    """The newest progress update message of the running tasks ("" when none)."""
    for t in migration.get("tasks", []):
        if t["status"] == "RUNNING" and t.get("progress_updates"):
            return f"{t['instance']} {t['task_type']}: {t['progress_updates'][-1]['message']}"
    return ""


def task_table(migration: dict[str, Any]) -> Any:
    """One row per task: instance, task, status and its last event (the error for a failed one)."""
    from rich.table import Table

    table = Table(title=f"Migration {migration['id']}: {migration['last_execution_status']}", title_justify="left")
    for column in ("instance", "task", "status", "last event"):
        table.add_column(column, overflow="fold")
    for t in migration.get("tasks", []):
        events = t.get("events") or []
        last = t.get("exception_details") if t["status"] == "ERROR" else None
        table.add_row(t["instance"], t["task_type"], t["status"], last or (events[-1]["message"] if events else ""))
    return table


def watch(api: SternaClient, migration_id: str) -> int:
    """Draw a progress bar (and the current sub-step under it) until the migration ends."""
    from rich.console import Console, Group
    from rich.live import Live
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
    from rich.text import Text

    from client.sdk import overall_progress

    console = Console()
    bar = Progress(TextColumn("[bold]{task.fields[status]:<10}"), BarColumn(), TaskProgressColumn(),
                   TimeElapsedColumn(), TextColumn("{task.description}"), console=console, auto_refresh=False)
    task = bar.add_task("", total=100, status="RUNNING")
    substep = Text("", style="dim")
    with Live(Group(bar, substep), console=console, refresh_per_second=4) as live:

        def update(m: dict[str, Any]) -> None:
            fraction, label = overall_progress(m)
            bar.update(task, completed=fraction * 100, description=label.split(" (", 1)[0],
                       status=m["last_execution_status"])
            now = current_substep(m)
            if now and not console.is_terminal and now != substep.plain[4:]:
                print(f"  └ {now}", flush=True)  # a log or a pipe gets each sub-step once, as a line
            substep.plain = f"  └ {now}" if now else ""
            live.refresh()

        final = api.wait(migration_id, on_update=update, interval=0.5)
        bar.update(task, completed=100 if final["last_execution_status"] == "COMPLETED" else None)
        substep.plain = ""
    console.print(task_table(final))
    status = final["last_execution_status"]
    print(f"Migration {migration_id}: {status}")
    for t in final.get("tasks", []):
        if t["status"] == "ERROR":
            print(f"  {t['instance']} {t['task_type']}: {t['exception_details']}", file=sys.stderr)
    return 0 if status == "COMPLETED" else 1
