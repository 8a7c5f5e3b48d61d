"""The server, the databases and the data the benchmark runs on."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pyaccess.cluster import LocalCluster, throwaway_cluster
from pyaccess.keyfile import write_new_key_file
from pyaccess.migrate import apply_migrations

# The throwaway cluster: loopback TCP only (cluster.py), fsync off (cluster.py),
# pg_stat_statements loaded but off until the analysis turns it on for its own session.
CLUSTER_SETTINGS = {
    "shared_preload_libraries": "pg_stat_statements",
    "pg_stat_statements.track": "none",
    "shared_buffers": "512MB",
    "max_wal_size": "4GB",
    "checkpoint_timeout": "30min",
    "max_connections": "40",
}

SECRET_BYTES = 32  # secrets.token_urlsafe(32): a 43-character provision secret


@dataclass
class Server:
    """A PostgreSQL server the benchmark may create databases on."""

    base_dsn: str
    cluster: LocalCluster | None = None
    created: list[str] = field(default_factory=list)

    def dsn(self, dbname: str) -> str:
        return make_conninfo(self.base_dsn, dbname=dbname)

    @property
    def host(self) -> str:
        return str(conninfo_to_dict(self.base_dsn).get("host", "(Unix socket)"))

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.base_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.created.append(name)
        dsn = self.dsn(name)
        apply_migrations(dsn)
        return dsn

    def drop_databases(self) -> None:
        with psycopg.connect(self.base_dsn, autocommit=True) as conn:
            for name in self.created:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        self.created.clear()


@contextlib.contextmanager
def open_server(dsn: str | None) -> Iterator[Server]:
    """The server given by ``dsn`` (its databases are dropped after), else a throwaway local cluster."""
    if dsn:
        server = Server(make_conninfo(dsn))
        try:
            yield server
        finally:
            server.drop_databases()
        return
    with throwaway_cluster(CLUSTER_SETTINGS) as cluster:
        yield Server(cluster.dsn(), cluster)


@dataclass
class Keys:
    """Key files: ``current`` (key A alone), and the two rotation directions between keys A and B."""

    directory: Path
    current: Path
    key_a: bytes
    key_b: bytes
    b_over_a: Path  # key B current, key A previous
    a_over_b: Path  # key A current, key B previous


def make_keys(directory: Path) -> Keys:
    current = write_new_key_file(directory / "key-a.json")
    key_a = bytes.fromhex(json.loads(current.read_text(encoding="ascii"))["key"])
    key_b = secrets.token_bytes(32)

    def ring(name: str, key: bytes, previous: bytes) -> Path:
        path = directory / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            json.dump({"key": key.hex(), "previous_keys": [previous.hex()]}, handle)
        return path

    return Keys(
        directory, current, key_a, key_b, ring("b-over-a.json", key_b, key_a), ring("a-over-b.json", key_a, key_b)
    )


PLAIN_TABLES = """
CREATE TABLE public.plain_table (
    id         uuid        PRIMARY KEY,
    name       text        NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    secret     text
);
CREATE TABLE public.aesgcm_table (
    id         uuid        PRIMARY KEY,
    name       text        NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    ciphertext bytea
);
CREATE TABLE public.pgp_table (
    id         uuid        PRIMARY KEY,
    name       text        NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    ciphertext bytea
);
"""


@dataclass
class Dataset:
    """The latency database: N groups, the same secrets in ``ota_groups`` (pyaccess) and in the comparison tables."""

    dsn: str
    group_ids: list[uuid.UUID]
    keys: Keys
    aead: AESGCM
    passphrase: str  # pgp_sym_*: the key as hex text


def aesgcm_seal(aead: AESGCM, group_id: uuid.UUID, secret: str) -> bytes:
    nonce = os.urandom(12)
    return nonce + aead.encrypt(nonce, secret.encode("utf-8"), group_id.bytes)


def aesgcm_open(aead: AESGCM, group_id: uuid.UUID, blob: bytes) -> str:
    return aead.decrypt(blob[:12], blob[12:], group_id.bytes).decode("utf-8")


def load_groups(dsn: str, groups: int, keys: Keys) -> Dataset:
    """Create ``groups`` OTA groups with secrets, and the same data in the plain, AES-GCM and pgp tables."""
    ids = [uuid.uuid4() for _ in range(groups)]
    plaintexts = [secrets.token_urlsafe(SECRET_BYTES) for _ in range(groups)]
    aead = AESGCM(keys.key_a)
    passphrase = keys.key_a.hex()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(PLAIN_TABLES)
        with conn.transaction():
            cur = conn.cursor()
            with cur.copy("COPY public.ota_groups (id, name) FROM STDIN") as copy:
                for i, gid in enumerate(ids):
                    copy.write_row((gid, f"bench-group-{i:07d}"))
            with cur.copy("COPY public.plain_table (id, name, secret) FROM STDIN") as copy:
                for i, (gid, secret) in enumerate(zip(ids, plaintexts, strict=True)):
                    copy.write_row((gid, f"bench-group-{i:07d}", secret))
            with cur.copy("COPY public.aesgcm_table (id, name, ciphertext) FROM STDIN") as copy:
                for i, (gid, secret) in enumerate(zip(ids, plaintexts, strict=True)):
                    copy.write_row((gid, f"bench-group-{i:07d}", aesgcm_seal(aead, gid, secret)))
            cur.execute(
                "INSERT INTO public.pgp_table (id, name, ciphertext)"
                " SELECT id, name, pgp_sym_encrypt(secret, %s::text) FROM public.plain_table",
                (passphrase,),
            )
            # The public SQL function, one statement: the same encryption as the Python API's.
            cur.execute(
                "SELECT public.store_provision_secret(id, secret, %b::bytea) FROM public.plain_table", (keys.key_a,)
            )
        conn.execute("VACUUM ANALYZE")
    return Dataset(dsn, ids, keys, aead, passphrase)


def load_rotation_rows(dsn: str, rows: int, key: bytes) -> None:
    """``rows`` OTA groups, each with a secret under ``key``, for the rotation benchmark."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        with conn.transaction():
            conn.execute(
                "INSERT INTO public.ota_groups (name) SELECT 'rotation-group-' || i FROM generate_series(1, %s) AS i",
                (rows,),
            )
            conn.execute(
                "SELECT public.store_provision_secret(id,"
                " rtrim(translate(encode(gen_random_bytes(32), 'base64'), '+/', '-_'), '='), %b::bytea)"
                " FROM public.ota_groups",
                (key,),
            )
        conn.execute("VACUUM ANALYZE public.ota_groups")


def table_size(conn: psycopg.Connection[Any], table: str) -> int:
    row = conn.execute("SELECT pg_total_relation_size(%s::regclass)", (table,)).fetchone()
    return int(row[0]) if row else 0
