"""``make bench``: ``python bench/run.py [options]``. One run, every comparison side by side."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the ``bench`` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg

from bench import report, sections
from bench.dataset import PREVIOUS_RELEASE, bench_database, bench_server, load_groups, load_previous_release
from bench.sections import Env, Sizes
from pyaccess.keyfile import write_new_key_file

BENCH_DIR = Path(__file__).resolve().parent
PREVIOUS_GROUPS = 2_000  # groups in the previous release's database (its section reads and writes only)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__)
    add = parser.add_argument
    add("--dsn", default=os.environ.get("PYACCESS_BENCH_DSN"), help="a server (a role that may CREATE DATABASE);"
        " default PYACCESS_BENCH_DSN, else a throwaway local cluster")  # fmt: skip
    add("--groups", type=int, default=200_000, help="OTA groups with a secret; all of them are rotated")
    add("--rounds", type=int, default=30, help="interleaved rounds of the latency section")
    add("--block", type=int, default=200, help="calls per variant per latency round")
    add("--warmup", type=int, default=50, help="untimed calls per variant before the latency rounds")
    add("--threads", default="1,2,4", help="thread counts of the throughput section")
    add("--tp-calls", type=int, default=500, help="gets per thread per throughput round")
    add("--tp-rounds", type=int, default=15, help="interleaved rounds of the throughput section")
    add("--rot-rounds", type=int, default=3, help="interleaved rounds of rotate against the one-statement rewrite")
    add("--mem-calls", type=int, default=20_000, help="traced get and store calls of the memory section")
    add("--out", type=Path, default=BENCH_DIR, help="where results.md and chart.png go")
    return parser.parse_args(argv)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    threads = tuple(int(t) for t in args.threads.split(","))
    sizes = Sizes(args.rounds, args.block, args.warmup, threads, args.tp_calls, args.tp_rounds, args.rot_rounds,
              args.mem_calls)  # fmt: skip
    started, load_before = time.monotonic(), os.getloadavg()
    release, last_migration = PREVIOUS_RELEASE
    with (
        tempfile.TemporaryDirectory(prefix="pyaccess-bench-") as tmp,
        bench_server(args.dsn) as server,
        bench_database(server) as dsn,
        bench_database(server, until=last_migration) as previous_dsn,
        asyncio.Runner() as runner,
    ):
        key_file = write_new_key_file(Path(tmp) / "key.json")
        log(f"loading {args.groups:,} groups through store_provision_secret")
        env = Env(runner, dsn, key_file, load_groups(dsn, args.groups, key_file), sizes)
        previous_groups = load_previous_release(previous_dsn, min(args.groups, PREVIOUS_GROUPS), key_file)
        with psycopg.connect(dsn) as conn:
            server_version = str(conn.execute("SELECT version()").fetchone()[0])  # type: ignore[index]
        log("latency: the floors and every service path, interleaved")
        latency, pinning = sections.latency(env)
        log(f"against {release}: each release's statements on a database of its own")
        before_after = sections.against_previous_release(env, previous_dsn, previous_groups)
        log(f"throughput: {threads} threads")
        tp = sections.throughput(env)
        log(f"memory: {args.mem_calls:,} get and store calls under tracemalloc")
        growth = sections.memory(env)
        log(f"rotation: {args.rot_rounds} rounds of {args.groups:,} rows")
        rot = sections.rotation(env)
    meta = {
        "command": f"`{shlex.join(['python', 'bench/run.py', *(sys.argv[1:] if argv is None else argv)])}`",
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "run time": f"{time.monotonic() - started:.0f} s",
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, Linux {platform.release()}",
        "Python, psycopg": f"{platform.python_version()}, {psycopg.__version__}",
        "PostgreSQL": server_version.split(" on ", maxsplit=1)[0],
        "latency CPUs": pinning,
        "load average (1 min) before / after": f"{load_before[0]:.2f} / {os.getloadavg()[0]:.2f}",
    }
    tables = report.markdown(meta, [latency, before_after, tp, rot], growth)
    print(tables)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(tables, encoding="utf-8")
    report.chart([latency, before_after, tp, rot], args.out / "chart.png")
    log(f"wrote {args.out / 'results.md'} and {args.out / 'chart.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
