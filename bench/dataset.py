"""The server, the database and the data every section runs on, made through the public API only."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, LiteralString

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

import pyaccess
from pyaccess.cluster import throwaway_cluster
from pyaccess.migrate import apply_migrations
from pyaccess.rotation import rotate

# The throwaway cluster keeps the whole data set in memory and checkpoints only when asked.
CLUSTER_SETTINGS = {"shared_buffers": "512MB", "max_wal_size": "4GB", "checkpoint_timeout": "30min"}
SECRET = secrets.token_urlsafe(32)  # 43 characters, like a provision secret


# The last migration of the previous release (0.1.0): its database, for the section against it.
PREVIOUS_RELEASE = ("0.1.0", "0005_provision_secret_functions")


@contextlib.contextmanager
def bench_server(server_dsn: str | None) -> Iterator[str]:
    """``server_dsn`` (a role that may CREATE DATABASE), else a throwaway cluster's."""
    if server_dsn is not None:
        yield server_dsn
        return
    with throwaway_cluster(CLUSTER_SETTINGS) as cluster:
        yield cluster.dsn()


@contextlib.contextmanager
def bench_database(server_dsn: str, until: str | None = None) -> Iterator[str]:
    """A fresh database on ``server_dsn``, migrated (up to the migration ``until``), dropped afterwards."""
    name = f"pyaccess_bench_{uuid.uuid4().hex[:8]}"
    _admin_execute(server_dsn, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        dsn = make_conninfo(server_dsn, dbname=name)
        apply_migrations(dsn, until=until)
        yield dsn
    finally:
        _admin_execute(server_dsn, sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def _admin_execute(dsn: str, statement: sql.Composed) -> None:
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(statement)


def write_ring(path: Path, current: bytes, previous: bytes) -> Path:
    """A key file in the README's JSON format: ``current`` writes, ``previous`` still reads."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        json.dump({"key": current.hex(), "previous_keys": [previous.hex()]}, handle)
    return path


def key_material(key_file: Path) -> bytes:
    return pyaccess.load_key_ring(key_file).current.material


def _new_groups(conn: psycopg.Connection[Any], groups: int) -> list[uuid.UUID]:
    """``groups`` OTA groups, created as the management API does (a name, nothing else)."""
    rows = conn.execute(
        "INSERT INTO public.ota_groups (name) SELECT 'bench-' || i FROM generate_series(1, %s) AS i RETURNING id",
        (groups,),
    ).fetchall()
    return [row[0] for row in rows]


def load_groups(dsn: str, groups: int, key_file: Path) -> list[uuid.UUID]:
    """``groups`` OTA groups, created as the management API does, each with a secret stored through the API."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        # A rotation with nothing to re-encrypt: registers the key where the database keeps a key registry.
        rotate(conn, key_file=key_file)
        ids = _new_groups(conn, groups)
        with conn.transaction(), conn.pipeline():
            for gid in ids:
                pyaccess.store_provision_secret(conn, gid, SECRET, key_file=key_file)
        conn.execute("VACUUM ANALYZE public.ota_groups")
    return ids


# What the previous release's library sent (0.1.0's pyaccess/queries.py), the master key bound.
PREVIOUS_STORE: LiteralString = (
    "SELECT public.store_provision_secret(%s::pg_catalog.uuid, %s::pg_catalog.text, %b::pg_catalog.bytea)"
)
PREVIOUS_GET: LiteralString = "SELECT public.get_provision_secret(%s::pg_catalog.uuid, %b::pg_catalog.bytea[])"
PREVIOUS_GUARD: LiteralString = "SELECT public.provision_secret_session_guard()"


def load_previous_release(dsn: str, groups: int, key_file: Path) -> list[uuid.UUID]:
    """``groups`` OTA groups in a database of the previous release, each secret stored as that release's
    library stored it: its contract function, given the master key (envelope v1)."""
    master = key_material(key_file)
    with psycopg.connect(dsn, autocommit=True) as conn:
        ids = _new_groups(conn, groups)
        with conn.transaction(), conn.pipeline():
            for gid in ids:
                conn.execute(PREVIOUS_STORE, (gid, SECRET, master))
        conn.execute("VACUUM ANALYZE public.ota_groups")
    return ids
