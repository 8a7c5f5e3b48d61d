"""Throughput: ops/s with 1, 2, 4, 8 threads sharing a ``psycopg_pool.ConnectionPool``, pyaccess get vs the floor."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

import pyaccess
from bench.common import dist
from bench.latency import PLAIN_GET

PoolOp = Callable[[psycopg.Connection[Any], uuid.UUID], object]


@dataclass
class ThroughputResult:
    thread_counts: list[int]
    ops_per_s: dict[str, dict[int, list[float]]] = field(default_factory=dict)

    def median(self, variant: str, threads: int) -> float:
        return dist(self.ops_per_s[variant][threads]).median


def variants(key_file: Path) -> dict[str, PoolOp]:
    def plain(conn: psycopg.Connection[Any], gid: uuid.UUID) -> object:
        return conn.execute(PLAIN_GET, (gid,), prepare=True).fetchone()

    def ours(conn: psycopg.Connection[Any], gid: uuid.UUID) -> object:
        return pyaccess.get_provision_secret(conn, gid, key_file=key_file)

    return {"plain SELECT (floor)": plain, "pyaccess get": ours}


def _measure(pool: ConnectionPool[Any], op: PoolOp, ids: Sequence[uuid.UUID], threads: int, seconds: float) -> float:
    """Ops/s of ``threads`` threads, each taking a pooled connection per call, for ``seconds``."""
    counts = [0] * threads
    stop = threading.Event()
    barrier = threading.Barrier(threads + 1)

    def worker(n: int) -> None:
        rng = random.Random(n)
        local = 0
        barrier.wait()
        while not stop.is_set():
            gid = ids[rng.randrange(len(ids))]
            with pool.connection() as conn:
                op(conn, gid)
            local += 1
        counts[n] = local

    workers = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    started = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - started
    return sum(counts) / elapsed


def run_throughput(
    dsn: str,
    key_file: Path,
    ids: Sequence[uuid.UUID],
    *,
    thread_counts: list[int],
    seconds: float,
    rounds: int,
    log: Callable[[str], None],
) -> ThroughputResult:
    ops = variants(key_file)
    result = ThroughputResult(thread_counts, {name: {t: [] for t in thread_counts} for name in ops})
    size = max(thread_counts)
    with ConnectionPool(
        dsn, min_size=size, max_size=size, kwargs={"autocommit": True}, open=True, name="bench"
    ) as pool:
        pool.wait()
        # Warm every pooled connection: hold them all at once, so each one prepares its statements.
        held = [pool.getconn() for _ in range(size)]
        for conn in held:
            for op in ops.values():
                for gid in ids[:10]:
                    op(conn, gid)
        for conn in held:
            pool.putconn(conn)
        cells = [(name, t) for t in thread_counts for name in ops]
        for r in range(rounds):
            shift = (r * 3) % len(cells)
            for name, threads in [*cells[shift:], *cells[:shift]]:
                rate = _measure(pool, ops[name], ids, threads, seconds)
                result.ops_per_s[name][threads].append(rate)
            log(
                f"  round {r + 1}/{rounds}: "
                + ", ".join(f"{t} thr {result.ops_per_s['pyaccess get'][t][-1]:.0f}/s" for t in thread_counts)
            )
    return result
