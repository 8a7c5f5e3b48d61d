"""Security, tested the way it breaks: privileges, search_path tricks, the server log, careless callers.

Everything runs against real PostgreSQL through real login roles, never a
mock. The privilege matrix, the search_path attack and ``pyaccess doctor`` on
a clean setup use the suite's server; the log canary and the leaky-server
doctor use a throwaway cluster of their own that logs every statement with
its parameters (``@pytest.mark.cluster``).

Since 0.2.0 the service path sends no master key, only the pairs derived for
the one OTA group at hand (envelope v2): the leak checks look for those pairs
as well as for the master keys.

A leak check never prints what it looks for: a failure names the canary,
not its value.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import logging
import os
import re
import subprocess
import sys
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result
from psycopg import pq, sql

import pyaccess
from pyaccess import execution, queries
from pyaccess.cli import main
from pyaccess.cluster import LocalCluster, throwaway_cluster
from pyaccess.keyfile import write_new_key_file
from pyaccess.migrate import apply_migrations
from pyaccess.redacted import Plaintext
from pyaccess.rotation import key_census, register_key, retire_key, rotate
from tests.fix_db import new_group, user_dsn

Conn = psycopg.Connection[Any]

WRITER = "provision_secret_writer"
READER = "provision_secret_reader"
ROTATOR = "provision_secret_rotator"
OWNER = "provision_secret_owner"
MEMBERSHIPS: dict[str, tuple[str, ...]] = {
    "writer": (WRITER,),
    "reader": (READER,),
    "rotator": (ROTATOR,),
    "both": (WRITER, READER),
    "neither": (),
}
ROLE_PASSWORD = f"pw-{uuid.uuid4().hex}"  # ignored under trust auth, used under password auth
LOG_SETTINGS = {
    "log_statement": "all",
    "log_min_duration_statement": "0",
    "log_parameter_max_length_on_error": "-1",
    "logging_collector": "off",
}
ENV_VARS = ("PYACCESS_DSN", "PYACCESS_KEY_FILE")


# =========================================================================== helpers


def canary(label: str) -> str:
    """A unique, quote-free string that cannot appear anywhere by chance."""
    return f"canary-{label}-{uuid.uuid4().hex}"


def key_hex(key_file: Path) -> str:
    value = json.loads(Path(key_file).read_text())["key"]
    assert isinstance(value, str)
    return value.lower()


def key_id_bytes(key_file: Path) -> bytes:
    """The key id of a key file's current key (not secret: envelopes, messages and the census show it)."""
    return pyaccess.Key(bytes.fromhex(key_hex(key_file))).id_bytes


def _bytea_escape(material: bytes) -> str:
    """A bytea as PostgreSQL prints it with ``bytea_output = escape``."""
    return "".join("\\\\" if b == 0x5C else chr(b) if 0x20 <= b < 0x7F else f"\\{b:03o}" for b in material)


@dataclass(frozen=True)
class Canaries:
    """Keys and pairs (as hex digits) and secrets that must never show up in some text."""

    keys: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()

    def found_in(self, text: str) -> list[str]:
        """What leaked, by label only: a failing assertion must not print the key itself."""
        lowered = text.lower()
        found: list[str] = []
        for i, hexkey in enumerate(self.keys):
            material = bytes.fromhex(hexkey)
            forms = {
                "hex (any case)": hexkey in lowered,
                "truncated hex": hexkey[:24] in lowered or hexkey[-24:] in lowered,
                "\\x bytea form": "\\x" + hexkey in lowered,
                "bytea escape form": _bytea_escape(material) in text,
                "Python bytes repr": repr(material)[2:-1] in text,
                "base64": base64.b64encode(material).decode() in text,
            }
            found += [f"key #{i} as {form}" for form, present in forms.items() if present]
        found += [f"secret #{i} ({s[:14]}...)" for i, s in enumerate(self.secrets) if s in text]
        return found

    def __add__(self, other: Canaries) -> Canaries:
        return Canaries(self.keys + other.keys, self.secrets + other.secrets)


def pair_canaries(key_files: Sequence[Path], group_ids: Sequence[uuid.UUID]) -> Canaries:
    """What the service path sends instead of a master key: each key's v2 pair for each group (and its two
    halves, the enc key and the mac key), and each key's v1 pair, which opens every v1 secret of that key."""
    hexes: list[str] = []
    for path in key_files:
        key = pyaccess.Key(bytes.fromhex(key_hex(path)))
        for group_id in group_ids:
            pair = key.pair(2, group_id)
            hexes += [pair.hex(), pair[:32].hex(), pair[32:].hex()]
        hexes.append(key.pair(1, uuid.UUID(int=0)).hex())
    return Canaries(tuple(hexes))


def key_canaries(key_files: Sequence[Path], group_ids: Sequence[uuid.UUID] = ()) -> Canaries:
    """The master keys of ``key_files`` and everything the service derives from them for ``group_ids``."""
    return Canaries(tuple(key_hex(path) for path in key_files)) + pair_canaries(key_files, group_ids)


def exception_texts(exc: BaseException) -> str:
    """Everything a careless caller might print or log about an exception, causes included."""
    texts = ["".join(traceback.format_exception(exc))]
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts += [str(current), repr(current), *(repr(arg) for arg in current.args)]
        if isinstance(current, psycopg.Error):
            diag = current.diag
            texts += [
                str(value)
                for value in (
                    diag.message_primary,
                    diag.message_detail,
                    diag.message_hint,
                    diag.context,
                    diag.internal_query,
                )
                if value
            ]
        # the chain as a traceback shows it: the cause, else the context unless suppressed (raise ... from None)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return "\n".join(texts)


def assert_clean(exc: BaseException, canaries: Canaries) -> None:
    leaks = canaries.found_in(exception_texts(exc))
    assert not leaks, f"{type(exc).__name__} carries {leaks}"


@contextmanager
def raises_clean(exc_type: type[BaseException], canaries: Canaries) -> Iterator[None]:
    """``pytest.raises`` that also checks the exception (and its causes) carry no canary."""
    with pytest.raises(exc_type) as info:
        yield
    assert_clean(info.value, canaries)


def connect_as(dsn: str, role: str, *, autocommit: bool = True) -> Conn:
    return psycopg.connect(user_dsn(dsn, role, ROLE_PASSWORD), autocommit=autocommit)


def create_login_role(admin: Conn, name: str, groups: Sequence[str]) -> None:
    ident = sql.Identifier(name)
    admin.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(ident, sql.Literal(ROLE_PASSWORD)))
    for group in groups:
        admin.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), ident))


def invoke(args: Sequence[str], input: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input, env=dict.fromkeys(ENV_VARS))


def run_cli(args: Sequence[str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    """The real command line in a process of its own; the login roles' password comes from the environment
    (a password in ``--dsn`` makes the CLI warn: other local users can read it in the process list)."""
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    env["PGPASSWORD"] = ROLE_PASSWORD
    script = Path(sys.executable).with_name("pyaccess")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "pyaccess.cli"]
    return subprocess.run(
        [*command, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def doctor_json(dsn: str, key_file: Path) -> tuple[int, dict[str, dict[str, str]]]:
    """``pyaccess doctor --json``: the exit status and the checks by name (each line one JSON object)."""
    result = invoke(["doctor", "--json", "--dsn", dsn, "--key-file", str(key_file)])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    checks: dict[str, dict[str, str]] = {}
    for line in result.stdout.splitlines():
        check = json.loads(line)
        assert isinstance(check, dict), line
        assert set(check) == {"name", "status", "detail"}, line
        assert check["status"] in {"ok", "warning", "FAIL"}, line
        assert all(isinstance(value, str) for value in check.values()), line
        checks[check["name"]] = check
    assert checks, result.output
    return result.exit_code, checks


@pytest.fixture
def login_role(db: str) -> Iterator[Callable[..., str]]:
    """Creates login roles (cluster-wide: unique names, dropped afterwards) that are members of the given groups."""
    created: list[str] = []

    def make(*groups: str, prefix: str = "pyaccess_sec") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        created.append(name)
        with psycopg.connect(db, autocommit=True) as admin:
            create_login_role(admin, name, groups)
        return name

    yield make
    with psycopg.connect(db, autocommit=True) as admin:
        rows = admin.execute("SELECT rolname FROM pg_catalog.pg_roles WHERE rolname = ANY(%s)", (created,)).fetchall()
        for (name,) in rows:
            ident = sql.Identifier(name)
            admin.execute(sql.SQL("DROP OWNED BY {}").format(ident))
            admin.execute(sql.SQL("DROP ROLE {}").format(ident))


def owner_read(dsn: str, group_id: uuid.UUID, key_file: Path) -> str:
    with psycopg.connect(dsn, autocommit=True) as admin:
        return pyaccess.get_provision_secret(admin, group_id, key_file=key_file)


# =========================================================================== the privilege matrix


def test_group_roles__no_table_privilege__the_reader_alone_selects_id_and_ciphertext(conn: Conn) -> None:
    """The catalog view: no role gets ota_groups itself. Since 0.2.0 the reader may SELECT (id, ciphertext),
    which ``pyaccess.open`` (SECURITY INVOKER, inlined) reads; the writer and the rotator reach the column
    only through the owner's functions; the owner holds the columns it needs and nothing more."""
    table_privileges = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
    column_privileges = ("SELECT", "INSERT", "UPDATE", "REFERENCES")
    columns = [
        str(name)
        for (name,) in conn.execute(
            "SELECT attname FROM pg_catalog.pg_attribute"
            " WHERE attrelid = 'public.ota_groups'::regclass AND attnum > 0 AND NOT attisdropped"
        ).fetchall()
    ]
    assert {"id", "name", "provision_secret_ciphertext"} <= set(columns)
    allowed: dict[str, set[tuple[str, str]]] = {
        WRITER: set(),
        ROTATOR: set(),
        "public": set(),
        READER: {("id", "SELECT"), ("provision_secret_ciphertext", "SELECT")},
        OWNER: {("id", "SELECT"), ("provision_secret_ciphertext", "SELECT"), ("provision_secret_ciphertext", "UPDATE")},
    }
    for role, grants in allowed.items():
        for privilege in table_privileges:
            row = conn.execute(
                "SELECT pg_catalog.has_table_privilege(%s, 'public.ota_groups', %s)", (role, privilege)
            ).fetchone()
            assert row == (False,), f"{role} has {privilege} on ota_groups"
        held = {
            (column, privilege)
            for column in columns
            for privilege in column_privileges
            if conn.execute(
                "SELECT pg_catalog.has_column_privilege(%s, 'public.ota_groups', %s, %s)", (role, column, privilege)
            ).fetchone()
            == (True,)
        }
        assert held == grants, f"{role} holds {sorted(held)} on ota_groups' columns"
    roles = [WRITER, READER, ROTATOR, OWNER]
    row = conn.execute(
        "SELECT pg_catalog.bool_or(rolcanlogin OR rolsuper OR rolbypassrls OR rolcreaterole OR rolcreatedb),"
        " pg_catalog.count(*) FROM pg_catalog.pg_roles WHERE rolname = ANY(%s)",
        (roles,),
    ).fetchone()
    assert row == (False, len(roles))
    row = conn.execute(
        "SELECT pg_catalog.pg_get_userbyid(relowner) FROM pg_catalog.pg_class WHERE oid = 'public.ota_groups'::regclass"
    ).fetchone()
    assert row is not None
    assert row[0] not in (WRITER, READER, ROTATOR)


def test_functions__owned_by_the_dedicated_owner__executed_only_by_the_roles_named(conn: Conn) -> None:
    """Every function of the installed list: owned by provision_secret_owner (NOLOGIN, not a superuser), the
    definers with a pinned search_path, and EXECUTE held by the listed pyaccess roles only, PUBLIC never."""
    rows = conn.execute(
        "SELECT a.signature, a.grantees, pg_catalog.pg_get_userbyid(p.proowner), p.prosecdef, p.proconfig,"
        " ARRAY(SELECT CASE x.grantee WHEN 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(x.grantee)::text END"
        "         FROM pg_catalog.aclexplode(COALESCE(p.proacl, pg_catalog.acldefault('f', p.proowner))) AS x"
        "        WHERE x.grantee <> p.proowner AND x.privilege_type = 'EXECUTE' ORDER BY 1)"
        " FROM pyaccess.api AS a JOIN pg_catalog.pg_proc AS p ON p.oid = pg_catalog.to_regprocedure(a.signature)"
    ).fetchall()
    signatures = {str(r[0]) for r in rows}
    for entry in ("pyaccess.seal(uuid,bytea,bytea)", "pyaccess.open(uuid,bytea,integer)", "pyaccess.guard(text)"):
        assert entry in signatures
    for signature, grantees, owner, definer, config, executors in rows:
        assert owner == OWNER, signature
        assert sorted(executors) == sorted(grantees), signature
        assert set(grantees) <= {READER, WRITER, ROTATOR}, signature
        if definer:
            assert config == ["search_path=pg_catalog, pg_temp"], signature
    row = conn.execute(
        "SELECT pg_catalog.count(*) FROM pyaccess.api WHERE pg_catalog.to_regprocedure(signature) IS NULL"
    ).fetchone()
    assert row == (0,)
    # the writer can no longer rewrap or touch the registry: that is the rotator's alone
    rotator_only = (
        "pyaccess.rewrap(uuid[],bytea[],bytea[],bytea)",
        "pyaccess.register_key(bytea)",
        "pyaccess.retire_key(bytea)",
        "public.rewrap_provision_secrets(bytea[],uuid,integer)",
    )
    for function in rotator_only:
        row = conn.execute("SELECT grantees FROM pyaccess.api WHERE signature = %s", (function,)).fetchone()
        assert row == ([ROTATOR],), function


# Reading the encrypted column: the reader may since 0.2.0 (the contract allows it the ciphertext); no one else.
CIPHERTEXT_READS = (
    "SELECT provision_secret_ciphertext FROM public.ota_groups",
    "SELECT id, provision_secret_ciphertext FROM public.ota_groups",
    "SELECT pg_catalog.count(*) FROM public.ota_groups WHERE provision_secret_ciphertext IS NOT NULL",
)
# The rest of the table, the key registry, the list of functions and the private helpers: no login role.
DIRECT_ACCESS = (
    "SELECT * FROM public.ota_groups",
    "SELECT g FROM public.ota_groups AS g",
    "SELECT name FROM public.ota_groups",
    "UPDATE public.ota_groups SET provision_secret_ciphertext = NULL",
    "INSERT INTO public.ota_groups (name) VALUES ('planted')",
    "DELETE FROM public.ota_groups",
    "TRUNCATE public.ota_groups",
    "SELECT * FROM pyaccess.keys",
    "INSERT INTO pyaccess.keys (key_id, state) VALUES ('\\x0000000000000000'::bytea, 'active')",
    "UPDATE pyaccess.keys SET state = 'active'",
    "DELETE FROM pyaccess.keys",
    "UPDATE pyaccess.api SET grantees = '{}'",
    "DELETE FROM pyaccess.api",
    "CREATE FUNCTION pyaccess.planted() RETURNS integer LANGUAGE sql RETURN 1",
    "CREATE TABLE pyaccess.planted (x integer)",
    "SELECT * FROM pyaccess._rewrap('{}'::uuid[], '{}'::bytea[], '{}'::bytea[], '\\x00'::bytea)",
    "SELECT pyaccess._admit_key('\\x00'::bytea, gen_random_uuid())",
    "SELECT pyaccess._pair(2, '\\x00'::bytea, gen_random_uuid())",
    "SELECT pyaccess._ring(2, ARRAY['\\x00'::bytea], gen_random_uuid())",
    "SELECT pyaccess._key_id('\\x00'::bytea)",
    "SELECT pyaccess._body(2, '\\x00'::bytea, '\\x00'::bytea, '\\x00'::bytea, '\\x00'::bytea)",
    "SELECT pyaccess._random_iv()",
    "SELECT pyaccess._check_masters(ARRAY['\\x00'::bytea])",
    "SELECT pyaccess._as_text(gen_random_uuid(), '\\x00'::bytea)",
    "SELECT pyaccess._refuse_rewrap(gen_random_uuid(), '\\x00'::bytea)",
    "SELECT pyaccess._declare('pyaccess.release()', 'public')",
    "SELECT pyaccess._assert_api()",
)


def copy_out(conn: Conn, statement: str) -> list[bytes]:
    with conn.cursor().copy(statement) as copy:
        return [bytes(block) for block in copy]


def sql_calls(
    group_id: uuid.UUID, secret: str, key_file: Path, *, may_store: bool, may_read: bool, may_rotate: bool
) -> dict[str, tuple[str, tuple[Any, ...], bool]]:
    """Every function granted to some role, called in plain SQL: (query, parameters, whether the role may)."""
    ring = pyaccess.load_key_ring(key_file)
    material, key_id, pair = ring.current.material, ring.current.id_bytes, ring.current.pair(2, group_id)
    spare_key_id = os.urandom(8)
    any_role = may_store or may_read or may_rotate
    return {
        # the service API (schema pyaccess): per-group pairs only
        "guard": (queries.GUARD, (), any_role),
        "seal": ("SELECT pyaccess.seal(%s, %b, %b)", (group_id, secret.encode(), key_id + pair), may_store),
        "open": ("SELECT * FROM pyaccess.open(%s, %b, 2)", (group_id, key_id + pair), may_read),
        "census": ("SELECT * FROM pyaccess.census()", (), any_role),
        "log exposure": ("SELECT pyaccess.log_exposure()", (), any_role),
        "release": ("SELECT pyaccess.release()", (), any_role),
        "api drift": ("SELECT * FROM pyaccess.api_drift()", (), any_role),
        "escalation paths": ("SELECT * FROM pyaccess.escalation_paths()", (), any_role),
        "function list": ("SELECT * FROM pyaccess.api", (), any_role),
        "rewrap todo": ("SELECT * FROM pyaccess.rewrap_todo(%b, NULL, 10)", (key_id,), may_rotate),
        "rewrap": (
            "SELECT * FROM pyaccess.rewrap(ARRAY[%s]::uuid[], %b::bytea[], %b::bytea[], %b)",
            (group_id, [b"\x02" + key_id + pair], [pair], key_id),
            may_rotate,
        ),
        "register key": ("SELECT pyaccess.register_key(%b)", (spare_key_id,), may_rotate),
        "retire key": ("SELECT pyaccess.retire_key(%b)", (spare_key_id,), may_rotate),
        # the contract's functions (master keys: DBAs in psql) and 0.1.0's entry points
        "store": ("SELECT public.store_provision_secret(%s, %s, %b)", (group_id, secret, material), may_store),
        "get": ("SELECT public.get_provision_secret(%s, %b)", (group_id, material), may_read),
        "get ring": ("SELECT public.get_provision_secret(%s, %b::bytea[])", (group_id, [material]), may_read),
        "rewrap 0.1.0": ("SELECT * FROM public.rewrap_provision_secrets(%b::bytea[])", ([material],), may_rotate),
        "census 0.1.0": ("SELECT * FROM public.provision_secret_key_census()", (), any_role),
        "key id": ("SELECT public.provision_secret_key_id(%b)", (material,), any_role),
        "guard 0.1.0": ("SELECT public.provision_secret_session_guard()", (), may_read or may_store),
        "log exposure 0.1.0": ("SELECT public.provision_secret_log_exposure()", (), may_read or may_store),
    }


def assert_direct_access(rc: Conn, *, may_read: bool, canaries: Canaries) -> None:
    """Around the functions: a reader reads the ciphertext column (and nothing else), no role anything more."""
    for query in CIPHERTEXT_READS:
        if may_read:
            rc.execute(query).fetchall()
        else:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                rc.execute(query)
        rc.rollback()
    for query in DIRECT_ACCESS:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            rc.execute(query)
        rc.rollback()
    if may_read:
        blocks = copy_out(rc, "COPY public.ota_groups (id, provision_secret_ciphertext) TO STDOUT")
        assert canaries.found_in(b"".join(blocks).decode("ascii", "replace")) == []
    else:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            copy_out(rc, "COPY public.ota_groups (provision_secret_ciphertext) TO STDOUT")
    rc.rollback()
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        copy_out(rc, "COPY public.ota_groups TO STDOUT")
    rc.rollback()


@pytest.mark.parametrize("autocommit", [True, False], ids=["autocommit", "in-transaction"])
@pytest.mark.parametrize("membership", list(MEMBERSHIPS))
def test_privilege_matrix__through_real_login_roles(
    db: str, conn: Conn, login_role: Callable[..., str], key_file: Path, *, membership: str, autocommit: bool
) -> None:
    groups = MEMBERSHIPS[membership]
    may_store, may_read, may_rotate = WRITER in groups, READER in groups, ROTATOR in groups
    owner_secret, role_secret = canary("owner-secret"), canary("role-secret")
    gid = new_group(conn)
    canaries = key_canaries([key_file], [gid]) + Canaries(secrets=(owner_secret, role_secret))
    pyaccess.store_provision_secret(conn, gid, owner_secret, key_file=key_file)
    conn.commit()
    role = login_role(*groups)

    with connect_as(db, role, autocommit=autocommit) as rc:
        if not autocommit:
            rc.execute("SELECT 1")  # the caller's transaction is open: the guard rides in the pipeline
        if may_store:
            pyaccess.store_provision_secret(rc, gid, role_secret, key_file=key_file)
        else:
            with raises_clean(pyaccess.AccessDeniedError, canaries):
                pyaccess.store_provision_secret(rc, gid, role_secret, key_file=key_file)
            rc.rollback()
        if not autocommit:
            rc.commit()
            rc.execute("SELECT 1")
        expected = role_secret if may_store else owner_secret
        if may_read:
            assert pyaccess.get_provision_secret(rc, gid, key_file=key_file) == expected
        else:
            with raises_clean(pyaccess.AccessDeniedError, canaries):
                pyaccess.get_provision_secret(rc, gid, key_file=key_file)
        rc.rollback()
        # The same, in plain SQL: the functions themselves are what is granted. The session is guarded
        # first, in a transaction of its own, so that the service functions answer with privileges only.
        if groups:
            rc.execute(queries.GUARD)
            rc.commit()
        calls = sql_calls(gid, role_secret, key_file, may_store=may_store, may_read=may_read, may_rotate=may_rotate)
        for name, (query, params, allowed) in calls.items():
            if allowed:
                rc.execute(query, params).fetchall()
            else:
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    rc.execute(query, params)
                rc.rollback()
            assert rc.info.transaction_status != pq.TransactionStatus.INERROR, name
        rc.rollback()
        assert_direct_access(rc, may_read=may_read, canaries=canaries)

    assert owner_read(db, gid, key_file) == expected


@pytest.mark.parametrize("membership", ["writer", "rotator"])
def test_column_grants_on_other_columns__still_hide_the_ciphertext(
    db: str, conn: Conn, login_role: Callable[..., str], key_file: Path, membership: str
) -> None:
    """A service that needs id and name gets column privileges: the ciphertext stays out of reach.

    Since 0.2.0 a reader may read the ciphertext column anyway; the writer and the rotator never may.
    """
    gid = new_group(conn)
    pyaccess.store_provision_secret(conn, gid, canary("secret"), key_file=key_file)
    conn.commit()
    role = login_role(*MEMBERSHIPS[membership])
    conn.execute(sql.SQL("GRANT SELECT (id, name, created_at) ON public.ota_groups TO {}").format(sql.Identifier(role)))
    conn.commit()
    with connect_as(db, role) as rc:
        assert rc.execute("SELECT id, name FROM public.ota_groups WHERE id = %s", (gid,)).fetchone() is not None
        for query in (*CIPHERTEXT_READS, *DIRECT_ACCESS[:2]):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                rc.execute(query)
    exit_code, checks = doctor_json(user_dsn(db, role, ROLE_PASSWORD), key_file)
    assert checks["role"]["status"] == "ok", checks["role"]
    assert exit_code == 0, checks


def test_table_level_select_granted_by_a_dba__reads_the_ciphertext_and_doctor_warns(
    db: str, conn: Conn, login_role: Callable[..., str], key_file: Path
) -> None:
    """Documented, not hidden: a table-level SELECT includes the column (useless without the key).

    Since 0.2.0 the reader holds the column anyway; the writer must never read it, so a writer granted
    the whole table by a DBA is what doctor must point out.
    """
    secret = canary("secret")
    gid = new_group(conn)
    pyaccess.store_provision_secret(conn, gid, secret, key_file=key_file)
    conn.commit()
    role = login_role(WRITER)
    conn.execute(sql.SQL("GRANT SELECT ON public.ota_groups TO {}").format(sql.Identifier(role)))
    conn.commit()
    with connect_as(db, role) as rc:
        row = rc.execute("SELECT provision_secret_ciphertext FROM public.ota_groups WHERE id = %s", (gid,)).fetchone()
    assert row is not None
    assert isinstance(row[0], bytes)
    assert secret.encode() not in row[0]
    _, checks = doctor_json(user_dsn(db, role, ROLE_PASSWORD), key_file)
    assert checks["role"]["status"] == "warning", checks["role"]
    assert "ciphertext" in checks["role"]["detail"]


# =========================================================================== the search_path attack

Lookalike = tuple[str, str, str, str]  # name, argument types, result type, what it hands over to
_LOOKALIKE = re.compile(r"(?P<name>[^(]+)\((?P<args>[^)]*)\) RETURNS (?P<returns>.+?) = (?P<body>.+)")


def lookalikes(*signatures: str) -> tuple[Lookalike, ...]:
    """Each ``name(argument types) RETURNS result type = what it hands over to``, split into its four parts."""
    parts = []
    for signature in signatures:
        match = _LOOKALIKE.fullmatch(signature)
        assert match is not None, f"not a look-alike: {signature}"
        parts.append((match["name"], match["args"], match["returns"], match["body"]))
    return tuple(parts)


# The attacker's look-alikes, one a line: name(argument types) RETURNS result type = what it hands over to.
# Each records that it ran, as whom, and what it saw, both in evil.calls and as a
# WARNING (which reaches the client even when the statement is rolled back).
# First the built-ins that pyaccess's SQL calls (pgcrypto and pg_catalog), then the operators' functions.
LOOKALIKES = lookalikes(
    "hmac(bytea, bytea, text) RETURNS bytea = @ext@.hmac($1, $2, $3)",
    "hmac(text, text, text) RETURNS bytea = @ext@.hmac($1, $2, $3)",
    "encrypt_iv(bytea, bytea, bytea, text) RETURNS bytea = @ext@.encrypt_iv($1, $2, $3, $4)",
    "decrypt_iv(bytea, bytea, bytea, text) RETURNS bytea = @ext@.decrypt_iv($1, $2, $3, $4)",
    "digest(bytea, text) RETURNS bytea = @ext@.digest($1, $2)",
    "digest(text, text) RETURNS bytea = @ext@.digest($1, $2)",
    "gen_random_bytes(integer) RETURNS bytea = @ext@.gen_random_bytes($1)",
    "convert_from(bytea, name) RETURNS text = pg_catalog.convert_from($1, $2)",
    "convert_to(text, name) RETURNS bytea = pg_catalog.convert_to($1, $2)",
    "substr(bytea, integer, integer) RETURNS bytea = pg_catalog.substr($1, $2, $3)",
    "substr(bytea, integer) RETURNS bytea = pg_catalog.substr($1, $2)",
    "encode(bytea, text) RETURNS text = pg_catalog.encode($1, $2)",
    "decode(text, text) RETURNS bytea = pg_catalog.decode($1, $2)",
    "octet_length(bytea) RETURNS integer = pg_catalog.octet_length($1)",
    "octet_length(text) RETURNS integer = pg_catalog.octet_length($1)",
    "uuid_send(uuid) RETURNS bytea = pg_catalog.uuid_send($1)",
    "get_byte(bytea, integer) RETURNS integer = pg_catalog.get_byte($1, $2)",
    "set_config(text, text, boolean) RETURNS text = pg_catalog.set_config($1, $2, $3)",
    "current_setting(text) RETURNS text = pg_catalog.current_setting($1)",
    "current_setting(text, boolean) RETURNS text = pg_catalog.current_setting($1, $2)",
    "has_parameter_privilege(text, text) RETURNS boolean = pg_catalog.has_parameter_privilege($1, $2)",
    "format(text, uuid) RETURNS text = pg_catalog.format($1, $2)",
    "format(text, uuid, text, text) RETURNS text = pg_catalog.format($1, $2, $3, $4)",
    "format(text, text) RETURNS text = pg_catalog.format($1, $2)",
    "array_to_string(text[], text) RETURNS text = pg_catalog.array_to_string($1, $2)",
    "cardinality(bytea[]) RETURNS integer = pg_catalog.cardinality($1)",
    "cardinality(text[]) RETURNS integer = pg_catalog.cardinality($1)",
    "array_length(bytea[], integer) RETURNS integer = pg_catalog.array_length($1, $2)",
    "count(bytea) RETURNS bigint = 1",
    "set_byte(bytea, integer, integer) RETURNS bytea = pg_catalog.set_byte($1, $2, $3)",
    "array_position(bytea[], bytea) RETURNS integer = pg_catalog.array_position($1, $2)",
    "array_ndims(bytea[]) RETURNS integer = pg_catalog.array_ndims($1)",
    "array_lower(bytea[], integer) RETURNS integer = pg_catalog.array_lower($1, $2)",
    "string_to_array(text, text) RETURNS text[] = pg_catalog.string_to_array($1, $2)",
    "getdatabaseencoding() RETURNS name = pg_catalog.getdatabaseencoding()",
    "pg_conf_load_time() RETURNS timestamp with time zone = pg_catalog.pg_conf_load_time()",
    "clock_timestamp() RETURNS timestamp with time zone = pg_catalog.clock_timestamp()",
    "now() RETURNS timestamp with time zone = pg_catalog.now()",
    "pg_backend_pid() RETURNS integer = pg_catalog.pg_backend_pid()",
    "inet_client_addr() RETURNS inet = pg_catalog.inet_client_addr()",
    "json_strip_nulls(json) RETURNS json = pg_catalog.json_strip_nulls($1)",
    "md5(text) RETURNS text = pg_catalog.md5($1)",
    "to_regprocedure(text) RETURNS regprocedure = pg_catalog.to_regprocedure($1)",
    "pg_has_role(oid, name, text) RETURNS boolean = true",  # would make every role trusted
    # the functions behind the planted operators below
    "op_byteacat(bytea, bytea) RETURNS bytea = pg_catalog.byteacat($1, $2)",
    "op_byteaeq(bytea, bytea) RETURNS boolean = pg_catalog.byteaeq($1, $2)",
    "op_byteane(bytea, bytea) RETURNS boolean = false",  # would make every tag check pass
    "op_textcat(text, text) RETURNS text = pg_catalog.textcat($1, $2)",
    "op_texteq(text, text) RETURNS boolean = pg_catalog.texteq($1, $2)",
    "op_textarraycat(text[], text) RETURNS text[] = pg_catalog.array_append($1, $2)",
    "op_int4ne(integer, integer) RETURNS boolean = pg_catalog.int4ne($1, $2)",
    "op_int4lt(integer, integer) RETURNS boolean = pg_catalog.int4lt($1, $2)",
    "op_int4ge(integer, integer) RETURNS boolean = pg_catalog.int4ge($1, $2)",
    "op_int4mod(integer, integer) RETURNS integer = pg_catalog.int4mod($1, $2)",
    "op_int4mi(integer, integer) RETURNS integer = pg_catalog.int4mi($1, $2)",
    "op_float8gt(double precision, double precision) RETURNS boolean = pg_catalog.float8gt($1, $2)",
    "op_int4eq(integer, integer) RETURNS boolean = pg_catalog.int4eq($1, $2)",
    "op_int4le(integer, integer) RETURNS boolean = pg_catalog.int4le($1, $2)",
    "op_int4pl(integer, integer) RETURNS integer = pg_catalog.int4pl($1, $2)",
    "op_int4mul(integer, integer) RETURNS integer = pg_catalog.int4mul($1, $2)",
    "op_int4div(integer, integer) RETURNS integer = pg_catalog.int4div($1, $2)",
    "op_int4arraylt(integer[], integer[]) RETURNS boolean = false",  # would pass the release check
    "op_uuideq(uuid, uuid) RETURNS boolean = pg_catalog.uuid_eq($1, $2)",
    "op_uuidgt(uuid, uuid) RETURNS boolean = pg_catalog.uuid_gt($1, $2)",
    "op_textne(text, text) RETURNS boolean = pg_catalog.textne($1, $2)",
)
# Look-alikes of pyaccess's own functions (0.1.0 kept its helpers in public; 0.2.0 keeps them in schema
# pyaccess), each with the real one's arguments: the attacker hopes for an unqualified call.
HELPER_LOOKALIKES = lookalikes(
    "guard(text) RETURNS void = pyaccess.guard($1)",
    "guard_session() RETURNS void = NULL",  # would never turn parameter logging off
    "log_exposure() RETURNS text[] = '{}'::text[]",  # would hide every logging setting
    "_guarded() RETURNS boolean = true",  # would let unguarded sessions through
    "_refuse_unguarded() RETURNS boolean = true",
    "release() RETURNS text = '99.0.0'",  # would pass the release check
    "seal(uuid, bytea, bytea) RETURNS void = pyaccess.seal($1, $2, $3)",
    "open(uuid, bytea, integer) RETURNS TABLE (version integer, secret bytea) = pyaccess.open($1, $2, $3)",
    "_open(uuid, bytea, integer) RETURNS TABLE (version integer, secret bytea) = pyaccess._open($1, $2, $3)",
    "_seal(uuid, bytea, bytea) RETURNS void = NULL",
    "_admit_key(bytea, uuid) RETURNS void = NULL",  # would admit any key id
    "_check_masters(bytea[]) RETURNS void = NULL",
    "_random_iv() RETURNS bytea = pg_catalog.decode(pg_catalog.repeat('00', 16), 'hex')",  # an all-zero IV
    "_key_id(bytea) RETURNS bytea = pg_catalog.substr(pg_catalog.sha256($1), 1, 8)",
    "_pair(integer, bytea, uuid) RETURNS bytea = pg_catalog.sha512($2)",
    "_ring(integer, bytea[], uuid) RETURNS bytea = NULL",
    "_ring_ok(bytea) RETURNS boolean = true",
    "_pick(bytea, bytea) RETURNS bytea = pyaccess._pick($1, $2)",
    "_envelope_key_id(bytea) RETURNS bytea = pyaccess._envelope_key_id($1)",
    "_envelope_version(bytea) RETURNS integer = pyaccess._envelope_version($1)",
    "_body(integer, bytea, bytea, bytea, bytea) RETURNS bytea = $5",  # would store the plaintext
    "_tag(uuid, bytea, bytea) RETURNS bytea = pyaccess._tag($1, $2, $3)",
    "_authentic(uuid, bytea, bytea) RETURNS boolean = true",  # would accept any envelope
    "_plaintext(bytea, bytea) RETURNS bytea = pyaccess._plaintext($1, $2)",
    "_refuse_open(uuid, bytea, bytea, integer) RETURNS bytea = NULL",  # would turn refusals into NULLs
    "refuse_missing_group(uuid) RETURNS void = NULL",  # would turn "no such group" into an empty read
    "_fail(text, text, uuid, bytea, text, text) RETURNS bytea = NULL",
    "_audit(text, text, uuid, bytea, text) RETURNS void = NULL",
    "_read_recorded(uuid, bytea) RETURNS boolean = true",
    "_as_text(uuid, bytea) RETURNS text = pg_catalog.convert_from($2, 'UTF8')",
    "_trusted(oid) RETURNS boolean = true",
    "_rewrap(uuid[], bytea[], bytea[], bytea) RETURNS TABLE (group_id uuid, old_key_id text, old_version integer)"
    " = pyaccess.rewrap($1, $2, $3, $4)",
    "census() RETURNS TABLE (key_id text, version integer, state text, secrets bigint) = pyaccess.census()",
    "register_key(bytea) RETURNS text = pyaccess.register_key($1)",
    "retire_key(bytea) RETURNS void = NULL",
)
# Overloads with a DEFAULT argument: a call that names the function without all its arguments becomes
# ambiguous ("function ... is not unique"), a denial of service of whatever calls it that way (issue 11).
DOS_OVERLOADS = lookalikes(
    "provision_secret_session_guard(integer DEFAULT 0) RETURNS void = NULL",
    "_provision_secret_check_keys(bytea[], integer DEFAULT 0) RETURNS void = NULL",
    "guard(text, integer DEFAULT 0) RETURNS void = NULL",
    "seal(uuid, bytea, bytea, integer DEFAULT 0) RETURNS void = NULL",
    "open(uuid, bytea, integer, integer DEFAULT 0) RETURNS TABLE (version integer, secret bytea)"
    " = pyaccess.open($1, $2, $3)",
    "_guarded(integer DEFAULT 0) RETURNS boolean = true",
)
# The planted operators, by the look-alike function behind each: its argument types are the operands.
OPERATORS: dict[str, str] = {
    "op_byteacat": "||",
    "op_byteaeq": "=",
    "op_byteane": "<>",
    "op_textcat": "||",
    "op_texteq": "=",
    "op_textarraycat": "||",
    "op_int4ne": "<>",
    "op_int4lt": "<",
    "op_int4ge": ">=",
    "op_int4mod": "%",
    "op_int4mi": "-",
    "op_float8gt": ">",
    "op_int4eq": "=",
    "op_int4le": "<=",
    "op_int4pl": "+",
    "op_int4mul": "*",
    "op_int4div": "/",
    "op_int4arraylt": "<",
    "op_uuideq": "=",
    "op_uuidgt": ">",
    "op_textne": "<>",
}

PLANT_SCHEMA = """
CREATE SCHEMA evil;
GRANT USAGE ON SCHEMA evil TO PUBLIC;
CREATE TABLE evil.calls (name text, who text, loot text);
GRANT INSERT, SELECT ON evil.calls TO PUBLIC;
CREATE FUNCTION evil.rec(p_name text, p_loot text) RETURNS void LANGUAGE plpgsql AS $f$
BEGIN
    INSERT INTO evil.calls VALUES (p_name, current_user, p_loot);
    RAISE WARNING 'evil ran: %', p_name;
END
$f$;
"""

# One plpgsql look-alike per row: record, then hand over to the real thing.
PLANT_FUNCTION = """
DO $do$
DECLARE
    v_ext text := (SELECT pg_catalog.quote_ident(n.nspname) FROM pg_catalog.pg_extension AS e
                   JOIN pg_catalog.pg_namespace AS n ON n.oid = e.extnamespace WHERE e.extname = 'pgcrypto');
    v_args text := {args};
    v_dollars text := '''''';
BEGIN
    IF v_args <> '' THEN
        SELECT pg_catalog.string_agg('$' || i, ', ') INTO v_dollars
          FROM pg_catalog.generate_series(1, pg_catalog.array_length(pg_catalog.string_to_array(v_args, ','), 1)) AS i;
    END IF;
    EXECUTE pg_catalog.format(
        'CREATE FUNCTION %s.%I(%s) RETURNS %s LANGUAGE plpgsql AS %L',
        {schema}, {name}, v_args, {returns},
        pg_catalog.format('BEGIN PERFORM evil.rec(%L, pg_catalog.concat_ws('' '', %s)); %s END',
                          {schema} || '.' || {name} || '(' || v_args || ')', v_dollars,
                          pg_catalog.replace({handover}, '@ext@', v_ext)));
END
$do$
"""


def plant_function(conn: Conn, schema: str, lookalike: Lookalike) -> None:
    name, args, returns, body = lookalike
    if returns == "void":
        handover = f"PERFORM {body}; RETURN;"
    elif returns.startswith("TABLE"):
        handover = f"RETURN QUERY SELECT * FROM {body};"  # noqa: S608 - the test's own constants
    else:
        handover = f"RETURN {body};"
    values = {"name": name, "args": args, "returns": returns, "handover": handover, "schema": schema}
    conn.execute(sql.SQL(PLANT_FUNCTION).format(**{k: sql.Literal(v) for k, v in values.items()}))


def plant_lookalikes(attacker: Conn, schema: str = "evil") -> None:
    for lookalike in (*LOOKALIKES, *HELPER_LOOKALIKES):
        plant_function(attacker, schema, lookalike)
    operands = {name: args.split(", ") for name, args, _, _ in LOOKALIKES}
    for function, op in OPERATORS.items():
        left, right = operands[function]
        attacker.execute(
            sql.SQL("CREATE OPERATOR evil.{} (LEFTARG = {}, RIGHTARG = {}, FUNCTION = evil.{})").format(
                sql.SQL(op), sql.SQL(left), sql.SQL(right), sql.Identifier(function)
            )
        )


def plant_in_pg_temp(attacker: Conn, group_id: uuid.UUID, key_ids: Sequence[bytes]) -> None:
    """Session-local decoys: a temp ota_groups shadowing the real one, a temp key registry in which every
    key id is active (the retired one too), a temp list of functions, and temp look-alikes."""
    attacker.execute(
        "CREATE TEMP TABLE ota_groups (id uuid PRIMARY KEY, name text, created_at timestamptz,"
        " provision_secret_ciphertext bytea)"
    )
    attacker.execute("INSERT INTO pg_temp.ota_groups VALUES (%s, 'decoy', now(), '\\x01deadbeef'::bytea)", (group_id,))
    attacker.execute(
        "CREATE TEMP TABLE keys (key_id bytea PRIMARY KEY, state text, registered_at timestamptz DEFAULT now(),"
        " registered_by text DEFAULT session_user, retired_at timestamptz)"
    )
    for key_id in key_ids:
        attacker.execute("INSERT INTO pg_temp.keys (key_id, state) VALUES (%b, 'active')", (key_id,))
    attacker.execute("CREATE TEMP TABLE api (LIKE pyaccess.api)")
    for lookalike in (*LOOKALIKES[:12], *HELPER_LOOKALIKES):
        plant_function(attacker, "pg_temp", lookalike)


def ring_file(path: Path, current: Path, *previous: Path) -> Path:
    path.write_text(json.dumps({"key": key_hex(current), "previous_keys": [key_hex(p) for p in previous]}))
    return path


def evil_calls(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as admin:
        return admin.execute("SELECT name, who FROM evil.calls").fetchall()


def exercise_every_function(
    db: str,
    attacker: Conn,
    *,
    key_file: Path,
    old_key_file: Path,
    tmp_path: Path,
    canaries: Canaries,
    legacy_guard: bool = True,
) -> dict[uuid.UUID, str]:
    """Every SECURITY DEFINER function and every error path, as the attacker (reader, writer and rotator),
    through pyaccess and plain SQL. ``legacy_guard=False`` leaves out the plain call of 0.1.0's
    ``public.provision_secret_session_guard()``, for a database where an overload made it ambiguous.

    Returns what each group must hold afterwards.
    """
    expected: dict[uuid.UUID, str] = {}
    with psycopg.connect(db) as admin:
        g_auto, g_tx, g_sql, g_old, g_legacy, g_empty, g_tampered = (new_group(admin) for _ in range(7))
        expected[g_old] = canary("old-key-secret")
        # the first store of a new installation registers its key
        pyaccess.store_provision_secret(admin, g_old, expected[g_old], key_file=old_key_file)
        admin.commit()
    nowhere = uuid.uuid4()
    unknown_key_file = write_new_key_file(tmp_path / "unknown-key.json")
    key_files = [key_file, old_key_file, unknown_key_file]
    groups = [g_auto, g_tx, g_sql, g_old, g_legacy, g_empty, g_tampered, nowhere]
    canaries += key_canaries(key_files, groups)

    # the rotator registers the new key before the pods get it
    assert register_key(attacker, key_file=key_file) == "registered"

    # pyaccess, autocommit: the session guard, then the call
    expected[g_auto] = canary("auto")
    pyaccess.store_provision_secret(attacker, g_auto, expected[g_auto], key_file=key_file)
    assert pyaccess.get_provision_secret(attacker, g_auto, key_file=key_file) == expected[g_auto]

    # pyaccess inside the caller's transaction, on a session not guarded yet: the guard pipelined with the call
    expected[g_tx] = canary("in-transaction")
    execution.forget(attacker)
    with attacker.transaction():
        pyaccess.store_provision_secret(attacker, g_tx, expected[g_tx], key_file=key_file)
        assert pyaccess.get_provision_secret(attacker, g_tx, key_file=key_file) == expected[g_tx]
        assert attacker not in execution._sessions_guarded

    # plain SQL, unqualified casts on the attacker's search_path: the contract's functions (master key) ...
    material, old_material = bytes.fromhex(key_hex(key_file)), bytes.fromhex(key_hex(old_key_file))
    key_id, old_key_id = key_id_bytes(key_file), key_id_bytes(old_key_file)
    expected[g_sql] = canary("plain-sql")
    attacker.execute("SELECT public.store_provision_secret(%s, %s, %b)", (g_sql, expected[g_sql], material))
    assert attacker.execute("SELECT public.get_provision_secret(%s, %b)", (g_sql, material)).fetchone() == (
        expected[g_sql],
    )
    row = attacker.execute("SELECT public.get_provision_secret(%s, %b::bytea[])", (g_sql, [material])).fetchone()
    assert row == (expected[g_sql],)
    attacker.execute("SELECT public.provision_secret_key_id(%b)", (material,)).fetchone()
    attacker.execute("SELECT public.provision_secret_log_exposure()").fetchone()
    attacker.execute("SELECT * FROM public.provision_secret_key_census()").fetchall()
    if legacy_guard:
        attacker.execute("SELECT public.provision_secret_session_guard()").fetchone()
    # ... and the service API (the group's pair only)
    pair = pyaccess.Key(material).pair(2, g_sql)
    attacker.execute(queries.GUARD)
    attacker.execute("SELECT pyaccess.seal(%s, %b, %b)", (g_sql, expected[g_sql].encode(), key_id + pair))
    row = attacker.execute("SELECT version, secret FROM pyaccess.open(%s, %b, 2)", (g_sql, key_id + pair)).fetchone()
    assert row == (2, expected[g_sql].encode())
    for query in (
        "SELECT pyaccess.log_exposure()",
        "SELECT pyaccess.release()",
        "SELECT * FROM pyaccess.census()",
        "SELECT * FROM pyaccess.api_drift()",
        "SELECT * FROM pyaccess.escalation_paths()",
    ):
        attacker.execute(query).fetchall()

    # the census and a rotation (rewrap: open with the old key's pair, seal with the new key's)
    ring = ring_file(tmp_path / "ring.json", key_file, old_key_file)
    assert {e.in_key_file for e in key_census(attacker, key_file=ring)} == {"current", "previous"}
    report = rotate(attacker, key_file=ring)
    assert (report.reencrypted, report.registered) == (1, False)
    assert pyaccess.get_provision_secret(attacker, g_old, key_file=key_file) == expected[g_old]
    # 0.1.0's rewrap, with master keys, for the rotator in psql
    expected[g_legacy] = canary("legacy-rewrap")
    pyaccess.store_provision_secret(attacker, g_legacy, expected[g_legacy], key_file=old_key_file)
    rows = attacker.execute(
        "SELECT group_id FROM public.rewrap_provision_secrets(%b::bytea[])", ([material, old_material],)
    ).fetchall()
    assert rows == [(g_legacy,)]
    # the old key retired: reads only; no store and no rotation may use it
    retire_key(attacker, old_key_id.hex())
    assert pyaccess.get_provision_secret(attacker, g_legacy, key_file=key_file) == expected[g_legacy]

    # every error path of the functions
    with raises_clean(pyaccess.WrongKeyError, canaries):
        pyaccess.get_provision_secret(attacker, g_auto, key_file=old_key_file)
    with raises_clean(pyaccess.GroupNotFoundError, canaries):
        pyaccess.get_provision_secret(attacker, nowhere, key_file=key_file)
    with raises_clean(pyaccess.GroupNotFoundError, canaries):
        pyaccess.store_provision_secret(attacker, nowhere, canary("nowhere"), key_file=key_file)
    with raises_clean(pyaccess.SecretNotFoundError, canaries):
        pyaccess.get_provision_secret(attacker, g_empty, key_file=key_file)
    with raises_clean(pyaccess.InvalidSecretError, canaries):
        pyaccess.store_provision_secret(attacker, g_empty, "", key_file=key_file)
    with raises_clean(pyaccess.InvalidSecretError, canaries):
        pyaccess.store_provision_secret(attacker, g_empty, "x" * 4097, key_file=key_file)
    with raises_clean(pyaccess.KeyNotActiveError, canaries):  # a stale pod, still on the retired key
        pyaccess.store_provision_secret(attacker, g_empty, canary("stale"), key_file=old_key_file)
    with raises_clean(pyaccess.KeyNotActiveError, canaries):  # a wrong key file: a key never registered
        pyaccess.store_provision_secret(attacker, g_empty, canary("unknown"), key_file=unknown_key_file)
    empty_pair = pyaccess.Key(material).pair(2, g_empty)
    refusals: dict[str, list[tuple[str, tuple[Any, ...]]]] = {
        "PA001": [
            ("SELECT public.get_provision_secret(%s, %b)", (g_auto, material[:31])),
            ("SELECT * FROM pyaccess.open(%s, %b, 2)", (g_auto, (key_id + pair)[:71])),
            ("SELECT pyaccess.seal(%s, %b, %b)", (g_empty, b"secret", (key_id + empty_pair)[:71])),
        ],
        "PA002": [
            ("SELECT pyaccess.seal(%s, %b, %b)", (g_empty, b"", key_id + empty_pair)),
            ("SELECT public.store_provision_secret(%s, %s, %b)", (g_empty, "", material)),
        ],
        "PA008": [  # rotation targets only an active key: no rewrap back under the retired one
            (
                "SELECT * FROM pyaccess.rewrap(ARRAY[%s]::uuid[], %b::bytea[], %b::bytea[], %b)",
                (
                    g_auto,
                    [b"\x02" + key_id + pyaccess.Key(material).pair(2, g_auto)],
                    [pyaccess.Key(old_material).pair(2, g_auto)],
                    old_key_id,
                ),
            ),
        ],
    }
    for sqlstate, calls in refusals.items():
        for query, params in calls:
            with pytest.raises(psycopg.Error) as info:
                attacker.execute(query, params)
            assert info.value.sqlstate == sqlstate, query
            assert_clean(info.value, canaries)
    # RESET ALL (a pool's reset hook) drops the guard: the server refuses until the session is guarded again
    path = attacker.execute("SHOW search_path").fetchone()
    attacker.execute("RESET ALL")
    attacker.execute("SELECT pg_catalog.set_config('search_path', %s, false)", path)
    with pytest.raises(psycopg.Error) as info:
        attacker.execute("SELECT * FROM pyaccess.open(%s, %b, 2)", (g_sql, key_id + pair))
    assert info.value.sqlstate == "PA007"
    with raises_clean(pyaccess.ParameterLoggingError, canaries):
        pyaccess.get_provision_secret(attacker, g_sql, key_file=key_file)
    assert pyaccess.get_provision_secret(attacker, g_sql, key_file=key_file) == expected[g_sql]
    with psycopg.connect(db, autocommit=True) as admin:
        expected[g_tampered] = canary("tampered")
        pyaccess.store_provision_secret(admin, g_tampered, expected[g_tampered], key_file=key_file)
        admin.execute(
            "UPDATE public.ota_groups SET provision_secret_ciphertext = pg_catalog.set_byte("
            "provision_secret_ciphertext, 30, pg_catalog.get_byte(provision_secret_ciphertext, 30) # 1) WHERE id = %s",
            (g_tampered,),
        )
    with raises_clean(pyaccess.SecretIntegrityError, canaries):
        pyaccess.get_provision_secret(attacker, g_tampered, key_file=key_file)
    del expected[g_tampered]
    return expected


@pytest.fixture
def attacker_role(db: str, login_role: Callable[..., str]) -> str:
    """A low-privileged login role: reader, writer and rotator, and CREATE on the database for its own schema."""
    role = login_role(WRITER, READER, ROTATOR, prefix="pyaccess_evil")
    with psycopg.connect(db, autocommit=True) as admin:
        admin.execute(
            sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
                sql.Identifier(str(admin.info.dbname)), sql.Identifier(role)
            )
        )
    return role


# pg_catalog is searched first unless the path names it: the last variant puts the look-alikes before it.
@pytest.mark.parametrize("search_path", ["evil, public", "pg_temp, evil, public", "evil, pg_catalog, public"])
def test_search_path_attack__planted_lookalikes_never_run(
    db: str,
    attacker_role: str,
    key_file: Path,
    other_key_file: Path,
    tmp_path: Path,
    *,
    search_path: str,
) -> None:
    canaries = Canaries((key_hex(key_file), key_hex(other_key_file)))
    warnings_seen: list[str] = []
    with connect_as(db, attacker_role) as attacker:
        attacker.add_notice_handler(lambda diag: warnings_seen.append(str(diag.message_primary)))
        attacker.execute(PLANT_SCHEMA)
        plant_lookalikes(attacker)
        with psycopg.connect(db) as admin:
            decoy_group = new_group(admin)
        plant_in_pg_temp(attacker, decoy_group, [key_id_bytes(key_file), key_id_bytes(other_key_file)])
        # sanity: the planted objects are live and do run when the attacker's own SQL resolves to them
        attacker.execute("SELECT evil.hmac('\\x00'::bytea, '\\x00'::bytea, 'sha256')")
        assert warnings_seen == ["evil ran: evil.hmac(bytea, bytea, text)"]
        attacker.execute("DELETE FROM evil.calls")
        warnings_seen.clear()

        attacker.execute(sql.SQL("SET search_path = {}").format(sql.SQL(search_path)))
        # the control: on this path an unqualified call of a pyaccess helper's name reaches the look-alike
        attacker.execute("SELECT _guarded()")
        assert warnings_seen == ["evil ran: evil._guarded()"]
        attacker.execute("DELETE FROM evil.calls")
        warnings_seen.clear()
        expected = exercise_every_function(
            db, attacker, key_file=key_file, old_key_file=other_key_file, tmp_path=tmp_path, canaries=canaries
        )

        # pg_temp: the decoy row is untouched and the real row got the secret
        expected[decoy_group] = canary("decoy")
        pyaccess.store_provision_secret(attacker, decoy_group, expected[decoy_group], key_file=key_file)
        assert pyaccess.get_provision_secret(attacker, decoy_group, key_file=key_file) == expected[decoy_group]
        row = attacker.execute("SELECT provision_secret_ciphertext FROM pg_temp.ota_groups").fetchone()
        assert row == (bytes.fromhex("01deadbeef"),)

    assert warnings_seen == []
    assert evil_calls(db) == []
    for group_id, secret in expected.items():
        assert owner_read(db, group_id, key_file) == secret


def test_search_path_attack__overloads_planted_in_public__never_run(
    db: str, attacker_role: str, key_file: Path, other_key_file: Path, tmp_path: Path
) -> None:
    """Worse than the brief: a pre-15-style public schema the attacker may CREATE in, holding pgcrypto.

    The functions call ``public.hmac(..., 'sha256')`` with an unknown-typed
    literal: the attacker plants overloads taking other string types (and
    other integer types for gen_random_bytes) hoping to be the better match;
    look-alikes of pyaccess's helpers, which 0.1.0 kept in public; and
    overloads with a DEFAULT argument, which make a call ambiguous (issue 11:
    every call failed with "function is not unique"). The library calls only
    schema pyaccess, where no one else creates, so none of it matters to it;
    ``pyaccess doctor`` names what was planted.
    """
    with psycopg.connect(db, autocommit=True) as admin:
        admin.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(attacker_role)))
    canaries = Canaries((key_hex(key_file), key_hex(other_key_file)))
    warnings_seen: list[str] = []
    with connect_as(db, attacker_role) as attacker:
        attacker.add_notice_handler(lambda diag: warnings_seen.append(str(diag.message_primary)))
        attacker.execute(PLANT_SCHEMA)
        overloads = []
        for string_type in ("varchar", "name", '"char"', "bpchar", "anyelement"):
            overloads += [
                ("hmac", f"bytea, bytea, {string_type}", "bytea", "@ext@.hmac($1, $2, $3::text)"),
                (
                    "encrypt_iv",
                    f"bytea, bytea, bytea, {string_type}",
                    "bytea",
                    "@ext@.encrypt_iv($1, $2, $3, $4::text)",
                ),
                (
                    "decrypt_iv",
                    f"bytea, bytea, bytea, {string_type}",
                    "bytea",
                    "@ext@.decrypt_iv($1, $2, $3, $4::text)",
                ),
            ]
        for int_type in ("smallint", "bigint", "numeric", "double precision"):
            overloads.append(("gen_random_bytes", int_type, "bytea", "@ext@.gen_random_bytes($1::integer)"))
        overloads += [*HELPER_LOOKALIKES, *DOS_OVERLOADS]
        for overload in overloads:
            plant_function(attacker, "public", overload)
        row = attacker.execute(
            "SELECT pg_catalog.count(*) FROM pg_catalog.pg_proc WHERE pronamespace = 'public'::regnamespace"
            " AND proowner = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user)"
        ).fetchone()
        assert row == (len(overloads),)  # all planted
        # the control: an overload with a DEFAULT argument does deny a call that resolves the name in public
        with pytest.raises(psycopg.errors.AmbiguousFunction):
            attacker.execute("SELECT public.provision_secret_session_guard()")
        expected = exercise_every_function(
            db,
            attacker,
            key_file=key_file,
            old_key_file=other_key_file,
            tmp_path=tmp_path,
            canaries=canaries,
            legacy_guard=False,
        )
    assert warnings_seen == []
    assert evil_calls(db) == []
    for group_id, secret in expected.items():
        assert owner_read(db, group_id, key_file) == secret

    # doctor, as the attacker's own service role, names what was planted among pyaccess's names in public
    exit_code, checks = doctor_json(user_dsn(db, attacker_role, ROLE_PASSWORD), key_file)
    assert exit_code == 1
    assert checks["functions"]["status"] == "FAIL", checks["functions"]
    for signature in (
        "public.provision_secret_session_guard(integer)",
        "public._provision_secret_check_keys(bytea[], integer)",
    ):
        assert f"{signature.replace(', ', ',')}: not part of pyaccess" in checks["functions"]["detail"], signature
    assert checks["privileges"]["status"] == "FAIL", checks["privileges"]
    assert f"{attacker_role} may create objects in schema public" in checks["privileges"]["detail"]
    assert canaries.found_in(json.dumps(checks)) == []


PLANT_TYPES = """
CREATE FUNCTION evil.seen(p_name text, p_loot text) RETURNS boolean LANGUAGE plpgsql AS $f$
BEGIN
    PERFORM evil.rec(p_name, p_loot);
    RETURN true;
END
$f$;
CREATE DOMAIN evil.bytea AS pg_catalog.bytea CHECK (evil.seen('domain evil.bytea', VALUE::pg_catalog.text));
CREATE DOMAIN evil.text AS pg_catalog.text CHECK (evil.seen('domain evil.text', VALUE));
CREATE DOMAIN evil.uuid AS pg_catalog.uuid CHECK (evil.seen('domain evil.uuid', VALUE::pg_catalog.text));
"""


def _hijacked_service(db: str, login_role: Callable[..., str]) -> tuple[str, str]:
    """A third party plants look-alike *types* in its schema; a service role's search_path lists it before
    pg_catalog (a DBA's ``ALTER ROLE ... SET search_path``). Returns (attacker, service)."""
    attacker = login_role(prefix="pyaccess_evil")
    service = login_role(WRITER, READER, prefix="pyaccess_svc")
    with psycopg.connect(db, autocommit=True) as admin:
        admin.execute(
            sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
                sql.Identifier(str(admin.info.dbname)), sql.Identifier(attacker)
            )
        )
        admin.execute(
            sql.SQL("ALTER ROLE {} SET search_path = evil, pg_catalog, public").format(sql.Identifier(service))
        )
    with connect_as(db, attacker) as planter:
        planter.execute(PLANT_SCHEMA)
        plant_lookalikes(planter)
        planter.execute(PLANT_TYPES)
    return attacker, service


def _round_trip_as_hijacked_service(
    db: str, conn: Conn, login_role: Callable[..., str], key_file: Path
) -> tuple[uuid.UUID, str]:
    """A new secret stored and read back as ``_hijacked_service``'s service role, whose sessions resolve names
    in evil first. Returns the group and the secret."""
    _, service = _hijacked_service(db, login_role)
    gid = new_group(conn)
    secret = canary("secret")
    with connect_as(db, service) as sc:
        assert sc.execute("SHOW search_path").fetchone() == ("evil, pg_catalog, public",)
        pyaccess.store_provision_secret(sc, gid, secret, key_file=key_file)
        assert pyaccess.get_provision_secret(sc, gid, key_file=key_file) == secret
    return gid, secret


def test_search_path_ahead_of_pg_catalog__nothing_planted_runs_as_the_owner(
    db: str, conn: Conn, login_role: Callable[..., str], key_file: Path
) -> None:
    gid, secret = _round_trip_as_hijacked_service(db, conn, login_role, key_file)
    row = conn.execute(
        "SELECT pg_catalog.pg_get_userbyid(proowner) FROM pg_catalog.pg_proc"
        " WHERE oid = 'public.store_provision_secret(uuid, text, bytea)'::regprocedure"
    ).fetchone()
    assert row is not None
    owner = row[0]
    assert owner == OWNER
    calls = evil_calls(db)
    # The SECURITY DEFINER bodies never resolve a name through the caller's path:
    # no look-alike function or operator ran, and nothing ran as the owner.
    assert [c for c in calls if not str(c[0]).startswith("domain ")] == []
    assert [c for c in calls if c[1] == owner] == []
    assert owner_read(db, gid, key_file) == secret


def test_search_path_ahead_of_pg_catalog__planted_types_never_see_the_key(
    db: str, conn: Conn, login_role: Callable[..., str], key_file: Path
) -> None:
    _, secret = _round_trip_as_hijacked_service(db, conn, login_role, key_file)
    with psycopg.connect(db, autocommit=True) as admin:
        loot = "\n".join(str(r[0]) for r in admin.execute("SELECT loot FROM evil.calls").fetchall())
    assert Canaries((key_hex(key_file),), (secret,)).found_in(loot) == []
    assert evil_calls(db) == []


# =========================================================================== the log canary


@dataclass
class LogServer:
    """A throwaway cluster that logs every statement with its parameters, migrated, with its roles."""

    cluster: LocalCluster
    dbname: str
    writer: str
    reader: str
    neither: str
    key_file: Path
    wrong_key_file: Path

    def dsn(self, user: str = "postgres") -> str:
        return user_dsn(self.cluster.dsn(self.dbname), user, ROLE_PASSWORD)

    def cli_dsn(self, user: str) -> str:
        """For ``run_cli``, which passes the password in the environment."""
        return user_dsn(self.cluster.dsn(self.dbname), user)

    def log(self) -> str:
        return self.cluster.logfile.read_text(encoding="utf-8", errors="replace")

    def canaries(self, *group_ids: uuid.UUID) -> Canaries:
        """Both master keys, and the pairs the service derives from them for ``group_ids``."""
        return key_canaries([self.key_file, self.wrong_key_file], group_ids)

    def new_group(self) -> uuid.UUID:
        with psycopg.connect(self.dsn()) as admin:
            return new_group(admin)


@pytest.fixture(scope="module")
def log_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LogServer]:
    keys = tmp_path_factory.mktemp("log-canary-keys")
    with throwaway_cluster(LOG_SETTINGS) as cluster:
        with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
            admin.execute("CREATE DATABASE canary")
        apply_migrations(cluster.dsn("canary"))
        names = {kind: f"pyaccess_{kind}_{uuid.uuid4().hex[:8]}" for kind in ("writer", "reader", "neither")}
        with psycopg.connect(cluster.dsn("canary"), autocommit=True) as admin:
            create_login_role(admin, names["writer"], [WRITER])
            create_login_role(admin, names["reader"], [READER])
            create_login_role(admin, names["neither"], [])
        yield LogServer(
            cluster,
            "canary",
            names["writer"],
            names["reader"],
            names["neither"],
            write_new_key_file(keys / "key.json"),
            write_new_key_file(keys / "wrong-key.json"),
        )


@contextmanager
def log_parameter_set_revoked(server: LogServer) -> Iterator[None]:
    """The DBA never granted SET on log_parameter_max_length: the guard cannot switch parameter logging off."""
    roles = "provision_secret_reader, provision_secret_writer, provision_secret_rotator"
    with psycopg.connect(server.dsn(), autocommit=True) as admin:
        admin.execute(f"REVOKE SET ON PARAMETER log_parameter_max_length FROM {roles}")
    try:
        yield
    finally:
        with psycopg.connect(server.dsn(), autocommit=True) as admin:
            admin.execute(f"GRANT SET ON PARAMETER log_parameter_max_length TO {roles}")


def assert_log_clean(server: LogServer, canaries: Canaries) -> str:
    log = server.log()
    assert "LOG:  statement:" in log or "LOG:  execute" in log  # the server does log statements
    leaks = canaries.found_in(log)
    assert not leaks, f"the server log holds {leaks}"
    return log


@pytest.mark.cluster
def test_log_canary__unguarded_parameters_do_reach_the_log(log_server: LogServer) -> None:
    """The control: under these settings a bound key, pair and secret are logged, and the canary check sees them."""
    control = Canaries((os.urandom(32).hex(), os.urandom(64).hex()), (canary("control-secret"),))
    with connect_as(log_server.dsn(), log_server.writer) as wc:
        wc.execute(
            "SELECT %b::bytea, %b::bytea, %s::text",
            (bytes.fromhex(control.keys[0]), bytes.fromhex(control.keys[1]), control.secrets[0]),
        )
    found = control.found_in(log_server.log())
    for i in (0, 1):
        assert f"key #{i} as hex (any case)" in found
        assert f"key #{i} as \\x bytea form" in found
    assert any(f.startswith("secret #0") for f in found)
    # what the service sends (key ids, then pairs), unguarded: the pair canaries see each pair in it
    key, group_id = pyaccess.Key(os.urandom(32)), uuid.uuid4()
    wire = pyaccess.KeyRing(key).wire_keys(group_id)
    with connect_as(log_server.dsn(), log_server.reader) as rc:
        rc.execute("SELECT %b::bytea", (wire.reveal(),))
    pair = key.pair(2, group_id)
    found = Canaries((pair.hex(), pair[32:].hex())).found_in(log_server.log())
    assert {"key #0 as hex (any case)", "key #1 as hex (any case)"} <= set(found)


@pytest.mark.cluster
def test_log_canary__store_get_errors_and_cli__never_log_the_key_or_secret(log_server: LogServer) -> None:
    server = log_server
    kf = server.key_file
    names = ("pipelined", "rolled-back", "autocommit", "every-call", "async", "cli", "long")
    secrets = {name: canary(name) for name in names}
    groups = {name: server.new_group() for name in secrets}
    missing = uuid.uuid4()  # no such OTA group: its pairs are sent all the same
    # the canaries are the markers: a truncated parameter would still show its start
    canaries = server.canaries(*groups.values(), missing) + Canaries(secrets=tuple(secrets.values()))
    secrets["long"] += "x" * (4097 - len(secrets["long"]))  # one byte too long: refused before it is sent

    # the writer, a non-autocommit connection whose first call is inside a transaction: the pipelined guard
    with connect_as(server.dsn(), server.writer, autocommit=False) as wc:
        # the caller's transaction rolls back after a successful call: the guard's SET goes with it
        wc.execute("SELECT 1")
        pyaccess.store_provision_secret(wc, groups["pipelined"], secrets["rolled-back"], key_file=kf)
        wc.rollback()
        with wc.transaction():
            assert wc.info.transaction_status == pq.TransactionStatus.INTRANS
            pyaccess.store_provision_secret(wc, groups["pipelined"], secrets["pipelined"], key_file=kf)
        with raises_clean(pyaccess.InvalidSecretError, canaries), wc.transaction():
            pyaccess.store_provision_secret(wc, groups["long"], secrets["long"], key_file=kf)
        with raises_clean(pyaccess.GroupNotFoundError, canaries), wc.transaction():
            pyaccess.store_provision_secret(wc, missing, secrets["pipelined"], key_file=kf)
    # the writer, autocommit: the session guard once, then the calls alone
    with connect_as(server.dsn(), server.writer) as wc:
        pyaccess.store_provision_secret(wc, groups["autocommit"], secrets["autocommit"], key_file=kf)
        with raises_clean(pyaccess.InvalidSecretError, canaries):
            pyaccess.store_provision_secret(wc, groups["long"], secrets["long"], key_file=kf)
        with raises_clean(pyaccess.GroupNotFoundError, canaries):
            pyaccess.store_provision_secret(wc, missing, secrets["autocommit"], key_file=kf)
        with raises_clean(pyaccess.AccessDeniedError, canaries):
            pyaccess.get_provision_secret(wc, groups["autocommit"], key_file=kf)
        client = pyaccess.ProvisionSecrets(key_file=kf, guard="every-call")
        client.store(groups["every-call"], secrets["every-call"], conn=wc)

    async def store_and_get_async() -> str:
        async with await psycopg.AsyncConnection.connect(server.dsn(server.writer), autocommit=True) as ac:
            await pyaccess.aio.store_provision_secret(ac, groups["async"], secrets["async"], key_file=kf)
        async with await psycopg.AsyncConnection.connect(server.dsn(server.reader)) as ac:
            await ac.execute("SELECT 1")
            return await pyaccess.aio.get_provision_secret(ac, groups["async"], key_file=kf)

    assert asyncio.run(store_and_get_async()) == secrets["async"]

    # the CLI: store reads stdin, get prints
    stored = run_cli(["store", str(groups["cli"]), "--dsn", server.cli_dsn(server.writer), "--key-file", str(kf)],
                     stdin=secrets["cli"] + "\n")  # fmt: skip
    assert stored.returncode == 0, stored.stderr
    got = run_cli(["get", str(groups["cli"]), "--dsn", server.cli_dsn(server.reader), "--key-file", str(kf)])
    assert got.returncode == 0, got.stderr
    assert got.stdout == secrets["cli"] + "\n"
    wrong = run_cli(["get", str(groups["cli"]), "--dsn", server.cli_dsn(server.reader), "--key-file",
                     str(server.wrong_key_file)])  # fmt: skip
    assert wrong.returncode == 1
    assert canaries.found_in(stored.stdout + stored.stderr + got.stderr + wrong.stdout + wrong.stderr) == []

    # the reader: in a transaction (pipelined), then autocommit; and the errors
    with connect_as(server.dsn(), server.reader, autocommit=False) as rc:
        with rc.transaction():
            got_secret = pyaccess.get_provision_secret(rc, groups["pipelined"], key_file=kf)
            assert got_secret == secrets["pipelined"]
        with raises_clean(pyaccess.WrongKeyError, canaries), rc.transaction():
            pyaccess.get_provision_secret(rc, groups["pipelined"], key_file=server.wrong_key_file)
        with raises_clean(pyaccess.AccessDeniedError, canaries), rc.transaction():
            pyaccess.store_provision_secret(rc, groups["pipelined"], secrets["pipelined"], key_file=kf)
    with connect_as(server.dsn(), server.reader) as rc:
        for name in ("pipelined", "autocommit", "every-call"):
            assert pyaccess.get_provision_secret(rc, groups[name], key_file=kf) == secrets[name]
        with raises_clean(pyaccess.WrongKeyError, canaries):
            pyaccess.get_provision_secret(rc, groups["autocommit"], key_file=server.wrong_key_file)
        with raises_clean(pyaccess.GroupNotFoundError, canaries):
            pyaccess.get_provision_secret(rc, missing, key_file=kf)
        with raises_clean(pyaccess.SecretNotFoundError, canaries):
            pyaccess.get_provision_secret(rc, groups["long"], key_file=kf)

    # a role in neither group: refused before or instead of the call
    for autocommit in (True, False):
        with connect_as(server.dsn(), server.neither, autocommit=autocommit) as nc:
            if not autocommit:
                nc.execute("SELECT 1")
            with raises_clean(pyaccess.AccessDeniedError, canaries):
                pyaccess.get_provision_secret(nc, groups["autocommit"], key_file=kf)
            nc.rollback()
            with raises_clean(pyaccess.AccessDeniedError, canaries):
                pyaccess.store_provision_secret(nc, groups["autocommit"], secrets["autocommit"], key_file=kf)
            nc.rollback()

    # doctor as the reader on this logging server: the guard can switch logging off, so nothing FAILs
    exit_code, checks = doctor_json(server.dsn(server.reader), kf)
    assert checks["server log"]["status"] == "ok", checks["server log"]
    assert exit_code == 0, checks

    log = assert_log_clean(server, canaries)
    # both paths ran: the guard pipelined with a call (extended protocol) and on its own (simple query)
    assert f"execute <unnamed>: {queries.GUARD}" in log
    assert f"statement: {queries.GUARD}" in log
    # the calls did go through this log: statements (not their parameters) are there
    assert "pyaccess.seal($1::pg_catalog.uuid, $2::pg_catalog.bytea, $3::pg_catalog.bytea)" in log
    assert "pyaccess.open($1::pg_catalog.uuid, $2::pg_catalog.bytea, $3::pg_catalog.int4)" in log
    assert "was encrypted under key id" in log  # the WrongKeyError, logged with ids only


@pytest.mark.cluster
def test_log_canary__without_set_privilege__parameter_logging_error_and_nothing_logged(
    log_server: LogServer,
) -> None:
    server = log_server
    kf = server.key_file
    secret = canary("revoked")
    gid, other = server.new_group(), server.new_group()
    canaries = server.canaries(gid, other) + Canaries(secrets=(secret,))
    with connect_as(server.dsn(), server.writer) as wc:
        pyaccess.store_provision_secret(wc, gid, secret, key_file=kf)

    with log_parameter_set_revoked(server):
        for role in (server.reader, server.writer):
            for autocommit in (True, False):
                with connect_as(server.dsn(), role, autocommit=autocommit) as c:
                    if not autocommit:
                        c.execute("SELECT 1")  # pipelined: the call must be dropped with the failed guard
                    with raises_clean(pyaccess.ParameterLoggingError, canaries):
                        if role == server.reader:
                            pyaccess.get_provision_secret(c, gid, key_file=kf)
                        else:
                            pyaccess.store_provision_secret(c, other, secret, key_file=kf)
                    c.rollback()
        got = run_cli(["get", str(gid), "--dsn", server.cli_dsn(server.reader), "--key-file", str(kf)])
        assert got.returncode == 1
        assert got.stdout == ""
        assert got.stderr.startswith("pyaccess: error: the server would write bound parameters (keys, secrets)")
        assert len(got.stderr.splitlines()) == 1
        assert canaries.found_in(got.stderr) == []

    log = assert_log_clean(server, canaries)
    assert "the server would write bound parameters" in log  # the guard ran and refused, on the server
    assert owner_read(server.dsn(), gid, kf) == secret
    with psycopg.connect(server.dsn()) as admin:
        row = admin.execute("SELECT provision_secret_ciphertext FROM ota_groups WHERE id = %s", (other,)).fetchone()
    assert row == (None,)


# =========================================================================== pyaccess doctor


@pytest.mark.cluster
def test_doctor__leaky_server_as_a_reader__fails_on_the_server_log(log_server: LogServer) -> None:
    server = log_server
    with log_parameter_set_revoked(server):
        result = invoke(["doctor", "--dsn", server.dsn(server.reader), "--key-file", str(server.key_file)])
        exit_code, checks = doctor_json(server.dsn(server.reader), server.key_file)
    assert result.exit_code == 1, result.output
    assert any(re.match(r"FAIL\s+server log\s", line) for line in result.stdout.splitlines()), result.stdout
    assert exit_code == 1
    assert checks["server log"]["status"] == "FAIL"
    assert "log_statement = all" in checks["server log"]["detail"]
    assert checks["role"]["status"] == "ok"
    assert_log_clean(server, server.canaries())  # doctor sends the key too (census): still nothing logged
    assert server.canaries().found_in(result.output) == []


def test_doctor__clean_setup_as_a_reader__exits_0(db: str, login_role: Callable[..., str], key_file: Path) -> None:
    reader = login_role(READER)
    dsn = user_dsn(db, reader, ROLE_PASSWORD)
    result = invoke(["doctor", "--dsn", dsn, "--key-file", str(key_file)])
    assert result.exit_code == 0, result.output
    statuses = {line.split()[0] for line in result.stdout.splitlines()}
    assert statuses <= {"ok", "warning"}, result.stdout
    assert "FAIL" not in result.stdout
    exit_code, checks = doctor_json(dsn, key_file)
    assert exit_code == 0
    assert set(checks) == {
        "key file",
        "connection",
        "role",
        "pgcrypto",
        "migrations",
        "functions",
        "privileges",
        "server log",
        "key census",
    }
    for name in ("key file", "role", "pgcrypto", "functions", "privileges", "server log", "key census"):
        assert checks[name]["status"] == "ok", checks[name]
    assert Canaries((key_hex(key_file),)).found_in(result.output) == []


def test_doctor__world_readable_key_file__warns(db: str, login_role: Callable[..., str], key_file: Path) -> None:
    key_file.chmod(0o644)
    exit_code, checks = doctor_json(user_dsn(db, login_role(READER), ROLE_PASSWORD), key_file)
    assert checks["key file"]["status"] == "warning"
    assert "world-readable" in checks["key file"]["detail"]
    assert exit_code == 0


def test_doctor__missing_key_file__fails(db: str, login_role: Callable[..., str], tmp_path: Path) -> None:
    exit_code, checks = doctor_json(user_dsn(db, login_role(READER), ROLE_PASSWORD), tmp_path / "missing.json")
    assert checks["key file"]["status"] == "FAIL"
    assert "missing.json" in checks["key file"]["detail"]
    assert exit_code == 1


def test_doctor__secrets_under_an_unknown_key__census_fails(
    db: str, conn: Conn, login_role: Callable[..., str], key_file: Path, other_key_file: Path
) -> None:
    pyaccess.store_provision_secret(conn, new_group(conn), canary("known"), key_file=key_file)
    conn.commit()
    register_key(conn, key_file=other_key_file)  # a second pod's key, registered as in a rotation
    conn.commit()
    pyaccess.store_provision_secret(conn, new_group(conn), canary("unknown"), key_file=other_key_file)
    conn.commit()
    row = conn.execute(
        "SELECT public.provision_secret_key_id(%b)", (bytes.fromhex(key_hex(other_key_file)),)
    ).fetchone()
    assert row is not None
    exit_code, checks = doctor_json(user_dsn(db, login_role(READER), ROLE_PASSWORD), key_file)
    assert checks["key census"]["status"] == "FAIL"
    assert f"{row[0]}: 1 (v2, active, absent in key file)" in checks["key census"]["detail"]
    assert exit_code == 1
    canaries = Canaries((key_hex(key_file), key_hex(other_key_file)))
    assert canaries.found_in(json.dumps(checks)) == []


@pytest.mark.parametrize(
    ("membership", "status"),
    [("neither", "FAIL"), ("both", "warning"), ("writer", "ok"), ("reader", "ok"), ("rotator", "ok")],
)
def test_doctor__role_membership(
    db: str, login_role: Callable[..., str], key_file: Path, membership: str, status: str
) -> None:
    exit_code, checks = doctor_json(user_dsn(db, login_role(*MEMBERSHIPS[membership]), ROLE_PASSWORD), key_file)
    assert checks["role"]["status"] == status, checks["role"]
    assert exit_code == (1 if status == "FAIL" else 0), checks


def test_doctor__role_in_neither_group__never_exits_0(db: str, login_role: Callable[..., str], key_file: Path) -> None:
    result = invoke(["doctor", "--dsn", user_dsn(db, login_role(), ROLE_PASSWORD), "--key-file", str(key_file)])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output


# =========================================================================== careless callers


def test_cli__store_help__offers_no_option_for_the_secret_or_the_key() -> None:
    result = invoke(["store", "--help"])
    assert result.exit_code == 0
    options = set(re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", result.stdout.split("Options:", 1)[1]))
    assert options == {"--dsn", "--key-file", "-h", "--help"}
    command = main.commands["store"]
    assert [p.name for p in command.params if p.param_type_name == "argument"] == ["group_id"]


def test_repr_and_str__of_keys_rings_and_clients__carry_no_key(tmp_path: Path, key_file: Path) -> None:
    previous = write_new_key_file(tmp_path / "previous.json")
    ring_path = ring_file(tmp_path / "ring.json", key_file, previous)
    group_id, secret = uuid.uuid4(), canary("secret")
    canaries = key_canaries([key_file, previous], [group_id]) + Canaries(secrets=(secret,))
    ring = pyaccess.load_key_ring(ring_path)
    assert len(ring.previous) == 1
    objects: list[object] = [
        ring,
        ring.current,
        *ring.previous,
        pyaccess.ProvisionSecrets(key_file=ring_path),
        pyaccess.AsyncProvisionSecrets(key_file=ring_path),
        # what travels to the server instead of the master key, and the secret on its way
        ring.wire_keys(group_id),
        ring.sealing_keys(group_id),
        Plaintext.wrap(secret),
    ]
    texts = [f"{o!r} {o!s} {o}" for o in objects]
    texts.append(str(dataclasses.asdict(ring)))
    texts.append(repr(dataclasses.replace(ring)))
    assert canaries.found_in("\n".join(texts)) == []
    # the control: the checker does see the material when it is printed
    assert canaries.found_in(ring.current.material.hex().upper())
    assert canaries.found_in(repr(ring.current.material))
    assert canaries.found_in(repr(ring.sealing_keys(group_id).reveal()))


def test_careless_calls__errors_carry_no_key_or_secret(
    conn: Conn, group: uuid.UUID, key_file: Path, tmp_path: Path
) -> None:
    secret = canary("secret")
    material = key_hex(key_file)
    canaries = key_canaries([key_file], [group]) + Canaries(secrets=(secret,))
    # arguments swapped, the key passed where the group id goes
    with raises_clean(pyaccess.PyAccessError, canaries):
        pyaccess.store_provision_secret(conn, secret, group, key_file=key_file)  # type: ignore[arg-type]
    with raises_clean(pyaccess.PyAccessError, canaries):
        pyaccess.get_provision_secret(conn, material, key_file=key_file)
    with raises_clean(pyaccess.InvalidSecretError, canaries):
        pyaccess.store_provision_secret(conn, group, secret + "\x00", key_file=key_file)
    with raises_clean(pyaccess.InvalidSecretError, canaries):
        pyaccess.store_provision_secret(conn, group, secret + "\ud800", key_file=key_file)
    with raises_clean(pyaccess.InvalidSecretError, canaries):
        pyaccess.store_provision_secret(conn, group, secret * 200, key_file=key_file)
    conn.rollback()
    # mangled key files: the reason is given, never the content
    mangled = {
        "one digit short": material[:-1],
        "not hex": material[:-1] + "g",
        "too long": material + "00",
        "json number": json.dumps({"key": int(material[:15], 16)}),
        "bad previous": json.dumps({"key": material, "previous_keys": [material[:-2]]}),
        "openssl without key line": f"salt=00\niv ={material}\n",
        "truncated json": json.dumps({"key": material})[:-1],
    }
    for label, content in mangled.items():
        path = tmp_path / f"{label}.key"
        path.write_text(content)
        with raises_clean(pyaccess.KeyFileError, canaries):
            pyaccess.load_key_ring(path)
        with raises_clean(pyaccess.KeyFileError, canaries):
            pyaccess.get_provision_secret(conn, group, key_file=path)
    # a wrong key: the message gives key ids only
    other = write_new_key_file(tmp_path / "other.json")
    pyaccess.store_provision_secret(conn, group, secret, key_file=key_file)
    with raises_clean(pyaccess.WrongKeyError, canaries + key_canaries([other], [group])):
        pyaccess.get_provision_secret(conn, group, key_file=other)
    conn.rollback()


def test_python_logging_at_debug__never_carries_the_key_or_secret(
    caplog: pytest.LogCaptureFixture, db: str, conn: Conn, *, key_file: Path, other_key_file: Path, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("pyaccess", "psycopg", "yoyo"):
        caplog.set_level(logging.DEBUG, logger=name)
    secrets = (canary("api"), canary("cli"))
    api_group, cli_group, old_group = new_group(conn), new_group(conn), new_group(conn)
    canaries = key_canaries([key_file, other_key_file], [api_group, cli_group, old_group]) + Canaries(secrets=secrets)

    pyaccess.store_provision_secret(conn, api_group, secrets[0], key_file=key_file)
    assert pyaccess.get_provision_secret(conn, api_group, key_file=key_file) == secrets[0]
    conn.commit()
    with raises_clean(pyaccess.WrongKeyError, canaries):
        pyaccess.get_provision_secret(conn, api_group, key_file=other_key_file)
    conn.rollback()
    register_key(conn, key_file=other_key_file)  # a second key in service, as during a rotation
    pyaccess.store_provision_secret(conn, old_group, secrets[0], key_file=other_key_file)
    conn.commit()
    rotate(conn, key_file=ring_file(tmp_path / "ring.json", key_file, other_key_file))
    result = invoke(["store", str(cli_group), "--dsn", db, "--key-file", str(key_file)], input=secrets[1] + "\n")
    assert result.exit_code == 0, result.output
    result = invoke(["get", str(cli_group), "--dsn", db, "--key-file", str(key_file)])
    assert result.stdout == secrets[1] + "\n"
    result = invoke(["get", str(cli_group), "--dsn", db, "--key-file", str(other_key_file)])
    assert result.exit_code == 1
    result = invoke(["doctor", "--dsn", db, "--key-file", str(key_file)])
    assert canaries.found_in(result.output) == []

    assert any("provision secret" in r.getMessage() for r in caplog.records)  # pyaccess did log, at DEBUG
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    text = "\n".join(f"{formatter.format(r)} {r.args!r}" for r in caplog.records)
    assert canaries.found_in(text) == []
