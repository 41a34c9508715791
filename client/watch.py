"""``sterna migration watch`` and the demo: a progress bar until a migration ends."""

from __future__ import annotations

import sys
from typing import Any

from client.sdk import SternaClient


def watch(api: SternaClient, migration_id: str) -> int:
    """Draw a progress bar from the API's progress updates until the migration ends."""
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    from client.sdk import overall_progress

    with Progress(TextColumn("[bold]{task.fields[status]:<10}"), BarColumn(), TaskProgressColumn(),
                  TimeElapsedColumn(), TextColumn("{task.description}")) as bar:
        task = bar.add_task("", total=100, status="RUNNING")

        def update(m: dict[str, Any]) -> None:
            fraction, label = overall_progress(m)
            bar.update(task, completed=fraction * 100, description=label, status=m["last_execution_status"])

        final = api.wait(migration_id, on_update=update, interval=0.5)
        bar.update(task, completed=100 if final["last_execution_status"] == "COMPLETED" else None)
    status = final["last_execution_status"]
    print(f"Migration {migration_id}: {status}")
    for t in final.get("tasks", []):
        if t["status"] == "ERROR":
            print(f"  {t['instance']} {t['task_type']}: {t['exception_details']}", file=sys.stderr)
    return 0 if status == "COMPLETED" else 1
