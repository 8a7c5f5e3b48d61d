"""Key rotation: the census of key ids in use, and re-encryption under the current key.

Re-encryption happens inside PostgreSQL (``rewrap_provision_secrets``): the
plaintext never reaches Python. Each batch is one short transaction that
locks only its rows, so ``get`` and ``store`` keep working, and a secret
stored during the rotation is never overwritten by a stale re-encryption.
Killed at any point, a rotation loses at most its open batch, which rolls
back; run it again and it carries on from what is left.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import pq

from pyaccess import queries
from pyaccess.errors import PyAccessError, WrongKeyError, translate_errors
from pyaccess.keyfile import load_key_ring
from pyaccess.keys import KeyRing
from pyaccess.provision import KeyFilePath
from pyaccess.session import execute_guarded

__all__ = ["CensusEntry", "RotationReport", "key_census", "ring_key_ids", "rotate"]


@dataclass(frozen=True)
class CensusEntry:
    """A key id in use, how many secrets it protects, and which key of the ring it is (if any)."""

    key_id: str
    secrets: int
    role: str  # "current", "previous" or "unknown"

    @property
    def readable(self) -> bool:
        return self.role != "unknown"


@dataclass
class RotationReport:
    """What a rotation did (or, with ``dry_run``, would do)."""

    current_key_id: str
    dry_run: bool
    reencrypted: int = 0
    by_old_key_id: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.reencrypted / self.seconds if self.seconds > 0 else 0.0


def ring_key_ids(conn: psycopg.Connection[Any], ring: KeyRing) -> list[str]:
    """The ids of the ring's keys, the current key's first."""
    with translate_errors():
        rows = execute_guarded(conn, queries.KEY_IDS, (ring.encoded,)).fetchall()
    return [str(row[0]) for row in rows]


def _census(conn: psycopg.Connection[Any], ring_ids: list[str]) -> list[CensusEntry]:
    with translate_errors():
        rows = psycopg.Cursor(conn).execute(queries.KEY_CENSUS).fetchall()
    roles = {key_id: ("current" if i == 0 else "previous") for i, key_id in enumerate(ring_ids)}
    return [CensusEntry(str(kid), int(n), roles.get(str(kid), "unknown")) for kid, n in rows]


def key_census(conn: psycopg.Connection[Any], *, key_file: KeyFilePath = None) -> list[CensusEntry]:
    """Every key id in use with its number of secrets, and whether the key file holds that key."""
    return _census(conn, ring_key_ids(conn, load_key_ring(key_file)))


def rotate(
    conn: psycopg.Connection[Any],
    *,
    key_file: KeyFilePath = None,
    batch_size: int = 1000,
    dry_run: bool = False,
    on_start: Callable[[int], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> RotationReport:
    """Re-encrypt under the current key every secret that is under a previous key.

    Commits one transaction per batch, so ``conn`` must not be inside a
    transaction of the caller's. Refuses with :class:`WrongKeyError` (before
    changing anything) when some secrets are under keys the key file does not
    hold: they would be left behind. ``on_start`` gets the number of secrets
    to re-encrypt, ``on_batch`` the size of each batch done.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if conn.info.transaction_status != pq.TransactionStatus.IDLE:
        raise PyAccessError("rotate commits batch by batch: give it a connection outside any transaction")
    ring = load_key_ring(key_file)
    ring_ids = ring_key_ids(conn, ring)
    census = _census(conn, ring_ids)
    if not conn.autocommit:
        conn.rollback()  # our own read-only transaction: each batch then commits on its own
    unknown = [entry for entry in census if not entry.readable]
    if unknown:
        listed = ", ".join(f"{e.key_id} ({e.secrets} secret(s))" for e in unknown)
        raise WrongKeyError(
            f"refusing to rotate: secrets are stored under key ids the key file does not hold: {listed}; "
            "add those keys to previous_keys first"
        )
    report = RotationReport(current_key_id=ring_ids[0], dry_run=dry_run)
    todo = [entry for entry in census if entry.role == "previous"]
    if on_start is not None:
        on_start(sum(entry.secrets for entry in todo))
    if dry_run:
        report.by_old_key_id.update({entry.key_id: entry.secrets for entry in todo})
        report.reencrypted = sum(report.by_old_key_id.values())
        return report
    started = time.monotonic()
    after = None
    while True:
        with translate_errors(), conn.transaction():
            rows = execute_guarded(conn, queries.REWRAP, (ring.encoded, after, batch_size)).fetchall()
        if not rows:
            break
        after = rows[-1][0]
        report.batches += 1
        report.reencrypted += len(rows)
        report.by_old_key_id.update(str(row[1]) for row in rows)
        if on_batch is not None:
            on_batch(len(rows))
    report.seconds = time.monotonic() - started
    return report
