"""Single-connection latency: the variants side by side, interleaved block by block, round by round."""

from __future__ import annotations

import gc
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import psycopg

import pyaccess
from bench.common import Dist, backend_cpu_ns, dist, local_backend_pid, thread_cpu_ns
from bench.dataset import Dataset, aesgcm_open, aesgcm_seal

Op = Callable[[uuid.UUID, str], object]

PLAIN_GET = "SELECT secret FROM public.plain_table WHERE id = %s"
PLAIN_STORE = "UPDATE public.plain_table SET secret = %s WHERE id = %s"
AESGCM_GET = "SELECT ciphertext FROM public.aesgcm_table WHERE id = %s"
AESGCM_STORE = "UPDATE public.aesgcm_table SET ciphertext = %b WHERE id = %s"
PGP_GET = "SELECT pgp_sym_decrypt(ciphertext, %s::text) FROM public.pgp_table WHERE id = %s"
PGP_STORE = "UPDATE public.pgp_table SET ciphertext = pgp_sym_encrypt(%s::text, %s::text) WHERE id = %s"


@dataclass(frozen=True)
class Variant:
    """One way to do one operation; ``floor`` names the variant it is compared with."""

    name: str
    op: str  # "get" or "store"
    label: str  # short label for tables and the chart
    floor: str
    run: Op


@dataclass
class Samples:
    """What the rounds measured for one variant."""

    per_op_ns: list[int] = field(default_factory=list)
    block_medians_ns: list[float] = field(default_factory=list)
    wall_ns: int = 0
    client_cpu_ns: int = 0
    server_cpu_ns: int | None = 0
    ops: int = 0

    def per_op_us(self) -> Dist:
        return dist(self.per_op_ns).scaled(1e-3)

    def mean_us(self) -> float:
        return self.wall_ns / self.ops / 1e3

    def client_us(self) -> float:
        return self.client_cpu_ns / self.ops / 1e3

    def server_us(self) -> float | None:
        return None if self.server_cpu_ns is None else self.server_cpu_ns / self.ops / 1e3


def standard_variants(conn: psycopg.Connection[Any], data: Dataset) -> list[Variant]:
    """The floor, pyaccess, AES-GCM in Python and naive pgp_sym_*, for get and for store."""
    key_file = data.keys.current
    aead = data.aead
    passphrase = data.passphrase

    def plain_get(gid: uuid.UUID, _secret: str) -> object:
        return conn.execute(PLAIN_GET, (gid,), prepare=True).fetchone()

    def plain_store(gid: uuid.UUID, secret: str) -> object:
        return conn.execute(PLAIN_STORE, (secret, gid), prepare=True)

    def ours_get(gid: uuid.UUID, _secret: str) -> object:
        return pyaccess.get_provision_secret(conn, gid, key_file=key_file)

    def ours_store(gid: uuid.UUID, secret: str) -> object:
        pyaccess.store_provision_secret(conn, gid, secret, key_file=key_file)
        return None

    def aesgcm_get(gid: uuid.UUID, _secret: str) -> object:
        row = conn.execute(AESGCM_GET, (gid,), prepare=True).fetchone()
        assert row is not None
        return aesgcm_open(aead, gid, row[0])

    def aesgcm_store(gid: uuid.UUID, secret: str) -> object:
        return conn.execute(AESGCM_STORE, (aesgcm_seal(aead, gid, secret), gid), prepare=True)

    def pgp_get(gid: uuid.UUID, _secret: str) -> object:
        return conn.execute(PGP_GET, (passphrase, gid), prepare=True).fetchone()

    def pgp_store(gid: uuid.UUID, secret: str) -> object:
        return conn.execute(PGP_STORE, (secret, passphrase, gid), prepare=True)

    return [
        Variant("get: plain SELECT (floor)", "get", "plain", "get: plain SELECT (floor)", plain_get),
        Variant("get: pyaccess", "get", "pyaccess", "get: plain SELECT (floor)", ours_get),
        Variant("get: AES-GCM in Python", "get", "AES-GCM (Python)", "get: plain SELECT (floor)", aesgcm_get),
        Variant("get: pgp_sym_decrypt", "get", "pgp_sym_decrypt", "get: plain SELECT (floor)", pgp_get),
        Variant("store: plain UPDATE (floor)", "store", "plain", "store: plain UPDATE (floor)", plain_store),
        Variant("store: pyaccess", "store", "pyaccess", "store: plain UPDATE (floor)", ours_store),
        Variant("store: AES-GCM in Python", "store", "AES-GCM (Python)", "store: plain UPDATE (floor)", aesgcm_store),
        Variant("store: pgp_sym_encrypt", "store", "pgp_sym_encrypt", "store: plain UPDATE (floor)", pgp_store),
    ]


def check_variants(variants: Sequence[Variant], data: Dataset) -> None:
    """Every get variant returns the secret every store variant wrote (so all of them do the real work)."""
    gid = data.group_ids[0]
    for store in (v for v in variants if v.op == "store"):
        store.run(gid, "check-" + store.label)
    for get in (v for v in variants if v.op == "get"):
        value = get.run(gid, "")
        if isinstance(value, tuple):
            value = value[0]
        if not isinstance(value, str) or not value.startswith("check-"):
            raise RuntimeError(f"{get.name} returned {type(value).__name__}, not the stored secret")


def warm_up(variants: Sequence[Variant], ids: Sequence[uuid.UUID], secrets: Sequence[str], calls: int) -> None:
    """Enough calls of each variant for psycopg to prepare its statements and the server to cache its plans."""
    for variant in variants:
        for i in range(calls):
            variant.run(ids[i % len(ids)], secrets[i % len(secrets)])


def _timed_calls(
    run: Callable[[uuid.UUID, str], object], ids: Sequence[uuid.UUID], values: Sequence[str], times: list[int]
) -> None:
    for i in range(len(times)):
        t0 = time.perf_counter_ns()
        run(ids[i], values[i])
        times[i] = time.perf_counter_ns() - t0


def record_block(s: Samples, pid: int | None, block: int, calls: Callable[[list[int]], None]) -> None:
    """Run one block (``calls`` fills in each call's ns) and add its times and client/server CPU to ``s``."""
    times = [0] * block
    gc.collect()
    server0 = backend_cpu_ns(pid)
    cpu0 = thread_cpu_ns()
    start = time.perf_counter_ns()
    calls(times)
    end = time.perf_counter_ns()
    cpu1 = thread_cpu_ns()
    server1 = backend_cpu_ns(pid)
    s.per_op_ns.extend(times)
    s.block_medians_ns.append(dist(times).median)
    s.wall_ns += end - start
    s.client_cpu_ns += cpu1 - cpu0
    if s.server_cpu_ns is not None and server0 is not None and server1 is not None:
        s.server_cpu_ns += server1 - server0
    s.ops += block


def run_rounds(
    conn: psycopg.Connection[Any],
    variants: Sequence[Variant],
    ids: Sequence[uuid.UUID],
    secrets: Sequence[str],
    *,
    rounds: int,
    block: int,
    seed: int,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Samples]:
    """``rounds`` rounds; in each, a block of ``block`` calls of every variant, in an order that rotates.

    Within a round every variant works on the same randomly drawn groups,
    so each block has its floor's block of the same round to compare with.
    """
    rng = random.Random(seed)
    pid = local_backend_pid(conn)
    samples = {v.name: Samples() for v in variants}
    if pid is None:
        for s in samples.values():
            s.server_cpu_ns = None
    for r in range(rounds):
        chosen = rng.sample(list(ids), block)
        values = [secrets[rng.randrange(len(secrets))] for _ in range(block)]
        shift = r % len(variants)
        for variant in [*variants[shift:], *variants[:shift]]:
            record_block(samples[variant.name], pid, block, partial(_timed_calls, variant.run, chosen, values))
        if progress is not None:
            progress(r + 1)
    return samples


@dataclass(frozen=True)
class Comparison:
    """A variant against its floor: medians and per-round paired ratios."""

    variant: Variant
    per_op: Dist  # µs
    floor_per_op: Dist  # µs
    ratio: float  # median / floor median
    round_ratios: Dist  # block median / floor block median, round by round


def compare(variants: Sequence[Variant], samples: dict[str, Samples]) -> list[Comparison]:
    result = []
    for v in variants:
        mine, floor = samples[v.name], samples[v.floor]
        per_op, floor_per_op = mine.per_op_us(), floor.per_op_us()
        paired = [a / b for a, b in zip(mine.block_medians_ns, floor.block_medians_ns, strict=True)]
        result.append(Comparison(v, per_op, floor_per_op, per_op.median / floor_per_op.median, dist(paired)))
    return result
