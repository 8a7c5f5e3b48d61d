"""The one timing loop: variants interleaved block by block, round by round, each against its reference.

Every figure of the benchmark comes out of :func:`measure`: wall time per
operation (each call timed on its own), server CPU per operation (the run
time of the variant's backend processes, from ``/proc/<pid>/schedstat``,
summed over the blocks) and client CPU per operation (this process).
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import os
import random
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

Call = Callable[[uuid.UUID], object]  # one call on one group; may return an awaitable


@dataclass(frozen=True)
class Variant:
    """One way of doing something, compared with the variant named ``reference`` (itself for a reference)."""

    name: str
    reference: str
    call: Call
    pids: tuple[int, ...] = ()  # its backends' process ids, where their CPU clock is readable
    ops: int = 1  # operations one call does (rows rotated, gets of all threads)
    before_block: Callable[[], object] | None = None  # untimed set-up before each block
    target: str = ""  # the ceiling for the ratios, "latency / server CPU"


@dataclass
class Samples:
    per_op_ns: list[float] = field(default_factory=list)
    server_ns: int = 0
    client_ns: int = 0
    ops: int = 0


@dataclass(frozen=True)
class Comparison:
    """A variant against its reference: medians and CPU per operation, and their ratios."""

    name: str
    reference: str
    median_us: float
    p10_us: float
    p90_us: float
    ratio: float
    server_us: float | None
    server_ratio: float | None
    client_us: float
    target: str


def backend_cpu_ns(pid: int) -> int | None:
    """CPU time the process ``pid`` has run so far (first field of schedstat), None where unreadable."""
    try:
        with open(f"/proc/{pid}/schedstat", encoding="ascii") as handle:
            return int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def local_pids(host: str | None, *pids: int) -> tuple[int, ...]:
    """The backends whose CPU clock this process can read: on this machine, and readable."""
    if host not in (None, "", "localhost", "127.0.0.1", "::1") and not (host or "").startswith("/"):
        return ()
    return pids if all(backend_cpu_ns(pid) is not None for pid in pids) else ()


def _server_ns(pids: Sequence[int]) -> int:
    return sum(backend_cpu_ns(pid) or 0 for pid in pids)


async def _block(call: Call, groups: Sequence[uuid.UUID], times: list[float], ops: int) -> None:
    for i, gid in enumerate(groups):
        t0 = time.perf_counter_ns()
        result = call(gid)
        if inspect.isawaitable(result):
            await result
        times[i] = (time.perf_counter_ns() - t0) / ops


def _run_block(runner: asyncio.Runner, variant: Variant, groups: Sequence[uuid.UUID], into: Samples) -> None:
    if variant.before_block is not None:
        variant.before_block()
    times = [0.0] * len(groups)
    gc.collect()
    server0, client0 = _server_ns(variant.pids), time.process_time_ns()
    runner.run(_block(variant.call, groups, times, variant.ops))
    into.client_ns += time.process_time_ns() - client0
    into.server_ns += _server_ns(variant.pids) - server0
    into.per_op_ns.extend(times)
    into.ops += len(groups) * variant.ops


def measure(
    runner: asyncio.Runner,
    variants: Sequence[Variant],
    groups: Sequence[uuid.UUID],
    *,
    rounds: int,
    block: int,
    warmup: int = 0,
    seed: int = 1,
) -> list[Comparison]:
    """``rounds`` rounds; in each, one block of ``block`` calls per variant on the same random groups,
    the variants in an order that shifts by one every round, so drift in the machine's load hits all alike."""
    rng = random.Random(seed)
    for variant in variants:  # untimed: psycopg prepares its statements, the server caches its plans
        _run_block(runner, variant, [groups[i % len(groups)] for i in range(warmup)], Samples())
    samples = {v.name: Samples() for v in variants}
    for r in range(rounds):
        chosen = rng.choices(groups, k=block)
        for variant in [*variants[r % len(variants) :], *variants[: r % len(variants)]]:
            _run_block(runner, variant, chosen, samples[variant.name])
    return [_compare(v, samples[v.name], samples[v.reference]) for v in variants]


def _compare(variant: Variant, mine: Samples, ref: Samples) -> Comparison:
    deciles = (
        statistics.quantiles(mine.per_op_ns, n=10, method="inclusive")
        if len(mine.per_op_ns) > 1
        else mine.per_op_ns * 9
    )
    median, ref_median = statistics.median(mine.per_op_ns), statistics.median(ref.per_op_ns)
    server = mine.server_ns / mine.ops / 1e3 if variant.pids else None
    ref_server = ref.server_ns / ref.ops / 1e3 if server is not None else None
    return Comparison(
        name=variant.name,
        reference=variant.reference,
        median_us=median / 1e3,
        p10_us=deciles[0] / 1e3,
        p90_us=deciles[-1] / 1e3,
        ratio=median / ref_median,
        server_us=server,
        server_ratio=server / ref_server if server is not None and ref_server else None,
        client_us=mine.client_ns / mine.ops / 1e3,
        target=variant.target,
    )


def split_cpus(pids: Sequence[int]) -> str:
    """Put this thread on the last CPU and ``pids`` (the server side) on the one before: every round trip
    then wakes another CPU, as it crosses the network between two hosts. Returns what was done."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 or not pids:
        return "not pinned (one CPU, or the server is not local)"
    try:
        for pid in pids:
            os.sched_setaffinity(pid, {cpus[-2]})
    except OSError as exc:
        return f"not pinned ({exc.strerror})"
    os.sched_setaffinity(0, {cpus[-1]})
    return f"client on CPU {cpus[-1]}, server processes on CPU {cpus[-2]}"
