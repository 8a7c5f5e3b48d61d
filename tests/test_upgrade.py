"""Upgrading in place: a database that 0.1.0 migrated, holding secrets 0.1.0 stored, becomes 0.2.0.

0.1.0 runs from its own virtualenv, built from the released commit (tests/fix_release.py).
The upgraded database must equal a fresh install, read every old secret, and keep serving
pods of 0.1.0 during the rollout; doctor must name any function altered by hand; and a
rollback goes back to 0.1.0 only while 0.1.0 can still read everything.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from yoyo import get_backend, read_migrations
from yoyo.migrations import MigrationList

import pyaccess
from pyaccess.cli import main
from pyaccess.migrate import apply_migrations, migrations_dir
from tests.fix_db import Server, execute, new_group, query, rollback_migrations, scalar, schema_dump, yoyo_url
from tests.fix_release import Release

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def _migrated_by_0_1_0(release: Release, dsn: str, key_file: Path, secrets: int) -> dict[uuid.UUID, str]:
    """Migrate with 0.1.0's command, then store secrets with 0.1.0's library: what 0.2.0 meets in production."""
    result = release.cli("migrate", "--dsn", dsn)
    assert result.returncode == 0, result.stderr
    stored = {}
    with psycopg.connect(dsn) as conn:
        for i in range(secrets):
            group_id = new_group(conn)
            stored[group_id] = f"stored by 0.1.0, number {i} — ünïcödé"
    for group_id, secret in stored.items():
        release.store(dsn, group_id, secret, key_file)
    assert scalar(dsn, "SELECT count(*) FROM ota_groups WHERE get_byte(provision_secret_ciphertext, 0) = 1") == secrets
    return stored


def _fresh_install(server: Server) -> str:
    dsn = server.dsn(server.create_database())
    apply_migrations(dsn)
    return dsn


def _assert_upgraded(server: Server, dsn: str, release: Release, stored: dict[uuid.UUID, str], key_file: Path) -> None:
    assert schema_dump(dsn) == schema_dump(_fresh_install(server))
    with psycopg.connect(dsn, autocommit=True) as conn:
        for group_id, secret in stored.items():
            assert pyaccess.get_provision_secret(conn, group_id, key_file=key_file) == secret
        census = [(row[1], row[2], row[3]) for row in conn.execute("SELECT * FROM pyaccess.census()")]
        assert census == [(1, "active", len(stored))], "0.1.0's key ids are registered as active"
    # A pod of 0.1.0 during the rollout: it still stores and reads, and 0.2.0 reads what it stored.
    old_pod_group, new_pod_group = next(iter(stored)), uuid.UUID(int=0)
    release.store(dsn, old_pod_group, "stored by a 0.1.0 pod after the upgrade", key_file)
    assert release.get(dsn, old_pod_group, key_file) == "stored by a 0.1.0 pod after the upgrade"
    with psycopg.connect(dsn) as conn:
        assert pyaccess.get_provision_secret(conn, old_pod_group, key_file=key_file) == (
            "stored by a 0.1.0 pod after the upgrade"
        )
        new_pod_group = new_group(conn)
        pyaccess.store_provision_secret(conn, new_pod_group, "stored by a 0.2.0 pod", key_file=key_file)
        conn.commit()
    assert release.get(dsn, new_pod_group, key_file) == "stored by a 0.2.0 pod"


def test_upgrade_from_0_1_0__by_pyaccess_migrate__equals_a_fresh_install_and_both_libraries_work(
    server: Server, empty_db: str, release_0_1_0: Release, key_file: Path
) -> None:
    stored = _migrated_by_0_1_0(release_0_1_0, empty_db, key_file, secrets=5)
    assert apply_migrations(empty_db) == ["0006_release_0_2_0"]
    _assert_upgraded(server, empty_db, release_0_1_0, stored, key_file)


def test_upgrade_from_0_1_0__by_plain_yoyo_apply__equals_a_fresh_install_and_both_libraries_work(
    server: Server, empty_db: str, release_0_1_0: Release, key_file: Path
) -> None:
    stored = _migrated_by_0_1_0(release_0_1_0, empty_db, key_file, secrets=5)
    result = subprocess.run(
        [str(VENV_BIN / "yoyo"), "apply", "--batch", "--database", yoyo_url(empty_db), str(ROOT / "migrations")],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    _assert_upgraded(server, empty_db, release_0_1_0, stored, key_file)


def test_migration_chain__equals_the_declared_source_of_this_release(server: Server, empty_db: str) -> None:
    """Drift: 0001-0004 (the table, the column, the roles) plus sql/0.2.0/ applied directly must equal the
    chain through 0.1.0's functions and the 0.2.0 upgrade: an upgrade step forgotten shows here."""
    backend = get_backend(yoyo_url(empty_db))
    with backend.lock():
        base = MigrationList([m for m in read_migrations(str(migrations_dir())) if m.id < "0005"])
        backend.apply_migrations(backend.to_apply(base))
    backend.connection.close()
    with psycopg.connect(empty_db, autocommit=True) as conn:
        schema = conn.execute(
            "SELECT pg_catalog.quote_ident(n.nspname) FROM pg_catalog.pg_extension AS e"
            " JOIN pg_catalog.pg_namespace AS n ON n.oid = e.extnamespace WHERE e.extname = 'pgcrypto'"
        ).fetchone()
        assert schema is not None
        for path in sorted((ROOT / "sql" / "0.2.0").glob("*.sql")):
            conn.execute(path.read_text(encoding="utf-8").replace("@extschema@", schema[0]))
    declared = [line for line in schema_dump(empty_db) if "_yoyo" not in line]
    chain = [line for line in schema_dump(_fresh_install(server)) if "_yoyo" not in line]
    assert declared == chain


def test_library_0_2_0__against_a_database_at_0_1_0__says_run_pyaccess_migrate(
    empty_db: str, release_0_1_0: Release, key_file: Path
) -> None:
    stored = _migrated_by_0_1_0(release_0_1_0, empty_db, key_file, secrets=1)
    (group_id,) = stored
    with psycopg.connect(empty_db, autocommit=True) as conn:
        with pytest.raises(pyaccess.MigrationRequiredError, match="run pyaccess migrate"):
            pyaccess.get_provision_secret(conn, group_id, key_file=key_file)
        with pytest.raises(pyaccess.MigrationRequiredError, match="run pyaccess migrate"):
            pyaccess.store_provision_secret(conn, group_id, "new", key_file=key_file)
    doctor = CliRunner().invoke(main, ["doctor", "--dsn", empty_db, "--key-file", str(key_file)])
    assert doctor.exit_code == 1
    assert "FAIL     migrations  no pyaccess 0.2.0 SQL here; run pyaccess migrate" in doctor.output


@pytest.mark.parametrize(
    "alteration",
    [
        "ALTER FUNCTION public.get_provision_secret(uuid, bytea[]) RESET search_path",
        "ALTER FUNCTION pyaccess.seal(uuid, bytea, bytea) SECURITY INVOKER",
        "ALTER FUNCTION pyaccess.open(uuid, bytea, integer) OWNER TO postgres",
        "GRANT EXECUTE ON FUNCTION pyaccess.rewrap(uuid[], bytea[], bytea[], bytea) TO provision_secret_writer",
        "CREATE OR REPLACE FUNCTION pyaccess.release() RETURNS text LANGUAGE sql IMMUTABLE RETURN '0.2.0'",
    ],
)
def test_doctor__a_function_altered_by_hand__fails_naming_it(db: str, key_file: Path, alteration: str) -> None:
    runner = CliRunner()
    clean = runner.invoke(main, ["doctor", "--json", "--dsn", db, "--key-file", str(key_file)])
    assert {json.loads(line)["name"]: json.loads(line)["status"] for line in clean.output.splitlines()}[
        "functions"
    ] == "ok"
    execute(db, alteration)
    altered = runner.invoke(main, ["doctor", "--json", "--dsn", db, "--key-file", str(key_file)])
    assert altered.exit_code == 1
    (functions,) = [json.loads(line) for line in altered.output.splitlines() if json.loads(line)["name"] == "functions"]
    assert functions["status"] == "FAIL"
    name = alteration.split("FUNCTION ")[1].split("(", maxsplit=1)[0]
    assert name in functions["detail"], functions


def test_rollback_of_0_2_0__while_only_0_1_0_envelopes_exist__restores_0_1_0_exactly(
    server: Server, empty_db: str, release_0_1_0: Release, key_file: Path
) -> None:
    stored = _migrated_by_0_1_0(release_0_1_0, empty_db, key_file, secrets=3)
    reference = server.dsn(server.create_database())
    assert release_0_1_0.cli("migrate", "--dsn", reference).returncode == 0
    apply_migrations(empty_db)

    assert rollback_migrations(empty_db, 1) == ["0006_release_0_2_0"]

    assert schema_dump(empty_db) == schema_dump(reference)
    for group_id, secret in stored.items():
        assert release_0_1_0.get(empty_db, group_id, key_file) == secret
    assert apply_migrations(empty_db) == ["0006_release_0_2_0"], "the upgrade can be applied again"


def test_rollback_of_0_2_0__with_a_v2_envelope__refuses_and_says_why(
    db: str, conn: psycopg.Connection[tuple[object, ...]], key_file: Path
) -> None:
    group_id = new_group(conn)
    pyaccess.store_provision_secret(conn, group_id, "sealed as v2", key_file=key_file)
    conn.commit()
    with pytest.raises(
        RuntimeError, match=r"1 provision secret\(s\) are sealed as envelope v2, which 0.1.0 cannot read"
    ):
        rollback_migrations(db, 1)
    assert pyaccess.get_provision_secret(conn, group_id, key_file=key_file) == "sealed as v2"
    assert query(db, "SELECT * FROM pyaccess.api_drift()") == []


def test_upgrade_of_100k_rows__locks_and_duration(empty_db: str, release_0_1_0: Release, key_file: Path) -> None:
    """What the 0.2.0 upgrade locks and for how long, on a 100k-row ota_groups (printed for the README)."""
    _migrated_by_0_1_0(release_0_1_0, empty_db, key_file, secrets=1)
    execute(empty_db, "INSERT INTO ota_groups (name) SELECT 'bulk-' || i FROM generate_series(1, 100000) AS i")
    with psycopg.connect(empty_db) as conn:
        (migration,) = [m for m in read_migrations(str(migrations_dir())) if m.id == "0006_release_0_2_0"]
        migration.load()
        started = time.perf_counter()
        migration.module.install(conn)
        elapsed = time.perf_counter() - started
        locks = conn.execute(
            "SELECT l.mode, count(*) FROM pg_catalog.pg_locks AS l"
            " WHERE l.pid = pg_catalog.pg_backend_pid() AND l.locktype = 'relation'"
            " AND l.relation = 'public.ota_groups'::regclass GROUP BY 1 ORDER BY 1"
        ).fetchall()
        conn.rollback()
    modes = {str(mode) for mode, _ in locks}
    assert "AccessExclusiveLock" not in modes, locks
    print(f"\nupgrade 0.1.0 -> 0.2.0 on 100,000 rows: {elapsed:.3f} s in one transaction; locks on ota_groups: {locks}")
