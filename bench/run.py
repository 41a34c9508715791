"""``make bench``: time the engine against cp, qemu-img and nbdcopy on the same disk, in one run.

Every tool copies the same warm-cache source; outputs are deleted and ``sync``ed between
runs so that no run pays for another's writeback. The order of the tools is shuffled each
round (seeded), and each ratio is the median over rounds of (engine time / baseline time) taken
in the same round. Engine times are the copy itself, measured inside its process (a
worker runs the engine in a process that is already up); tool times are the whole
process, whose start-up is a few milliseconds. Where the guest's kernel lets it, free page
reporting is held back for the run (``bench.hostmem``: otherwise a writer given pages the host took
back pays a host fault per page, at random), and a first round is run and discarded.

Environment: ``BENCH_DIR`` (default ``bench/out``), ``BENCH_ROUNDS`` (default 5).
"""

from __future__ import annotations

import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench import floor, hostmem, nginx
from bench.image import GiB, MiB, allocated, build

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
WORK = Path(os.environ.get("BENCH_DIR", Path(__file__).parent / "out"))
PY = sys.executable


@dataclass
class Measure:
    seconds: float
    rss_mib: float
    cpu: float
    report: dict[str, object] = field(default_factory=dict)


def run(cmd: list[str], dst: Path, prepare: Callable[[], None] | None = None) -> Measure:
    """Run ``cmd`` after removing ``dst`` and syncing: its time, and its peak RSS from ``/usr/bin/time``.

    For the engine and the write floor, the time is the copy as measured inside their process.
    """
    if dst.exists():
        dst.unlink()
    os.sync()
    if prepare is not None:
        prepare()
    start = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M %U %S", *cmd], capture_output=True, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.decode(errors='replace')[-2000:]}")
    rss_kib, user, system = proc.stderr.decode().strip().splitlines()[-1].split()
    cpu = float(user) + float(system)
    report: dict[str, object] = {}
    if cmd[:3] in ([PY, "-m", "bench.engine_copy"], [PY, "-m", "bench.write_floor"]):
        report = json.loads(proc.stdout.decode().splitlines()[-1])
        seconds = float(report["seconds"])  # type: ignore[arg-type]
        cpu = float(report["cpu"])  # type: ignore[arg-type]
    return Measure(seconds, int(rss_kib) / 1024, cpu, report)


def engine(src: Path, dst: Path, *extra: str) -> list[str]:
    return [PY, "-m", "bench.engine_copy", str(src), str(dst), *extra]


def curl_ranges(url: str, src: Path) -> list[str]:
    """One curl process fetching each allocated range of ``src`` in turn, over one kept-alive connection."""
    from diskio.local import RawFileSource

    source = RawFileSource(src)
    try:
        extents = source.extents()
    finally:
        source.close()
    cmd = ["curl", "-sf"]
    for i, e in enumerate(extents):
        cmd += [*(["--next", "-sf"] if i else []), "-o", "/dev/null", "-r", f"{e.offset}-{e.end - 1}", url]
    return cmd


def identical(a: Path, b: Path, fmt: str) -> bool:
    cmd = ["qemu-img", "compare", "-q", "-f", "raw", "-F", fmt, str(a), str(b)]
    return subprocess.run(cmd, check=False).returncode == 0


def machine() -> dict[str, str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem = next(
        line.split()[1]
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    fs = subprocess.run(
        ["stat", "-f", "-c", "%T", str(WORK)], capture_output=True, text=True, check=False
    ).stdout
    flags = Path("/proc/cpuinfo").read_text()

    def version(cmd: list[str]) -> str:
        out = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
        return out.splitlines()[0] if out else "?"

    return {
        "cpu": f"{cpu}, {os.cpu_count()} vCPU{' (SHA-NI)' if 'sha_ni' in flags else ''}",
        "memory": f"{int(mem) // 1024 // 1024} GiB",
        "kernel": platform.release(),
        "filesystem": fs.strip(),
        "python": platform.python_version(),
        "cp": version(["cp", "--version"]),
        "qemu-img": version(["qemu-img", "--version"]),
        "nbdcopy": version(["nbdcopy", "--version"]),
        "load": " ".join(f"{x:.1f}" for x in os.getloadavg()),
    }


def main() -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    info = machine()
    with hostmem.hold_reporting(info) as tally:
        measure(info, tally)


def measure(info: dict[str, str], tally: Callable[[], None]) -> None:
    print(f"building the 4 GiB test disk in {WORK} ...", flush=True)
    src = build(WORK / "disk4g.raw")
    alloc = allocated(src)
    size = src.stat().st_size
    out = {
        k: WORK / f"out-{k}"
        for k in (
            "cp", "qemu-raw", "nbdcopy", "engine-raw", "qemu-qcow2", "engine-qcow2", "engine-nbd-qcow2",
            "engine-convert", "engine-checked", "nbdcopy-qcow2", "curl-ranges", "curl-whole", "engine-http",
            "floor-http", "floor-raw",
        )
    }
    with nginx.serve(WORK) as base:
        url = base + src.name
        results = rounds(src, out, size, url)
        # the HTTP case ends here: nginx is stopped before the single-run cases
    finish(src, out, size, alloc, results, info, tally)


def rounds(src: Path, out: dict[str, Path], size: int, url: str) -> dict[str, list[Measure]]:
    floor_cmd = floor.command(floor.build(WORK), url, src, out["floor-http"])

    def nbd_prepare() -> None:
        with open(out["nbdcopy"], "wb") as f:
            f.truncate(size)

    def qcow2_prepare() -> None:
        cmd = ["qemu-img", "create", "-q", "-f", "qcow2", str(out["nbdcopy-qcow2"]), str(size)]
        subprocess.run(cmd, check=True)

    cases: dict[str, tuple[list[str], Callable[[], None] | None]] = {
        "cp": (["cp", "--sparse=always", str(src), str(out["cp"])], None),
        "qemu-raw": (["qemu-img", "convert", "-f", "raw", "-O", "raw", str(src), str(out["qemu-raw"])], None),
        "nbdcopy": (["nbdcopy", str(src), str(out["nbdcopy"])], nbd_prepare),
        "engine-raw": (engine(src, out["engine-raw"]), None),
        # the allocated bytes written from the source's pages, nothing else (bench/write_floor.py)
        "floor-raw": ([PY, "-m", "bench.write_floor", str(src), str(out["floor-raw"])], None),
        "qemu-qcow2": (
            ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(src), str(out["qemu-qcow2"])],
            None,
        ),
        "engine-qcow2": (engine(src, out["engine-qcow2"], "--to", "qcow2"), None),
        "engine-nbd-qcow2": (engine(src, out["engine-nbd-qcow2"], "--to", "nbd-qcow2"), None),
        "engine-convert": (engine(src, out["engine-convert"], "--to", "convert-qcow2"), None),
        "engine-checked": (engine(src, out["engine-checked"], "--to", "checked-qcow2"), None),
        # libnbd at its best (C, 4 connections, many requests in flight) into qemu-nbd: the ceiling
        # of any NBD data path for qcow2, libnbd's Python bindings included
        "nbdcopy-qcow2": (
            ["nbdcopy", str(src), "--", "[", "qemu-nbd", "-f", "qcow2", str(out["nbdcopy-qcow2"]), "]"],
            qcow2_prepare,
        ),
        # both curls write to /dev/null: an easier task than the engine's (which writes and verifies a file)
        "curl-ranges": (curl_ranges(url, src), None),
        "curl-whole": (["curl", "-sf", "-o", "/dev/null", url], None),
        "engine-http": (engine(src, out["engine-http"], "--http", url), None),
        # the least a verified writer of the ranges does (bench/floor.c): the machine's share of the gap
        "floor-http": (floor_cmd, None),
    }
    names = list(cases)
    results: dict[str, list[Measure]] = {k: [] for k in names}
    # A first round that counts for nothing: the source and the whole file's holes in the page cache,
    # the tools' binaries loaded, and the memory the rounds write into the guest's (bench.hostmem)
    for name in names:
        run(cases[name][0], out[name], cases[name][1])
    for rnd in range(ROUNDS):
        # a different order each round: no tool always follows the same one (and inherits
        # its writeback or cache state)
        order = names[:]
        random.Random(rnd).shuffle(order)
        for name in order:
            results[name].append(run(cases[name][0], out[name], cases[name][1]))
        print(
            f"round {rnd + 1}/{ROUNDS}: " + ", ".join(f"{n} {results[n][-1].seconds:.2f}s" for n in names),
            flush=True,
        )
        if rnd == 0:
            for name, fmt in (
                ("engine-raw", "raw"), ("engine-qcow2", "qcow2"), ("engine-nbd-qcow2", "qcow2"),
                ("engine-convert", "qcow2"),
                ("engine-checked", "qcow2"), ("engine-http", "raw"), ("floor-http", "raw"), ("floor-raw", "raw"),
            ):
                if not identical(src, out[name], fmt):
                    raise SystemExit(f"{name} output differs from the source")
    return results


def finish(
    src: Path,
    out: dict[str, Path],
    size: int,
    alloc: int,
    results: dict[str, list[Measure]],
    info: dict[str, str],
    tally: Callable[[], None],
) -> None:
    # The rounds leave a GiB or so of output per case in the page cache: gone before the single runs,
    # which otherwise paid for reclaiming it (the 16 GiB case took 5.3-8.7 s after the rounds, 0.5-0.65 alone)
    for path in out.values():
        path.unlink(missing_ok=True)
    os.sync()
    unverified = run(engine(src, out["engine-raw"], "--no-verify"), out["engine-raw"])
    final = run(engine(src, out["engine-raw"], "--final-check"), out["engine-raw"])
    # The same data spread over a 16 GiB virtual disk: memory must not grow with disk size.
    big = build(WORK / "disk16g.raw", size=16 * GiB)
    big_run = run(engine(big, out["engine-raw"]), out["engine-raw"])
    # Bandwidth cap accuracy: 50 MiB/s over 256 MiB of data (about 5 s).
    small = build(WORK / "disk1g.raw", size=1 * GiB, run=64 * MiB)
    capped = run(engine(small, out["engine-raw"], "--limit", str(50 * MiB)), out["engine-raw"])
    for path in out.values():
        if path.exists():
            path.unlink()
    info["load"] += " -> " + " ".join(f"{x:.1f}" for x in os.getloadavg())
    tally()
    report = summarize(
        results,
        alloc=alloc,
        size=size,
        unverified=unverified,
        final=final,
        big=big_run,
        capped=capped,
        small=small,
    )
    text = render(report, info)
    print(text)
    (WORK / "results.md").write_text(text)
    (WORK / "results.json").write_text(json.dumps({"machine": info, **report}, indent=2, default=str))


def median_ratio(a: list[Measure], b: list[Measure]) -> float:
    return statistics.median(x.seconds / y.seconds for x, y in zip(a, b, strict=True))


def summarize(
    results: dict[str, list[Measure]],
    *,
    alloc: int,
    size: int,
    unverified: Measure,
    final: Measure,
    big: Measure,
    capped: Measure,
    small: Path,
) -> dict[str, object]:
    med = {k: statistics.median(m.seconds for m in v) for k, v in results.items()}
    rss = {k: max(m.rss_mib for m in v) for k, v in results.items()}
    cpu = {k: statistics.median(m.cpu for m in v) for k, v in results.items()}
    eng = results["engine-raw"][0].report
    small_alloc = allocated(small)
    return {
        "disk": {"virtual": size, "allocated": alloc},
        "median_seconds": med,
        "peak_rss_mib": rss,
        "median_cpu_seconds": cpu,
        "ratios": {
            "engine-raw / cp --sparse=always": median_ratio(results["engine-raw"], results["cp"]),
            "engine-raw / qemu-img convert -O raw": median_ratio(results["engine-raw"], results["qemu-raw"]),
            "engine-raw / nbdcopy": median_ratio(results["engine-raw"], results["nbdcopy"]),
            "engine-raw / write floor (bench/write_floor.py: pwrite from the source's pages, nothing else)": (
                median_ratio(results["engine-raw"], results["floor-raw"])
            ),
            "write floor / qemu-img convert -O raw (the writes alone)": median_ratio(
                results["floor-raw"], results["qemu-raw"]
            ),
            "engine-qcow2 (the copier writes the qcow2, verify on) / qemu-img convert -O qcow2": median_ratio(
                results["engine-qcow2"], results["qemu-qcow2"]
            ),
            "engine-nbd-qcow2 (copier over qemu-nbd) / qemu-img convert -O qcow2": median_ratio(
                results["engine-nbd-qcow2"], results["qemu-qcow2"]
            ),
            "engine-convert (convert_image) / qemu-img convert -O qcow2": median_ratio(
                results["engine-convert"], results["qemu-qcow2"]
            ),
            "engine-checked (convert_verified, verify on) / qemu-img convert -O qcow2": median_ratio(
                results["engine-checked"], results["qemu-qcow2"]
            ),
            "nbdcopy → qemu-nbd qcow2 (no verify) / qemu-img convert -O qcow2": median_ratio(
                results["nbdcopy-qcow2"], results["qemu-qcow2"]
            ),
            "engine-http / curl of the allocated ranges": median_ratio(
                results["engine-http"], results["curl-ranges"]
            ),
            "engine-http / single curl of the whole file": median_ratio(
                results["engine-http"], results["curl-whole"]
            ),
            "engine-http / floor (bench/floor.c: receive, write, read back; no digest, no Python)": median_ratio(
                results["engine-http"], results["floor-http"]
            ),
            "floor / curl of the allocated ranges (the file's writes alone)": median_ratio(
                results["floor-http"], results["curl-ranges"]
            ),
        },
        "engine_raw_cpu_over_cp_cpu": cpu["engine-raw"] / cpu["cp"],
        "engine_raw_io": {
            "source_bytes_read": eng["bytes_read"],
            "bytes_written": eng["bytes_written"],
            "read_back_for_verify": eng["bytes_verified"],
            "read_over_allocated": int(eng["bytes_read"]) / alloc,  # type: ignore[call-overload]
            "rchar": eng["io"]["rchar"],  # type: ignore[index]
            "wchar": eng["io"]["wchar"],  # type: ignore[index]
        },
        "engine_raw_no_verify_seconds": unverified.seconds,
        "engine_raw_final_check_seconds": final.seconds,
        "engine_16g": {
            "seconds": big.seconds,
            "rss_mib": big.rss_mib,
            "bytes_read": big.report["bytes_read"],
        },
        "bandwidth_cap": {
            "limit_mib_s": 50,
            "achieved_mib_s": small_alloc / MiB / capped.seconds,
            "seconds": capped.seconds,
        },
    }


def render(r: dict[str, object], info: dict[str, str]) -> str:
    med: dict[str, float] = r["median_seconds"]  # type: ignore[assignment]
    rss: dict[str, float] = r["peak_rss_mib"]  # type: ignore[assignment]
    cpu: dict[str, float] = r["median_cpu_seconds"]  # type: ignore[assignment]
    ratios: dict[str, float] = r["ratios"]  # type: ignore[assignment]
    io: dict[str, float] = r["engine_raw_io"]  # type: ignore[assignment]
    disk: dict[str, int] = r["disk"]  # type: ignore[assignment]
    big: dict[str, float] = r["engine_16g"]  # type: ignore[assignment]
    cap: dict[str, float] = r["bandwidth_cap"]  # type: ignore[assignment]
    lines = [
        f"Disk: {disk['virtual'] / GiB:.0f} GiB raw, {disk['allocated'] / MiB:.1f} MiB allocated "
        f"(4 x 256 MiB random + 256 x 4 KiB scattered). Median of {ROUNDS} rounds, warm page cache.",
        "",
        "| copy | median time (s) | median CPU user+sys (s) | peak RSS (MiB) |",
        "|---|---:|---:|---:|",
    ]
    labels = {
        "cp": "cp --sparse=always",
        "qemu-raw": "qemu-img convert -O raw",
        "nbdcopy": "nbdcopy",
        "engine-raw": "engine raw→raw (verify on)",
        "floor-raw": "write floor: pwrite of the allocated bytes from the source's pages, nothing else",
        "qemu-qcow2": "qemu-img convert -O qcow2",
        "engine-qcow2": "engine raw→qcow2 (copier → diskio.qcow2, verify on)",
        "engine-nbd-qcow2": "engine raw→qcow2 (copier → qemu-nbd, verify on)",
        "engine-convert": "engine raw→qcow2 (convert_image, no verify)",
        "engine-checked": "engine raw→qcow2 (convert_verified: qemu-img + XXH3-128 check)",
        "nbdcopy-qcow2": "nbdcopy → qemu-nbd qcow2 (libnbd, no verify)",
        "curl-ranges": "curl, allocated ranges over HTTP → /dev/null",
        "curl-whole": "curl, whole 4 GiB file over HTTP → /dev/null",
        "engine-http": "engine HTTP ranges→raw (nginx, allocation map, verify on)",
        "floor-http": "floor: bare C, ranges → raw file, read back and compared "
        f"({floor.CONNECTIONS} connection{'s' if floor.CONNECTIONS > 1 else ''})",
    }
    for key, label in labels.items():
        lines.append(f"| {label} | {med[key]:.3f} | {cpu[key]:.2f} | {rss[key]:.0f} |")
    lines += ["", "| ratio (engine / baseline, median of per-round ratios) | value |", "|---|---:|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in ratios.items()]
    lines += [
        "",
        "| engine raw→raw | value |",
        "|---|---:|",
        f"| CPU user+sys, median engine / median cp | {r['engine_raw_cpu_over_cp_cpu']:.2f} |",
        f"| source bytes read / allocated | {io['read_over_allocated']:.3f} |",
        f"| source bytes read | {int(io['source_bytes_read']):,} |",
        f"| bytes written | {int(io['bytes_written']):,} |",
        f"| target bytes read back (verify) | {int(io['read_back_for_verify']):,} |",
        f"| copy with verify off (s, one run) | {r['engine_raw_no_verify_seconds']:.3f} |",
        f"| copy with verify and final check (s, one run) | {r['engine_raw_final_check_seconds']:.3f} |",
        f"| 16 GiB virtual disk: time (s) / peak RSS (MiB) | {big['seconds']:.3f} / {big['rss_mib']:.0f} |",
        f"| bandwidth cap 50 MiB/s: achieved | {cap['achieved_mib_s']:.1f} MiB/s |",
        "",
        "Machine: " + "; ".join(f"{k}: {v}" for k, v in info.items()),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if not shutil.which("nbdcopy") or not shutil.which("qemu-img"):
        raise SystemExit("install qemu-utils and libnbd-bin (deploy/apt/diskio.txt)")
    main()
