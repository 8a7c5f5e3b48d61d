"""Service paths: the sync module function against the pooled client, the async function and the async pooled client.

Every variant gets and stores through its own connection (a pool of one
connection for the pooled clients), interleaved block by block, round by round,
like the latency section. The async variants are awaited one after the other in
a coroutine that runs on one event loop (``asyncio.Runner``), each call timed on
its own; the loop lives for the whole section.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool

import pyaccess
from bench.common import Dist, dist, local_backend_pid, pin
from bench.latency import PLAIN_GET, Samples, record_block

SyncCall = Callable[[uuid.UUID, str], object]
AsyncCall = Callable[[uuid.UUID, str], Awaitable[object]]

REFERENCE = {"get": "get: sync function", "store": "store: sync function"}
FLOOR = "get: plain SELECT (floor)"


@dataclass(frozen=True)
class PathVariant:
    """One way a service calls one operation; exactly one of ``run`` (sync) and ``arun`` (async) is set."""

    name: str
    op: str  # "get" or "store"
    label: str  # short label for the chart
    path: str  # "floor", "sync", "pool", "async" or "async pool"
    pid: int | None  # the server process of its connection, when local
    run: SyncCall | None = None
    arun: AsyncCall | None = None


@dataclass(frozen=True)
class PathComparison:
    """A variant against the sync module function of its operation."""

    variant: PathVariant
    per_op: Dist  # µs
    reference_per_op: Dist  # µs
    ratio: float  # median / reference median
    round_ratios: Dist  # block median / reference block median, round by round


@dataclass
class ServiceResult:
    variants: list[PathVariant]
    samples: dict[str, Samples]
    comparisons: list[PathComparison]
    pinning: str
    rounds: int
    block: int
    warmup: int

    def by_name(self) -> dict[str, PathComparison]:
        return {c.variant.name: c for c in self.comparisons}


def _sync_block(run: SyncCall, ids: Sequence[uuid.UUID], values: Sequence[str], times: list[int]) -> None:
    for i in range(len(times)):
        t0 = time.perf_counter_ns()
        run(ids[i], values[i])
        times[i] = time.perf_counter_ns() - t0


async def _async_block(arun: AsyncCall, ids: Sequence[uuid.UUID], values: Sequence[str], times: list[int]) -> None:
    for i in range(len(times)):
        t0 = time.perf_counter_ns()
        await arun(ids[i], values[i])
        times[i] = time.perf_counter_ns() - t0


def _run_block(
    runner: asyncio.Runner, variant: PathVariant, ids: Sequence[uuid.UUID], values: Sequence[str], times: list[int]
) -> None:
    if variant.arun is not None:
        runner.run(_async_block(variant.arun, ids, values, times))
    else:
        assert variant.run is not None
        _sync_block(variant.run, ids, values, times)


def _check(runner: asyncio.Runner, variants: Sequence[PathVariant], gid: uuid.UUID) -> None:
    """What each store variant writes, every pyaccess get variant reads back (so all of them do the real work)."""
    gets = [v for v in variants if v.op == "get" and v.path != "floor"]
    for store in (v for v in variants if v.op == "store"):
        expected = "check-" + store.path.replace(" ", "-")
        times = [0]
        _run_block(runner, store, [gid], [expected], times)
        for get in gets:
            if get.arun is not None:
                got = runner.run(_returned(get.arun, gid))
            else:
                assert get.run is not None
                got = get.run(gid, "")
            if got != expected:
                raise RuntimeError(f"{get.name} read {got!r} after {store.name} stored {expected!r}")


async def _returned(arun: AsyncCall, gid: uuid.UUID) -> object:
    return await arun(gid, "")


def _rounds(
    runner: asyncio.Runner,
    variants: Sequence[PathVariant],
    ids: Sequence[uuid.UUID],
    secrets: Sequence[str],
    *,
    rounds: int,
    block: int,
    seed: int,
    progress: Callable[[int], None] | None,
) -> dict[str, Samples]:
    """``rounds`` rounds; in each, a block of ``block`` calls of every variant, in an order that rotates."""
    rng = random.Random(seed)
    samples = {v.name: Samples(server_cpu_ns=0 if v.pid is not None else None) for v in variants}
    for r in range(rounds):
        chosen = rng.sample(list(ids), block)
        values = [secrets[rng.randrange(len(secrets))] for _ in range(block)]
        shift = r % len(variants)
        for variant in [*variants[shift:], *variants[:shift]]:
            record_block(
                samples[variant.name], variant.pid, block, partial(_run_block, runner, variant, chosen, values)
            )
        if progress is not None:
            progress(r + 1)
    return samples


def _compare(variants: Sequence[PathVariant], samples: dict[str, Samples]) -> list[PathComparison]:
    out = []
    for v in variants:
        mine, ref = samples[v.name], samples[REFERENCE[v.op]]
        per_op, ref_per_op = mine.per_op_us(), ref.per_op_us()
        paired = [a / b for a, b in zip(mine.block_medians_ns, ref.block_medians_ns, strict=True)]
        out.append(PathComparison(v, per_op, ref_per_op, per_op.median / ref_per_op.median, dist(paired)))
    return out


def run_service(
    dsn: str,
    key_file: Path,
    ids: Sequence[uuid.UUID],
    *,
    rounds: int,
    block: int,
    warmup: int,
    seed: int,
    pin_mode: str,
    log: Callable[[str], None],
) -> ServiceResult:
    """The sync function, the pooled client, the async function and the async pooled client, get and store."""
    secrets = [f"service-{n:04d}-" + "x" * 30 for n in range(1000)]
    client = pyaccess.ProvisionSecrets(key_file=key_file)
    aclient = pyaccess.AsyncProvisionSecrets(key_file=key_file)
    with (
        asyncio.Runner() as runner,
        psycopg.connect(dsn, autocommit=True) as conn,
        ConnectionPool(
            dsn,
            min_size=1,
            max_size=1,
            kwargs={"autocommit": True},
            configure=client.configure,
            open=True,
            name="bench-service",
        ) as pool,
    ):
        pool.wait()
        client.pool = pool
        aconn = runner.run(psycopg.AsyncConnection.connect(dsn, autocommit=True))
        apool = AsyncConnectionPool(
            dsn,
            min_size=1,
            max_size=1,
            kwargs={"autocommit": True},
            configure=aclient.configure,
            open=False,
            name="bench-service-async",
        )
        runner.run(apool.open(wait=True))
        aclient.pool = apool
        try:
            # Place every connection's server process as --pin says (the client is this one thread throughout).
            pooled = pool.getconn()
            apooled = runner.run(apool.getconn())
            pids = {
                "sync": local_backend_pid(conn),
                "pool": local_backend_pid(pooled),
                "async": local_backend_pid(aconn),
                "async pool": local_backend_pid(apooled),
            }
            for other in (pooled, apooled, aconn):
                pin(other, pin_mode)
            pinning = pin(conn, pin_mode)
            pool.putconn(pooled)
            runner.run(apool.putconn(apooled))

            variants = _variants(conn, aconn, client, aclient, key_file=key_file, pids=pids)
            _check(runner, variants, ids[0])
            for v in variants:
                times = [0] * warmup
                _run_block(runner, v, [ids[i % len(ids)] for i in range(warmup)], secrets[:warmup], times)
            log(f"service: {rounds} rounds x {len(variants)} variants x {block} calls")
            samples = _rounds(
                runner,
                variants,
                ids,
                secrets,
                rounds=rounds,
                block=block,
                seed=seed,
                progress=lambda r: log(f"  round {r}/{rounds}") if r % 10 == 0 else None,
            )
        finally:
            runner.run(apool.close())
            runner.run(aconn.close())
    return ServiceResult(variants, samples, _compare(variants, samples), pinning, rounds, block, warmup)


def _variants(
    conn: psycopg.Connection[Any],
    aconn: psycopg.AsyncConnection[Any],
    client: pyaccess.ProvisionSecrets,
    aclient: pyaccess.AsyncProvisionSecrets,
    *,
    key_file: Path,
    pids: dict[str, int | None],
) -> list[PathVariant]:
    def floor_get(gid: uuid.UUID, _secret: str) -> object:
        row = conn.execute(PLAIN_GET, (gid,), prepare=True).fetchone()
        return None if row is None else row[0]

    def sync_get(gid: uuid.UUID, _secret: str) -> object:
        return pyaccess.get_provision_secret(conn, gid, key_file=key_file)

    def sync_store(gid: uuid.UUID, secret: str) -> object:
        pyaccess.store_provision_secret(conn, gid, secret, key_file=key_file)
        return None

    def pool_get(gid: uuid.UUID, _secret: str) -> object:
        return client.get(gid)

    def pool_store(gid: uuid.UUID, secret: str) -> object:
        client.store(gid, secret)
        return None

    async def async_get(gid: uuid.UUID, _secret: str) -> object:
        return await pyaccess.aio.get_provision_secret(aconn, gid, key_file=key_file)

    async def async_store(gid: uuid.UUID, secret: str) -> object:
        await pyaccess.aio.store_provision_secret(aconn, gid, secret, key_file=key_file)
        return None

    async def apool_get(gid: uuid.UUID, _secret: str) -> object:
        return await aclient.get(gid)

    async def apool_store(gid: uuid.UUID, secret: str) -> object:
        await aclient.store(gid, secret)
        return None

    def variant(
        name: str, label: str, path: str, run: SyncCall | None = None, arun: AsyncCall | None = None
    ) -> PathVariant:
        pid = pids["sync" if path == "floor" else path]
        return PathVariant(name, name.split(":", 1)[0], label, path, pid, run, arun)

    return [
        variant(FLOOR, "plain SELECT", "floor", run=floor_get),
        variant(REFERENCE["get"], "sync function", "sync", run=sync_get),
        variant("get: ProvisionSecrets + ConnectionPool", "pool", "pool", run=pool_get),
        variant("get: async function", "async function", "async", arun=async_get),
        variant("get: AsyncProvisionSecrets + AsyncConnectionPool", "async pool", "async pool", arun=apool_get),
        variant(REFERENCE["store"], "sync function", "sync", run=sync_store),
        variant("store: ProvisionSecrets + ConnectionPool", "pool", "pool", run=pool_store),
        variant("store: async function", "async function", "async", arun=async_store),
        variant("store: AsyncProvisionSecrets + AsyncConnectionPool", "async pool", "async pool", arun=apool_store),
    ]
