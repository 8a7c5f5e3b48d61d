"""A real PostgreSQL for every test: never a mock.

The server is found in this order: ``PYACCESS_TEST_DSN`` (a superuser
connection string); testcontainers' ``PostgresContainer`` when a Docker
engine answers; otherwise a throwaway cluster from the machine's own
binaries. The migrations run once into a template database; each test gets
a fresh database created from it.

In CI (``CI`` set) a skipped test fails the run: a suite must never pass by
skipping its database or SQL tests.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import subprocess
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from yoyo import get_backend, read_migrations

from pyaccess.cluster import ClusterError, find_bindir, throwaway_cluster
from pyaccess.keyfile import write_new_key_file
from pyaccess.migrate import MIGRATION_TABLE, apply_migrations, migrations_dir

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Server:
    """A PostgreSQL server the tests may administer: ``dsn(dbname)`` connects as a superuser."""

    base_dsn: str
    source: str

    def dsn(self, dbname: str = "postgres", **overrides: str) -> str:
        return make_conninfo(self.base_dsn, dbname=dbname, **overrides)

    @contextlib.contextmanager
    def admin(self) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            yield conn

    def create_database(self, template: str | None = None) -> str:
        name = f"pyaccess_test_{uuid.uuid4().hex[:12]}"
        with self.admin() as conn:
            if template is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            else:
                conn.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template))
                )
        return name

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _docker_answers() -> bool:
    """Whether a Docker engine answers (the client alone, as on CI here, is not enough)."""
    import docker  # noqa: PLC0415 - testcontainers' dependency

    # docker-py leaves its socket to the garbage collector when the engine is absent.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            client = docker.from_env(timeout=3)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except Exception:  # noqa: BLE001 - any failure means: no engine to use
            return False
        finally:
            gc.collect()


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    dsn = os.environ.get("PYACCESS_TEST_DSN")
    if dsn:
        yield Server(make_conninfo(dsn), "PYACCESS_TEST_DSN")
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer  # noqa: PLC0415

        with PostgresContainer("postgres:15", driver=None) as container:
            params = {
                "host": container.get_container_host_ip(),
                "port": str(container.get_exposed_port(5432)),
                "user": container.username,
                "password": container.password,
            }
            yield Server(make_conninfo(**params), "testcontainers")
        return
    try:
        with throwaway_cluster() as cluster:
            yield Server(cluster.dsn(), f"throwaway cluster in {cluster.datadir}")
    except ClusterError as exc:
        pytest.exit(f"no PostgreSQL server for the tests: {exc}", returncode=3)


@pytest.fixture(scope="session")
def template_db(server: Server) -> Iterator[str]:
    name = server.create_database()
    apply_migrations(server.dsn(name))
    yield name
    server.drop_database(name)


@pytest.fixture
def db(server: Server, template_db: str) -> Iterator[str]:
    """A fresh, migrated database; its superuser DSN."""
    name = server.create_database(template=template_db)
    yield server.dsn(name)
    server.drop_database(name)


@pytest.fixture
def empty_db(server: Server) -> Iterator[str]:
    """A fresh database with no migrations; its superuser DSN."""
    name = server.create_database()
    yield server.dsn(name)
    server.drop_database(name)


@pytest.fixture
def conn(db: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(db) as connection:
        yield connection


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    return write_new_key_file(tmp_path / "key.json")


@pytest.fixture
def other_key_file(tmp_path: Path) -> Path:
    return write_new_key_file(tmp_path / "other-key.json")


def new_group(conn: psycopg.Connection[tuple[object, ...]], name: str | None = None) -> uuid.UUID:
    """Insert an OTA group as the management API would, and commit."""
    row = conn.execute(
        "INSERT INTO ota_groups (name) VALUES (%s) RETURNING id", (name or f"group-{uuid.uuid4()}",)
    ).fetchone()
    conn.commit()
    assert row is not None
    group_id = row[0]
    assert isinstance(group_id, uuid.UUID)
    return group_id


async def new_group_async(conn: psycopg.AsyncConnection[Any]) -> uuid.UUID:
    """:func:`new_group` on an async connection."""
    cursor = await conn.execute("INSERT INTO ota_groups (name) VALUES (%s) RETURNING id", (f"group-{uuid.uuid4()}",))
    row = await cursor.fetchone()
    await conn.commit()
    assert row is not None
    return uuid.UUID(str(row[0]))


@pytest.fixture
def group(conn: psycopg.Connection[tuple[object, ...]]) -> uuid.UUID:
    return new_group(conn)


def user_dsn(dsn: str, user: str, password: str | None = None) -> str:
    """The same database as ``dsn``, as another login role."""
    params = conninfo_to_dict(dsn)
    params["user"] = user
    if password is not None:
        params["password"] = password
    return make_conninfo(**{k: str(v) for k, v in params.items()})


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    # SIGTERM (a CI timeout, `timeout`) becomes an interrupt, so that the fixtures'
    # finalizers still stop the throwaway clusters instead of leaving them running.
    signal.signal(signal.SIGTERM, _interrupt)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not os.environ.get("CI"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped and reporter is not None:
        reporter.write_line(f"CI: {len(skipped)} test(s) skipped; in CI a skipped test is a failure", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def register_key(conn: psycopg.Connection[Any], key_file: Path | str) -> None:
    """Register the key file's current key as active, as the rotator does before Vault is patched (and commit)."""
    from pyaccess.keyfile import load_key_ring  # noqa: PLC0415

    conn.execute("SELECT pyaccess.register_key(%b)", (load_key_ring(key_file).current.id_bytes,))
    conn.commit()


def query(dsn: str, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as connection:
        return connection.execute(statement, params).fetchall()


def scalar(dsn: str, statement: str, params: tuple[Any, ...] = ()) -> Any:
    rows = query(dsn, statement, params)
    assert len(rows) == 1, rows
    return rows[0][0]


def execute(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as connection:
        for statement in statements:
            connection.execute(statement)


def conninfo(dsn: str) -> dict[str, str]:
    return {key: str(value) for key, value in conninfo_to_dict(dsn).items()}


def yoyo_url(dsn: str) -> str:
    """The ``postgresql+psycopg://`` URL yoyo's command line wants, for a libpq DSN."""
    params = conninfo(dsn)
    userinfo = quote(params.pop("user", ""), safe="")
    if "password" in params:
        userinfo += ":" + quote(params.pop("password"), safe="")
    host = params.pop("host", "")
    port = params.pop("port", "")
    dbname = quote(params.pop("dbname"), safe="")
    if host.startswith("/"):  # a Unix socket directory goes in the query string
        params["host"] = host
        host = ""
    netloc = f"{userinfo}@{host}" + (f":{port}" if port and host else "")
    if port and not host:
        params["port"] = port
    query_string = f"?{urlencode(params)}" if params else ""
    return f"postgresql+psycopg://{netloc}/{dbname}{query_string}"


def schema_dump(dsn: str) -> list[str]:
    """``pg_dump --schema-only`` without comments, ``\\restrict`` lines and blank lines."""
    result = subprocess.run(
        [str(find_bindir() / "pg_dump"), "--schema-only", "--no-password", f"--dbname={dsn}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return [
        line
        for line in result.stdout.splitlines()
        if line.strip() and not line.startswith("--") and not line.startswith(("\\restrict", "\\unrestrict"))
    ]


def pending_migrations(dsn: str) -> list[str]:
    """The ids of the migrations not yet applied (as yoyo sees them)."""
    backend = get_backend(yoyo_url(dsn), MIGRATION_TABLE)
    try:
        return [m.id for m in backend.to_apply(read_migrations(str(migrations_dir())))]
    finally:
        backend.connection.close()


def rollback_migrations(dsn: str, count: int | None = None, lock_timeout: float = 60.0) -> list[str]:
    """Roll back the last ``count`` migrations (all when None) under yoyo's lock, as `yoyo rollback` does."""
    backend = get_backend(yoyo_url(dsn), MIGRATION_TABLE)
    try:
        with backend.lock(timeout=lock_timeout):
            todo = backend.to_rollback(read_migrations(str(migrations_dir())))
            if count is not None:
                todo = todo[:count]
            backend.rollback_migrations(todo)
        return [m.id for m in todo]
    finally:
        backend.connection.close()
