"""Services: the async API, the key-holding clients with pools, and PgBouncer in transaction mode."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool, ConnectionPool

import pyaccess
from pyaccess.cluster import free_port
from pyaccess.keyfile import load_key_ring, write_new_key_file
from pyaccess.rotation import key_census
from tests.fix_db import new_group, new_group_async, register_key

Conn = psycopg.Connection[tuple[object, ...]]


# --- async ------------------------------------------------------------------------------------


def test_async__round_trip_and_every_error(db: str, key_file: Path, other_key_file: Path) -> None:
    async def scenario() -> None:
        async with await psycopg.AsyncConnection.connect(db) as conn:
            group = await new_group_async(conn)
            with pytest.raises(pyaccess.SecretNotFoundError):
                await pyaccess.aio.get_provision_secret(conn, group, key_file=key_file)
            await conn.rollback()
            await pyaccess.aio.store_provision_secret(conn, group, "async ✓", key_file=key_file)
            assert await pyaccess.aio.get_provision_secret(conn, str(group), key_file=key_file) == "async ✓"
            with pytest.raises(pyaccess.WrongKeyError):
                await pyaccess.aio.get_provision_secret(conn, group, key_file=other_key_file)
            await conn.rollback()
            with pytest.raises(pyaccess.GroupNotFoundError):
                await pyaccess.aio.store_provision_secret(conn, uuid.uuid4(), "x", key_file=key_file)
            await conn.rollback()
            with pytest.raises(pyaccess.InvalidGroupIdError):
                await pyaccess.aio.get_provision_secret(conn, "nope", key_file=key_file)
            with pytest.raises(pyaccess.InvalidSecretError):
                await pyaccess.aio.store_provision_secret(conn, group, "", key_file=key_file)

    asyncio.run(scenario())


def test_async__runs_in_the_callers_transaction_and_never_commits(db: str, key_file: Path) -> None:
    async def scenario() -> None:
        async with await psycopg.AsyncConnection.connect(db) as conn:
            group = await new_group_async(conn)
            await pyaccess.aio.store_provision_secret(conn, group, "kept", key_file=key_file)
            await conn.commit()
            await pyaccess.aio.store_provision_secret(conn, group, "rolled back", key_file=key_file)
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
            await conn.rollback()
            assert await pyaccess.aio.get_provision_secret(conn, group, key_file=key_file) == "kept"

    asyncio.run(scenario())


def test_async_client__with_a_pool__serves_concurrent_tasks(db: str, key_file: Path) -> None:
    async def scenario() -> None:
        secrets = pyaccess.AsyncProvisionSecrets(key_file=key_file)
        async with AsyncConnectionPool(db, configure=secrets.configure, min_size=2, max_size=4) as pool:
            secrets.pool = pool
            async with pool.connection() as conn:
                groups = [await new_group_async(conn) for _ in range(20)]
            await asyncio.gather(*(secrets.store(g, f"value-{g}") for g in groups))
            values = await asyncio.gather(*(secrets.get(g) for g in groups))
            assert values == [f"value-{g}" for g in groups]

    asyncio.run(scenario())


def _store_and_get_from_threads(
    secrets: pyaccess.ProvisionSecrets, groups: list[uuid.UUID], *, threads: int, rounds: int
) -> list[BaseException]:
    """Each thread stores then reads back its share of the groups, ``rounds`` times; the errors seen."""
    errors: list[BaseException] = []

    def work(part: list[uuid.UUID]) -> None:
        try:
            for round_ in range(rounds):
                for g in part:
                    secrets.store(g, f"{g}-{round_}")
                    assert secrets.get(g) == f"{g}-{round_}"
        except BaseException as exc:  # noqa: BLE001 - returned to the test
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(groups[i::threads],)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return errors


# --- sync client and pool ---------------------------------------------------------------------


def test_client__with_a_pool__serves_threads(db: str, key_file: Path) -> None:
    secrets = pyaccess.ProvisionSecrets(key_file=key_file)
    with ConnectionPool(db, configure=secrets.configure, min_size=2, max_size=4) as pool:
        secrets.pool = pool
        with pool.connection() as conn:
            groups = [new_group(conn) for _ in range(40)]
        assert _store_and_get_from_threads(secrets, groups, threads=4, rounds=5) == []


def test_client__configure_guards_each_pooled_connection_once(db: str, key_file: Path) -> None:
    secrets = pyaccess.ProvisionSecrets(key_file=key_file)
    with ConnectionPool(db, configure=secrets.configure, min_size=1, max_size=1) as pool:
        secrets.pool = pool
        with pool.connection() as conn:
            group = new_group(conn)
            assert conn.execute("SHOW log_parameter_max_length").fetchone() == ("0",)
        secrets.store(group, "guarded")
        assert secrets.get(group) == "guarded"


def test_client__picks_up_a_rerendered_key_file(db: str, tmp_path: Path) -> None:
    path = write_new_key_file(tmp_path / "rendered")
    secrets = pyaccess.ProvisionSecrets(key_file=path)
    with ConnectionPool(db, configure=secrets.configure, min_size=1, max_size=2) as pool:
        secrets.pool = pool
        with pool.connection() as conn:
            group = new_group(conn)
        secrets.store(group, "under the first key")
        first = load_key_ring(path).current.material.hex()
        staged = tmp_path / "staged"
        staged.write_text(f'{{"key": "{"cd" * 32}", "previous_keys": ["{first}"]}}')
        with pool.connection() as conn:
            register_key(conn, staged)  # the runbook: register the new key before Vault is patched
        staged.replace(path)  # the agent's atomic rename
        assert secrets.get(group) == "under the first key"  # read with the previous key
        secrets.store(group, "under the second key")
        with pool.connection() as conn:
            census = key_census(conn, key_file=path)
        assert [(e.in_key_file, e.secrets) for e in census] == [("current", 1), ("previous", 0)]


def test_client__with_a_caller_connection__uses_its_transaction(conn: Conn, key_file: Path) -> None:
    secrets = pyaccess.ProvisionSecrets(key_file=key_file)
    group = new_group(conn)
    secrets.store(group, "inside", conn=conn)
    conn.rollback()
    with pytest.raises(pyaccess.SecretNotFoundError):
        secrets.get(group, conn=conn)


def test_client__without_pool_or_conn__says_so(key_file: Path) -> None:
    with pytest.raises(TypeError, match="no pool"):
        pyaccess.ProvisionSecrets(key_file=key_file).get(uuid.uuid4())


def test_client__repr_shows_no_key(key_file: Path) -> None:
    text = repr(pyaccess.ProvisionSecrets(key_file=key_file))
    assert str(key_file) in text
    assert load_key_ring(key_file).current.material.hex() not in text


# --- PgBouncer --------------------------------------------------------------------------------


@pytest.fixture
def pgbouncer(db: str) -> Iterator[str]:
    """A real PgBouncer in transaction mode in front of the test database; its DSN."""
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not os.path.exists(binary):
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")
    target = conninfo_to_dict(db)
    workdir = Path(tempfile.mkdtemp(prefix="pyaccess-pgbouncer-"))
    port = free_port()
    (workdir / "users.txt").write_text(f'"{target.get("user", "postgres")}" ""\n')
    (workdir / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={target.get('host', '127.0.0.1')} port={target.get('port', 5432)}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {workdir / 'users.txt'}\n"
        "pool_mode = transaction\ndefault_pool_size = 2\nserver_reset_query = DISCARD ALL\n"
        f"logfile = {workdir / 'pgbouncer.log'}\n"
    )
    command = [binary, str(workdir / "pgbouncer.ini")]
    if os.geteuid() == 0:
        shutil.chown(workdir, "postgres")
        command = ["runuser", "-u", "postgres", "--", *command]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        dsn = make_conninfo(db, host="127.0.0.1", port=str(port))
        deadline = time.monotonic() + 10
        while True:
            try:
                psycopg.connect(dsn, connect_timeout=1).close()
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.05)
        yield dsn
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


def test_pgbouncer_transaction_mode__works_with_every_call_guard_and_no_prepared_statements(
    pgbouncer: str, key_file: Path
) -> None:
    secrets = pyaccess.ProvisionSecrets(key_file=key_file, guard="every-call")
    kwargs = {"prepare_threshold": None, "autocommit": True}
    with ConnectionPool(pgbouncer, kwargs=kwargs, min_size=2, max_size=4) as pool:
        secrets.pool = pool
        with pool.connection() as conn:
            groups = [new_group(conn) for _ in range(10)]
        # more calls per connection than psycopg's prepare threshold
        assert _store_and_get_from_threads(secrets, groups, threads=3, rounds=10) == []


def test_pgbouncer_transaction_mode__every_call_guard_holds_even_when_the_server_session_is_reset(
    pgbouncer: str, key_file: Path
) -> None:
    # DISCARD ALL (server_reset_query) and server switching undo a session SET; the
    # every-call guard re-applies it in the same transaction as each call.
    with psycopg.connect(pgbouncer, prepare_threshold=None, autocommit=True) as conn:
        group = new_group(conn)
        secrets = pyaccess.ProvisionSecrets(key_file=key_file, guard="every-call")
        for n in range(5):
            secrets.store(group, f"v{n}", conn=conn)
            with conn.transaction():
                conn.execute("SELECT 1")
                assert secrets.get(group, conn=conn) == f"v{n}"
                assert conn.execute("SHOW log_parameter_max_length").fetchone() == ("0",)
