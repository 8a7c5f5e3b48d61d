"""Small shared pieces: distributions, CPU clocks, machine facts."""

from __future__ import annotations

import datetime
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

BENCH_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Dist:
    """Median and spread of a sample."""

    median: float
    p10: float
    p90: float
    q1: float
    q3: float
    n: int

    def scaled(self, factor: float) -> Dist:
        return Dist(
            self.median * factor,
            self.p10 * factor,
            self.p90 * factor,
            self.q1 * factor,
            self.q3 * factor,
            self.n,
        )


def quantile(ordered: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile of an already sorted sequence."""
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def dist(values: Sequence[float]) -> Dist:
    ordered = sorted(values)
    return Dist(
        quantile(ordered, 0.5),
        quantile(ordered, 0.1),
        quantile(ordered, 0.9),
        quantile(ordered, 0.25),
        quantile(ordered, 0.75),
        len(ordered),
    )


def backend_cpu_ns(pid: int | None) -> int | None:
    """CPU time (ns) the server process ``pid`` has run so far, from /proc (None when not readable)."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/schedstat", encoding="ascii") as handle:
            return int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def local_backend_pid(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> int | None:
    """The server process of ``conn`` if it runs on this machine and its CPU clock is readable."""
    pid = conn.info.backend_pid
    return pid if backend_cpu_ns(pid) is not None and conn.info.host in ("127.0.0.1", "::1", "localhost") else None


def thread_cpu_ns() -> int:
    return time.thread_time_ns()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def machine_info(conn: psycopg.Connection[Any]) -> dict[str, str]:
    row = conn.execute("SELECT version()").fetchone()
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "nproc": str(os.cpu_count()),
        "cpu": cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "psycopg": psycopg.__version__ + (f" ({psycopg.pq.__impl__} libpq {psycopg.pq.version()})"),
        "postgresql": str(row[0]) if row else "unknown",
    }


PIN_MODES = ("same", "split", "none")


def pin(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any], mode: str) -> str:
    """Place this thread and the connection's server process on CPUs; return what was done.

    ``same``: both on one CPU (each round trip is a context switch on that CPU);
    ``split``: on two different CPUs (each round trip wakes the other CPU);
    ``none``: wherever the scheduler likes (on a VM it flips between the two).
    """
    cpus = sorted(os.sched_getaffinity(0) | set(range(os.cpu_count() or 1)))
    pid = local_backend_pid(conn)
    if pid is None:
        return "not pinned (the server process is not local)"
    try:
        if mode == "same" or (mode == "split" and len(cpus) < 2):
            os.sched_setaffinity(0, {cpus[-1]})
            os.sched_setaffinity(pid, {cpus[-1]})
            return f"client thread and server process both on CPU {cpus[-1]}"
        if mode == "split":
            os.sched_setaffinity(0, {cpus[-1]})
            os.sched_setaffinity(pid, {cpus[-2]})
            return f"client thread on CPU {cpus[-1]}, server process on CPU {cpus[-2]}"
        os.sched_setaffinity(0, set(cpus))
        os.sched_setaffinity(pid, set(cpus))
    except OSError as exc:
        return f"not pinned ({exc.strerror})"
    return "not pinned"


def unpin() -> None:
    os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
