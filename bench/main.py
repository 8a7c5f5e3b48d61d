"""The benchmark's command line and the order of its sections."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from bench import analysis, latency, memory, rotation_bench, service_paths, throughput
from bench.common import BENCH_DIR, PIN_MODES, load_average, machine_info, pin, unpin
from bench.dataset import Server, load_groups, load_rotation_rows, make_keys, open_server

SECTIONS = ("latency", "service", "throughput", "rotation", "memory", "analysis")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description="pyaccess side by side with a plain round trip, AES-GCM in Python and naive pgcrypto.",
    )
    parser.add_argument(
        "--dsn",
        default=os.environ.get("PYACCESS_BENCH_DSN"),
        help="a server to use (a role that may CREATE DATABASE); default PYACCESS_BENCH_DSN, else a throwaway cluster",
    )
    parser.add_argument("--groups", type=int, default=10_000, help="OTA groups with secrets (default 10000)")
    parser.add_argument("--rounds", type=int, default=40, help="interleaved rounds of the latency section")
    parser.add_argument("--block", type=int, default=200, help="calls per variant per round")
    parser.add_argument("--warmup", type=int, default=50, help="untimed calls per variant before the rounds")
    parser.add_argument(
        "--service-rounds", type=int, default=20, help="interleaved rounds of the service section (blocks of --block)"
    )
    parser.add_argument("--threads", default="1,2,4,8", help="thread counts of the throughput section")
    parser.add_argument("--tp-seconds", type=float, default=1.0, help="seconds per throughput measurement")
    parser.add_argument("--tp-rounds", type=int, default=3, help="interleaved rounds of the throughput section")
    parser.add_argument("--rows", type=int, default=None, help="rows to rotate (default 200000; 1000000 with --large)")
    parser.add_argument("--large", action="store_true", help="rotate 1M rows")
    parser.add_argument("--rot-rounds", type=int, default=3, help="rounds of rotation vs UPDATE")
    parser.add_argument("--batch-size", type=int, default=1000, help="rotation batch size")
    parser.add_argument("--mem-calls", type=int, default=100_000, help="get and store calls under tracemalloc")
    parser.add_argument(
        "--pin",
        choices=PIN_MODES,
        default="split",
        help="CPU placement of the benchmark thread and its server process for the single-connection sections:"
        " split across two CPUs (default: each round trip crosses CPUs, as client and server on different hosts),"
        " same CPU (pure CPU cost), or none (scheduler's choice)",
    )
    parser.add_argument("--skip", default="", help=f"comma-separated sections to skip: {', '.join(SECTIONS)}")
    parser.add_argument("--out", type=Path, default=BENCH_DIR, help="where results.md and chart.png go")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    parser.add_argument("--seed", type=int, default=20240601)
    args = parser.parse_args(argv)
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = args.skip - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) in --skip: {', '.join(sorted(unknown))}")
    if args.rows is None:
        args.rows = 1_000_000 if args.large else 200_000
    args.thread_counts = [int(t) for t in args.threads.split(",") if t.strip()]
    return args


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def command_line(argv: list[str] | None) -> str:
    args = sys.argv[1:] if argv is None else argv
    return shlex.join(["python", "bench/run.py", *args])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    results: dict[str, Any] = {"command": command_line(argv), "args": vars(args), "load_before": load_average()}
    with tempfile.TemporaryDirectory(prefix="pyaccess-bench-") as tmp, open_server(args.dsn) as server:
        keys = make_keys(Path(tmp))
        log(f"server: {'throwaway cluster ' + str(server.cluster.datadir) if server.cluster else args.dsn}")
        results["server"] = "throwaway cluster" if server.cluster else "--dsn"
        results["server_host"] = server.host
        run_sections(args, server, keys, results)
    results["load_after"] = load_average()
    results["seconds"] = time.monotonic() - started
    from bench import report  # noqa: PLC0415 - matplotlib only once there is something to draw

    print(report.table(results))
    if not args.no_write:
        report.write(results, args.out)
        log(f"wrote {args.out / 'results.md'} and {args.out / 'chart.png'}")
    log(f"done in {results['seconds']:.0f}s")
    return 0


def run_sections(args: argparse.Namespace, server: Server, keys: Any, results: dict[str, Any]) -> None:
    dsn = server.create_database("pyaccess_bench")
    log(f"loading {args.groups} groups")
    data = load_groups(dsn, args.groups, keys)
    with psycopg.connect(dsn, autocommit=True) as conn:
        results["machine"] = machine_info(conn)
        if "latency" not in args.skip:
            results["pinning"] = pin(conn, args.pin)
            log(f"latency: {results['pinning']}")
            run_latency(args, conn, data, results)
            unpin()
    if "service" not in args.skip:
        log("service: sync function, ConnectionPool client, async function, AsyncConnectionPool client")
        results["service"] = service_paths.run_service(
            dsn,
            keys.current,
            data.group_ids,
            rounds=args.service_rounds,
            block=args.block,
            warmup=args.warmup,
            seed=args.seed + 2,
            pin_mode=args.pin,
            log=log,
        )
        unpin()
    if "throughput" not in args.skip:
        log(f"throughput: threads {args.thread_counts}, {args.tp_rounds} rounds of {args.tp_seconds}s per cell")
        results["throughput"] = throughput.run_throughput(
            dsn,
            keys.current,
            data.group_ids,
            thread_counts=args.thread_counts,
            seconds=args.tp_seconds,
            rounds=args.tp_rounds,
            log=log,
        )
    if "memory" not in args.skip:
        log(f"memory: tracemalloc over {args.mem_calls} get and {args.mem_calls} store calls")
        with psycopg.connect(dsn, autocommit=True) as conn:
            pin(conn, args.pin)
            results["memory"] = memory.run_memory(conn, data, args.mem_calls)
            unpin()
    if "analysis" not in args.skip:
        log("analysis: client share, track_functions, pg_stat_statements, in-server loops")
        with psycopg.connect(dsn, autocommit=True) as conn:
            results["analysis"] = analysis.run_analysis(
                dsn,
                conn,
                data,
                calls=2000,
                rounds=max(10, args.rounds // 2),
                block=args.block,
                seed=args.seed + 1,
                pin_mode=args.pin,
            )
            unpin()
    if "rotation" not in args.skip:
        run_rotation(args, server, keys, results)


def run_rotation(args: argparse.Namespace, server: Server, keys: Any, results: dict[str, Any]) -> None:
    dsn = server.create_database("pyaccess_bench_rotation")
    log(f"rotation: loading {args.rows} rows")
    load_rotation_rows(dsn, args.rows, keys.key_a)
    log(f"rotation: {args.rot_rounds} rounds of rotate vs UPDATE over {args.rows} rows")
    results["rotation"] = rotation_bench.run_rotation(
        dsn,
        keys,
        rows=args.rows,
        rounds=args.rot_rounds,
        batch_size=args.batch_size,
        log=log,
    )


def run_latency(args: argparse.Namespace, conn: psycopg.Connection[Any], data: Any, results: dict[str, Any]) -> None:
    import secrets  # noqa: PLC0415

    variants = latency.standard_variants(conn, data)
    latency.check_variants(variants, data)
    values = [secrets.token_urlsafe(32) for _ in range(1000)]
    latency.warm_up(variants, data.group_ids, values, args.warmup)
    log(f"latency: {args.rounds} rounds x {len(variants)} variants x {args.block} calls")
    samples = latency.run_rounds(
        conn,
        variants,
        data.group_ids,
        values,
        rounds=args.rounds,
        block=args.block,
        seed=args.seed,
        progress=lambda r: log(f"  round {r}/{args.rounds}") if r % 10 == 0 else None,
    )
    results["latency"] = {"variants": variants, "samples": samples, "comparisons": latency.compare(variants, samples)}
