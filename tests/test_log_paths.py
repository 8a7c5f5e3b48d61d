"""Every path that writes a call's bound values to the server log, each shown leaking, then closed by the guard.

A real server with auto_explain (contrib) and pgaudit (Debian's postgresql-15-pgaudit) preloaded; each
path is turned on by ALTER SYSTEM and a reload, as a DBA would. For each path, in the same run:

1. the control: a session that is not guarded makes the calls below, and the canaries (the master key,
   the group's pair, the secrets, plain bound values) do reach the log, so the test can fail;
2. a session of the service's role (a member of provision_secret_reader and _writer, migrated by a
   superuser) calls ``pyaccess.guard_session()`` first, makes the same calls, and no canary reaches
   the log, in any form (raw, hex, bytea escape, base64, a node dump's signed bytes; whole or cut);
3. the path turned on by a reload *after* the guard: the guarded session still logs nothing, and
   ``pyaccess._guarded()`` turns false, so the next service call re-guards or is refused (PA007).

The calls: a plain bound bytea and text, an INSERT with a bound bytea, the contract's
``public.store_provision_secret`` / ``get_provision_secret`` (master key; their PL/pgSQL bodies run
nested statements whose variables hold the key and its pairs), the same store for a missing group
(an error, PA003), and the service's ``pyaccess.seal`` / ``pyaccess.open`` (group pairs).

Run against 0.1.0's guard (sql/0.2.0/30_guard.sql as first ported: it knows log_parameter_max_length
and log_parameter_max_length_on_error, pins those where the role holds a grant, and only detects
pgaudit session auditing), 29 of these tests failed:
- a guarded session leaked (the canaries found): unguarded-then-guarded for debug_print_parse,
  debug_print_rewritten, debug_print_plan, both auto_explain modes and pgaudit.role; after a reload
  for those six and for pgaudit.log=all and =read (the reported case: values logged, no PA007);
- the guard refused every session (PA007) where it could turn pgaudit's parameters off with the
  migration's grant: unguarded-then-guarded for pgaudit.log=all and =read;
- no PA007 for a role without SET on auto_explain.log_min_duration; PA007 not naming the switch for
  log_parameter_max_length and pgaudit.log_parameter;
- no per-path exposure (doctor, the exposure checks of the statement, duration, sampling and
  on-error paths, which 0.1.0's guard already closed: for them these tests guard against regression),
  no grant on the extensions' switches, no 0.1.0 text for the plan dump.
The DISCARD ALL / RESET ALL tests and the reload tests of the statement, duration, sampling and
on-error paths passed against that port, which already had pyaccess._guarded() and pinned those
switches; 0.1.0 itself had no pyaccess._guarded().
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg_pool import ConnectionPool

import pyaccess
from pyaccess import execution
from pyaccess.doctor import run_checks
from pyaccess.execution import GuardMode
from pyaccess.keyfile import load_key_ring, write_new_key_file
from pyaccess.provision import get_with_ring
from tests.fix_clusters import (
    PYACCESS_ROLES,
    SERVICE,
    Canaries,
    Conn,
    PgServer,
    canary_text,
    key_canaries,
    key_id,
    ring,
)
from tests.fix_db import Server

pytestmark = pytest.mark.cluster

AUDITOR = "pyaccess_auditor"  # pgaudit.role: object auditing of what this role may touch
MASTER = os.urandom(32)  # the one registered key of this module's cluster


@dataclass(frozen=True)
class LogPath:
    """A way to make the server log bound values: the settings that turn it on, the switch the guard pins."""

    id: str
    name: str  # as pyaccess.log_exposure() names it
    settings: dict[str, str]
    switch: str
    # what the log shows of the guarded session's calls while the path is on ('' when the guard silences it)
    evidence: str = ""
    # its control is a value written into the statement text, as a DBA types it in psql: the parse and
    # rewritten trees hold bound values as Params, never their values
    literal: bool = False
    needs: dict[str, str] = field(default_factory=dict)


PATHS = [
    LogPath("log_statement=all", "statement logging", {"log_statement": "all"}, "log_parameter_max_length",
            r"LOG:  execute <unnamed>: SELECT public\.store_provision_secret"),
    LogPath("log_statement=mod", "statement logging", {"log_statement": "mod"}, "log_parameter_max_length",
            r"LOG:  execute <unnamed>: INSERT INTO public\.canary_sink"),
    LogPath("log_min_duration_statement", "duration logging", {"log_min_duration_statement": "0"},
            "log_parameter_max_length", r"LOG:  duration: [0-9.]+ ms  execute <unnamed>: SELECT pyaccess\.seal"),
    LogPath("log_min_duration_sample", "duration sampling",
            {"log_min_duration_sample": "0", "log_statement_sample_rate": "1"}, "log_parameter_max_length",
            r"LOG:  duration: [0-9.]+ ms  execute <unnamed>: SELECT pyaccess\.seal"),
    LogPath("log_transaction_sample_rate", "transaction sampling", {"log_transaction_sample_rate": "1"},
            "log_parameter_max_length", r"LOG:  duration: [0-9.]+ ms  execute <unnamed>: SELECT pyaccess\.seal"),
    LogPath("log_parameter_max_length_on_error", "parameters on error", {"log_parameter_max_length_on_error": "-1"},
            "log_parameter_max_length_on_error", r"ERROR:  no OTA group with id"),
    LogPath("debug_print_parse", "parse tree dump", {"debug_print_parse": "on"}, "debug_print_parse", literal=True),
    LogPath("debug_print_rewritten", "rewritten tree dump", {"debug_print_rewritten": "on"}, "debug_print_rewritten",
            literal=True),
    LogPath("debug_print_plan", "plan dump", {"debug_print_plan": "on"}, "debug_print_plan"),
    LogPath("auto_explain.log_verbose", "auto_explain",
            {"auto_explain.log_min_duration": "0", "auto_explain.log_verbose": "on"}, "auto_explain.log_min_duration"),
    LogPath("auto_explain.log_nested_statements", "auto_explain",
            {"auto_explain.log_min_duration": "0", "auto_explain.log_nested_statements": "on",
             "auto_explain.log_verbose": "on", "auto_explain.log_analyze": "on"}, "auto_explain.log_min_duration"),
    LogPath("pgaudit.log=all", "pgaudit", {"pgaudit.log": "all", "pgaudit.log_parameter": "on"},
            "pgaudit.log_parameter", r"AUDIT: SESSION,\d+,\d+,FUNCTION,EXECUTE,FUNCTION,pyaccess\.seal"),
    LogPath("pgaudit.log=read", "pgaudit", {"pgaudit.log": "read", "pgaudit.log_parameter": "on"},
            "pgaudit.log_parameter", r"AUDIT: SESSION,\d+,\d+,READ,SELECT,,,SELECT"),
    LogPath("pgaudit.role", "pgaudit", {"pgaudit.role": AUDITOR, "pgaudit.log_parameter": "on"},
            "pgaudit.log_parameter", r"AUDIT: OBJECT,\d+,\d+,READ,SELECT,TABLE,public\.ota_groups,.*,<not logged>"),
]  # fmt: skip
PATH_IDS = [p.id for p in PATHS]


@pytest.fixture(scope="module")
def leaky(preloaded_server: PgServer) -> PgServer:
    """The preloaded cluster, with MASTER registered, a table for plain INSERTs and a role audited by pgaudit.role."""
    with preloaded_server.connect() as admin:
        admin.execute("SELECT pyaccess.register_key(%b)", (key_id(MASTER),))
        admin.execute("CREATE TABLE public.canary_sink (b bytea)")
        admin.execute(sql.SQL("GRANT INSERT ON public.canary_sink TO {}").format(sql.Identifier(SERVICE)))
        admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(AUDITOR)))
        admin.execute(sql.SQL("GRANT SELECT, UPDATE ON public.ota_groups, pyaccess.keys TO {}").format(
            sql.Identifier(AUDITOR)))  # fmt: skip
    return preloaded_server


def sqlstate(conn: Conn, query: Any, params: tuple[Any, ...] = ()) -> str | None:
    """Run a query; the SQLSTATE it failed with, or None."""
    try:
        conn.execute(query, params)
    except psycopg.Error as exc:
        return exc.sqlstate
    return None


def exercise(server: PgServer, conn: Conn, *, service: str, literal: bool = False) -> Canaries:
    """The calls every case makes on ``conn``; returns their canaries. ``service``: what pyaccess.seal and
    pyaccess.open do on this session, 'work' (guarded) or 'refuse' (PA007)."""
    group, missing = server.new_group(), uuid.uuid4()
    secret, service_secret, text_value = canary_text(), canary_text(), canary_text()
    bound, inserted, wrong = os.urandom(32), os.urandom(32), os.urandom(32)
    canaries = key_canaries(MASTER, group) + Canaries((
        ("the contract's secret", secret.encode()), ("the service's secret", service_secret.encode()),
        ("a bound text", text_value.encode()), ("a bound bytea", bound), ("an inserted bytea", inserted),
        ("the ring of a missing group", ring([MASTER], missing)), ("a wrong key", wrong),
    ))  # fmt: skip

    conn.execute("SELECT %b::bytea, %s::text", (bound, text_value))
    conn.execute("INSERT INTO public.canary_sink (b) VALUES (%b)", (inserted,))
    conn.execute("SELECT public.store_provision_secret(%s, %s, %b)", (group, secret, MASTER))
    assert conn.execute("SELECT public.get_provision_secret(%s, %b)", (group, MASTER)).fetchone() == (secret,)
    assert sqlstate(conn, "SELECT public.store_provision_secret(%s, %s, %b)", (missing, secret, MASTER)) == "PA003"
    assert sqlstate(conn, "SELECT public.get_provision_secret(%s, %b)", (group, wrong)) == "PA005"

    group_ring = ring([MASTER], group)
    seal = "SELECT pyaccess.seal(%s, %b, %b)", (group, service_secret.encode(), group_ring)
    open_ = "SELECT secret FROM pyaccess.open(%s, %b, 2)", (group, group_ring)
    # A missing group: pyaccess.open gives no row, then the library asks why.
    open_missing = "SELECT secret FROM pyaccess.open(%s, %b, 2)", (missing, ring([MASTER], missing))
    why_missing = "SELECT pyaccess.refuse_missing_group(%s)", (missing,)
    if service == "work":
        conn.execute(*seal)
        assert conn.execute(*open_).fetchone() == (service_secret.encode(),)
        assert conn.execute(*open_missing).fetchall() == []
        assert sqlstate(conn, *why_missing) == "PA003"
    else:
        assert sqlstate(conn, *seal) == "PA007"
        assert sqlstate(conn, *open_) == "PA007"
        assert conn.execute(*open_missing).fetchall() == []
        assert sqlstate(conn, *why_missing) == "PA007"
    if literal:
        value = os.urandom(32)
        canaries += Canaries((("a literal bytea", value),))
        conn.execute(sql.SQL("SELECT pg_catalog.length({}::bytea)").format(sql.Literal(value)))
    return canaries


@contextmanager
def guarded(server: PgServer, user: str = SERVICE) -> Iterator[Conn]:
    with server.connect(user) as conn:
        conn.execute("SELECT pyaccess.guard_session()")
        assert conn.execute("SELECT pyaccess._guarded()").fetchone() == (True,)
        yield conn


def assert_control_leaks(server: PgServer, path: LogPath) -> None:
    """Without the guard, this path does write the calls' values to the log: the test can fail."""
    mark = server.log.mark()
    with server.connect(SERVICE) as conn:
        canaries = exercise(server, conn, service="refuse", literal=path.literal)
    leaks = canaries.found_in(server.log.since(mark))
    assert leaks, f"control: with {path.settings} an unguarded session leaked nothing; the test could not fail"


# =========================================================================== each path, unguarded then guarded


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
def test_log_path__unguarded_session_leaks__guarded_session_logs_no_value(leaky: PgServer, path: LogPath) -> None:
    with leaky.system(path.settings):
        assert_control_leaks(leaky, path)

        mark = leaky.log.mark()
        with guarded(leaky) as conn:
            canaries = exercise(leaky, conn, service="work", literal=path.literal)
            log = leaky.log.since(mark)
            assert not canaries.found_in(log), (
                f"with {path.settings}, a guarded session logged {canaries.found_in(log)}"
            )
            if path.evidence:  # the path stayed on: it logged the guarded calls, without their values
                assert re.search(path.evidence, log), f"{path.evidence!r} not in the log: {log[-3000:]}"
            assert exposure(conn, path) == [(False,)]
        with leaky.connect(SERVICE) as conn:
            assert exposure(conn, path) == [(True,)]  # what doctor reads, before the guard


def exposure(conn: Conn, path: LogPath) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT logs_values FROM pyaccess.log_exposure() WHERE path = %s", (path.name,)).fetchall()


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
def test_log_path__turned_on_by_a_reload_after_the_guard__guarded_session_still_logs_no_value(
    leaky: PgServer, path: LogPath
) -> None:
    with guarded(leaky) as conn:
        mark = leaky.log.mark()
        with leaky.system(path.settings):
            # the session has read the new configuration: the guard's mark no longer matches it
            assert conn.execute("SELECT pyaccess._guarded()").fetchone() == (False,)
            # no re-guard yet: the calls still log nothing (the switches were pinned), the service's are refused
            canaries = exercise(leaky, conn, service="refuse", literal=path.literal)
            log = leaky.log.since(mark)
            assert not canaries.found_in(log), f"after a reload to {path.settings}: {canaries.found_in(log)}"
            # the service's next call re-guards in front of itself
            conn.execute("SELECT pyaccess.guard(pyaccess.release())")
            assert conn.execute("SELECT pyaccess._guarded()").fetchone() == (True,)
            canaries += exercise(leaky, conn, service="work", literal=path.literal)
            log = leaky.log.since(mark)
            assert not canaries.found_in(log), f"re-guarded after a reload to {path.settings}: {canaries.found_in(log)}"
            assert_control_leaks(leaky, path)  # the reload did turn the path on, for sessions not guarded


# =========================================================================== DISCARD ALL, RESET ALL


@pytest.mark.parametrize("reset", ["DISCARD ALL", "RESET ALL"])
def test_discard_or_reset_all__unguards_the_session__a_pipelined_guard_in_front_of_the_call_keeps_it_clean(
    leaky: PgServer, reset: str
) -> None:
    with leaky.system({"log_statement": "all"}), guarded(leaky) as conn:
        conn.execute(reset)
        assert conn.execute("SELECT pyaccess._guarded()").fetchone() == (False,)

        # A call sent alone is refused, but too late for its values: statement logging wrote them when the
        # statement started. This is why a client that cannot vouch for its session pipelines the guard.
        group = leaky.new_group()
        mark = leaky.log.mark()
        assert sqlstate(conn, "SELECT secret FROM pyaccess.open(%s, %b, 2)", (group, ring([MASTER], group))) == "PA007"
        assert key_canaries(MASTER, group).found_in(leaky.log.since(mark))

        group = leaky.new_group()
        secret = canary_text()
        canaries = key_canaries(MASTER, group) + Canaries((("secret", secret.encode()),))
        mark = leaky.log.mark()
        with conn.pipeline():
            conn.execute("SELECT pyaccess.guard(pyaccess.release())")
            conn.execute("SELECT pyaccess.seal(%s, %b, %b)", (group, secret.encode(), ring([MASTER], group)))
            opened = conn.execute("SELECT secret FROM pyaccess.open(%s, %b, 2)", (group, ring([MASTER], group)))
        assert opened.fetchone() == (secret.encode(),)
        assert conn.execute("SELECT pyaccess._guarded()").fetchone() == (True,)
        log = leaky.log.since(mark)
    assert "execute <unnamed>: SELECT pyaccess.seal" in log
    assert not canaries.found_in(log), canaries.found_in(log)


# =========================================================================== a role without the grant


@contextmanager
def set_revoked(server: PgServer, setting: str) -> Iterator[None]:
    """The DBA took back (or never made) the migration's GRANT SET on one switch."""
    roles = ", ".join(PYACCESS_ROLES)
    with server.connect() as admin:
        admin.execute(f"REVOKE SET ON PARAMETER {setting} FROM {roles}")
    try:
        yield
    finally:
        with server.connect() as admin:
            admin.execute(f"GRANT SET ON PARAMETER {setting} TO {roles}")


def guard_then_seal(conn: Conn, group: uuid.UUID, secret: bytes) -> None:
    """What the library sends on a session it cannot vouch for: the guard and the call in one pipeline."""
    with conn.pipeline():
        conn.execute("SELECT pyaccess.guard(pyaccess.release())")
        conn.execute("SELECT pyaccess.seal(%s, %b, %b)", (group, secret, ring([MASTER], group)))


NEEDS_GRANT = [p for p in PATHS if p.id in ("log_statement=all", "auto_explain.log_verbose", "pgaudit.log=all")]


@pytest.mark.parametrize("path", NEEDS_GRANT, ids=[p.switch for p in NEEDS_GRANT])
def test_role_without_set_on_the_switch__guard_raises_pa007_naming_it__and_the_pipelined_call_never_runs(
    leaky: PgServer, path: LogPath
) -> None:
    group = leaky.new_group()
    secret = canary_text()
    canaries = key_canaries(MASTER, group) + Canaries((("secret", secret.encode()),))
    with set_revoked(leaky, path.switch), leaky.system(path.settings):
        assert_control_leaks(leaky, path)
        mark = leaky.log.mark()
        with leaky.connect(SERVICE) as conn:
            with pytest.raises(psycopg.Error) as refused:
                guard_then_seal(conn, group, secret.encode())
            assert conn.execute("SELECT pyaccess._guarded()").fetchone() == (False,)
        log = leaky.log.since(mark)
    assert refused.value.sqlstate == "PA007"
    assert f"this role may not turn that off: {path.switch} ({path.name}:" in str(refused.value)
    assert f"GRANT SET ON PARAMETER {path.switch} TO" in (refused.value.diag.message_hint or "")
    assert not canaries.found_in(log), canaries.found_in(log)
    stored = leaky.scalar("SELECT provision_secret_ciphertext FROM public.ota_groups WHERE id = %s", (group,))
    assert stored is None


def test_role_without_set_on_a_switch_whose_path_is_off__guard_passes(leaky: PgServer) -> None:
    with set_revoked(leaky, "auto_explain.log_min_duration"), guarded(leaky) as conn:
        row = conn.execute(
            "SELECT logs_values, can_pin FROM pyaccess.log_exposure() WHERE setting = 'auto_explain.log_min_duration'"
        ).fetchone()
        assert row == (False, False)
        # not pinned: a reload could turn it on before the service re-guards; doctor warns (below)
        assert conn.execute("SELECT current_setting('auto_explain.log_min_duration')").fetchone() == ("-1",)


# =========================================================================== doctor and the 0.1.0 entry points


def assert_server_log_check(server: PgServer, key_file: Path, status: str, *phrases: str) -> None:
    """doctor's "server log" check on ``server`` has ``status``, and its detail holds each of ``phrases``."""
    check = next(c for c in run_checks(server.dsn(SERVICE), key_file=key_file) if c.name == "server log")
    assert check.status == status, check
    for phrase in phrases:
        assert phrase in check.detail, (phrase, check)


def test_doctor__reports_each_path__ok_warning_or_fail_naming_the_setting(leaky: PgServer, tmp_path: Path) -> None:
    key_file = write_new_key_file(tmp_path / "key.json")

    paths = ("statement logging", "plan dump", "auto_explain", "pgaudit", "parameters on error")
    assert_server_log_check(leaky, key_file, "ok", *paths)

    with leaky.system({"auto_explain.log_min_duration": "0", "log_statement": "all"}):
        assert_server_log_check(
            leaky,
            key_file,
            "ok",
            "statement logging (log_statement = all",
            "pyaccess sets log_parameter_max_length = 0 per session",
        )

        with set_revoked(leaky, "auto_explain.log_min_duration"):
            assert_server_log_check(
                leaky,
                key_file,
                "FAIL",
                "auto_explain: FAIL",
                "may not SET auto_explain.log_min_duration",
                "GRANT SET ON PARAMETER auto_explain.log_min_duration TO",
            )

    with set_revoked(leaky, "pgaudit.log_parameter"):
        assert_server_log_check(leaky, key_file, "warning", "pgaudit: warning", "may not SET pgaudit.log_parameter")


def test_0_1_0_entry_points__exposure_as_text_array_and_the_session_guard(leaky: PgServer) -> None:
    with leaky.system({"debug_print_plan": "on"}), leaky.connect(SERVICE) as conn:
        row = conn.execute("SELECT public.provision_secret_log_exposure()").fetchone()
        assert row == (["plan dump (debug_print_plan = on)"],)
        conn.execute("SELECT public.provision_secret_session_guard()")
        assert conn.execute("SELECT pyaccess._guarded(), public.provision_secret_log_exposure()").fetchone() == (
            True,
            [],
        )


def test_migration__grants_set_on_the_extensions_switches_even_where_they_are_not_loaded(
    server: Server, template_db: str
) -> None:
    with psycopg.connect(server.dsn(template_db)) as conn:
        loaded = conn.execute(
            "SELECT name FROM pg_catalog.pg_settings WHERE name IN ('auto_explain.log_min_duration',"
            " 'pgaudit.log_parameter')"
        ).fetchall()
        assert loaded == [], "this test needs a server without auto_explain and pgaudit loaded"
        grants = conn.execute(
            "SELECT r, s, pg_catalog.has_parameter_privilege(r, s, 'SET')"
            " FROM pg_catalog.unnest(%s::text[]) AS r,"
            " pg_catalog.unnest(ARRAY['log_parameter_max_length', 'auto_explain.log_min_duration',"
            " 'pgaudit.log_parameter']) AS s",
            (list(PYACCESS_ROLES),),
        ).fetchall()
    assert [g for g in grants if not g[2]] == []


# =========================================================================== a pool that resets sessions


def test_pool_resetting_sessions__provision_secrets_logs_nothing__where_a_call_sent_alone_would(
    leaky: PgServer, tmp_path: Path
) -> None:
    """Issue 11: a pool's reset hook runs DISCARD ALL or RESET ALL between two borrowings of a connection."""

    key_file = tmp_path / "key.json"
    key_file.write_text(f'{{"key": "{MASTER.hex()}"}}')
    secrets = pyaccess.ProvisionSecrets(key_file=key_file)

    def foreign_reset(conn: Conn) -> None:
        conn.execute("RESET ALL")

    with leaky.system({"log_statement": "all"}):
        for reset in (secrets.reset, foreign_reset):
            group = leaky.new_group()
            secret = canary_text()
            canaries = key_canaries(MASTER, group) + Canaries((("secret", secret.encode()),))
            kwargs: dict[str, Any] = {"autocommit": True}
            with ConnectionPool(
                leaky.dsn(SERVICE), kwargs=kwargs, configure=secrets.configure, reset=reset, min_size=1, max_size=1
            ) as pool:
                secrets.pool = pool
                mark = leaky.log.mark()
                for _ in range(3):  # each borrowing follows a reset
                    secrets.store(group, secret)
                    assert secrets.get(group) == secret
                log = leaky.log.since(mark)
                assert "pyaccess.open" in log, "statement logging was on"
                assert not canaries.found_in(log), (reset, canaries.found_in(log))

                # Control: the same borrowed connection, sent alone as if still guarded (0.1.0's bookkeeping).
                with pool.connection() as conn:
                    conn.execute("SELECT pyaccess.guard(pyaccess.release())")
                    pyaccess.forget(conn)
                    execution._mark(conn)  # the client believes the session guarded
                    conn.execute("RESET ALL")
                    mark = leaky.log.mark()
                    with pytest.raises(pyaccess.ParameterLoggingError):
                        get_with_ring(conn, group, load_key_ring(key_file), GuardMode.ONCE)
                    assert key_canaries(MASTER, group).found_in(leaky.log.since(mark)), "the control leaks"
