"""What is measured: the variants of each section, and the floors they are compared with.

Only the public API (module functions, both clients, ``pyaccess.aio``,
``pyaccess.rotation.rotate``) and plain SQL on ``public.ota_groups``; and, to tell
pyaccess's Python from the rest, the library's read statement sent through psycopg alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import inspect
import itertools
import os
import secrets
import tracemalloc
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, LiteralString

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool

import pyaccess
from bench.dataset import (
    PREVIOUS_GET,
    PREVIOUS_GUARD,
    PREVIOUS_RELEASE,
    PREVIOUS_STORE,
    SECRET,
    key_material,
    write_ring,
)
from bench.timing import Call, Comparison, Variant, local_pids, measure, split_cpus
from pyaccess import queries
from pyaccess.rotation import rotate

# The floors: the same row's ciphertext, one prepared statement, no crypto.
FLOOR_GET = "SELECT provision_secret_ciphertext FROM public.ota_groups WHERE id = %s"
FLOOR_STORE = "UPDATE public.ota_groups SET provision_secret_ciphertext = %s WHERE id = %s"
FLOOR_REWRITE = (
    "UPDATE public.ota_groups SET provision_secret_ciphertext = provision_secret_ciphertext || ''::bytea"
    " WHERE provision_secret_ciphertext IS NOT NULL"
)
# The session setting that turns the audit record of each successful read on or off (sql/0.2.0/20_audit.sql);
# None skips that comparison, for a database without it.
AUDIT_READS_SETTING: str | None = "pyaccess.audit_reads"
AUTOCOMMIT: dict[str, Any] = {"autocommit": True}
FLOOR_GET_NAME = "get: plain SELECT of the ciphertext (floor)"
FLOOR_STORE_NAME = "store: plain UPDATE of the ciphertext (floor)"
CEILING = "≤ 1.25x / ≤ 1.5x"  # issue 13: a service get or store against its floor, latency / server CPU


@dataclass(frozen=True)
class Sizes:
    rounds: int
    block: int
    warmup: int
    threads: tuple[int, ...]
    tp_calls: int
    tp_rounds: int
    rot_rounds: int
    mem_calls: int


@dataclass(frozen=True)
class Env:
    """What every section runs on: one event loop, the database, its key file and its groups."""

    runner: asyncio.Runner
    dsn: str
    key_file: Path
    groups: Sequence[uuid.UUID]
    sizes: Sizes


@dataclass(frozen=True)
class Section:
    title: str
    comparisons: list[Comparison]
    unit: str = "µs per call"
    scale: float = 1.0  # from µs per operation to ``unit``
    rate: bool = False  # show operations per second


@dataclass(frozen=True)
class Growth:
    """Traced memory growth over two equal halves of many calls, after a warm-up."""

    name: str
    calls: int
    first_half: int
    second_half: int


def _pid(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> tuple[int, ...]:
    return local_pids(conn.info.host, conn.info.backend_pid)


async def _settled(value: object) -> object:
    return await value if inspect.isawaitable(value) else value


def _sync_get(conn: psycopg.Connection[Any], key_file: Path) -> Call:
    return lambda g: pyaccess.get_provision_secret(conn, g, key_file=key_file)


Path4 = tuple[str, tuple[int, ...], Call, Call]  # label, backend pids, get, store


def _service_paths(env: Env, stack: contextlib.ExitStack, conn: psycopg.Connection[Any]) -> list[Path4]:
    """The module function on ``conn``, the clients on pools of one connection, and ``pyaccess.aio``."""
    runner, key_file = env.runner, env.key_file
    client = pyaccess.ProvisionSecrets(key_file=key_file)
    client.pool = stack.enter_context(
        ConnectionPool(env.dsn, min_size=1, max_size=1, kwargs=AUTOCOMMIT, configure=client.configure, open=True)
    )
    aconn = runner.run(psycopg.AsyncConnection.connect(env.dsn, autocommit=True))
    stack.callback(lambda: runner.run(aconn.close()))
    aclient = pyaccess.AsyncProvisionSecrets(key_file=key_file)
    apool = aclient.pool = AsyncConnectionPool(
        env.dsn, min_size=1, max_size=1, kwargs=AUTOCOMMIT, configure=aclient.configure, open=False
    )
    runner.run(apool.open(wait=True))
    stack.callback(lambda: runner.run(apool.close()))
    with client.pool.connection() as pooled:
        pool_pids = _pid(pooled)
    apool_pids = runner.run(_apool_pids(apool))
    sync, aio = pyaccess, pyaccess.aio
    return [
        ("sync function", _pid(conn), _sync_get(conn, key_file),
         lambda g: sync.store_provision_secret(conn, g, SECRET, key_file=key_file)),
        ("ProvisionSecrets + ConnectionPool", pool_pids, client.get, lambda g: client.store(g, SECRET)),
        ("pyaccess.aio function", _pid(aconn), lambda g: aio.get_provision_secret(aconn, g, key_file=key_file),
         lambda g: aio.store_provision_secret(aconn, g, SECRET, key_file=key_file)),
        ("AsyncProvisionSecrets + AsyncConnectionPool", apool_pids, aclient.get, lambda g: aclient.store(g, SECRET)),
    ]  # fmt: skip


async def _apool_pids(apool: AsyncConnectionPool[Any]) -> tuple[int, ...]:
    async with apool.connection() as pooled:
        return _pid(pooled)


def _check_paths(env: Env, conn: psycopg.Connection[Any], paths: list[Path4]) -> None:
    """Each path's store overwrites another value and its get reads the secret back: every path does the work."""
    gid = env.groups[0]
    for label, _pids, get, store in paths:
        pyaccess.store_provision_secret(conn, gid, "overwritten", key_file=env.key_file)
        env.runner.run(_settled(store(gid)))
        got = env.runner.run(_settled(get(gid)))
        if got != SECRET:
            raise RuntimeError(f"{label}: read {got!r} after its own store")


def _floors(
    conn: psycopg.Connection[Any], names: tuple[str, str] = (FLOOR_GET_NAME, FLOOR_STORE_NAME)
) -> list[Variant]:
    """The same row's ciphertext read, or written back as it was, by one prepared statement on ``conn``."""
    saved = dict(conn.execute("SELECT id, provision_secret_ciphertext FROM public.ota_groups").fetchall())

    def select(gid: uuid.UUID) -> object:
        return conn.execute(FLOOR_GET, (gid,), prepare=True).fetchone()

    def update(gid: uuid.UUID) -> object:
        return conn.execute(FLOOR_STORE, (saved[gid], gid), prepare=True)

    return [Variant(name, name, call, _pid(conn)) for name, call in zip(names, (select, update), strict=True)]


Params = Callable[[Any], tuple[Any, ...]]  # a statement's parameters for a group


def _statement(conn: psycopg.Connection[Any], query: LiteralString, params: Params) -> Call:
    """One prepared statement on ``conn``, through psycopg alone, with the parameters for the group."""
    return lambda gid: conn.execute(query, params(gid), prepare=True).fetchall()


def _statement_alone(conn: psycopg.Connection[Any], key_file: Path) -> Variant:
    """The library's read statement with the same values, through psycopg alone: what pyaccess's Python adds
    to a get is the difference from the sync function, what the server and psycopg cost for it the rest."""
    ring = pyaccess.load_key_ring(key_file)
    call = _statement(conn, queries.OPEN, lambda g: (g, ring.wire_keys(g).reveal(), 2))
    return Variant("get: its statement through psycopg alone", FLOOR_GET_NAME, call, _pid(conn))


def latency(env: Env) -> tuple[Section, str]:
    """Single calls, client and server on different CPUs: get and store on every service path against the floors."""
    with contextlib.ExitStack() as stack:
        conn = stack.enter_context(psycopg.connect(env.dsn, autocommit=True))
        paths = _service_paths(env, stack, conn)
        _check_paths(env, conn, paths)
        floors = _floors(conn)
        variants = list(floors)
        for n, (label, pids, *calls) in enumerate(paths):
            # The sync function against the floors (issue 13's ceilings), every other path against the sync function.
            for floor, op, call in zip(floors, ("get", "store"), calls, strict=True):
                ref = floor.name if n == 0 else f"{op}: {paths[0][0]}"
                variants.append(Variant(f"{op}: {label}", ref, call, pids, target=CEILING if n == 0 else ""))
        variants.insert(len(floors) + 1, _statement_alone(conn, env.key_file))
        variants += _audit_variants(env, stack)
        stack.callback(os.sched_setaffinity, 0, os.sched_getaffinity(0))
        pinning = split_cpus(sorted({pid for v in variants for pid in v.pids}))
        s = env.sizes
        found = measure(env.runner, variants, env.groups, rounds=s.rounds, block=s.block, warmup=s.warmup, seed=1)
    return Section("Latency and server CPU per call", found), pinning


def _audit_variants(env: Env, stack: contextlib.ExitStack) -> list[Variant]:
    """The sync get with the audit record of each read off and on, one session each."""
    if AUDIT_READS_SETTING is None:
        return []
    variants: list[Variant] = []
    for value in ("off", "on"):
        conn = stack.enter_context(psycopg.connect(env.dsn, autocommit=True))
        conn.execute("SELECT pg_catalog.set_config(%s, %s, false)", (AUDIT_READS_SETTING, value))
        name = f"get: sync function, audit_reads {value}"
        get = _sync_get(conn, env.key_file)
        variants.append(Variant(name, variants[0].name if variants else name, get, _pid(conn)))
    return variants


def against_previous_release(env: Env, previous_dsn: str, previous_groups: Sequence[uuid.UUID]) -> Section:
    """Each release's own get and store statements, sent through psycopg alone, against the plain SELECT and
    UPDATE on a database of that release: what a call costs the server, before and after."""
    ring, master, secret = pyaccess.load_key_ring(env.key_file), key_material(env.key_file), SECRET.encode()
    then_row = dict(zip(env.groups, itertools.cycle(previous_groups), strict=False))  # a row of each database
    old, new = PREVIOUS_RELEASE[0], queries.SQL_RELEASE
    with contextlib.ExitStack() as stack:
        now = stack.enter_context(psycopg.connect(env.dsn, autocommit=True))
        now.execute(queries.GUARD)
        then = stack.enter_context(psycopg.connect(previous_dsn, autocommit=True))
        then.execute(PREVIOUS_GUARD)

        def on_then(call: Call) -> Call:
            return lambda gid: call(then_row[gid])

        floors = [
            dataclasses.replace(floor, call=on_then(floor.call))
            for floor in _floors(then, (f"{old}: plain SELECT (floor)", f"{old}: plain UPDATE (floor)"))
        ] + _floors(now, (f"{new}: plain SELECT (floor)", f"{new}: plain UPDATE (floor)"))
        calls = [
            (f"{old}: get (the master key)",
             on_then(_statement(then, PREVIOUS_GET, lambda g: (g, [master])))),
            (f"{old}: store (the master key)",
             on_then(_statement(then, PREVIOUS_STORE, lambda g: (g, SECRET, master)))),
            (f"{new}: get (the group's pairs)",
             _statement(now, queries.OPEN, lambda g: (g, ring.wire_keys(g).reveal(), 2))),
            (f"{new}: store (the group's pair)",
             _statement(now, queries.SEAL, lambda g: (g, secret, ring.sealing_keys(g).reveal()))),
        ]  # fmt: skip
        variants = floors + [
            Variant(name, floor.name, call, floor.pids) for (name, call), floor in zip(calls, floors, strict=True)
        ]
        stack.callback(os.sched_setaffinity, 0, os.sched_getaffinity(0))
        split_cpus(sorted({pid for v in variants for pid in v.pids}))  # as in the latency section
        s = env.sizes
        found = measure(env.runner, variants, env.groups, rounds=s.rounds, block=s.block, warmup=s.warmup, seed=4)
    return Section(f"Against {old}: each release's statements, through psycopg alone", found)


def throughput(env: Env) -> Section:
    """Gets from threads sharing a ``ProvisionSecrets`` pool, against the plain SELECT from the same pool."""
    s, groups = env.sizes, env.groups
    size = max(s.threads)
    client = pyaccess.ProvisionSecrets(key_file=env.key_file)
    with (
        ConnectionPool(
            env.dsn, min_size=size, max_size=size, kwargs=AUTOCOMMIT, configure=client.configure, open=True
        ) as pool,
        ThreadPoolExecutor(max_workers=size) as executor,
    ):
        client.pool = pool
        pool.wait()
        held = [pool.getconn() for _ in range(size)]
        pids = local_pids(held[0].info.host, *(c.info.backend_pid for c in held))
        for conn in held:
            pool.putconn(conn)

        def floor(gid: uuid.UUID) -> object:
            with pool.connection() as conn:
                return conn.execute(FLOOR_GET, (gid,), prepare=True).fetchone()

        def threaded(op: Callable[[uuid.UUID], object], threads: int) -> Call:
            def worker(w: int) -> None:
                for j in range(s.tp_calls):
                    op(groups[(w * s.tp_calls + j) % len(groups)])

            return lambda _gid: list(executor.map(worker, range(threads)))

        variants = []
        for t in s.threads:
            ref = f"plain SELECT (floor), {t} thread(s)"
            variants.append(Variant(ref, ref, threaded(floor, t), pids, ops=t * s.tp_calls))
            variants.append(
                Variant(f"pooled get, {t} thread(s)", ref, threaded(client.get, t), pids, ops=t * s.tp_calls)
            )
        found = measure(env.runner, variants, groups, rounds=s.tp_rounds, block=1, warmup=1, seed=2)
    return Section("Throughput: pooled get", found, unit="µs per get (all threads)", rate=True)


def rotation(env: Env) -> Section:
    """``rotate`` of every row to a new key, against one UPDATE that rewrites the same rows with no crypto."""
    rows, key_file = len(env.groups), env.key_file
    ring = [key_material(key_file)]
    with psycopg.connect(env.dsn, autocommit=True) as conn:

        def settle() -> None:  # untimed: dead row versions reusable and flushed, so each timed run starts alike
            conn.execute("VACUUM public.ota_groups")
            conn.execute("CHECKPOINT")

        def rotate_all(_gid: uuid.UUID) -> None:
            ring.append(secrets.token_bytes(32))
            ring_file = write_ring(key_file.with_name(f"ring-{len(ring)}.json"), ring[-1], ring[-2])
            done = rotate(conn, key_file=ring_file).reencrypted
            if done != rows:
                raise RuntimeError(f"rotate re-encrypted {done} rows, not {rows}")

        def rewrite(_gid: uuid.UUID) -> None:
            if conn.execute(FLOOR_REWRITE).rowcount != rows:
                raise RuntimeError("the one-statement rewrite missed rows")

        floor = "one UPDATE rewriting the same rows (floor)"
        variants = [
            Variant(floor, floor, rewrite, _pid(conn), ops=rows, before_block=settle),
            Variant("pyaccess.rotation.rotate", floor, rotate_all, _pid(conn), ops=rows, before_block=settle,
                    target="≤ 2.5x"),
        ]  # fmt: skip
        found = measure(env.runner, variants, env.groups, rounds=env.sizes.rot_rounds, block=1, seed=3)
    return Section(f"Rotation of {rows:,} rows", found, unit="s for all rows", scale=rows / 1e6)


def _traced_growth(op: Call, groups: Sequence[uuid.UUID], half: int) -> tuple[int, int]:
    """Traced bytes gained over two runs of ``half`` calls, after a first, untraced run of as many."""

    def run(start: int) -> None:
        for i in range(start, start + half):
            op(groups[i % len(groups)])

    run(0)
    tracemalloc.start()
    try:
        marks = []
        for start in (half, 2 * half, None):
            gc.collect()
            marks.append(tracemalloc.get_traced_memory()[0])
            if start is not None:
                run(start)
    finally:
        tracemalloc.stop()
    return marks[1] - marks[0], marks[2] - marks[1]


def memory(env: Env) -> list[Growth]:
    """Traced memory over many gets and many stores: anything that grows per call shows in both halves."""
    half, key_file = env.sizes.mem_calls // 2, env.key_file
    with psycopg.connect(env.dsn, autocommit=True) as conn:
        ops: dict[str, Call] = {
            "get (sync function)": _sync_get(conn, key_file),
            "store (sync function)": lambda g: pyaccess.store_provision_secret(conn, g, SECRET, key_file=key_file),
        }
        return [Growth(name, 2 * half, *_traced_growth(op, env.groups, half)) for name, op in ops.items()]
