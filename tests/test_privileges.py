"""Privileges that hold in real deployments (issue 11): each attack first shown working against
0.1.0, then shown failing against 0.2.0, on the same kind of database.

0.1.0 is installed by its own ``pyaccess migrate`` (tests/fix_release.py); 0.2.0 by this tree's.
Roles are cluster-wide: each test makes roles with unique names and drops them afterwards.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql
from psycopg_pool import ConnectionPool

import pyaccess
from pyaccess.cli import main
from pyaccess.keyfile import load_key_ring, write_new_key_file
from pyaccess.migrate import apply_migrations
from tests.fix_db import Server, execute, new_group, query, register_key, scalar, user_dsn
from tests.fix_release import Release

PASSWORD = "pw-privileges-test"


@pytest.fixture
def roles(server: Server) -> Iterator[dict[str, str]]:
    """Login roles with unique names, dropped (with what they own) afterwards."""
    suffix = uuid.uuid4().hex[:8]
    names = {
        kind: f"{kind}_{suffix}" for kind in ("app_owner", "app_rw", "writer", "reader", "rotator", "dbo", "attacker")
    }
    with server.admin() as admin:
        for name in names.values():
            admin.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(name), sql.Literal(PASSWORD))
            )
    yield names
    with server.admin() as admin:
        for name in names.values():
            with contextlib.suppress(psycopg.Error):
                for row in admin.execute("SELECT datname FROM pg_database WHERE datallowconn").fetchall():
                    with psycopg.connect(server.dsn(str(row[0])), autocommit=True) as db:
                        db.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(name)))
            with contextlib.suppress(psycopg.Error):
                admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def _as(dsn: str, role: str) -> str:
    return user_dsn(dsn, role, PASSWORD)


def _grant_service_roles(dsn: str, roles: dict[str, str]) -> None:
    execute(
        dsn,
        f"GRANT provision_secret_writer TO {roles['writer']}",
        f"GRANT provision_secret_reader TO {roles['reader']}",
    )


def _rotator(dsn: str, roles: dict[str, str]) -> None:
    execute(dsn, f"GRANT provision_secret_rotator TO {roles['rotator']}")


def _app_table(dsn: str, owner: str) -> None:
    """A production ota_groups that the application's own role created and owns."""
    execute(
        dsn,
        "CREATE TABLE public.ota_groups (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), name text NOT NULL UNIQUE,"
        " created_at timestamptz NOT NULL DEFAULT now())",
        f"ALTER TABLE public.ota_groups OWNER TO {owner}",
        f"GRANT CREATE ON SCHEMA public TO {owner}",  # the application's migrations create in public
    )


ESCALATE = """
CREATE FUNCTION public.escalate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE pg_catalog.format('ALTER ROLE %I SUPERUSER', '{role}');
    RETURN NEW;
END $$;
CREATE TRIGGER escalate BEFORE UPDATE ON public.ota_groups FOR EACH ROW EXECUTE FUNCTION public.escalate();
"""


def _is_superuser(dsn: str, role: str) -> bool:
    return bool(scalar(dsn, "SELECT rolsuper FROM pg_roles WHERE rolname = %s", (role,)))


def test_trigger_by_the_table_owner__makes_it_superuser_on_0_1_0__and_0_2_0_refuses_until_fixed(
    server: Server, empty_db: str, release_0_1_0: Release, roles: dict[str, str], key_file: Path
) -> None:
    app_owner = roles["app_owner"]
    # Control: 0.1.0, table owned by the application's role, migrated by a superuser.
    control = server.dsn(server.create_database())
    _app_table(control, app_owner)
    assert release_0_1_0.cli("migrate", "--dsn", control).returncode == 0
    _grant_service_roles(control, roles)
    execute(_as(control, app_owner), ESCALATE.format(role=app_owner))
    with psycopg.connect(control) as conn:
        group = new_group(conn)
    release_0_1_0.store(_as(control, roles["writer"]), group, "an ordinary store", key_file)
    assert _is_superuser(control, app_owner), "the attack works against 0.1.0"
    execute(control, f"ALTER ROLE {app_owner} NOSUPERUSER")

    # Defence: 0.2.0 refuses to install, saying what to change; nothing is installed.
    _app_table(empty_db, app_owner)
    execute(_as(empty_db, app_owner), ESCALATE.format(role=app_owner))
    with pytest.raises(
        psycopg.Error, match=rf"ota_groups is owned by {app_owner}.*ALTER TABLE public.ota_groups OWNER TO"
    ):
        apply_migrations(empty_db)
    assert scalar(empty_db, "SELECT to_regprocedure('public.store_provision_secret(uuid,text,bytea)')") is None
    # The DBA follows the hint: the table to provision_secret_owner, the trigger function out of the owner's reach.
    execute(
        empty_db,
        "ALTER TABLE public.ota_groups OWNER TO provision_secret_owner" if _role_exists(empty_db) else "SELECT 1",
    )
    execute(empty_db, "DROP TRIGGER escalate ON public.ota_groups", "ALTER TABLE public.ota_groups OWNER TO postgres")
    apply_migrations(empty_db)
    _grant_service_roles(empty_db, roles)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        execute(
            _as(empty_db, app_owner),
            "CREATE TRIGGER again BEFORE UPDATE ON public.ota_groups FOR EACH ROW EXECUTE FUNCTION public.escalate()",
        )
    with psycopg.connect(empty_db) as conn:
        group = new_group(conn)
    with psycopg.connect(_as(empty_db, roles["writer"])) as conn:
        pyaccess.store_provision_secret(conn, group, "an ordinary store", key_file=key_file)
    assert not _is_superuser(empty_db, app_owner)


def _role_exists(dsn: str) -> bool:
    return bool(scalar(dsn, "SELECT count(*) FROM pg_roles WHERE rolname = 'provision_secret_owner'"))


def test_trigger_added_after_install__runs_as_a_non_superuser_owner__and_doctor_fails(
    db: str, roles: dict[str, str], key_file: Path
) -> None:
    """Defence in depth: a table handed back to the application's role after install cannot escalate."""
    app_owner = roles["app_owner"]
    _grant_service_roles(db, roles)
    execute(db, f"ALTER TABLE public.ota_groups OWNER TO {app_owner}", f"GRANT CREATE ON SCHEMA public TO {app_owner}")
    execute(_as(db, app_owner), ESCALATE.format(role=app_owner))
    with psycopg.connect(db) as conn:
        group = new_group(conn)
    with psycopg.connect(_as(db, roles["writer"])) as conn, pytest.raises(pyaccess.PyAccessError):
        pyaccess.store_provision_secret(conn, group, "an ordinary store", key_file=key_file)
    assert not _is_superuser(db, app_owner)
    doctor = CliRunner().invoke(main, ["doctor", "--dsn", _as(db, roles["reader"]), "--key-file", str(key_file)])
    assert f"ota_groups is owned by {app_owner}" in doctor.output
    assert doctor.exit_code == 1


FAKE_RANDOM = """
ALTER SCHEMA extensions RENAME TO real_extensions;
CREATE SCHEMA extensions;
CREATE TABLE public.fake_calls (who text);
CREATE FUNCTION extensions.gen_random_bytes(integer) RETURNS bytea LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.fake_calls VALUES (current_user);
    RETURN pg_catalog.decode(pg_catalog.repeat('00', $1), 'hex');
END $$;
GRANT INSERT ON public.fake_calls TO PUBLIC;
"""


def _owned_database(server: Server, dbo: str) -> str:
    execute(server.dsn(), f"ALTER ROLE {dbo} CREATEROLE")
    name = f"pyaccess_test_{uuid.uuid4().hex[:12]}"
    execute(server.dsn(), f"CREATE DATABASE {name} OWNER {dbo}")
    dsn = _as(server.dsn(name), dbo)
    execute(dsn, "CREATE SCHEMA extensions", "CREATE EXTENSION pgcrypto SCHEMA extensions")
    return dsn


def test_renamed_pgcrypto_schema__runs_a_planted_function_on_0_1_0__never_on_0_2_0(
    server: Server, release_0_1_0: Release, roles: dict[str, str], key_file: Path
) -> None:
    dbo = roles["dbo"]
    # Control: 0.1.0 migrated by the (non-superuser) database owner, who owns pgcrypto's schema.
    control = _owned_database(server, dbo)
    assert release_0_1_0.cli("migrate", "--dsn", control).returncode == 0
    _grant_service_roles(control, roles)
    execute(control, FAKE_RANDOM)
    with psycopg.connect(control) as conn:
        group = new_group(conn)
    release_0_1_0.store(_as(control, roles["writer"]), group, "secret", key_file)
    assert scalar(control, "SELECT count(*) FROM public.fake_calls") == 1, "the planted function ran on 0.1.0"
    iv = scalar(control, "SELECT substr(provision_secret_ciphertext, 10, 16) FROM ota_groups WHERE id = %s", (group,))
    assert iv == bytes(16), "and sealed with an all-zero IV"

    # Defence: the same on 0.2.0; every pgcrypto call was bound when the functions were created.
    dsn = _owned_database(server, dbo)
    apply_migrations(dsn)
    _grant_service_roles(dsn, roles)
    execute(dsn, FAKE_RANDOM)
    with psycopg.connect(dsn) as conn:
        group = new_group(conn)
    with psycopg.connect(_as(dsn, roles["writer"])) as conn:
        pyaccess.store_provision_secret(conn, group, "secret", key_file=key_file)
        conn.commit()
    assert scalar(dsn, "SELECT count(*) FROM public.fake_calls") == 0
    iv = scalar(dsn, "SELECT substr(provision_secret_ciphertext, 10, 16) FROM ota_groups WHERE id = %s", (group,))
    assert iv != bytes(16)
    with psycopg.connect(_as(dsn, roles["reader"])) as conn:
        assert pyaccess.get_provision_secret(conn, group, key_file=key_file) == "secret"


def _executable_by(dsn: str, role: str) -> list[str]:
    rows = query(
        dsn,
        "SELECT p.oid::regprocedure::text FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace"
        " WHERE (n.nspname = 'pyaccess' OR p.proname ~ 'provision_secret')"
        " AND has_function_privilege(%s, p.oid, 'EXECUTE') ORDER BY 1",
        (role,),
    )
    return [str(row[0]) for row in rows]


def test_default_privileges__grant_everything_on_0_1_0__nothing_on_0_2_0(
    server: Server, empty_db: str, release_0_1_0: Release, roles: dict[str, str], key_file: Path
) -> None:
    app_rw = roles["app_rw"]
    control = server.dsn(server.create_database())
    for dsn in (control, empty_db):
        execute(dsn, f"ALTER DEFAULT PRIVILEGES GRANT EXECUTE ON FUNCTIONS TO {app_rw}")
    assert release_0_1_0.cli("migrate", "--dsn", control).returncode == 0
    assert "store_provision_secret(uuid,text,bytea)" in _executable_by(control, app_rw), "the attack works on 0.1.0"

    apply_migrations(empty_db)
    assert _executable_by(empty_db, app_rw) == []
    doctor = CliRunner().invoke(main, ["doctor", "--dsn", _as(empty_db, app_rw), "--key-file", str(key_file)])
    assert "FAIL     role" in doctor.output


def test_mass_rewrap__by_a_writer_on_0_1_0_destroys_every_secret__on_0_2_0_is_denied(  # noqa: PLR0917 - fixtures
    server: Server, empty_db: str, release_0_1_0: Release, roles: dict[str, str], key_file: Path, tmp_path: Path
) -> None:
    material = load_key_ring(key_file).current.material
    throwaway = load_key_ring(write_new_key_file(tmp_path / "throwaway")).current.material
    mass_rewrap = "SELECT count(*) FROM public.rewrap_provision_secrets(ARRAY[%b, %b]::bytea[], NULL, 2147483647)"
    control = server.dsn(server.create_database())
    assert release_0_1_0.cli("migrate", "--dsn", control).returncode == 0
    for dsn in (control, empty_db):
        if dsn == empty_db:
            apply_migrations(dsn)
        _grant_service_roles(dsn, roles)
        with psycopg.connect(dsn) as conn:
            group = new_group(conn)
            conn.execute("SELECT public.store_provision_secret(%s, 'precious', %b)", (group, material))
            conn.commit()
        with psycopg.connect(_as(dsn, roles["writer"]), autocommit=True) as writer:
            if dsn == control:
                writer.execute(mass_rewrap, (throwaway, material))
                with psycopg.connect(dsn) as conn, pytest.raises(psycopg.Error, match="not under the given key"):
                    conn.execute("SELECT public.get_provision_secret(%s, %b)", (group, material))
            else:
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    writer.execute(mass_rewrap, (throwaway, material))
    # 0.2.0: even the rotator cannot move secrets under a key id that is not active.
    _rotator(empty_db, roles)
    with (
        psycopg.connect(_as(empty_db, roles["rotator"]), autocommit=True) as rotator,
        pytest.raises(psycopg.Error, match="rotation targets only an active key"),
    ):
        rotator.execute(mass_rewrap, (throwaway, material))
    with psycopg.connect(empty_db) as conn:
        assert pyaccess.get_provision_secret(conn, group, key_file=key_file) == "precious"


def test_stale_pod__stores_under_an_unregistered_or_retired_key__refused_and_nothing_written(
    conn: psycopg.Connection[tuple[object, ...]], key_file: Path, other_key_file: Path
) -> None:
    group = new_group(conn)
    pyaccess.store_provision_secret(conn, group, "the workers can read this", key_file=key_file)  # registers it
    conn.commit()
    before = scalar_conn(conn, group)
    with pytest.raises(
        pyaccess.KeyNotActiveError, match="not registered; stores use only the active key ids"
    ) as caught:
        pyaccess.store_provision_secret(conn, group, "nobody could read this", key_file=other_key_file)
    assert load_key_ring(key_file).current.key_id in str(caught.value)
    conn.rollback()
    assert scalar_conn(conn, group) == before
    register_key(conn, other_key_file)
    conn.execute("SELECT pyaccess.retire_key(%b)", (load_key_ring(key_file).current.id_bytes,))
    conn.commit()
    with pytest.raises(pyaccess.KeyNotActiveError, match="it is retired"):
        pyaccess.store_provision_secret(conn, group, "under a retired key", key_file=key_file)
    conn.rollback()
    assert pyaccess.get_provision_secret(conn, group, key_file=key_file) == "the workers can read this"


def scalar_conn(conn: psycopg.Connection[tuple[object, ...]], group: uuid.UUID) -> object:
    row = conn.execute("SELECT provision_secret_ciphertext FROM ota_groups WHERE id = %s", (group,)).fetchone()
    assert row is not None
    return row[0]


OVERLOADS = (
    "CREATE FUNCTION public.provision_secret_session_guard(x int DEFAULT 0) RETURNS void LANGUAGE sql AS 'SELECT'",
    "CREATE FUNCTION public.get_provision_secret(g uuid, k bytea[], x int DEFAULT 0) RETURNS text LANGUAGE sql AS"
    " 'SELECT NULL::text'",
)


def test_overloads_planted_in_public__break_0_1_0__not_0_2_0_and_doctor_names_them(
    server: Server, empty_db: str, release_0_1_0: Release, roles: dict[str, str], key_file: Path
) -> None:
    control = server.dsn(server.create_database())
    assert release_0_1_0.cli("migrate", "--dsn", control).returncode == 0
    apply_migrations(empty_db)
    for dsn in (control, empty_db):
        with psycopg.connect(dsn) as conn:
            group = new_group(conn)
        if dsn == control:
            release_0_1_0.store(dsn, group, "before the attack", key_file)
        else:
            with psycopg.connect(dsn) as conn:
                pyaccess.store_provision_secret(conn, group, "before the attack", key_file=key_file)
        execute(dsn, "GRANT CREATE ON SCHEMA public TO PUBLIC")  # as after an upgrade from PostgreSQL 14
        for statement in OVERLOADS:
            execute(_as(dsn, roles["attacker"]), statement)
        if dsn == control:
            failed = release_0_1_0.cli("get", str(group), "--dsn", dsn, "--key-file", str(key_file))
            assert failed.returncode == 1, "the attack works on 0.1.0"
            assert "not unique" in failed.stderr or "AmbiguousFunction" in failed.stderr
        else:
            with psycopg.connect(dsn) as conn:
                assert pyaccess.get_provision_secret(conn, group, key_file=key_file) == "before the attack"
                pyaccess.store_provision_secret(conn, group, "after the attack", key_file=key_file)
    doctor = CliRunner().invoke(main, ["doctor", "--dsn", empty_db, "--key-file", str(key_file)])
    assert doctor.exit_code == 1
    assert "public.provision_secret_session_guard(integer): not part of pyaccess" in doctor.output
    assert "PUBLIC may create objects in schema public" in doctor.output


def test_latin1_database__stores_and_reads_any_unicode__no_unicode_error_escapes(
    server: Server, key_file: Path
) -> None:
    name = f"pyaccess_test_{uuid.uuid4().hex[:12]}"
    execute(server.dsn(), f"CREATE DATABASE {name} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
    dsn = server.dsn(name)
    try:
        apply_migrations(dsn)
        secret = "€日 — not in LATIN1"
        with psycopg.connect(dsn) as conn:
            # Control: sent as text, as 0.1.0 did, the secret cannot even be encoded, and the error holds it.
            with pytest.raises(UnicodeEncodeError) as caught:
                conn.execute("SELECT %s::text", (secret,))
            assert secret in repr(caught.value.object)
            conn.rollback()
            group = new_group(conn)
            pyaccess.store_provision_secret(conn, group, secret, key_file=key_file)
            assert pyaccess.get_provision_secret(conn, group, key_file=key_file) == secret
            conn.execute("SET client_encoding = 'SQL_ASCII'")
            assert pyaccess.get_provision_secret(conn, group, key_file=key_file) == secret
            # The contract's text path cannot show it in LATIN1: a typed error that never holds it.
            with pytest.raises(psycopg.Error) as refused:
                conn.execute(
                    "SELECT public.get_provision_secret(%s, %b)", (group, load_key_ring(key_file).current.material)
                )
            assert refused.value.sqlstate == "PA002"
            assert "€" not in str(refused.value)
    finally:
        server.drop_database(name)


def test_sql_ascii_client_encoding__gets_the_exact_value_never_a_mangled_one(
    conn: psycopg.Connection[tuple[object, ...]], group: uuid.UUID, key_file: Path
) -> None:
    secret = "pässwörd-€-日本"
    pyaccess.store_provision_secret(conn, group, secret, key_file=key_file)
    conn.execute("SET client_encoding = 'SQL_ASCII'")
    # Control: text results under SQL_ASCII come back as bytes' repr, not the secret (0.1.0's get).
    mangled = conn.execute(
        "SELECT public.get_provision_secret(%s, %b)", (group, load_key_ring(key_file).current.material)
    ).fetchone()
    assert mangled is not None
    assert mangled[0] != secret
    assert pyaccess.get_provision_secret(conn, group, key_file=key_file) == secret


def test_pool_resetting_sessions__guard_lost_is_noticed_and_restored(db: str, key_file: Path) -> None:
    """RESET ALL by a pool's own reset hook drops the guard: the server refuses before opening anything,
    and the client guards that connection again and retries; secrets.reset (DISCARD ALL) keeps it guarded."""
    secrets = pyaccess.ProvisionSecrets(key_file=key_file)
    with psycopg.connect(db) as conn:
        groups = [new_group(conn) for _ in range(3)]

    def foreign_reset(conn: psycopg.Connection[tuple[object, ...]]) -> None:
        conn.execute("RESET ALL")

    for reset in (foreign_reset, secrets.reset):
        pid = None
        with ConnectionPool(
            db, kwargs={"autocommit": True}, configure=secrets.configure, reset=reset, min_size=1, max_size=1, open=True
        ) as pool:
            secrets.pool = pool
            with pool.connection() as conn:
                pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
            for round_ in range(3):
                for group in groups:
                    secrets.store(group, f"round {round_}")
                    assert secrets.get(group) == f"round {round_}"
            with pool.connection() as conn:
                guarded = conn.execute("SELECT pyaccess._guarded(), pg_backend_pid()").fetchone()
                assert guarded is not None
            assert guarded[0] is (reset == secrets.reset)
            assert guarded[1] == pid, "the same connection all along: the reset really ran on it"
