"""``sterna transfer …``, ``sterna transfer execution …``, ``sterna transfer schedule …`` and
``sterna deployment …``: the Coriolis 1.2 commands, each with ``-f table|json``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from client.sdk import SternaClient

TRANSFER_COLUMNS = ["id", "scenario", "last_execution_status", "instances", "notes", "created_at"]
EXECUTION_COLUMNS = ["id", "number", "status", "type", "created_at"]
SCHEDULE_COLUMNS = ["id", "schedule", "enabled", "expiration_date", "shutdown_instance", "auto_deploy"]
DEPLOYMENT_COLUMNS = ["id", "transfer_id", "last_execution_status", "instances", "created_at"]


def _json(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from exc


def _out(args: argparse.Namespace, data: Any, columns: list[str]) -> None:
    if args.format == "json" or not columns:
        print(json.dumps(data, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    rows = data if isinstance(data, list) else [data]
    table = Table(*columns)
    for row in rows:
        table.add_row(*(str(row.get(c, "")) for c in columns))
    Console().print(table)


def _client(args: argparse.Namespace) -> SternaClient:
    return SternaClient(args.url, args.project, token=args.token)


def cmd_transfer(args: argparse.Namespace) -> int:
    with _client(args) as api:
        a = args.action
        if a == "create":
            fields = {k: v for k, v in (
                ("source_environment", args.source_environment),
                ("destination_environment", args.destination_environment), ("network_map", args.network_map),
                ("notes", args.notes), ("skip_os_morphing", args.skip_os_morphing or None)) if v is not None}
            _out(args, api.create_transfer(origin_endpoint_id=args.origin_endpoint,
                                           destination_endpoint_id=args.destination_endpoint,
                                           instances=args.instance, scenario=args.scenario, **fields),
                 TRANSFER_COLUMNS)
        elif a == "update":
            fields = {k: v for k, v in (
                ("source_environment", args.source_environment),
                ("destination_environment", args.destination_environment), ("network_map", args.network_map),
                ("notes", args.notes)) if v is not None}
            _out(args, api.update_transfer(args.id, **fields), EXECUTION_COLUMNS)
        elif a == "list":
            _out(args, api.list_transfers(), TRANSFER_COLUMNS)
        elif a == "show":
            _out(args, api.get_transfer(args.id, include_task_info=args.show_instances_data), TRANSFER_COLUMNS)
        elif a == "delete":
            api.delete_transfer(args.id)
        elif a == "delete-disks":
            _out(args, api.delete_transfer_disks(args.id), EXECUTION_COLUMNS)
        elif a == "execute":
            _out(args, api.execute_transfer(args.id, args.shutdown_instances, args.auto_deploy), EXECUTION_COLUMNS)
    return 0


def cmd_execution(args: argparse.Namespace) -> int:
    with _client(args) as api:
        a = args.action
        if a == "list":
            _out(args, api.list_executions(args.transfer), EXECUTION_COLUMNS)
        elif a == "show":
            _out(args, api.get_execution(args.transfer, args.id), EXECUTION_COLUMNS)
        elif a == "cancel":
            api.cancel_execution(args.transfer, args.id, args.force)
        elif a == "delete":
            api.delete_execution(args.transfer, args.id)
    return 0


def _cron(args: argparse.Namespace) -> dict[str, int]:
    return {k: v for k, v in (("minute", args.minute), ("hour", args.hour), ("dom", args.day_of_month),
                              ("month", args.month), ("dow", args.day_of_week)) if v is not None}


def cmd_schedule(args: argparse.Namespace) -> int:
    with _client(args) as api:
        a = args.action
        if a == "create":
            _out(args, api.create_schedule(args.transfer, _cron(args), enabled=not args.disabled,
                                           expiration_date=args.expires_at, shutdown_instance=args.shutdown_instance,
                                           auto_deploy=args.auto_deploy), SCHEDULE_COLUMNS)
        elif a == "update":
            fields: dict[str, Any] = {}
            if _cron(args):
                fields["schedule"] = _cron(args)
            if args.enabled is not None:
                fields["enabled"] = args.enabled
            if args.no_expiration_date:
                fields["expiration_date"] = None
            elif args.expires_at:
                fields["expiration_date"] = args.expires_at
            _out(args, api.update_schedule(args.transfer, args.id, **fields), SCHEDULE_COLUMNS)
        elif a == "list":
            _out(args, api.list_schedules(args.transfer, show_expired=not args.hide_expired), SCHEDULE_COLUMNS)
        elif a == "show":
            _out(args, api.get_schedule(args.transfer, args.id), SCHEDULE_COLUMNS)
        elif a == "delete":
            api.delete_schedule(args.transfer, args.id)
    return 0


def cmd_deployment(args: argparse.Namespace) -> int:
    with _client(args) as api:
        a = args.action
        if a == "create":
            _out(args, api.create_deployment(args.transfer, clone_disks=not args.dont_clone_disks, force=args.force,
                                             skip_os_morphing=args.skip_os_morphing), DEPLOYMENT_COLUMNS)
        elif a == "list":
            _out(args, api.list_deployments(), DEPLOYMENT_COLUMNS)
        elif a == "show":
            _out(args, api.get_deployment(args.id), DEPLOYMENT_COLUMNS)
        elif a == "cancel":
            api.cancel_deployment(args.id, args.force)
        elif a == "delete":
            api.delete_deployment(args.id)
    return 0


def _leaf(sub: Any, name: str, func: Any, *positional: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name)
    p.add_argument("-f", "--format", choices=["table", "json"], default="table")
    for arg in positional:
        p.add_argument(arg)
    p.set_defaults(func=func)
    return p


def _environments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source-environment", type=_json)
    p.add_argument("--destination-environment", type=_json)
    p.add_argument("--network-map", type=_json)
    p.add_argument("--notes")


def _cron_flags(p: argparse.ArgumentParser) -> None:
    for short, name in (("-M", "--minute"), ("-H", "--hour"), ("-d", "--day-of-month"), ("-m", "--month"),
                        ("-w", "--day-of-week")):
        p.add_argument(short, name, type=int)
    p.add_argument("--expires-at")
    p.add_argument("--shutdown-instance", action="store_true")
    p.add_argument("--auto-deploy", action="store_true")


def add_parser(sub: Any) -> None:
    tr = sub.add_parser("transfer", help="transfers (replicas)").add_subparsers(dest="action", required=True)
    c = _leaf(tr, "create", cmd_transfer)
    c.add_argument("--origin-endpoint", required=True)
    c.add_argument("--destination-endpoint", required=True)
    c.add_argument("--instance", action="append", required=True)
    c.add_argument("--scenario", choices=["replica", "live_migration"], default="replica")
    c.add_argument("--skip-os-morphing", action="store_true")
    _environments(c)
    _environments(_leaf(tr, "update", cmd_transfer, "id"))
    _leaf(tr, "list", cmd_transfer)
    _leaf(tr, "show", cmd_transfer, "id").add_argument("--show-instances-data", action="store_true")
    _leaf(tr, "delete", cmd_transfer, "id")
    _leaf(tr, "delete-disks", cmd_transfer, "id")
    e = _leaf(tr, "execute", cmd_transfer, "id")
    e.add_argument("--shutdown-instances", action="store_true")
    e.add_argument("--auto-deploy", action="store_true")

    ex = tr.add_parser("execution", help="executions of a transfer").add_subparsers(dest="action", required=True)
    _leaf(ex, "list", cmd_execution, "transfer")
    for name in ("show", "delete"):
        _leaf(ex, name, cmd_execution, "transfer", "id")
    _leaf(ex, "cancel", cmd_execution, "transfer", "id").add_argument("--force", action="store_true")

    sc = tr.add_parser("schedule", help="schedules of a transfer").add_subparsers(dest="action", required=True)
    c = _leaf(sc, "create", cmd_schedule, "transfer")
    _cron_flags(c)
    c.add_argument("--disabled", action="store_true")
    u = _leaf(sc, "update", cmd_schedule, "transfer", "id")
    _cron_flags(u)
    u.add_argument("--enabled", dest="enabled", action="store_true", default=None)
    u.add_argument("--disabled", dest="enabled", action="store_false")
    u.add_argument("--no-expiration-date", action="store_true")
    _leaf(sc, "list", cmd_schedule, "transfer").add_argument("--hide-expired", action="store_true")
    for name in ("show", "delete"):
        _leaf(sc, name, cmd_schedule, "transfer", "id")

    dp = sub.add_parser("deployment", help="deployments of transfers").add_subparsers(dest="action", required=True)
    c = _leaf(dp, "create", cmd_deployment, "transfer")
    c.add_argument("--force", action="store_true")
    c.add_argument("--dont-clone-disks", action="store_true")
    c.add_argument("--skip-os-morphing", action="store_true")
    _leaf(dp, "list", cmd_deployment)
    for name in ("show", "delete"):
        _leaf(dp, name, cmd_deployment, "id")
    _leaf(dp, "cancel", cmd_deployment, "id").add_argument("--force", action="store_true")
