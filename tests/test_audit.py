"""Audit records (sql/0.2.0/20_audit.sql): each kind of event leaves exactly one ``pyaccess-audit`` line in the
server log, with the documented JSON fields, and never a key or a secret; on a primary and on a hot standby.

The servers log every statement and, with any message raised during a call, its parameters
(``tests.fix_clusters.HOSTILE_LOGGING``): the sessions here are guarded, as the library's are, so
neither the records nor anything else in the log may hold a value they sent.

Audit records are new in 0.2.0: against 0.1.0's SQL every test here fails (no record at all). Against
0.2.0 with 0.1.0's guard they pass: that guard already pinned log_parameter_max_length_on_error, the
setting that puts a call's parameters into the CONTEXT of its audit records.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
import pytest

from tests.fix_clusters import (
    ROTATOR,
    SERVICE,
    Canaries,
    Conn,
    PgServer,
    canary_text,
    group_pair,
    key_canaries,
    key_id,
    ring,
    wait_for_replay,
)

pytestmark = pytest.mark.cluster

APPLICATION = "pyaccess-audit-test"
AUDIT_LINE = re.compile(r"^\S+ \S+ \S+ \[\d+\] LOG:  pyaccess-audit (.*)$", re.MULTILINE)
FIELDS = {"event", "outcome", "group_id", "key_id", "detail", "role", "application_name", "client_addr", "pid", "at"}
ALWAYS = {"event", "outcome", "role", "application_name", "client_addr", "pid", "at"}  # (over TCP)

MASTER = os.urandom(32)  # registered, active
OTHER = os.urandom(32)  # never registered


@dataclass
class Audited:
    primary: PgServer
    standby: PgServer
    sealed: uuid.UUID  # a secret sealed under MASTER
    empty: uuid.UUID  # no secret
    tampered: uuid.UUID  # a secret sealed under MASTER, then one bit of its ciphertext flipped
    canaries: Canaries  # every key and secret the module sends

    def on(self, where: str) -> PgServer:
        return self.primary if where == "primary" else self.standby


@contextmanager
def session(server: PgServer, user: str = SERVICE, **params: str) -> Iterator[Conn]:
    """A guarded session, as the library opens one."""
    with server.connect(user, autocommit=True, application_name=APPLICATION, **params) as conn:
        conn.execute("SELECT pyaccess.guard(pyaccess.release())")
        yield conn


def seal(conn: Conn, group: uuid.UUID, secret: str, master: bytes = MASTER) -> None:
    conn.execute("SELECT pyaccess.seal(%s, %b, %b)", (group, secret.encode(), ring([master], group)))


@pytest.fixture(scope="module")
def audited(replicated_servers: tuple[PgServer, PgServer]) -> Audited:
    primary, standby = replicated_servers
    sealed, empty, tampered = primary.new_group(), primary.new_group(), primary.new_group()
    secrets = {g: canary_text() for g in (sealed, tampered)}
    with session(primary, ROTATOR) as rot:
        rot.execute("SELECT pyaccess.register_key(%b)", (key_id(MASTER),))
    with session(primary) as svc:
        for group, secret in secrets.items():
            seal(svc, group, secret)
    with primary.connect() as admin:  # a bit flipped inside the ciphertext, past version, key id and IV
        admin.execute(
            "UPDATE public.ota_groups SET provision_secret_ciphertext = pg_catalog.set_byte("
            "provision_secret_ciphertext, 40, pg_catalog.get_byte(provision_secret_ciphertext, 40) # 1) WHERE id = %s",
            (tampered,),
        )
    wait_for_replay(primary, standby)
    canaries = Canaries(tuple((f"secret of {g}", s.encode()) for g, s in secrets.items()))
    for group in (sealed, empty, tampered):
        canaries += key_canaries(MASTER, group) + key_canaries(OTHER, group, "unregistered key")
    return Audited(primary, standby, sealed, empty, tampered, canaries)


def records_of(server: PgServer, action: Callable[[], Any], canaries: Canaries) -> list[dict[str, Any]]:
    """The audit records ``server`` wrote while ``action`` ran, each checked against the documented fields;
    nothing written meanwhile, records or not, holds a canary."""
    mark = server.log.mark()
    action()
    log = server.log.since(mark)
    assert not canaries.found_in(log), canaries.found_in(log)
    records = [json.loads(line) for line in AUDIT_LINE.findall(log)]
    assert len(records) == log.count("pyaccess-audit {"), "an audit record not on a line of its own"
    for record in records:
        assert ALWAYS <= record.keys() <= FIELDS, record
        assert record["application_name"] == APPLICATION
        assert record["client_addr"] == "127.0.0.1"
        assert isinstance(record["pid"], int)
        assert datetime.fromisoformat(record["at"]).tzinfo is not None
    return records


def one_record(server: PgServer, action: Callable[[], Any], canaries: Canaries, **expected: Any) -> dict[str, Any]:
    records = records_of(server, action, canaries)
    assert len(records) == 1, records
    (record,) = records
    assert {k: record.get(k) for k in expected} == expected, record
    return record


def raises(sqlstate: str, conn: Conn, query: Any, params: tuple[Any, ...] = ()) -> Callable[[], None]:
    def run() -> None:
        with pytest.raises(psycopg.Error) as failed:
            conn.execute(query, params)
        assert failed.value.sqlstate == sqlstate, failed.value

    return run


OPEN = "SELECT secret FROM pyaccess.open(%s, %b, 2)"
REFUSE_MISSING_GROUP = "SELECT pyaccess.refuse_missing_group(%s)"
WHERE = ["primary", "standby"]


# =========================================================================== reads (primary and hot standby)


@pytest.mark.parametrize("where", WHERE)
def test_read__with_audit_reads_on__one_record(audited: Audited, where: str) -> None:
    server, group = audited.on(where), audited.sealed
    with session(server, options="-c pyaccess.audit_reads=on") as svc:
        record = one_record(
            server,
            lambda: svc.execute(OPEN, (group, ring([MASTER], group))).fetchone(),
            audited.canaries,
            event="read", outcome="ok", group_id=str(group), key_id=key_id(MASTER).hex(), role=SERVICE,
        )  # fmt: skip
        assert record["pid"] == svc.info.backend_pid


@pytest.mark.parametrize("where", WHERE)
def test_read__with_audit_reads_off__no_record(audited: Audited, where: str) -> None:
    server, group = audited.on(where), audited.sealed
    with session(server) as svc:
        assert svc.execute("SELECT current_setting('pyaccess.audit_reads', true)").fetchone() in [(None,), ("",)]
        records = records_of(
            server, lambda: svc.execute(OPEN, (group, ring([MASTER], group))).fetchone(), audited.canaries
        )
        svc.execute("SET pyaccess.audit_reads = off")
        records += records_of(
            server, lambda: svc.execute(OPEN, (group, ring([MASTER], group))).fetchone(), audited.canaries
        )
    assert records == []


REFUSED_READS = ["PA001", "PA003", "PA004", "PA005", "PA006"]


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("code", REFUSED_READS)
def test_read_refused__one_record_whatever_audit_reads_says(audited: Audited, where: str, code: str) -> None:
    server = audited.on(where)
    missing = uuid.uuid4()
    group, keys, key = {
        "PA001": (audited.sealed, ring([MASTER], audited.sealed)[:-1], None),  # a ring cut short
        "PA003": (missing, ring([MASTER], missing), None),
        "PA004": (audited.empty, ring([MASTER], audited.empty), None),
        "PA005": (audited.sealed, ring([OTHER], audited.sealed), key_id(MASTER).hex()),  # the envelope's key id
        "PA006": (audited.tampered, ring([MASTER], audited.tampered), key_id(MASTER).hex()),
    }[code]
    with session(server) as svc:
        if code == "PA003":  # no row from pyaccess.open; the library then asks why, as here
            assert svc.execute(OPEN, (group, keys)).fetchall() == []
            refusal = raises(code, svc, REFUSE_MISSING_GROUP, (group,))
        else:
            refusal = raises(code, svc, OPEN, (group, keys))
        one_record(
            server, refusal, audited.canaries,
            event="read", outcome=f"refused {code}", group_id=str(group), key_id=key, role=SERVICE,
        )  # fmt: skip


# =========================================================================== writes, registry, rotation (primary)


def test_write__one_record(audited: Audited) -> None:
    server = audited.primary
    group, secret = server.new_group(), canary_text()
    canaries = audited.canaries + key_canaries(MASTER, group) + Canaries((("the secret", secret.encode()),))
    with session(server) as svc:
        one_record(
            server, lambda: seal(svc, group, secret), canaries,
            event="write", outcome="ok", group_id=str(group), key_id=key_id(MASTER).hex(), role=SERVICE,
        )  # fmt: skip


@pytest.mark.parametrize("code", ["PA001", "PA002", "PA003", "PA008"])
def test_write_refused__one_record(audited: Audited, code: str) -> None:
    server = audited.primary
    group, secret = server.new_group(), canary_text()
    canaries = audited.canaries + key_canaries(MASTER, group) + key_canaries(OTHER, group, "unregistered key")
    canaries += Canaries((("the secret", secret.encode()),))
    target, value, keys, key = {
        "PA001": (group, secret.encode(), ring([MASTER], group)[:-1], None),
        "PA002": (group, b"", ring([MASTER], group), key_id(MASTER).hex()),
        "PA003": (uuid.uuid4(), secret.encode(), ring([MASTER], group), key_id(MASTER).hex()),
        "PA008": (group, secret.encode(), ring([OTHER], group), key_id(OTHER).hex()),  # never registered
    }[code]
    with session(server) as svc:
        one_record(
            server, raises(code, svc, "SELECT pyaccess.seal(%s, %b, %b)", (target, value, keys)), canaries,
            event="write", outcome=f"refused {code}", group_id=str(target), key_id=key, role=SERVICE,
        )  # fmt: skip
    assert server.scalar("SELECT provision_secret_ciphertext FROM public.ota_groups WHERE id = %s", (group,)) is None


def test_registry_changes__one_record_each(audited: Audited) -> None:
    server, new_id = audited.primary, key_id(os.urandom(32))
    with session(server, ROTATOR) as rot:
        for detail in ("new", "active"):
            one_record(
                server, lambda: rot.execute("SELECT pyaccess.register_key(%b)", (new_id,)), audited.canaries,
                event="register key", outcome="ok", key_id=new_id.hex(), detail=detail, role=ROTATOR,
            )  # fmt: skip
        one_record(
            server, lambda: rot.execute("SELECT pyaccess.retire_key(%b)", (new_id,)), audited.canaries,
            event="retire key", outcome="ok", key_id=new_id.hex(), role=ROTATOR,
        )  # fmt: skip
        one_record(
            server, lambda: rot.execute("SELECT pyaccess.register_key(%b)", (new_id,)), audited.canaries,
            event="register key", outcome="ok", key_id=new_id.hex(), detail="retired", role=ROTATOR,
        )  # fmt: skip
        unknown = key_id(os.urandom(32))
        one_record(
            server, raises("PA008", rot, "SELECT pyaccess.retire_key(%b)", (unknown,)), audited.canaries,
            event="retire key", outcome="refused PA008", key_id=unknown.hex(), role=ROTATOR,
        )  # fmt: skip


def test_rotation_batch__one_record_for_the_batch(audited: Audited) -> None:
    server, new_master = audited.primary, os.urandom(32)
    groups = [server.new_group() for _ in range(3)]
    canaries = audited.canaries
    with session(server) as svc:
        for group in groups:
            secret = canary_text()
            canaries += Canaries(((f"secret of {group}", secret.encode()),)) + key_canaries(MASTER, group)
            canaries += key_canaries(new_master, group, "new key")
            seal(svc, group, secret)
    old = [b"\x02" + key_id(MASTER) + group_pair(MASTER, g) for g in groups]
    new = [group_pair(new_master, g) for g in groups]
    with session(server, ROTATOR) as rot:
        rot.execute("SELECT pyaccess.register_key(%b)", (key_id(new_master),))
        rewrap = "SELECT * FROM pyaccess.rewrap(%s, %b, %b, %b)"
        one_record(
            server, lambda: rot.execute(rewrap, (groups, old, new, key_id(new_master))).fetchall(), canaries,
            event="rotate", outcome="ok", key_id=key_id(new_master).hex(), detail="3 secret(s) re-sealed",
            role=ROTATOR,
        )  # fmt: skip
        unregistered = key_id(os.urandom(32))
        one_record(
            server, raises("PA008", rot, rewrap, (groups, old, new, unregistered)), canaries,
            event="rotate", outcome="refused PA008", key_id=unregistered.hex(), role=ROTATOR,
        )  # fmt: skip
