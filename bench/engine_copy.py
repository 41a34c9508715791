"""One engine copy in its own process, so that its peak RSS and I/O counters are its own.

Prints one JSON line: seconds spent in the copy (opening source and target included),
the ``CopyResult`` fields and this process's ``/proc/self/io`` counters.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import resource
import time
from pathlib import Path

from diskio.base import DiskTarget
from diskio.checked_convert import convert_verified
from diskio.convert import convert_image
from diskio.copier import copy_disk
from diskio.http import HttpRangeSource
from diskio.local import LocalFileTarget, open_local_source
from diskio.qcow2 import Qcow2FileTarget
from diskio.qemu import QemuNbdTarget


def proc_io() -> dict[str, int]:
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return {k: int(v) for k, v in fields.items()}


def cpu_seconds() -> float:
    """User + system time of this process's threads and of its waited-for children (qemu-nbd)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--to", default="raw", choices=["raw", "qcow2", "nbd-qcow2", "convert-qcow2", "checked-qcow2"])
    ap.add_argument("--limit", type=int, default=None, help="bandwidth cap, bytes/s")
    ap.add_argument("--no-verify", action="store_true")
    ap.add_argument("--final-check", action="store_true")
    ap.add_argument("--lanes", type=int, default=None, help="chunks in flight (default: the copier's choice)")
    ap.add_argument("--http", default=None, help="read SRC's bytes from this URL, with SRC's allocation map")
    args = ap.parse_args()
    before = proc_io()
    cpu_before = cpu_seconds()
    start = time.perf_counter()
    out: dict[str, object] = {}
    if args.to == "convert-qcow2":
        await convert_image(args.src, "raw", args.dst, "qcow2")
    elif args.to == "checked-qcow2":
        out = dataclasses.asdict(await convert_verified(args.src, "raw", args.dst, "qcow2"))
    else:
        source = open_local_source(args.src, "raw")
        if args.http:
            # the server's allocation map, as a provider gets it (vSphere CBT, for instance)
            local, extents = source, source.extents()
            source = HttpRangeSource(args.http, size=local.size, extents=extents)
            local.close()
        target: DiskTarget
        if args.to == "raw":
            target = LocalFileTarget(args.dst, source.size)
        elif args.to == "qcow2":
            target = Qcow2FileTarget(args.dst, source.size)
        else:
            target = QemuNbdTarget(args.dst, source.size)
        try:
            result = await copy_disk(
                source,
                target,
                bandwidth_limit=args.limit,
                lanes=args.lanes,
                verify=not args.no_verify,
                final_check=args.final_check,
            )
        finally:
            source.close()
            target.close()
        out = dataclasses.asdict(result)
    out["seconds"] = time.perf_counter() - start
    out["cpu"] = cpu_seconds() - cpu_before
    after = proc_io()
    out["io"] = {k: after[k] - before[k] for k in after}
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
