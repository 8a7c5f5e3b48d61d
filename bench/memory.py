"""Memory: does anything grow with the number of get/store calls? tracemalloc over many calls, after a warm-up."""

from __future__ import annotations

import gc
import secrets
import tracemalloc
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

import pyaccess
from bench.dataset import Dataset


@dataclass(frozen=True)
class MemoryResult:
    op: str
    calls: int
    first_half_bytes: int  # traced growth over the first calls/2 calls
    second_half_bytes: int  # traced growth over the next calls/2 calls
    peak_bytes: int  # peak above the starting point
    top_growth: list[str]  # the lines that grew most over the whole run (should be noise)

    @property
    def net_bytes(self) -> int:
        return self.first_half_bytes + self.second_half_bytes

    @property
    def bytes_per_call(self) -> float:
        return self.net_bytes / self.calls if self.calls else 0.0


def _measure(op: str, call: Callable[[uuid.UUID, str], object], ids: Sequence[uuid.UUID], calls: int) -> MemoryResult:
    values = [secrets.token_urlsafe(32) for _ in range(64)]
    for i in range(2000):  # warm-up: caches, prepared statements, the session guard
        call(ids[i % len(ids)], values[i % len(values)])
    gc.collect()
    tracemalloc.start()
    try:
        gc.collect()
        start_snapshot = tracemalloc.take_snapshot()
        start, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        half = calls // 2
        for i in range(half):
            call(ids[i % len(ids)], values[i % len(values)])
        gc.collect()
        middle, _ = tracemalloc.get_traced_memory()
        for i in range(half, 2 * half):
            call(ids[i % len(ids)], values[i % len(values)])
        gc.collect()
        end, peak = tracemalloc.get_traced_memory()
        end_snapshot = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    flt = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen *>")]
    diff = end_snapshot.filter_traces(flt).compare_to(start_snapshot.filter_traces(flt), "lineno")
    top = [str(d) for d in diff[:3] if d.size_diff > 0]
    return MemoryResult(op, 2 * half, middle - start, end - middle, peak - start, top)


def run_memory(conn: psycopg.Connection[Any], data: Dataset, calls: int) -> list[MemoryResult]:
    key_file = data.keys.current

    def get(gid: uuid.UUID, _secret: str) -> object:
        return pyaccess.get_provision_secret(conn, gid, key_file=key_file)

    def store(gid: uuid.UUID, secret: str) -> object:
        pyaccess.store_provision_secret(conn, gid, secret, key_file=key_file)
        return None

    return [_measure("get", get, data.group_ids, calls), _measure("store", store, data.group_ids, calls)]
