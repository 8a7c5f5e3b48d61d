"""The migrations against a real PostgreSQL: empty and production databases,
locks, privileges, rollback, concurrency, and drift from sql/provision_secret.sql.

No mocks. One test wraps ``psycopg.connect`` with a pass-through spy that only
records the server's NOTICEs; every statement still runs on the real server.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from yoyo import read_migrations

import pyaccess
from pyaccess.migrate import apply_migrations
from tests.fix_db import (
    Server,
    execute,
    new_group,
    pending_migrations,
    query,
    rollback_migrations,
    scalar,
    schema_dump,
    user_dsn,
    yoyo_url,
)

ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS_DIR = ROOT / "migrations"
SQL_FILE = ROOT / "sql" / "0.1.0" / "provision_secret.sql"
VENV_BIN = Path(sys.executable).parent

# Every migration, in the order yoyo applies them (their file names sort in dependency order).
ALL_MIGRATIONS = sorted(
    {path.name.split(".")[0] for path in MIGRATIONS_DIR.iterdir() if path.suffix in {".sql", ".py"}} - {"__init__"}
)
PYACCESS_TABLE_COMMENT = "OTA groups (device groups in IoTA); created by pyaccess"
ROLES = ("provision_secret_writer", "provision_secret_reader")

# A production ota_groups as the management API made it, before pyaccess.
PRODUCTION_TABLE = """
CREATE TABLE public.ota_groups (
    id         uuid        PRIMARY KEY,
    name       text        NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    region     text,
    payload    jsonb
)
"""
PRODUCTION_ROWS = """
INSERT INTO public.ota_groups (id, name, created_at, region, payload)
SELECT pg_catalog.md5('group ' || i)::uuid,
       'group-' || i,
       timestamptz '2024-01-01 00:00:00+00' + i * interval '1 minute',
       (ARRAY['eu-west-1', 'us-east-1', 'ap-south-1'])[1 + i %% 3],
       jsonb_build_object('devices', i %% 97, 'firmware', '1.' || i %% 7)
  FROM generate_series(1, %s) AS i
"""
ROW_HASH_BEFORE = "SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM public.ota_groups AS t"
ROW_HASH_ORIGINAL_COLUMNS = (
    "SELECT md5(string_agg((t.id, t.name, t.created_at, t.region, t.payload)::text, ',' ORDER BY t.id))"
    " FROM public.ota_groups AS t"
)
# Where each row physically is and which transaction wrote it: an UPDATE of any row changes both.
ROW_VERSIONS_HASH = "SELECT md5(string_agg(ctid::text || ':' || xmin::text, ',' ORDER BY id)) FROM public.ota_groups"
ORIGINAL_COLUMNS = """
SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_catalog.pg_get_expr(d.adbin, d.adrelid)
  FROM pg_catalog.pg_attribute AS a
  LEFT JOIN pg_catalog.pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE a.attrelid = 'public.ota_groups'::regclass AND a.attnum > 0 AND NOT a.attisdropped
   AND a.attname <> 'provision_secret_ciphertext'
 ORDER BY a.attnum
"""
INDEXES = """
SELECT indexrelid::regclass::text, pg_catalog.pg_get_indexdef(indexrelid), pg_catalog.pg_relation_filenode(indexrelid)
  FROM pg_catalog.pg_index WHERE indrelid = 'public.ota_groups'::regclass ORDER BY 1
"""
# The functions of pyaccess in a database, as regprocedure text qualified with their schema.
INSTALLED_FUNCTIONS = """
SELECT p.oid::regprocedure::text
  FROM pg_catalog.pg_proc AS p
  JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace
 WHERE n.nspname = 'public' AND p.proname ~ 'provision_secret'
   AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend AS d
                    WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
"""


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def installed_functions(dsn: str) -> set[str]:
    with psycopg.connect(dsn, autocommit=True) as connection:
        # With only pg_catalog on the path, regprocedure names the schema: public.f(uuid,text).
        connection.execute("SET search_path = pg_catalog")
        return {str(row[0]) for row in connection.execute(INSTALLED_FUNCTIONS)}


def table_exists(dsn: str) -> bool:
    return bool(scalar(dsn, "SELECT pg_catalog.to_regclass('public.ota_groups') IS NOT NULL"))


def column_exists(dsn: str) -> bool:
    return bool(
        scalar(
            dsn,
            "SELECT count(*) FROM pg_catalog.pg_attribute WHERE attrelid = pg_catalog.to_regclass('public.ota_groups')"
            " AND attname = 'provision_secret_ciphertext' AND NOT attisdropped",
        )
        == 1
    )


def table_comment(dsn: str) -> str | None:
    comment = scalar(dsn, "SELECT pg_catalog.obj_description('public.ota_groups'::regclass, 'pg_class')")
    assert comment is None or isinstance(comment, str)
    return comment


def applied_migration_ids(dsn: str) -> list[str]:
    return [row[0] for row in query(dsn, "SELECT migration_id FROM public._yoyo_migration ORDER BY migration_id")]


def wait_for_lock_wait(dsn: str, worker: threading.Thread, timeout: float = 30) -> bool:
    """Wait until a session of ``dsn``'s database waits on a lock (True), or ``worker`` ends (False)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as connection:
        while time.monotonic() < deadline and worker.is_alive():
            waiting = connection.execute(
                "SELECT count(*) FROM pg_catalog.pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).fetchone()
            if waiting != (0,):
                return True
            time.sleep(0.02)
    return False


@pytest.fixture
def owned_database(server: Server) -> Iterator[str]:
    """A database created by name; the test makes it, this drops it."""
    name = f"pyaccess_test_{uuid.uuid4().hex[:12]}"
    yield name
    server.drop_database(name)


# ---------------------------------------------------------------------------
# Parsing the declared functions (drift test)
# ---------------------------------------------------------------------------

_CREATE_FUNCTION = re.compile(r"CREATE\s+OR\s+REPLACE\s+FUNCTION\s+([\w.]+)\s*\(", re.IGNORECASE)
_ARG_MODES = {"IN", "OUT", "INOUT", "VARIADIC"}


def _split_top_level(text: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if "".join(current).strip():
        parts.append("".join(current))
    return [part.strip() for part in parts]


def _arg_type(argument: str) -> str | None:
    """The type of one declared argument (``name type [DEFAULT x]``); None for OUT arguments."""
    argument = re.split(r"\s+DEFAULT\s+|\s*=\s*", argument, maxsplit=1, flags=re.IGNORECASE)[0]
    words = argument.split()
    if words[0].upper() in _ARG_MODES:
        if words[0].upper() == "OUT":
            return None
        words = words[1:]
    # Every argument in the file is named: the type is what follows the name.
    return " ".join(words[1:]) if len(words) > 1 else words[0]


def declared_functions(text: str) -> list[tuple[str, list[str]]]:
    """``(qualified name, [argument types])`` of every CREATE OR REPLACE FUNCTION in ``text``."""
    text = re.sub(r"--[^\n]*", "", text)
    found = []
    for match in _CREATE_FUNCTION.finditer(text):
        depth, end = 1, match.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(text[end], 0)
            end += 1
        arguments = [_arg_type(a) for a in _split_top_level(text[match.end() : end - 1])]
        found.append((match.group(1), [a for a in arguments if a is not None]))
    return found


def listed_functions(signatures: tuple[str, ...]) -> list[tuple[str, list[str]]]:
    """``(qualified name, [argument types])`` of signatures written ``public.f(uuid, text)``."""
    found = []
    for signature in signatures:
        match = re.fullmatch(r"\s*([\w.]+)\s*\((.*)\)\s*", signature)
        assert match, signature
        found.append((match.group(1), _split_top_level(match.group(2))))
    return found


def canonical(dsn: str, functions: list[tuple[str, list[str]]]) -> set[str]:
    """Signatures spelled as ``oid::regprocedure::text`` spells them, types normalised by the server."""
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute("SET search_path = pg_catalog")
        result = set()
        for name, types in functions:
            spelled = [connection.execute("SELECT %s::regtype::text", (t,)).fetchone()[0] for t in types]  # type: ignore[index]
            qualified = name if "." in name else f"public.{name}"
            result.add(f"{qualified}({','.join(spelled)})")
        return result


def load_migration_module(migration_id: str) -> Any:
    """The module of a Python migration, loaded the way yoyo loads it."""
    (migration,) = [m for m in read_migrations(str(MIGRATIONS_DIR)) if m.id == migration_id]
    migration.load()
    return migration.module


# ---------------------------------------------------------------------------
# Empty database
# ---------------------------------------------------------------------------


def test_migrate__empty_database__creates_pgcrypto_table_column_roles_and_functions(empty_db: str) -> None:
    assert pending_migrations(empty_db) == ALL_MIGRATIONS

    assert apply_migrations(empty_db) == ALL_MIGRATIONS

    assert (
        scalar(
            empty_db,
            "SELECT n.nspname FROM pg_catalog.pg_extension AS e"
            " JOIN pg_catalog.pg_namespace AS n ON n.oid = e.extnamespace WHERE e.extname = 'pgcrypto'",
        )
        == "public"
    )
    columns = query(empty_db, ORIGINAL_COLUMNS)
    assert columns == [
        ("id", "uuid", True, "gen_random_uuid()"),
        ("name", "text", True, None),
        ("created_at", "timestamp with time zone", True, "now()"),
    ]
    constraints = query(
        empty_db,
        "SELECT contype::text, array_agg(a.attname::text ORDER BY a.attname)"
        "  FROM pg_catalog.pg_constraint AS c"
        "  JOIN pg_catalog.pg_attribute AS a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)"
        " WHERE c.conrelid = 'public.ota_groups'::regclass AND c.contype IN ('p', 'u')"
        " GROUP BY c.oid, contype ORDER BY 1",
    )
    assert constraints == [("p", ["id"]), ("u", ["name"])]
    assert table_comment(empty_db) == PYACCESS_TABLE_COMMENT

    # The secret column: nullable bytea, no default (a catalog-only ALTER).
    assert query(
        empty_db,
        "SELECT pg_catalog.format_type(atttypid, atttypmod), attnotnull, atthasdef FROM pg_catalog.pg_attribute"
        " WHERE attrelid = 'public.ota_groups'::regclass AND attname = 'provision_secret_ciphertext'",
    ) == [("bytea", False, False)]

    roles = query(
        empty_db,
        "SELECT rolname::text, rolcanlogin, rolsuper FROM pg_catalog.pg_roles WHERE rolname = ANY (%s) ORDER BY 1",
        (list(ROLES),),
    )
    assert roles == [("provision_secret_reader", False, False), ("provision_secret_writer", False, False)]

    functions = installed_functions(empty_db)
    assert {
        "public.store_provision_secret(uuid,text,bytea)",
        "public.get_provision_secret(uuid,bytea)",
    } <= functions
    for signature in ("public.store_provision_secret(uuid,text,bytea)", "public.get_provision_secret(uuid,bytea)"):
        definer, config = query(
            empty_db, "SELECT prosecdef, proconfig FROM pg_catalog.pg_proc WHERE oid = %s::regprocedure", (signature,)
        )[0]
        assert definer is True, signature
        assert config == ["search_path=pg_catalog, pg_temp"], signature
    privileges = query(
        empty_db,
        "SELECT r, f, pg_catalog.has_function_privilege(r, f, 'EXECUTE')"
        "  FROM unnest(%s::text[]) AS r"
        " CROSS JOIN unnest(ARRAY['public.store_provision_secret(uuid,text,bytea)',"
        "                         'public.get_provision_secret(uuid,bytea)']) AS f ORDER BY 1, 2",
        (list(ROLES),),
    )
    assert privileges == [
        ("provision_secret_reader", "public.get_provision_secret(uuid,bytea)", True),
        ("provision_secret_reader", "public.store_provision_secret(uuid,text,bytea)", False),
        ("provision_secret_writer", "public.get_provision_secret(uuid,bytea)", False),
        ("provision_secret_writer", "public.store_provision_secret(uuid,text,bytea)", True),
    ]
    assert query(
        empty_db,
        "SELECT pg_catalog.has_column_privilege(r, 'public.ota_groups', 'provision_secret_ciphertext', 'SELECT')"
        "  FROM unnest(%s::text[]) AS r",
        (list(ROLES),),
    ) == [(False,), (True,)]  # writer: nothing; reader: the ciphertext, which pyaccess.open reads as the reader


def test_migrate__already_current_database__is_a_no_op_returning_nothing(empty_db: str) -> None:
    apply_migrations(empty_db)
    schema_before = schema_dump(empty_db)
    log_rows_before = scalar(empty_db, "SELECT count(*) FROM public._yoyo_log")

    assert apply_migrations(empty_db) == []

    assert pending_migrations(empty_db) == []
    assert schema_dump(empty_db) == schema_before
    assert scalar(empty_db, "SELECT count(*) FROM public._yoyo_log") == log_rows_before


# ---------------------------------------------------------------------------
# Production database
# ---------------------------------------------------------------------------


class ExclusiveLockWatch(threading.Thread):
    """Polls pg_locks from another session: when was ACCESS EXCLUSIVE on ota_groups granted."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.first_seen: float | None = None
        self.last_seen: float | None = None
        self.samples = 0
        self.polls = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as connection:
                oid = connection.execute("SELECT 'public.ota_groups'::regclass::oid").fetchone()[0]  # type: ignore[index]
                poll = (
                    "SELECT EXISTS (SELECT FROM pg_catalog.pg_locks WHERE locktype = 'relation' AND relation = %s"
                    " AND database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())"
                    " AND mode = 'AccessExclusiveLock' AND granted)"
                )
                self.ready.set()
                while not self.stop.is_set():
                    held = connection.execute(poll, (oid,)).fetchone()[0]  # type: ignore[index]
                    now = time.perf_counter()
                    self.polls += 1
                    if held:
                        self.samples += 1
                        self.first_seen = self.first_seen or now
                        self.last_seen = now
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
            self.ready.set()


def test_migrate__existing_table_with_100k_rows__is_not_rewritten_and_its_rows_and_columns_are_untouched(
    empty_db: str,
) -> None:
    rows = 100_000
    with psycopg.connect(empty_db, autocommit=True) as connection:
        connection.execute(PRODUCTION_TABLE)
        connection.execute(PRODUCTION_ROWS, (rows,))
        connection.execute("ANALYZE public.ota_groups")
    filenode_before = scalar(empty_db, "SELECT pg_catalog.pg_relation_filenode('public.ota_groups')")
    row_hash_before = scalar(empty_db, ROW_HASH_BEFORE)
    versions_before = scalar(empty_db, ROW_VERSIONS_HASH)
    columns_before = query(empty_db, ORIGINAL_COLUMNS)
    indexes_before = query(empty_db, INDEXES)
    assert table_comment(empty_db) is None

    watch = ExclusiveLockWatch(empty_db)
    watch.start()
    assert watch.ready.wait(30)
    started = time.perf_counter()
    try:
        applied = apply_migrations(empty_db)
    finally:
        elapsed = time.perf_counter() - started
        watch.stop.set()
        watch.join(30)
    assert watch.error is None, watch.error

    assert applied == ALL_MIGRATIONS
    assert scalar(empty_db, "SELECT pg_catalog.pg_relation_filenode('public.ota_groups')") == filenode_before
    assert query(empty_db, INDEXES) == indexes_before
    assert query(empty_db, ORIGINAL_COLUMNS) == columns_before
    assert scalar(empty_db, ROW_HASH_ORIGINAL_COLUMNS) == row_hash_before
    assert scalar(empty_db, ROW_VERSIONS_HASH) == versions_before, "rows were updated"
    assert scalar(empty_db, "SELECT count(*) FROM public.ota_groups") == rows
    assert scalar(empty_db, "SELECT count(provision_secret_ciphertext) FROM public.ota_groups") == 0
    assert table_comment(empty_db) is None, "pyaccess marked a table it did not create as its own"
    assert column_exists(empty_db)

    if watch.first_seen is not None and watch.last_seen is not None:
        held = f"ACCESS EXCLUSIVE on ota_groups seen granted for {(watch.last_seen - watch.first_seen) * 1000:.1f} ms"
        held += f" ({watch.samples} of {watch.polls} polls)"
    else:
        held = f"ACCESS EXCLUSIVE on ota_groups never seen granted ({watch.polls} polls: held under one poll)"
    poll_ms = elapsed * 1000 / max(watch.polls, 1)
    print(f"\nmigrating ota_groups with {rows:,} rows: {elapsed:.3f} s in all; {held}; one poll every {poll_ms:.2f} ms")


def test_migrate__table_locked_by_an_open_transaction__fails_fast_on_lock_timeout_then_succeeds_once_free(
    empty_db: str,
) -> None:
    execute(empty_db, PRODUCTION_TABLE)
    with psycopg.connect(empty_db) as blocker:
        # If the migration waited for the blocker instead of timing out, the
        # server ends the blocker after 30 s, the migration then succeeds and
        # pytest.raises fails: the test fails rather than hangs.
        blocker.execute("SET idle_in_transaction_session_timeout = '30s'")
        blocker.execute("SELECT 1 FROM public.ota_groups LIMIT 1")  # ACCESS SHARE, held until the transaction ends
        assert blocker.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS

        started = time.perf_counter()
        with pytest.raises(psycopg.errors.LockNotAvailable, match="lock timeout"):
            apply_migrations(empty_db)
        elapsed = time.perf_counter() - started
        print(f"\nmigration gave up on the lock after {elapsed:.2f} s (lock_timeout is 5 s)")
        assert 5 <= elapsed < 25

        # Nothing of 0004 (nor what depends on it) is applied; the blocker is unharmed.
        assert pending_migrations(empty_db) == [m for m in ALL_MIGRATIONS if m >= "0004"]
        assert not column_exists(empty_db)
        assert not installed_functions(empty_db)
        assert blocker.execute("SELECT count(*) FROM public.ota_groups").fetchone() == (0,)
        blocker.rollback()

    assert apply_migrations(empty_db) == [m for m in ALL_MIGRATIONS if m >= "0004"]
    assert column_exists(empty_db)
    assert pending_migrations(empty_db) == []


# ---------------------------------------------------------------------------
# pyaccess migrate versus plain yoyo
# ---------------------------------------------------------------------------


def test_pyaccess_migrate__and_plain_yoyo_apply__build_the_same_schema(server: Server, tmp_path: Path) -> None:
    by_pyaccess = server.create_database()
    by_yoyo = server.create_database()
    try:
        result = subprocess.run(
            [str(VENV_BIN / "pyaccess"), "migrate", "--dsn", server.dsn(by_pyaccess)],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        assert f"applied {len(ALL_MIGRATIONS)} migration(s)" in result.stdout

        # In an empty directory: no yoyo.ini but the command line.
        result = subprocess.run(
            [
                str(VENV_BIN / "yoyo"),
                "apply",
                "--batch",
                "--database",
                yoyo_url(server.dsn(by_yoyo)),
                str(MIGRATIONS_DIR) + "/",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr

        dump_pyaccess = schema_dump(server.dsn(by_pyaccess))
        dump_yoyo = schema_dump(server.dsn(by_yoyo))
        assert any("store_provision_secret" in line for line in dump_pyaccess)
        assert dump_pyaccess == dump_yoyo
        assert applied_migration_ids(server.dsn(by_pyaccess)) == ALL_MIGRATIONS
        assert applied_migration_ids(server.dsn(by_yoyo)) == ALL_MIGRATIONS
        assert pending_migrations(server.dsn(by_yoyo)) == []
    finally:
        server.drop_database(by_pyaccess)
        server.drop_database(by_yoyo)


# ---------------------------------------------------------------------------
# pgcrypto in another schema; a non-superuser owner
# ---------------------------------------------------------------------------


def test_migrate__pgcrypto_already_in_schema_extensions__functions_call_it_there(empty_db: str, key_file: Path) -> None:
    execute(empty_db, "CREATE SCHEMA extensions", "CREATE EXTENSION pgcrypto SCHEMA extensions")

    assert apply_migrations(empty_db) == ALL_MIGRATIONS

    assert (
        scalar(
            empty_db,
            "SELECT extnamespace::regnamespace::text FROM pg_catalog.pg_extension WHERE extname = 'pgcrypto'",
        )
        == "extensions"
    )
    sources = dict(
        query(
            empty_db,
            "SELECT proname::text || '(' || pg_catalog.pg_get_function_identity_arguments(oid) || ')',"
            " pg_catalog.pg_get_functiondef(oid) FROM pg_catalog.pg_proc"
            " WHERE pronamespace IN ('public'::regnamespace, 'pyaccess'::regnamespace)"
            " AND (proname ~ 'provision_secret' OR pronamespace = 'pyaccess'::regnamespace)",
        )
    )
    assert sources, "no pyaccess function installed"
    assert not [name for name, source in sources.items() if "@extschema@" in source]
    everything = "\n".join(sources.values())
    for call in ("hmac(", "gen_random_bytes(", "encrypt_iv(", "decrypt_iv("):
        assert f"extensions.{call}" in everything, call
        assert f"public.{call}" not in everything, call

    # The session's search_path ("$user", public) lacks extensions: only qualified calls work.
    with psycopg.connect(empty_db) as connection:
        assert "extensions" not in str(connection.execute("SHOW search_path").fetchone())
        group_id = new_group(connection)
        pyaccess.store_provision_secret(connection, group_id, "s3cret in extensions", key_file=key_file)
        connection.commit()
        assert pyaccess.get_provision_secret(connection, group_id, key_file=key_file) == "s3cret in extensions"


REVOKE_PARAMETER_GRANT = (
    "REVOKE SET ON PARAMETER log_parameter_max_length, log_parameter_max_length_on_error"
    " FROM provision_secret_writer, provision_secret_reader"
)


def test_migrate__as_non_superuser_owner_with_createrole__succeeds_with_a_notice_about_the_skipped_grant(
    server: Server, owned_database: str, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = f"pyaccess_owner_{uuid.uuid4().hex[:10]}"
    password = uuid.uuid4().hex
    try:
        with server.admin() as admin:
            admin.execute(
                sql.SQL("CREATE ROLE {} LOGIN CREATEROLE NOSUPERUSER PASSWORD {}").format(
                    sql.Identifier(owner), sql.Literal(password)
                )
            )
            admin.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(owned_database), sql.Identifier(owner))
            )
            # The grant is cluster-wide and another test's migration may have made it: take it back,
            # so that this migration has a superuser-only step to skip (restored in finally).
            admin.execute(REVOKE_PARAMETER_GRANT)
        dsn = user_dsn(server.dsn(owned_database), owner, password)
        assert scalar(dsn, "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user") is False

        # A pass-through spy: every connection is the real one; it only records NOTICEs.
        notices: list[str] = []
        real_connect = psycopg.connect

        def connect_recording_notices(*args: Any, **kwargs: Any) -> psycopg.Connection[Any]:
            connection = real_connect(*args, **kwargs)
            connection.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
            return connection

        monkeypatch.setattr(psycopg, "connect", connect_recording_notices)
        applied = apply_migrations(dsn)
        monkeypatch.undo()

        assert applied == ALL_MIGRATIONS
        assert [n for n in notices if "skipped GRANT SET ON PARAMETER" in n], notices
        owners = query(
            dsn,
            "SELECT relowner::regrole::text FROM pg_catalog.pg_class WHERE oid = 'public.ota_groups'::regclass"
            " UNION ALL SELECT proowner::regrole::text FROM pg_catalog.pg_proc"
            " WHERE oid = 'public.store_provision_secret(uuid,text,bytea)'::regprocedure",
        )
        # The table stays its owner's; the functions belong to provision_secret_owner, whose rights the
        # migrating owner holds through membership: a definer never runs with more than the owner role.
        assert owners == [(owner,), ("provision_secret_owner",)]
        assert query(
            dsn,
            "SELECT rolname::text, rolcanlogin FROM pg_catalog.pg_roles WHERE rolname = ANY (%s) ORDER BY 1",
            (list(ROLES),),
        ) == [("provision_secret_reader", False), ("provision_secret_writer", False)]

        with psycopg.connect(dsn) as connection:
            group_id = new_group(connection)
            pyaccess.store_provision_secret(connection, group_id, "owned by a mere owner", key_file=key_file)
            connection.commit()
            assert pyaccess.get_provision_secret(connection, group_id, key_file=key_file) == "owned by a mere owner"
        assert apply_migrations(dsn) == []
    finally:
        server.drop_database(owned_database)
        with server.admin() as admin:
            admin.execute(REVOKE_PARAMETER_GRANT.replace("REVOKE", "GRANT").replace(" FROM ", " TO "))
            exists = admin.execute("SELECT count(*) FROM pg_catalog.pg_roles WHERE rolname = %s", (owner,)).fetchone()
            if exists == (1,):
                admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(owner)))
                admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(owner)))


# ---------------------------------------------------------------------------
# Rollback
# ---------------------------------------------------------------------------


def test_rollback__with_secrets_stored__refuses_and_every_secret_still_reads_back(
    db: str, conn: psycopg.Connection[tuple[object, ...]], key_file: Path
) -> None:
    secrets = {new_group(conn): f"secret number {i}" for i in range(3)}
    for group_id, secret in secrets.items():
        pyaccess.store_provision_secret(conn, group_id, secret, key_file=key_file)
    conn.commit()
    functions_before = installed_functions(db)

    with pytest.raises(RuntimeError, match=r"refusing to roll back .*3 provision secret\(s\)"):
        rollback_migrations(db)

    assert pending_migrations(db) == []
    assert installed_functions(db) == functions_before
    assert column_exists(db)
    assert apply_migrations(db, lock_timeout=5) == [], "yoyo's lock was left behind or a migration unmarked"
    for group_id, secret in secrets.items():
        assert pyaccess.get_provision_secret(conn, group_id, key_file=key_file) == secret
    conn.commit()


def test_rollback__of_the_column_with_a_ciphertext_stored__refuses_and_keeps_the_column(
    db: str, conn: psycopg.Connection[tuple[object, ...]]
) -> None:
    # 0006 and 0005 go while nothing is stored; then a ciphertext appears before 0004 is rolled back.
    assert rollback_migrations(db, 2) == ["0006_release_0_2_0", "0005_provision_secret_functions"]
    assert installed_functions(db) == set()
    group_id = new_group(conn)
    conn.execute("UPDATE public.ota_groups SET provision_secret_ciphertext = '\\x01ab' WHERE id = %s", (group_id,))
    conn.commit()

    with pytest.raises(psycopg.errors.RaiseException, match="refusing to roll back: 1 provision secret"):
        rollback_migrations(db, 1)

    assert pending_migrations(db) == ["0005_provision_secret_functions", "0006_release_0_2_0"]
    assert column_exists(db)
    assert scalar(db, "SELECT provision_secret_ciphertext FROM public.ota_groups WHERE id = %s", (group_id,)) == (
        b"\x01\xab"
    )


def test_rollback__while_a_store_is_in_flight__never_destroys_the_secret_once_committed(
    db: str, conn: psycopg.Connection[tuple[object, ...]], group: uuid.UUID, key_file: Path
) -> None:
    pyaccess.store_provision_secret(conn, group, "stored while rolling back", key_file=key_file)  # not yet committed
    outcome: dict[str, Any] = {}

    def roll_back() -> None:
        try:
            outcome["rolled back"] = rollback_migrations(db)
        except BaseException as exc:  # noqa: BLE001 - a refusal is the right outcome
            outcome["refused"] = exc

    worker = threading.Thread(target=roll_back)
    worker.start()
    waited = wait_for_lock_wait(db, worker)
    conn.commit()  # the secret is stored for good while the rollback waits for ota_groups
    worker.join(60)
    assert not worker.is_alive()

    assert waited, f"the rollback never waited for the writer: {outcome}"
    assert column_exists(db), f"a committed secret was destroyed: {outcome}"
    assert scalar(db, "SELECT provision_secret_ciphertext IS NOT NULL FROM public.ota_groups WHERE id = %s", (group,))


def test_rollback__with_no_secret_and_an_empty_table_of_its_own__removes_everything_and_can_be_reapplied(
    empty_db: str,
) -> None:
    apply_migrations(empty_db)

    assert rollback_migrations(empty_db) == ALL_MIGRATIONS[::-1]

    assert installed_functions(empty_db) == set()
    assert not table_exists(empty_db)
    assert pending_migrations(empty_db) == ALL_MIGRATIONS
    # Kept on purpose: pgcrypto (others may use it) and the cluster-wide roles.
    assert scalar(empty_db, "SELECT count(*) FROM pg_catalog.pg_extension WHERE extname = 'pgcrypto'") == 1
    assert scalar(empty_db, "SELECT count(*) FROM pg_catalog.pg_roles WHERE rolname = ANY (%s)", (list(ROLES),)) == 2

    assert apply_migrations(empty_db) == ALL_MIGRATIONS
    assert column_exists(empty_db)


def test_rollback__with_no_secret_and_rows_in_its_own_table__drops_the_column_and_keeps_the_rows(
    empty_db: str,
) -> None:
    apply_migrations(empty_db)
    with psycopg.connect(empty_db) as connection:
        group_ids = {new_group(connection) for _ in range(3)}

    assert rollback_migrations(empty_db) == ALL_MIGRATIONS[::-1]

    assert table_exists(empty_db)
    assert {row[0] for row in query(empty_db, "SELECT id FROM public.ota_groups")} == group_ids
    assert not column_exists(empty_db)
    assert installed_functions(empty_db) == set()


def test_rollback__of_a_production_table_not_created_by_pyaccess__never_drops_it_even_when_empty(
    empty_db: str,
) -> None:
    execute(empty_db, PRODUCTION_TABLE)
    columns_before = query(empty_db, ORIGINAL_COLUMNS)
    apply_migrations(empty_db)
    assert column_exists(empty_db)

    assert rollback_migrations(empty_db) == ALL_MIGRATIONS[::-1]

    assert table_exists(empty_db)
    assert scalar(empty_db, "SELECT count(*) FROM public.ota_groups") == 0
    assert query(empty_db, ORIGINAL_COLUMNS) == columns_before
    assert not column_exists(empty_db)
    assert table_comment(empty_db) is None


# ---------------------------------------------------------------------------
# Concurrency
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", range(2))
@pytest.mark.parametrize("state", ["empty", "checked before"])
def test_migrate__two_runs_started_at_once__both_succeed_and_exactly_one_does_the_work(
    empty_db: str, state: str, attempt: int
) -> None:
    if state == "checked before":
        # yoyo's own tables then exist already: only the lock around the
        # pending set keeps the two runs apart (on an empty database yoyo's
        # internal-schema lock happens to serialise them too).
        assert pending_migrations(empty_db) == ALL_MIGRATIONS
    start = threading.Barrier(2)
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            start.wait(30)
            results.append(apply_migrations(empty_db))
        except BaseException as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    assert not [thread for thread in threads if thread.is_alive()], "a migration never returned"

    assert errors == []
    assert sorted(results, key=len) == [[], ALL_MIGRATIONS]
    assert pending_migrations(empty_db) == []
    assert applied_migration_ids(empty_db) == ALL_MIGRATIONS


def test_migrate__while_another_database_is_in_its_roles_step__still_succeeds(
    server: Server, template_db: str, empty_db: str
) -> None:
    # template_db: the migrations have run once in this cluster, as in production.
    # Another database's 0003, caught between its GRANT and its COMMIT:
    with psycopg.connect(server.dsn("postgres")) as other:
        other.execute(
            "GRANT SET ON PARAMETER log_parameter_max_length, log_parameter_max_length_on_error"
            " TO provision_secret_writer, provision_secret_reader"
        )
        outcome: dict[str, Any] = {}

        def migrate() -> None:
            try:
                outcome["applied"] = apply_migrations(empty_db)
            except BaseException as exc:  # noqa: BLE001 - asserted below
                outcome["error"] = exc

        worker = threading.Thread(target=migrate)
        worker.start()
        wait_for_lock_wait(empty_db, worker)
        other.commit()
        worker.join(60)
    assert not worker.is_alive()

    assert outcome == {"applied": ALL_MIGRATIONS}


# ---------------------------------------------------------------------------
# Drift between the SQL file, the migration's list and the database
# ---------------------------------------------------------------------------


def test_functions_in_a_migrated_database__are_exactly_those_of_the_one_list(db: str) -> None:
    """The install, the grants, the rollback and doctor all read pyaccess.api: nothing else is installed."""
    with psycopg.connect(db, autocommit=True) as connection:
        connection.execute("SET search_path = pg_catalog")  # regprocedure then names every schema
        listed = {str(row[0]) for row in connection.execute("SELECT signature FROM pyaccess.api")}
        installed = {
            str(row[0])
            for row in connection.execute(
                "SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc AS p"
                " WHERE p.pronamespace = 'pyaccess'::regnamespace"
                " OR (p.pronamespace = 'public'::regnamespace AND p.proname ~ 'provision_secret')"
            )
        }
    assert len(listed) >= 20, listed
    assert installed == listed
