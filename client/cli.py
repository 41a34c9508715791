"""The ``sterna`` command: run the service (up, api, worker, demo) and drive it (endpoint, migration)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from client.sdk import ApiError, SternaClient
from client.watch import watch


def _json_arg(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from exc


def _json_file(value: str) -> Any:
    return _json_arg(Path(value).read_text())


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2))


def _client(args: argparse.Namespace) -> SternaClient:
    return SternaClient(args.url, args.project, token=args.token)


def _table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(*columns)
    for row in rows:
        table.add_row(*(str(row.get(c, "")) for c in columns))
    Console().print(table)


def cmd_endpoint(args: argparse.Namespace) -> int:
    with _client(args) as api:
        if args.action == "create":
            info = args.connection if args.connection is not None else args.connection_file
            _print(api.create_endpoint(args.name, args.provider, info or {}, args.description))
        elif args.action == "list":
            _table(api.list_endpoints(), ["id", "name", "type", "description"])
        elif args.action == "show":
            _print(api.get_endpoint(args.id))
        elif args.action == "update":
            fields = {k: v for k, v in (("name", args.name), ("description", args.description),
                                        ("connection_info", args.connection)) if v is not None}
            _print(api.update_endpoint(args.id, **fields))
        elif args.action == "delete":
            api.delete_endpoint(args.id)
        elif args.action == "validate":
            result = api.validate_endpoint(args.id)
            _print(result)
            return 0 if result["valid"] else 1
        elif args.action == "instances":
            _table(api.list_instances(args.id, args.name), ["id", "name", "num_cpu", "memory_mb", "os_type"])
    return 0


def cmd_migration(args: argparse.Namespace) -> int:
    with _client(args) as api:
        if args.action == "create":
            m = api.create_migration(
                instances=args.instance, origin_endpoint_id=args.origin_endpoint,
                destination_endpoint_id=args.destination_endpoint,
                destination_environment=args.destination_environment, source_environment=args.source_environment,
                network_map=args.network_map, skip_os_morphing=args.skip_os_morphing,
                shutdown_instances=args.shutdown_instances, notes=args.notes,
            )
            if not args.watch:
                _print(m)
                return 0
            return watch(api, m["id"])
        if args.action == "list":
            _table(api.list_migrations(), ["id", "last_execution_status", "instances", "notes", "created_at"])
        elif args.action == "show":
            if args.watch:
                return watch(api, args.id)
            _print(api.get_migration(args.id))
        elif args.action == "cancel":
            api.cancel_migration(args.id, args.force)
        elif args.action == "delete":
            api.delete_migration(args.id)
    return 0


def cmd_server(args: argparse.Namespace) -> int:
    from core.settings import get_settings

    settings = get_settings()
    if args.command == "up":
        from devstack.launcher import up

        return up(settings)
    if args.command == "api":
        from api.app import main as api_main

        api_main()
        return 0
    if args.command == "worker":
        from core.logs import setup_logging

        setup_logging("worker", settings.worker_host_id)
        from worker.main import main as worker_main

        worker_main()
        return 0
    if args.command == "db":
        from core.crypto import SecretBox
        from store.db import Database
        from store.repo import Store

        database = Database(settings.db_url)
        database.upgrade()
        sealed = Store(database, SecretBox(settings)).seal_plain_environments()
        print(f"record DB at the newest schema: {settings.db_url.split('@')[-1]}"
              + (f"; environment secrets of {sealed} action(s) sealed" if sealed else ""))
        return 0
    if args.command == "demo":
        from devstack.demo import run_demo

        return run_demo(settings, exit_after=args.exit, quick=args.quick)
    raise AssertionError(args.command)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sterna", description=__doc__)
    p.add_argument("--url", default=os.environ.get("STERNA_URL", "http://127.0.0.1:7667"))
    p.add_argument("--project", default=os.environ.get("STERNA_PROJECT_ID", "admin"))
    p.add_argument("--token", default=os.environ.get("OS_AUTH_TOKEN"))
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start Temporal dev server, worker and API in the foreground")
    sub.add_parser("api", help="run the REST API (against TEMPORAL_ADDRESS and STERNA_DATABASE_URL)")
    sub.add_parser("worker", help="run a worker")
    db = sub.add_parser("db", help="record DB schema")
    db.add_argument("action", choices=["upgrade"])
    demo = sub.add_parser("demo", help="migrate a VM end to end: a Debian guest, morphed and boot-checked")
    demo.add_argument("--exit", action="store_true", help="exit after verifying instead of keeping the stack up")
    demo.add_argument("--quick", action="store_true",
                      help="migrate a small sample disk without an OS (no morph, no boot check) instead of the "
                           "bootable Debian guest, which the default builds once (cached), morphs and boot-checks")
    # the default since the bootable guest became the demo's VM; still accepted so older scripts keep working
    demo.add_argument("--bootable", action="store_true", help=argparse.SUPPRESS)

    ep = sub.add_parser("endpoint", help="cloud connections").add_subparsers(dest="action", required=True)
    c = ep.add_parser("create")
    c.add_argument("--name", required=True)
    c.add_argument("--provider", required=True)
    c.add_argument("--description")
    g = c.add_mutually_exclusive_group(required=True)
    g.add_argument("--connection", type=_json_arg)
    g.add_argument("--connection-file", type=_json_file)
    ep.add_parser("list")
    for name in ("show", "delete", "validate"):
        ep.add_parser(name).add_argument("id")
    u = ep.add_parser("update")
    u.add_argument("id")
    u.add_argument("--name")
    u.add_argument("--description")
    u.add_argument("--connection", type=_json_arg)
    i = ep.add_parser("instances")
    i.add_argument("id")
    i.add_argument("--name")

    mg = sub.add_parser("migration", help="migrations").add_subparsers(dest="action", required=True)
    c = mg.add_parser("create")
    c.add_argument("--origin-endpoint", required=True)
    c.add_argument("--destination-endpoint", required=True)
    c.add_argument("--instance", action="append", required=True)
    c.add_argument("--destination-environment", type=_json_arg)
    c.add_argument("--source-environment", type=_json_arg)
    c.add_argument("--network-map", type=_json_arg)
    c.add_argument("--skip-os-morphing", action="store_true")
    c.add_argument("--shutdown-instances", action="store_true")
    c.add_argument("--notes")
    c.add_argument("--watch", action="store_true", help="draw a progress bar until it ends")
    mg.add_parser("list")
    s = mg.add_parser("show")
    s.add_argument("id")
    s.add_argument("--watch", action="store_true")
    cancel = mg.add_parser("cancel")
    cancel.add_argument("id")
    cancel.add_argument("--force", action="store_true")
    mg.add_parser("delete").add_argument("id")

    from client.keystone import add_parser as add_keystone_parser
    from client.transfer_cli import add_parser as add_transfer_parser

    add_keystone_parser(sub)
    add_transfer_parser(sub)
    return p


def run(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "endpoint":
            return cmd_endpoint(args)
        if args.command == "migration":
            return cmd_migration(args)
        if args.command in ("keystone", "transfer", "deployment"):
            result: int = args.func(args)
            return result
        return cmd_server(args)
    except ApiError as exc:
        print(f"error: {exc.status}: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def main() -> None:
    code = run()
    # The Temporal SDK's Rust threads can crash the interpreter at exit (sdk-python#300):
    # flush and leave without running finalizers.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
