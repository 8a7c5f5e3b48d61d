"""The server, the database and the data every section runs on, made through the public API only."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

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


@contextlib.contextmanager
def bench_database(server_dsn: str | None) -> Iterator[str]:
    """A fresh migrated database on ``server_dsn`` (a role that may CREATE DATABASE), else on a throwaway cluster."""
    with contextlib.ExitStack() as stack:
        if server_dsn is None:
            server_dsn = stack.enter_context(throwaway_cluster(CLUSTER_SETTINGS)).dsn()
        name = f"pyaccess_bench_{uuid.uuid4().hex[:8]}"
        _admin_execute(server_dsn, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        stack.callback(
            _admin_execute, server_dsn, sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name))
        )
        dsn = make_conninfo(server_dsn, dbname=name)
        apply_migrations(dsn)
        yield dsn


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


def load_groups(dsn: str, groups: int, key_file: Path) -> list[uuid.UUID]:
    """``groups`` OTA groups, created as the management API does, each with a secret stored through the API."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        # A rotation with nothing to re-encrypt: registers the key where the database keeps a key registry.
        rotate(conn, key_file=key_file)
        rows = conn.execute(
            "INSERT INTO public.ota_groups (name) SELECT 'bench-' || i FROM generate_series(1, %s) AS i RETURNING id",
            (groups,),
        ).fetchall()
        ids = [row[0] for row in rows]
        with conn.transaction(), conn.pipeline():
            for gid in ids:
                pyaccess.store_provision_secret(conn, gid, SECRET, key_file=key_file)
        conn.execute("VACUUM ANALYZE public.ota_groups")
    return ids
