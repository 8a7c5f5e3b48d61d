"""Rotation: ``pyaccess.rotation.rotate`` against one plain UPDATE that rewrites the same rows, and its fixed cost."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from bench.common import dist
from bench.dataset import Keys

# The same rows, the same column, a new value of the same length, no crypto:
# byte 1 is the envelope's format version (0x01), so the envelope stays valid.
BASELINE_UPDATE = (
    "UPDATE public.ota_groups SET provision_secret_ciphertext ="
    " pg_catalog.overlay(provision_secret_ciphertext, '\\x01'::bytea, 1, 1)"
    " WHERE provision_secret_ciphertext IS NOT NULL"
)


@dataclass
class RotationResult:
    rows: int
    rotate_s: list[float] = field(default_factory=list)
    update_s: list[float] = field(default_factory=list)
    noop_api_s: list[float] = field(default_factory=list)
    noop_cli_s: list[float] = field(default_factory=list)
    batch_ms_first: list[float] = field(default_factory=list)  # mean of the first 10% of batches
    batch_ms_last: list[float] = field(default_factory=list)  # mean of the last 10% of batches

    def ratio(self) -> float:
        return dist(self.rotate_s).median / dist(self.update_s).median


def pyaccess_rotator(
    conn: psycopg.Connection[Any], key_file: Path, batch_size: int, on_batch: Callable[[int], None]
) -> int:
    from pyaccess.rotation import rotate  # noqa: PLC0415

    report = rotate(conn, key_file=key_file, batch_size=batch_size, on_batch=on_batch)
    return report.reencrypted


def _time_marks(marks: list[float]) -> Callable[[int], None]:
    """An ``on_batch`` callback that notes when each batch ended."""
    return lambda _n: marks.append(time.perf_counter())


def _settle(conn: psycopg.Connection[Any]) -> None:
    """Untimed: make the dead row versions reusable and flush them, so each timed run starts alike."""
    conn.execute("VACUUM public.ota_groups")
    conn.execute("CHECKPOINT")


def cli_path() -> list[str]:
    script = Path(sys.executable).with_name("pyaccess")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from pyaccess.cli import main; main()"]


def run_rotation(
    dsn: str,
    keys: Keys,
    *,
    rows: int,
    rounds: int,
    batch_size: int,
    log: Callable[[str], None],
) -> RotationResult:
    """Round by round: rotate all rows to the other key, and the plain UPDATE, in alternating order."""
    result = RotationResult(rows)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(BASELINE_UPDATE)  # untimed: from here on every run finds the table in the same shape
        _settle(conn)
        current = keys.current  # key A alone: every row is under A
        for r in range(rounds):
            for name in ("pyaccess", "update") if r % 2 == 0 else ("update", "pyaccess"):
                if name == "update":
                    started = time.perf_counter()
                    cur = conn.execute(BASELINE_UPDATE)
                    elapsed = time.perf_counter() - started
                    if cur.rowcount != rows:
                        raise RuntimeError(f"the baseline UPDATE rewrote {cur.rowcount} rows, not {rows}")
                    result.update_s.append(elapsed)
                    log(f"  round {r + 1}: plain UPDATE {elapsed:.2f}s")
                else:
                    key_file = keys.b_over_a if r % 2 == 0 else keys.a_over_b
                    marks: list[float] = []
                    started = time.perf_counter()
                    done = pyaccess_rotator(conn, key_file, batch_size, _time_marks(marks))
                    elapsed = time.perf_counter() - started
                    if done != rows:
                        raise RuntimeError(f"rotate re-encrypted {done} rows, not {rows}")
                    result.rotate_s.append(elapsed)
                    if marks:
                        gaps = [b - a for a, b in zip([started, *marks[:-1]], marks, strict=True)]
                        tenth = max(1, len(gaps) // 10)
                        result.batch_ms_first.append(1e3 * sum(gaps[:tenth]) / tenth)
                        result.batch_ms_last.append(1e3 * sum(gaps[-tenth:]) / tenth)
                    current = key_file
                    log(f"  round {r + 1}: pyaccess rotate {elapsed:.2f}s (batches: {len(marks)})")
                _settle(conn)
            # The fixed cost: nothing left to re-encrypt, through the API and through the command.
            started = time.perf_counter()
            done = pyaccess_rotator(conn, current, batch_size, lambda _n: None)
            result.noop_api_s.append(time.perf_counter() - started)
            if done:
                raise RuntimeError(f"the no-op rotation re-encrypted {done} rows")
            env = {**os.environ, "PYACCESS_DSN": dsn, "PYACCESS_KEY_FILE": str(current)}
            started = time.perf_counter()
            subprocess.run([*cli_path(), "rotate"], env=env, check=True, capture_output=True)
            result.noop_cli_s.append(time.perf_counter() - started)
    return result
