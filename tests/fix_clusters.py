"""Throwaway clusters with settings of their own, their server logs, and canaries to look for in them.

A pytest plugin (see tests/conftest.py): the fixtures are module-scoped, so each test module that
uses one starts that cluster once. Helpers are imported from here, never from conftest.

- ``preloaded_server``: a cluster with auto_explain (contrib) and pgaudit in
  ``shared_preload_libraries``, migrated, with a service login role ``svc`` (reader and writer)
  and a rotation login role ``rot``. Tests turn logging paths on and off with ALTER SYSTEM and a
  reload, as a DBA does.
- ``replicated_servers``: a migrated primary and a hot standby streaming from it
  (``pg_basebackup -R``), with the same login roles.

The log is the cluster's own stderr file (``pg_ctl -l``): a backend writes each message there
before it answers the client, so a test reads it right after its calls.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from pyaccess.cluster import LocalCluster, free_port, throwaway_cluster
from pyaccess.migrate import apply_migrations

Conn = psycopg.Connection[tuple[Any, ...]]

SERVICE = "svc"  # LOGIN, member of provision_secret_reader and provision_secret_writer
ROTATOR = "rot"  # LOGIN, member of provision_secret_rotator
DBNAME = "pyaccess"
PYACCESS_ROLES = ("provision_secret_reader", "provision_secret_writer", "provision_secret_rotator")

# =========================================================================== canaries

WINDOW = 12  # bytes: a value cut short (log_parameter_max_length = N) still shows its first bytes


def _signed(data: bytes) -> str:
    """Bytes as debug_print_plan dumps a Const: signed integers (whitespace removed: the dump wraps mid-number)."""
    return "".join(str(b - 256 if b > 127 else b) for b in data)


def _bytea_escape(data: bytes) -> str:
    """bytea's escape output format (bytea_output = escape)."""
    return "".join("\\\\" if b == 0x5C else chr(b) if 0x20 <= b < 0x7F else f"\\{b:03o}" for b in data)


def _windows(data: bytes) -> list[bytes]:
    """Every WINDOW-byte slice at a multiple of 4, and the tail: any 15-byte stretch of data holds one."""
    if len(data) <= WINDOW:
        return [data]
    return [data[i : i + WINDOW] for i in range(0, len(data) - WINDOW + 1, 4)] + [data[-WINDOW:]]


@dataclass(frozen=True)
class Canaries:
    """Labelled values that must never reach some text, looked for in every form a server log writes bytes in:
    raw text, hex (``\\x``, any case), bytea escape, base64, and the signed-byte lists of node dumps; whole,
    or any 15 bytes of them. ``found_in`` answers with labels and forms only: a failing assertion never
    prints the value itself."""

    values: tuple[tuple[str, bytes], ...] = ()

    def __add__(self, other: Canaries) -> Canaries:
        return Canaries(self.values + other.values)

    def found_in(self, text: str) -> list[str]:
        lowered = text.lower()
        squeezed = re.sub(r"\s+", "", lowered)
        found: list[str] = []
        for label, value in self.values:
            forms: set[str] = set()
            with contextlib.suppress(UnicodeDecodeError):
                if value.decode("utf-8") in text:
                    forms.add("raw")
            if base64.b64encode(value).decode() in text:
                forms.add("base64")
            for window in _windows(value):
                if window.hex() in lowered or window.hex() in squeezed:
                    forms.add("hex")
                if _signed(window) in squeezed:
                    forms.add("signed bytes (node dump)")
                if _bytea_escape(window) in text:
                    forms.add("bytea escape")
            found += [f"{label} as {form}" for form in sorted(forms)]
        return found


def canary_text() -> str:
    """A secret no log would hold by chance: random through and through, so that no slice of it (a window of
    found_in) matches another canary or a log's own text."""
    return os.urandom(20).hex()


# =========================================================================== envelope v2 keys (the plan's derivation)


def key_id(master: bytes) -> bytes:
    return hmac.new(master, b"pyaccess key id", hashlib.sha256).digest()[:8]


def group_pair(master: bytes, group_id: uuid.UUID) -> bytes:
    """enc key || mac key for one OTA group: what the service sends instead of the master key."""
    return hmac.new(master, b"pyaccess v2 group key\x00" + group_id.bytes, hashlib.sha512).digest()


def ring(masters: list[bytes], group_id: uuid.UUID) -> bytes:
    """A key ring on the wire: the key ids, then the group pairs, in the same order."""
    return b"".join(key_id(m) for m in masters) + b"".join(group_pair(m, group_id) for m in masters)


def key_canaries(master: bytes, group_id: uuid.UUID, label: str = "master key") -> Canaries:
    """A master key and everything derived from it for one group that opens a secret."""
    pair = group_pair(master, group_id)
    return Canaries(((label, master), (f"{label}'s pair for the group", pair), (f"{label}'s mac key", pair[32:])))


# =========================================================================== servers


class ServerLog:
    """A cluster's log file, read from a mark on."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def mark(self) -> int:
        return self.path.stat().st_size

    def since(self, mark: int) -> str:
        with self.path.open("rb") as f:
            f.seek(mark)
            return f.read().decode("utf-8", errors="replace")


@dataclass
class PgServer:
    """A running, migrated cluster: database ``pyaccess``, login roles ``svc`` and ``rot``."""

    cluster: LocalCluster
    log: ServerLog = field(init=False)

    def __post_init__(self) -> None:
        self.log = ServerLog(self.cluster.logfile)

    def dsn(self, user: str = "postgres", **params: str) -> str:
        return make_conninfo(self.cluster.dsn(DBNAME, user), **params)

    def connect(self, user: str = "postgres", *, autocommit: bool = True, **params: str) -> Conn:
        return psycopg.connect(self.dsn(user, **params), autocommit=autocommit)

    def scalar(self, query: Any, params: tuple[Any, ...] = ()) -> Any:
        with self.connect() as admin:
            row = admin.execute(query, params).fetchone()
        assert row is not None
        return row[0]

    def reload(self) -> None:
        """pg_reload_conf(), then wait until a new session starts with the new configuration."""
        with self.connect() as admin:
            before = admin.execute("SELECT pg_catalog.pg_conf_load_time()").fetchone()
            admin.execute("SELECT pg_catalog.pg_reload_conf()")
        deadline = time.monotonic() + 30
        while True:
            with self.connect() as probe:
                row = probe.execute("SELECT pg_catalog.pg_conf_load_time() > %s", before).fetchone()
            if row == (True,):
                return
            assert time.monotonic() < deadline, "the server never reloaded its configuration"
            time.sleep(0.02)

    @contextlib.contextmanager
    def system(self, settings: Mapping[str, str]) -> Iterator[None]:
        """ALTER SYSTEM SET each setting and reload, as a DBA does; RESET and reload afterwards."""
        with self.connect() as admin:
            for name, value in settings.items():
                admin.execute(f"ALTER SYSTEM SET {name} = '{value}'")
        self.reload()
        try:
            yield
        finally:
            with self.connect() as admin:
                for name in settings:
                    admin.execute(f"ALTER SYSTEM RESET {name}")
            self.reload()

    def new_group(self) -> uuid.UUID:
        with self.connect() as admin:
            row = admin.execute(
                "INSERT INTO public.ota_groups (name) VALUES (%s) RETURNING id", (f"group-{uuid.uuid4()}",)
            ).fetchone()
        assert row is not None
        return uuid.UUID(str(row[0]))


def _set_up(cluster: LocalCluster) -> PgServer:
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {DBNAME}")
    apply_migrations(cluster.dsn(DBNAME))
    with psycopg.connect(cluster.dsn(DBNAME), autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {SERVICE} LOGIN IN ROLE provision_secret_reader, provision_secret_writer")
        admin.execute(f"CREATE ROLE {ROTATOR} LOGIN IN ROLE provision_secret_rotator")
    return PgServer(cluster)


@pytest.fixture(scope="module")
def preloaded_server() -> Iterator[PgServer]:
    """A migrated cluster with auto_explain and pgaudit loaded, every logging path off."""
    with throwaway_cluster({"shared_preload_libraries": "'auto_explain,pgaudit'"}) as cluster:
        yield _set_up(cluster)


def start_standby(primary: LocalCluster, settings: Mapping[str, str] | None = None) -> LocalCluster:
    """A hot standby of ``primary`` streaming from it: ``pg_basebackup -R`` into a new datadir, then started."""
    datadir = Path(tempfile.mkdtemp(prefix="pyaccess-standby-"))
    command = [
        str(primary.bindir / "pg_basebackup"),
        *("-R", "-X", "stream", "-c", "fast", "-D", str(datadir / "data")),
        *("-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres"),
    ]
    if os.geteuid() == 0:
        shutil.chown(datadir, "postgres", "postgres")
        command = ["runuser", "-u", "postgres", "--", *command]
    standby = LocalCluster(primary.bindir, datadir, free_port(), {"hot_standby": "on", **(settings or {})})
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
        assert done.returncode == 0, done.stderr
        standby.start()
    except BaseException:
        standby.destroy()
        raise
    return standby


def wait_for_replay(primary: PgServer, standby: PgServer) -> None:
    lsn = primary.scalar("SELECT pg_catalog.pg_current_wal_lsn()::text")
    deadline = time.monotonic() + 30
    while standby.scalar("SELECT pg_catalog.pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)) is not True:
        assert time.monotonic() < deadline, "the standby never caught up"
        time.sleep(0.02)


# Both log every statement and, with an error or any message raised during a call, its parameters: what
# a guarded session sends must stay out of the log even so (and out of the audit records).
HOSTILE_LOGGING = {"log_statement": "all", "log_parameter_max_length_on_error": "-1"}


@pytest.fixture(scope="module")
def replicated_servers() -> Iterator[tuple[PgServer, PgServer]]:
    """A migrated primary (no extension preloaded) and a hot standby of it, both with HOSTILE_LOGGING."""
    with throwaway_cluster(HOSTILE_LOGGING) as cluster:
        primary = _set_up(cluster)
        standby = start_standby(cluster, HOSTILE_LOGGING)
        try:
            yield primary, PgServer(standby)
        finally:
            standby.destroy()
