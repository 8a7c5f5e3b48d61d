"""Applying the migrations with yoyo, under yoyo's lock.

``pyaccess migrate`` and ``yoyo apply --database postgresql+psycopg://… migrations/``
give the same database: both run the same files through the same backend.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict
from yoyo import read_migrations
from yoyo.backends import DatabaseBackend
from yoyo.connections import DatabaseURI, get_backend_class

__all__ = ["MIGRATION_TABLE", "apply_migrations", "migrations_dir"]

MIGRATION_TABLE = "_yoyo_migration"

logger = logging.getLogger("pyaccess")


def migrations_dir() -> Path:
    """The migrations: inside the installed package, or at the top of a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "migrations", here.parent / "migrations"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("pyaccess migrations not found")


def _backend(dsn: str) -> DatabaseBackend:
    # A yoyo URI whose args are the whole libpq conninfo, so that keyword DSNs,
    # Unix sockets and the PG* environment variables all work as with psql.
    args = {key: str(value) for key, value in conninfo_to_dict(dsn).items()}
    uri = DatabaseURI("postgresql+psycopg", None, None, None, None, None, args)
    backend: DatabaseBackend = get_backend_class("postgresql+psycopg")(uri, MIGRATION_TABLE)
    backend.init_database()
    return backend


def _preflight(backend: DatabaseBackend, todo: Any) -> None:
    """Run each pending migration's ``preflight(conn)``, if it has one, before applying any of them.

    A release's migration refuses unsafe databases; checked up front, such a database is
    refused as it is rather than after the earlier migrations of a fresh install applied.
    """
    for migration in todo:
        migration.load()
        check = getattr(migration.module, "preflight", None)
        if check is not None:
            connection = backend.connection  # psycopg's, for the postgresql+psycopg backend
            with connection.transaction(force_rollback=True):
                check(connection)


def apply_migrations(dsn: str, lock_timeout: float = 60.0, *, until: str | None = None) -> list[str]:
    """Apply every pending migration, or those up to and including the migration id ``until``
    (a database of an earlier release); return their ids (empty when already current).

    The pending set is computed under yoyo's lock, so two runs started at once
    do the work once: the second waits, then finds nothing to do.
    """
    backend = _backend(dsn)
    try:
        with backend.lock(timeout=lock_timeout):
            todo = backend.to_apply(read_migrations(str(migrations_dir())))
            if until is not None:
                todo = todo.filter(lambda migration: migration.id <= until)
            _preflight(backend, todo)
            backend.apply_migrations(todo)
        applied = [m.id for m in todo]
    finally:
        backend.connection.close()
    for migration_id in applied:
        logger.info("applied migration %s", migration_id)
    return applied
