"""Key rotation: the census of key ids, the key registry, and re-encryption under the current key.

Re-encryption happens inside PostgreSQL (``pyaccess.rewrap``): the plaintext never
reaches Python, and Python sends per row only the pairs of that one group (the old one to
open it, the new one to seal it), never a master key. Each batch is one short transaction
that locks only its rows, so ``get`` and ``store`` keep working, and a secret stored during
the rotation is never overwritten by a stale re-encryption. Killed at any point, a
rotation loses at most its open batch, which rolls back; run it again and it carries on.
Rotation also converts 0.1.0's envelopes (v1) to v2.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, LiteralString

import psycopg
from psycopg import pq

from pyaccess import queries
from pyaccess.errors import PyAccessError, SecretIntegrityError, WrongKeyError, translate_errors
from pyaccess.execution import Statement, Steps, guard_session, run
from pyaccess.keyfile import KeyFilePath, load_key_ring
from pyaccess.keys import Key, KeyRing
from pyaccess.redacted import WireKeyList

__all__ = ["CensusEntry", "RotationReport", "key_census", "register_key", "retire_key", "rotate"]


@dataclass(frozen=True)
class CensusEntry:
    """A key id: its envelope version, registry state, how many secrets it protects, and its place in the key file."""

    key_id: str
    version: int | None  # None: registered, no secret under it
    state: str  # "active", "retired" or "unregistered"
    secrets: int
    in_key_file: str  # "current", "previous" or "absent"

    @property
    def readable(self) -> bool:
        return self.secrets == 0 or self.in_key_file != "absent"


@dataclass
class RotationReport:
    """What a rotation did (or, with ``dry_run``, would do)."""

    current_key_id: str
    dry_run: bool
    registered: bool = False
    reencrypted: int = 0
    by_old_key_id: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.reencrypted / self.seconds if self.seconds > 0 else 0.0


def _fetch(conn: psycopg.Connection[Any], query: LiteralString, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """A statement that carries no key: no guard needed."""
    with translate_errors():
        return psycopg.Cursor(conn).execute(query, params).fetchall()


def _census(conn: psycopg.Connection[Any], ring: KeyRing) -> list[CensusEntry]:
    places = {key_id: ("current" if i == 0 else "previous") for i, key_id in enumerate(ring.key_ids)}
    return [
        CensusEntry(str(kid), version, str(state), int(n), places.get(str(kid), "absent"))
        for kid, version, state, n in _fetch(conn, queries.CENSUS)
    ]


def key_census(conn: psycopg.Connection[Any], *, key_file: KeyFilePath = None) -> list[CensusEntry]:
    """Every key id registered or in use, and whether the key file holds that key."""
    return _census(conn, load_key_ring(key_file))


def register_key(conn: psycopg.Connection[Any], *, key_file: KeyFilePath = None) -> str:
    """Make the key file's current key id active in the registry (its id only crosses). Returns what changed."""
    ring = load_key_ring(key_file)
    ((outcome,),) = _fetch(conn, queries.REGISTER_KEY, (ring.current.id_bytes,))
    return str(outcome)


def retire_key(conn: psycopg.Connection[Any], key_id: str) -> None:
    """Retire a key id: what it sealed still opens; nothing new is sealed under it."""
    try:
        raw = bytes.fromhex(key_id)
    except ValueError:
        raw = b""
    if len(raw) != 8:
        raise PyAccessError("a key id is 16 hexadecimal digits (see pyaccess census)")
    _fetch(conn, queries.RETIRE_KEY, (raw,))


def _rewrap(todo: list[tuple[Any, ...]], ring: KeyRing) -> Steps[list[tuple[Any, ...]]]:
    """One batch: each row's old pair (v1 or v2) and new v2 pair, derived here from the key file.

    Every row is checked before any pair is derived, and the pairs go straight into redacted
    lists: no frame on an error's traceback holds one.
    """
    batch: list[tuple[uuid.UUID, int, Key]] = []
    for gid, version, key_id in todo:
        key = ring.find(bytes(key_id))
        if version not in (1, 2):
            raise SecretIntegrityError(f"the provision secret of OTA group {gid} is malformed or of an unknown format")
        if key is None:
            raise WrongKeyError(f"OTA group {gid} is sealed under key id {bytes(key_id).hex()}, not in the key file")
        batch.append((gid, version, key))
    old = WireKeyList.of([bytes([version]) + key.id_bytes + key.pair(version, gid) for gid, version, key in batch])
    new = WireKeyList.of([ring.current.pair(2, gid) for gid, _, _ in batch])
    rows = yield Statement(queries.REWRAP, ([gid for gid, _, _ in batch], old, new, ring.current.id_bytes))
    return rows


def rotate(
    conn: psycopg.Connection[Any],
    *,
    key_file: KeyFilePath = None,
    batch_size: int = 1000,
    dry_run: bool = False,
    on_start: Callable[[int], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> RotationReport:
    """Re-encrypt under the current key (as envelope v2) every secret that is not v2 under it.

    Registers the current key id as active first if it is not. Commits one transaction per
    batch, so ``conn`` must not be inside a transaction of the caller's. Refuses with
    :class:`WrongKeyError` (before changing anything) when some secrets are under keys the
    key file does not hold: they would be left behind. ``on_start`` gets the number of
    secrets to re-encrypt, ``on_batch`` the size of each batch done.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if conn.info.transaction_status != pq.TransactionStatus.IDLE:
        raise PyAccessError("rotate commits batch by batch: give it a connection outside any transaction")
    ring = load_key_ring(key_file)
    census = _census(conn, ring)
    if not conn.autocommit:
        conn.rollback()  # our own read-only transaction: each batch then commits on its own
    unknown = [entry for entry in census if not entry.readable]
    if unknown:
        listed = ", ".join(f"{e.key_id} ({e.secrets} secret(s))" for e in unknown)
        raise WrongKeyError(
            f"refusing to rotate: secrets are stored under key ids the key file does not hold: {listed}; "
            "add those keys to previous_keys first"
        )
    report = RotationReport(current_key_id=ring.current.key_id, dry_run=dry_run)
    todo = [e for e in census if e.secrets and not (e.version == 2 and e.in_key_file == "current")]
    if on_start is not None:
        on_start(sum(entry.secrets for entry in todo))
    if dry_run:
        report.by_old_key_id.update({f"{e.key_id} (v{e.version})": e.secrets for e in todo})
        report.reencrypted = sum(report.by_old_key_id.values())
        return report
    current = next((e for e in census if e.key_id == ring.current.key_id), None)
    if current is None or current.state != "active":
        report.registered = register_key(conn, key_file=key_file) != "already active"
        if not conn.autocommit:
            conn.commit()
    guard_session(conn)
    started = time.monotonic()
    after = None
    while True:
        with translate_errors(), conn.transaction():  # (a connection lost at COMMIT is a psycopg error too)
            batch = _fetch(conn, queries.REWRAP_TODO, (ring.current.id_bytes, after, batch_size))
            rows = run(conn, _rewrap(batch, ring)) if batch else []
        if not batch:
            break
        after = batch[-1][0]
        report.batches += 1
        report.reencrypted += len(rows)
        report.by_old_key_id.update(f"{kid} (v{version})" for _, kid, version in rows)
        if on_batch is not None:
            on_batch(len(rows))
    report.seconds = time.monotonic() - started
    return report
