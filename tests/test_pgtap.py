"""The SQL-level pgTAP suite (``tests/sql/*.sql``), run by ``pg_prove`` against a fresh migrated database.

A DBA runs the same files by hand, as a superuser, against any migrated database:

    pg_prove -d DB --ext .sql tests/sql/

Each file runs in one transaction that it rolls back; the test checks that too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

SQL_DIR = Path(__file__).resolve().parent / "sql"
PGTAP_FILES = sorted(SQL_DIR.glob("*.sql"))

# libpq connection keywords and the environment variables psql reads for them.
LIBPQ_ENV = {
    "host": "PGHOST",
    "hostaddr": "PGHOSTADDR",
    "port": "PGPORT",
    "dbname": "PGDATABASE",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "passfile": "PGPASSFILE",
    "channel_binding": "PGCHANNELBINDING",
    "options": "PGOPTIONS",
    "application_name": "PGAPPNAME",
    "sslmode": "PGSSLMODE",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcrl": "PGSSLCRL",
    "requirepeer": "PGREQUIREPEER",
    "gssencmode": "PGGSSENCMODE",
    "krbsrvname": "PGKRBSRVNAME",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "client_encoding": "PGCLIENTENCODING",
}

PG_PROVE_TIMEOUT_SECONDS = 300


def _libpq_environment(dsn: str) -> dict[str, str]:
    """The process environment with every ``PG*`` variable replaced by those of ``dsn``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("PG")}
    for keyword, value in conninfo_to_dict(dsn).items():
        if value is None:
            continue
        if keyword not in LIBPQ_ENV:
            pytest.fail(f"the test DSN uses the libpq keyword {keyword!r}, which this runner cannot pass to pg_prove")
        env[LIBPQ_ENV[keyword]] = str(value)
    return env


def _require_pg_prove() -> str:
    pg_prove = shutil.which("pg_prove")
    if pg_prove is None:
        pytest.skip(
            "pg_prove is not on PATH: install it (Debian: apt-get install postgresql-15-pgtap "
            "libtap-parser-sourcehandler-pgtap-perl) to run the SQL-level pgTAP tests"
        )
    if shutil.which("psql") is None:
        pytest.skip("psql is not on PATH: pg_prove needs it to run the pgTAP tests (install postgresql-client)")
    return pg_prove


def _require_pgtap_on_server(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM pg_catalog.pg_available_extensions WHERE name = 'pgtap'").fetchone()
    if row is None or row[0] == 0:
        pytest.skip(
            "the PostgreSQL server under test has no pgtap extension available: install postgresql-15-pgtap "
            "on it, or point PYACCESS_TEST_DSN at a server that has it"
        )


def _leftovers(dsn: str) -> list[str]:
    """What a pgTAP file left in the database or the cluster: it must roll everything back."""
    found: list[str] = []
    with psycopg.connect(dsn) as conn:
        if conn.execute("SELECT FROM pg_catalog.pg_extension WHERE extname = 'pgtap'").fetchone() is not None:
            found.append("the pgtap extension")
        row = conn.execute("SELECT count(*) FROM public.ota_groups").fetchone()
        if row is not None and row[0] != 0:
            found.append(f"{row[0]} row(s) in ota_groups")
        found.extend(
            f"role {name}"
            for (name,) in conn.execute(r"SELECT rolname FROM pg_catalog.pg_roles WHERE rolname LIKE 'pgtap\_%'")
        )
    return found


def test_the_pgtap_suite__has_files() -> None:
    assert PGTAP_FILES, f"no pgTAP files in {SQL_DIR}"


@pytest.mark.parametrize("sql_file", PGTAP_FILES, ids=[path.name for path in PGTAP_FILES])
def test_pgtap_file__passes_every_assertion_and_rolls_everything_back(db: str, sql_file: Path) -> None:
    pg_prove = _require_pg_prove()
    _require_pgtap_on_server(db)

    result = subprocess.run(
        [pg_prove, "--verbose", "--failures", "--ext", ".sql", str(sql_file)],
        env=_libpq_environment(db),
        capture_output=True,
        text=True,
        timeout=PG_PROVE_TIMEOUT_SECONDS,
        check=False,
    )

    failed = "\n".join(line for line in result.stdout.splitlines() if line.startswith(("not ok", "#")))
    assert result.returncode == 0, (
        f"pg_prove {sql_file.name} exited {result.returncode}; failed assertions:\n{failed or '(none reported)'}\n"
        f"--- pg_prove stdout ---\n{result.stdout}\n--- pg_prove stderr ---\n{result.stderr}"
    )
    assert "Result: PASS" in result.stdout, f"pg_prove {sql_file.name} did not report PASS:\n{result.stdout}"
    leftovers = _leftovers(db)
    assert leftovers == [], f"{sql_file.name} did not roll everything back; it left: {', '.join(leftovers)}"
