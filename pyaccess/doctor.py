"""`pyaccess doctor`: checks, as the service's own role, that nothing would leak or fail.

Each check is ok, warning or FAIL. A check the role may not perform is a
warning, not a failure. The SQL it runs is in ``queries`` like every other.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, Literal, LiteralString

import psycopg
from yoyo import read_migrations

from pyaccess import queries
from pyaccess.errors import PyAccessError, from_psycopg, redact_key_file_name
from pyaccess.keyfile import KeyFilePath, load_key_ring, resolve_key_file
from pyaccess.keys import KeyRing
from pyaccess.migrate import migrations_dir
from pyaccess.rotation import key_census

__all__ = ["Check", "run_checks"]

Status = Literal["ok", "warning", "FAIL"]


@dataclass(frozen=True)
class Check:
    """One finding: what was checked, its status, and what was seen (never a key or secret)."""

    name: str
    status: Status
    detail: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


Conn = psycopg.Connection[Any]


def _one(conn: Conn, query: LiteralString, params: tuple[Any, ...] = ()) -> Any:
    row = psycopg.Cursor(conn).execute(query, params).fetchone()
    return None if row is None else row[0]


def _pgcrypto(conn: Conn) -> Check:
    row = psycopg.Cursor(conn).execute(queries.DOCTOR_PGCRYPTO).fetchone()
    if row is None:
        return Check("pgcrypto", "FAIL", "the pgcrypto extension is not installed in this database")
    return Check("pgcrypto", "ok", f"pgcrypto {row[0]} in schema {row[1]}")


def _migrations(conn: Conn) -> Check:
    release = _one(conn, queries.DOCTOR_RELEASE) if _one(conn, queries.DOCTOR_HAS_RELEASE) else None
    if release is None:
        return Check("migrations", "FAIL", f"no pyaccess {queries.SQL_RELEASE} SQL here; run pyaccess migrate")
    if release != queries.SQL_RELEASE:
        return Check("migrations", "FAIL", f"the database has pyaccess {release} SQL, this is {queries.SQL_RELEASE}")
    log_table = _one(conn, queries.DOCTOR_CAN_READ_MIGRATIONS)
    if log_table != "readable":
        why = "no public._yoyo_migration" if log_table == "absent" else "this role may not read _yoyo_migration"
        return Check("migrations", "warning", f"SQL of pyaccess {release}; {why} to check the rest against")
    applied = {str(row[0]) for row in psycopg.Cursor(conn).execute(queries.DOCTOR_APPLIED).fetchall()}
    pending = [m.id for m in read_migrations(str(migrations_dir())) if m.id not in applied]
    if pending:
        return Check("migrations", "FAIL", f"pending: {', '.join(pending)}; run pyaccess migrate")
    return Check("migrations", "ok", f"every migration is applied; SQL of pyaccess {release}")


def _functions(conn: Conn) -> Check:
    drift = psycopg.Cursor(conn).execute(queries.DOCTOR_API_DRIFT).fetchall()
    if drift:
        listing = "; ".join(f"{signature}: {problem}" for signature, problem in drift)
        return Check("functions", "FAIL", f"{listing}; run pyaccess migrate to install them as released")
    return Check("functions", "ok", "every function is as this release installed it (body, owner, grants)")


def _privileges(conn: Conn) -> Check:
    paths = psycopg.Cursor(conn).execute(queries.DOCTOR_ESCALATION).fetchall()
    creators = psycopg.Cursor(conn).execute(queries.DOCTOR_CREATE_IN_SCHEMAS).fetchall()
    problems = [f"{problem} (fix: {fix})" for problem, fix in paths]
    problems += [
        f"{who} may create objects in schema {schema} (fix: REVOKE CREATE ON SCHEMA {schema} FROM {who})"
        for schema, who in creators
    ]
    if problems:
        return Check("privileges", "FAIL", "; ".join(problems))
    return Check("privileges", "ok", "no other role can run code as the functions' owner or plant look-alikes")


def _key_file(path: KeyFilePath) -> tuple[Check, KeyRing | None]:
    resolved = resolve_key_file(path)
    try:
        ring = load_key_ring(resolved)
    except PyAccessError as exc:
        return Check("key file", "FAIL", str(exc)), None
    mode = stat.S_IMODE(os.stat(resolved).st_mode)
    ids = ", ".join([f"current {ring.current.key_id}", *(f"previous {key.key_id}" for key in ring.previous)])
    detail = f"{redact_key_file_name(resolved)}: key ids {ids} (mode {mode:04o})"
    if mode & stat.S_IROTH:
        return Check("key file", "warning", f"{detail}: world-readable; set the agent's perms to 0400 or 0440"), ring
    return Check("key file", "ok", detail), ring


def _census(conn: Conn, path: KeyFilePath) -> Check:
    entries = key_census(conn, key_file=path)
    if not entries:
        return Check("key census", "ok", "no key registered and no secrets stored yet")
    listing = ", ".join(
        f"{e.key_id}: {e.secrets} (v{e.version or '-'}, {e.state}, {e.in_key_file} in key file)" for e in entries
    )
    if any(not e.readable for e in entries):
        return Check("key census", "FAIL", f"{listing}; the key file cannot read the secrets under 'absent' ones")
    if any(e.secrets and e.version == 1 for e in entries):
        return Check("key census", "warning", f"{listing}; envelopes v1 remain: run pyaccess rotate")
    if any(e.secrets and e.in_key_file == "previous" for e in entries):
        return Check("key census", "warning", f"{listing}; run pyaccess rotate")
    if any(e.in_key_file == "current" and e.state != "active" for e in entries) or not any(
        e.in_key_file == "current" for e in entries
    ):
        return Check("key census", "warning", f"{listing}; the key file's current key is not active: stores fail")
    return Check("key census", "ok", listing)


def _log_exposure(conn: Conn) -> Check:
    """Each path that could write bound values to the server log: ok where the session guard can pin its
    switch; a warning where it is off but this role may not pin it (a reload could turn it on); FAIL where
    it logs values now and this role may not turn it off (the guard refuses with PA007)."""
    fails: list[str] = []
    warnings: list[str] = []
    oks: list[str] = []
    ungranted: list[str] = []
    for path, setting, safe_value, logs_values, can_pin, detail in psycopg.Cursor(conn).execute(queries.LOG_EXPOSURE):
        if can_pin:
            oks.append(
                f"{path} ({detail}; pyaccess sets {setting} = {safe_value} per session)" if logs_values else path
            )
            continue
        ungranted.append(setting)
        if logs_values:
            fails.append(f"{path}: FAIL, logs bound values ({detail}) and this role may not SET {setting}")
        else:
            warnings.append(
                f"{path}: warning, off ({detail}) but this role may not SET {setting}: a reload could turn it on"
            )
    try:
        with conn.transaction():  # a savepoint in _checked's transaction: the guard's SETs are undone
            psycopg.Cursor(conn).execute(queries.GUARD)
    except psycopg.errors.InsufficientPrivilege:
        raise
    except psycopg.Error as exc:
        fails.append(f"the guard refuses: {from_psycopg(exc)}")
    findings = fails + warnings + ([f"ok: {', '.join(oks)}"] if oks else [])
    if ungranted:
        findings.append(
            f"GRANT SET ON PARAMETER {', '.join(sorted(set(ungranted)))}"
            " TO provision_secret_reader, provision_secret_writer, provision_secret_rotator"
        )
    status: Status = "FAIL" if fails else "warning" if warnings else "ok"
    return Check("server log", status, "; ".join(findings))


def _transport(conn: Conn) -> Check:
    if conn.pgconn.ssl_in_use:
        return Check("connection", "ok", "TLS")
    host = conn.info.host
    if host.startswith("/"):
        return Check("connection", "ok", f"Unix socket {host}")
    address = conn.info.hostaddr or host
    try:
        local = ipaddress.ip_address(address).is_loopback
    except ValueError:
        local = address == "localhost"
    if local:
        return Check("connection", "ok", f"loopback {address}")
    return Check("connection", "warning", f"{host}: neither local nor TLS; the key crosses the network in the clear")


def _membership(conn: Conn) -> Check:
    row = psycopg.Cursor(conn).execute(queries.DOCTOR_ROLE).fetchone()
    assert row is not None  # current_user always has a pg_roles row
    user, superuser, *member, reads_ciphertext = row
    if superuser:
        return Check("role", "warning", f"{user} is a superuser; run services under a member of one pyaccess role")
    roles = [name for name, is_member in zip(("reader", "writer", "rotator"), member, strict=True) if is_member]
    if not roles:
        return Check("role", "FAIL", f"{user} is a member of none of provision_secret_reader, _writer, _rotator")
    if reads_ciphertext and "reader" not in roles:
        return Check("role", "warning", f"{user} may SELECT the ciphertext column directly; only readers should")
    if len(roles) > 1:
        return Check("role", "warning", f"{user} is {' and '.join(roles)}; give each service only what it needs")
    return Check("role", "ok", f"{user} is provision_secret_{roles[0]} only")


def _checked(name: str, conn: Conn, check: Callable[[], Check]) -> Check:
    try:
        with conn.transaction(force_rollback=True):
            return check()
    except PyAccessError as exc:
        status: Status = "warning" if exc.sqlstate == "42501" else "FAIL"
        return Check(name, status, str(exc))
    except psycopg.errors.InsufficientPrivilege as exc:
        return Check(name, "warning", f"this role may not check: {from_psycopg(exc)}")
    except psycopg.Error as exc:
        return Check(name, "FAIL", str(from_psycopg(exc)))


def run_checks(dsn: str, *, key_file: KeyFilePath = None) -> Iterator[Check]:
    """Run every check in order; a connection failure ends the list with a FAIL."""
    key_check, ring = _key_file(key_file)
    yield key_check
    try:
        conn = psycopg.connect(dsn, autocommit=True)
    except psycopg.Error as exc:
        yield Check("connection", "FAIL", str(from_psycopg(exc)))
        return
    with conn:
        yield _transport(conn)
        yield _checked("role", conn, lambda: _membership(conn))
        yield _checked("pgcrypto", conn, lambda: _pgcrypto(conn))
        yield _checked("migrations", conn, lambda: _migrations(conn))
        yield _checked("functions", conn, lambda: _functions(conn))
        yield _checked("privileges", conn, lambda: _privileges(conn))
        yield _checked("server log", conn, lambda: _log_exposure(conn))
        if ring is not None:
            yield _checked("key census", conn, lambda: _census(conn, key_file))
