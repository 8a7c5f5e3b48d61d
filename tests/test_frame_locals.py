"""No key material and no secret in any frame local, on any error path (issue 12, Python side).

Error trackers record the local variables of every frame of an exception's traceback,
chained exceptions included (sentry-sdk does by default). Each test makes a call fail on a
real PostgreSQL, records the exception inside the ``except`` with a real sentry-sdk client
(local variables on, an in-memory transport, no name-based scrubbing), with
``traceback.TracebackException(capture_locals=True)``, and with ``repr``/``str`` (psycopg's
diagnostics included), then looks in all of it, and in the log records, for canaries: the
master keys, the per-group v2 pairs and the v1 pair (whole and each half), and the secret (a
random token), each in every spelling a recorder could use (hex in both cases, latin-1,
Python's bytes escapes, base64 at any alignment, a list of ints, and each of these as
written inside JSON).

Each test first makes the same failing call the naive way, with the secret as a plain
``str`` and the keys as plain ``bytes`` through psycopg (or a naive key-file parser),
recorded the same way: that control must leak, held by psycopg's own frames. It shows that
the tracker records locals and that the matcher finds the canary. Then pyaccess's call must
leak nothing, while the tracker did record pyaccess's frames (and psycopg's, when psycopg
raised) with their locals.

Ways to call: the module functions (idle connection, or inside the caller's transaction,
where the guard is pipelined), ``pyaccess.aio``, ``ProvisionSecrets`` over a
``ConnectionPool``, ``AsyncProvisionSecrets`` over an ``AsyncConnectionPool`` (guard once,
or on every call), ``pyaccess.rotation.rotate`` and the CLI (recorded where it turns the
exception into its one line). The secret is made by a function at the call
(``make_secret()``), so no frame of this module holds it and the whole event is searched.
Only for a malformed key file are the frames of ``pyaccess/keyfile.py`` left out (its
parsing is covered in test_keyfile.py).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import click
import psycopg
import pytest
import sentry_sdk
from click.testing import CliRunner
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool, ConnectionPool
from sentry_sdk.envelope import Envelope
from sentry_sdk.integrations.logging import LoggingIntegration
from sentry_sdk.scrubber import EventScrubber
from sentry_sdk.transport import Transport

import pyaccess
import pyaccess.cli
from pyaccess import queries
from pyaccess.keyfile import load_key_ring
from pyaccess.keys import Key
from pyaccess.rotation import rotate
from tests.fix_db import Server, new_group, register_key, user_dsn

Conn = psycopg.Connection[tuple[Any, ...]]

#: The secret's canary: every secret stored or refused here contains it. Made at run time,
#: so that no source line (sentry records the lines around each frame) holds it.
TOKEN = f"canary-{secrets.token_hex(12)}"
KEYFILE_PY = "pyaccess/keyfile.py"


def valid_secret() -> str:
    return f"{TOKEN} provision secret"


def empty_secret() -> str:
    return ""


def secret_with_nul() -> str:
    return f"{TOKEN}\x00tail"


def secret_with_lone_surrogate() -> str:
    return f"{TOKEN}\ud800tail"


def secret_too_long() -> str:
    return f"{TOKEN} " * (4097 // (len(TOKEN) + 1) + 1)


INVALID_SECRETS: dict[str, Callable[[], str]] = {
    "empty": empty_secret,
    "NUL": secret_with_nul,
    "lone surrogate": secret_with_lone_surrogate,
    "too long": secret_too_long,
}


# --- canaries -----------------------------------------------------------------------------------


def _escaped(value: bytes, quote: str) -> str:
    """``value`` as Python writes it inside ``repr(bytes)`` quoted with ``quote``."""
    out = []
    for byte in value:
        char = chr(byte)
        if char in "\\" + quote:
            out.append("\\" + char)
        elif char == "\t":
            out.append("\\t")
        elif char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif 32 <= byte < 127:
            out.append(char)
        else:
            out.append(f"\\x{byte:02x}")
    return "".join(out)


def _base64_inner(value: bytes) -> list[str]:
    """Base64 of ``value`` at each of the 3 alignments it can have inside longer data, edges cut."""
    forms = []
    for shift, cut in ((0, 0), (1, 2), (2, 3)):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(bytes(shift) + value).decode("ascii")
            forms.append(text[cut:-4])
    return forms


def byte_forms(value: bytes) -> dict[str, str]:
    forms = {
        "hex": value.hex(),
        "HEX": value.hex().upper(),
        "latin-1": value.decode("latin-1"),
        "utf-8 with replacements": value.decode("utf-8", "replace"),
        "repr ('…')": _escaped(value, "'"),
        'repr ("…")': _escaped(value, '"'),
        "list of ints": ", ".join(str(b) for b in value),
    }
    forms.update({f"base64 #{i}": text for i, text in enumerate(_base64_inner(value))})
    # as written inside JSON (sentry's envelope): backslashes doubled, non-ASCII as \\uXXXX
    forms.update({f"{name} in JSON": json.dumps(text)[1:-1] for name, text in list(forms.items())})
    return forms


@dataclass(frozen=True, repr=False)
class Canaries:
    """What must never be recorded, by name: each with every spelling it could be recorded in."""

    forms: dict[str, dict[str, str]]

    def __repr__(self) -> str:
        return f"<{len(self.forms)} canaries>"

    @classmethod
    def of(cls, key_files: list[Path], groups: list[uuid.UUID], extra: dict[str, str] | None = None) -> Canaries:
        forms: dict[str, dict[str, str]] = {"secret": {"text": TOKEN, **byte_forms(TOKEN.encode())}}
        for path in key_files:
            for i, key in enumerate(load_key_ring(path).keys):
                label = f"{path.name}[{i}]"
                forms.update(_key_canaries(label, key, groups))
        for name, text in (extra or {}).items():
            forms[name] = {"text": text}
        return cls(forms)

    def found_in(self, text: str) -> list[str]:
        return [
            f"{name} ({form})" for name, spellings in self.forms.items() for form, s in spellings.items() if s in text
        ]


def _key_canaries(label: str, key: Key, groups: list[uuid.UUID]) -> dict[str, dict[str, str]]:
    forms = {f"master key {label}": byte_forms(key.material)}
    v1 = key.pair(1, uuid.UUID(int=0))
    forms[f"v1 pair {label}"] = byte_forms(v1)
    forms[f"v1 enc key {label}"] = byte_forms(v1[:32])
    forms[f"v1 mac key {label}"] = byte_forms(v1[32:])
    for group in groups:
        pair = key.pair(2, group)
        forms[f"v2 pair {label} {group}"] = byte_forms(pair)
        forms[f"v2 enc key {label} {group}"] = byte_forms(pair[:32])
        forms[f"v2 mac key {label} {group}"] = byte_forms(pair[32:])
    return forms


# --- the error tracker --------------------------------------------------------------------------


class MemoryTransport(Transport):
    """sentry-sdk's transport, kept in memory: what would be sent to Sentry."""

    def __init__(self) -> None:
        super().__init__()
        self.envelopes: list[Envelope] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        self.envelopes.append(envelope)


@dataclass(repr=False)
class Failure:
    """A failed call as recorded: the exception, sentry's event and wire bytes, the traceback with locals."""

    exc: BaseException
    event: dict[str, Any]
    wire: str
    tb: traceback.TracebackException
    logs: str


class Tracker:
    def __init__(self, transport: MemoryTransport, caplog: pytest.LogCaptureFixture) -> None:
        self.transport = transport
        self.caplog = caplog
        self.recorded: list[Failure] = []

    def record(self, exc: BaseException) -> Failure:
        """Called inside the ``except`` that caught ``exc``, as a service's handler would."""
        self.transport.envelopes.clear()
        sentry_sdk.capture_exception(exc)
        sentry_sdk.flush()
        (envelope,) = self.transport.envelopes
        event = envelope.get_event()
        assert event is not None
        failure = Failure(
            exc,
            dict(event),
            envelope.serialize().decode("utf-8"),
            traceback.TracebackException.from_exception(exc, capture_locals=True),
            self.caplog.text,
        )
        self.recorded.append(failure)
        return failure


@pytest.fixture
def tracker(caplog: pytest.LogCaptureFixture) -> Iterator[Tracker]:
    transport = MemoryTransport()
    sentry_sdk.init(
        transport=transport,
        include_local_variables=True,
        default_integrations=False,
        # pyaccess's and psycopg's log records become breadcrumbs of every event
        integrations=[LoggingIntegration(level=logging.DEBUG, event_level=None)],
        # No name-based scrubbing: it would hide a local named "secret" but not one named "params".
        event_scrubber=EventScrubber(denylist=[], pii_denylist=[]),
    )
    caplog.set_level(logging.DEBUG, logger="pyaccess")
    caplog.set_level(logging.DEBUG, logger="psycopg")
    try:
        with sentry_sdk.isolation_scope():
            yield Tracker(transport, caplog)
    finally:
        sentry_sdk.get_client().close()
        sentry_sdk.get_global_scope().set_client(None)


def fails(tracker: Tracker, call: Callable[[], object]) -> Failure:
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - every failure is recorded, then examined
        return tracker.record(exc)
    pytest.fail("the call did not fail")


async def fails_async(tracker: Tracker, call: Callable[[], Awaitable[object]]) -> Failure:
    try:
        await call()
    except Exception as exc:  # noqa: BLE001 - every failure is recorded, then examined
        return tracker.record(exc)
    pytest.fail("the call did not fail")


# --- what a failure exposes ---------------------------------------------------------------------


def _leaves(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from _leaves(value)
    elif isinstance(node, list):
        for item in node:
            yield from _leaves(item)
    elif node is not None:
        yield str(node)


def _frames(event: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for value in event.get("exception", {}).get("values", []):
        yield from (value.get("stacktrace") or {}).get("frames", [])


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is not None and all(current is not s for s in seen):
            seen.append(current)
            todo += [current.__cause__, current.__context__]
    return seen


def _tracebacks(te: traceback.TracebackException) -> Iterator[traceback.TracebackException]:
    seen: list[traceback.TracebackException] = []
    todo: list[traceback.TracebackException | None] = [te]
    while todo:
        current = todo.pop()
        if current is not None and all(current is not s for s in seen):
            seen.append(current)
            yield current
            todo += [current.__cause__, current.__context__]


def _skipped(filename: str | None, skip: tuple[str, ...]) -> bool:
    return filename is not None and filename.replace("\\", "/").endswith(skip)


def exposed(failure: Failure, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """Everything a tracker or a log records of the failure, by place; frames of files in ``skip`` left out."""
    event = json.loads(json.dumps(failure.event))
    for frame in _frames(event):
        if _skipped(frame.get("abs_path"), skip):
            frame.pop("vars", None)
    places = {"sentry event": "\n".join(_leaves(event))}
    if not skip:
        places["sentry envelope on the wire"] = failure.wire
    stacks = [(te, te.stack) for te in _tracebacks(failure.tb)]
    try:
        for te, stack in stacks:
            te.stack = traceback.StackSummary.from_list([f for f in stack if not _skipped(f.filename, skip)])
        places["traceback with locals"] = "".join(failure.tb.format())
    finally:
        for te, stack in stacks:
            te.stack = stack
    texts = []
    for exc in _chain(failure.exc):
        texts += [repr(exc), str(exc)]
        if isinstance(exc, psycopg.Error):
            diag = exc.diag
            texts += [
                str(getattr(diag, field) or "")
                for field in ("message_primary", "message_detail", "message_hint", "context", "internal_query")
            ]
    places["repr and str of the exceptions"] = "\n".join(texts)
    places["log records"] = failure.logs
    return places


def leaks(failure: Failure, canaries: Canaries, skip: tuple[str, ...] = ()) -> list[str]:
    return [
        f"{found} in {place}" for place, text in exposed(failure, skip).items() for found in canaries.found_in(text)
    ]


def holders(failure: Failure, canaries: Canaries, name: str) -> set[str]:
    """The frames (module.function) whose recorded locals hold canary ``name``."""
    one = Canaries({name: canaries.forms[name]})
    return {
        f"{frame.get('module')}.{frame.get('function')}"
        for frame in _frames(failure.event)
        if one.found_in("\n".join(_leaves(frame.get("vars") or {})))
    }


def assert_control_leaks(failure: Failure, canaries: Canaries, *names: str, holder: str = "psycopg") -> None:
    """The naive call leaked each of ``names``, held in the locals of ``holder``'s frames."""
    found = leaks(failure, canaries)
    for name in names:
        for place in ("sentry event", "traceback with locals"):
            assert any(f.startswith(f"{name} (") and f.endswith(f" in {place}") for f in found), (name, place, found)
        assert any(h.startswith(holder) for h in holders(failure, canaries, name)), (name, holder)


def _recorded(failure: Failure, prefix: str, skip: tuple[str, ...] = ()) -> list[str]:
    """The frames of modules ``prefix``* that the tracker recorded with their locals."""
    return [
        f"{f.get('module')}.{f.get('function')}"
        for f in _frames(failure.event)
        if str(f.get("module")).startswith(prefix) and f.get("vars") and not _skipped(f.get("abs_path"), skip)
    ]


def assert_clean(
    failure: Failure,
    canaries: Canaries,
    expected: type[BaseException] | tuple[type[BaseException], ...],
    skip: tuple[str, ...] = (),
) -> None:
    """pyaccess's failure is ``expected``, its frames were recorded with their locals, and nothing leaked."""
    assert isinstance(failure.exc, expected), "".join(traceback.format_exception(failure.exc))
    assert _recorded(failure, "pyaccess", skip), "the tracker recorded no pyaccess frame with its locals"
    if any(isinstance(exc, psycopg.Error) for exc in _chain(failure.exc)):
        assert _recorded(failure, "psycopg"), "the tracker recorded no psycopg frame with its locals"
    found = leaks(failure, canaries, skip)
    if found:
        names = sorted({f.split(" (")[0] for f in found})
        held = {name: sorted(holders(failure, canaries, name)) for name in names}
        pytest.fail(f"{type(failure.exc).__name__} leaked {len(found)}: {found[:6]}; frames holding them: {held}")


def assert_no_query(failure: Failure) -> None:
    """Refused before any query: no psycopg frame on the traceback."""
    assert not [f for f in _frames(failure.event) if str(f.get("module")).startswith("psycopg")]


# --- the naive calls (controls) -----------------------------------------------------------------

SEAL_WITH_TEXT: Any = (
    "SELECT pyaccess.seal(%s::pg_catalog.uuid,"
    " pg_catalog.convert_to(%s::pg_catalog.text, 'UTF8'), %b::pg_catalog.bytea)"
)
OPEN_PLAIN: Any = "SELECT version, secret FROM pyaccess.open(%s::pg_catalog.uuid, %b::pg_catalog.bytea, 2)"
REFUSE_MISSING_GROUP_PLAIN: Any = "SELECT pyaccess.refuse_missing_group(%s::pg_catalog.uuid)"


def plain(dsn: str, *, guarded: bool = True) -> Conn:
    conn: Conn = psycopg.connect(dsn)
    if guarded:
        conn.execute(queries.GUARD)
        conn.commit()
    return conn


def control_store(tracker: Tracker, conn: Conn, group: object, secret: str, keys: bytes) -> Failure:
    """pyaccess.seal through plain psycopg: the secret a plain str, the key ring plain bytes."""
    failure = fails(tracker, lambda: conn.execute(SEAL_WITH_TEXT, (group, secret, keys)))
    if not conn.closed:
        conn.rollback()
    return failure


def control_get(tracker: Tracker, conn: Conn, group: object, keys: bytes) -> Failure:
    """pyaccess.open through plain psycopg, asking why where it gives no row, as the library does: the key
    ring plain bytes."""

    def naive_get() -> None:
        if not conn.execute(OPEN_PLAIN, (group, keys)).fetchall():
            conn.execute(REFUSE_MISSING_GROUP_PLAIN, (group,))

    failure = fails(tracker, naive_get)
    if not conn.closed:
        conn.rollback()
    return failure


def assert_naive_store_leaks(
    tracker: Tracker, naive: Conn, group: uuid.UUID, key_file: Path, canaries: Canaries
) -> None:
    """The control of a store: plain psycopg's failing seal leaks the secret and the group's pair."""
    control = control_store(tracker, naive, group, valid_secret(), sealing(key_file, group))
    assert_control_leaks(control, canaries, "secret", pair_name(key_file, group))


def assert_naive_get_leaks(  # noqa: PLR0917 - a control's whole context
    tracker: Tracker, naive: Conn, group: uuid.UUID, key_file: Path, canaries: Canaries, holder: str = "psycopg"
) -> None:
    """The control of a get: plain psycopg's failing open leaks the group's pair, held in ``holder``'s frames."""
    control = control_get(tracker, naive, group, opening(key_file, group))
    assert_control_leaks(control, canaries, pair_name(key_file, group), holder=holder)


def sealing(key_file: Path, group: uuid.UUID) -> bytes:
    return load_key_ring(key_file).sealing_keys(group).reveal()


def opening(key_file: Path, group: uuid.UUID) -> bytes:
    return load_key_ring(key_file).wire_keys(group).reveal()


def pair_name(key_file: Path, group: uuid.UUID) -> str:
    return f"v2 pair {key_file.name}[0] {group}"


def kill(server: Server, pid: int) -> None:
    with server.admin() as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)


# --- the ways to call pyaccess ------------------------------------------------------------------


class Api:
    """One of pyaccess's ways to store and get, on one connection (or a pool of one)."""

    label: ClassVar[str]
    #: After RESET ALL, does the call still go through (guard sent again, or a retry)?
    survives_lost_guard: ClassVar[bool] = False

    def __init__(self, tracker: Tracker, dsn: str, key_file: Path, *, guard_on_connect: bool = True) -> None:
        self.tracker = tracker
        self.dsn = dsn
        self.key_file = key_file
        self.guard_on_connect = guard_on_connect

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def pool_options(self, configure: object) -> dict[str, Any]:
        """A pool of one autocommit connection, opened by the caller, with ``configure`` where guarded on connect."""
        return {
            "min_size": 1,
            "max_size": 1,
            "open": False,
            "kwargs": {"autocommit": True},
            "configure": configure if self.guard_on_connect else None,
        }

    def open(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def backend_pid(self) -> int:
        raise NotImplementedError

    def reset_all(self) -> None:
        raise NotImplementedError

    def get(self, group: object) -> str:
        raise NotImplementedError

    def fail_store(self, group: object, make_secret: Callable[[], str]) -> Failure:
        raise NotImplementedError

    def fail_get(self, group: object) -> Failure:
        raise NotImplementedError


class ModuleApi(Api):
    label = "module functions"

    def open(self) -> None:
        self.conn: Conn = psycopg.connect(self.dsn)
        self.ready()

    def close(self) -> None:
        self.conn.close()

    def ready(self) -> None:
        """What the caller does between calls (nothing: the connection stays idle)."""

    def backend_pid(self) -> int:
        return self.conn.info.backend_pid

    def reset_all(self) -> None:
        self.conn.execute("RESET ALL")
        self.conn.commit()
        self.ready()

    def end(self) -> None:
        if not self.conn.closed:
            self.conn.rollback()
            self.ready()

    def get(self, group: object) -> str:
        value = pyaccess.get_provision_secret(self.conn, str(group), key_file=self.key_file)
        self.conn.commit()
        self.ready()
        return value

    def fail_store(self, group: object, make_secret: Callable[[], str]) -> Failure:
        conn, key_file = self.conn, self.key_file
        failure = fails(
            self.tracker,
            lambda: pyaccess.store_provision_secret(conn, str(group), make_secret(), key_file=key_file),
        )
        self.end()
        return failure

    def fail_get(self, group: object) -> Failure:
        conn, key_file = self.conn, self.key_file
        failure = fails(self.tracker, lambda: pyaccess.get_provision_secret(conn, str(group), key_file=key_file))
        self.end()
        return failure


class CallerTransactionApi(ModuleApi):
    """The module functions inside a transaction of the caller's: the guard rides in the call's pipeline."""

    label = "module functions in the caller's transaction (pipelined guard)"
    survives_lost_guard = True

    def ready(self) -> None:
        self.conn.execute("SELECT 1")  # the caller's transaction is open before each call


class AsyncModuleApi(Api):
    label = "pyaccess.aio"

    def open(self) -> None:
        self.runner = asyncio.Runner()
        self.conn = self.runner.run(psycopg.AsyncConnection.connect(self.dsn))

    def close(self) -> None:
        self.runner.run(self.conn.close())
        self.runner.close()

    def backend_pid(self) -> int:
        return self.conn.info.backend_pid

    def reset_all(self) -> None:
        async def reset() -> None:
            await self.conn.execute("RESET ALL")
            await self.conn.commit()

        self.runner.run(reset())

    async def _end(self) -> None:
        if not self.conn.closed:
            await self.conn.rollback()

    def get(self, group: object) -> str:
        async def get() -> str:
            value = await pyaccess.aio.get_provision_secret(self.conn, str(group), key_file=self.key_file)
            await self.conn.commit()
            return value

        return self.runner.run(get())

    def fail_store(self, group: object, make_secret: Callable[[], str]) -> Failure:
        conn, key_file = self.conn, self.key_file
        failure = self.runner.run(
            fails_async(
                self.tracker,
                lambda: pyaccess.aio.store_provision_secret(conn, str(group), make_secret(), key_file=key_file),
            )
        )
        self.runner.run(self._end())
        return failure

    def fail_get(self, group: object) -> Failure:
        conn, key_file = self.conn, self.key_file
        failure = self.runner.run(
            fails_async(self.tracker, lambda: pyaccess.aio.get_provision_secret(conn, str(group), key_file=key_file))
        )
        self.runner.run(self._end())
        return failure


class ClientApi(Api):
    label = "ProvisionSecrets with a ConnectionPool"
    survives_lost_guard = True

    def open(self) -> None:
        self.secrets = pyaccess.ProvisionSecrets(key_file=self.key_file)
        self.pool: ConnectionPool[Conn] = ConnectionPool(self.dsn, **self.pool_options(self.secrets.configure))
        self.pool.open(wait=True)
        self.secrets.pool = self.pool

    def close(self) -> None:
        self.pool.close()

    def backend_pid(self) -> int:
        with self.pool.connection() as conn:
            return conn.info.backend_pid

    def reset_all(self) -> None:
        with self.pool.connection() as conn:
            conn.execute("RESET ALL")

    def get(self, group: object) -> str:
        return self.secrets.get(str(group))

    def fail_store(self, group: object, make_secret: Callable[[], str]) -> Failure:
        client = self.secrets
        return fails(self.tracker, lambda: client.store(str(group), make_secret()))

    def fail_get(self, group: object) -> Failure:
        client = self.secrets
        return fails(self.tracker, lambda: client.get(str(group)))


class AsyncClientApi(Api):
    label = "AsyncProvisionSecrets with an AsyncConnectionPool"
    survives_lost_guard = True
    guard: ClassVar[str] = "once"

    def open(self) -> None:
        self.runner = asyncio.Runner()
        self.secrets = pyaccess.AsyncProvisionSecrets(key_file=self.key_file, guard=self.guard)
        self.pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
            self.dsn, **self.pool_options(self.secrets.configure)
        )
        self.runner.run(self.pool.open(wait=True))
        self.secrets.pool = self.pool

    def close(self) -> None:
        self.runner.run(self.pool.close())
        self.runner.close()

    def backend_pid(self) -> int:
        async def pid() -> int:
            async with self.pool.connection() as conn:
                return conn.info.backend_pid

        return self.runner.run(pid())

    def reset_all(self) -> None:
        async def reset() -> None:
            async with self.pool.connection() as conn:
                await conn.execute("RESET ALL")

        self.runner.run(reset())

    def get(self, group: object) -> str:
        return self.runner.run(self.secrets.get(str(group)))

    def fail_store(self, group: object, make_secret: Callable[[], str]) -> Failure:
        client = self.secrets
        return self.runner.run(fails_async(self.tracker, lambda: client.store(str(group), make_secret())))

    def fail_get(self, group: object) -> Failure:
        client = self.secrets
        return self.runner.run(fails_async(self.tracker, lambda: client.get(str(group))))


class AsyncClientEveryCallApi(AsyncClientApi):
    label = "AsyncProvisionSecrets, guard on every call (PgBouncer)"
    guard = "every-call"


APIS = [ModuleApi, CallerTransactionApi, AsyncModuleApi, ClientApi, AsyncClientApi, AsyncClientEveryCallApi]


@pytest.fixture(params=APIS, ids=lambda cls: cls.__name__)
def api(request: pytest.FixtureRequest) -> type[Api]:
    cls: type[Api] = request.param
    return cls


@pytest.fixture
def stored(conn: Conn, group: uuid.UUID, key_file: Path) -> uuid.UUID:
    """``group`` with the canary secret stored under ``key_file``'s key (registered)."""
    register_key(conn, key_file)
    pyaccess.store_provision_secret(conn, group, valid_secret(), key_file=key_file)
    conn.commit()
    return group


@pytest.fixture
def outsider(server: Server, db: str) -> Iterator[str]:
    """A login role in no pyaccess group: its DSN."""
    name, password = f"outsider_{uuid.uuid4().hex[:8]}", secrets.token_hex(8)
    with server.admin() as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(name), sql.Literal(password)))
    yield user_dsn(db, name, password)
    with server.admin() as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


# --- each error path, for each way to call ------------------------------------------------------


def test_unknown_group__store_and_get(api: type[Api], tracker: Tracker, db: str, conn: Conn, key_file: Path) -> None:
    register_key(conn, key_file)
    unknown = uuid.uuid4()
    canaries = Canaries.of([key_file], [unknown])
    with plain(db) as naive:
        assert_naive_store_leaks(tracker, naive, unknown, key_file, canaries)
        # (no row, then the refusal, which carries no key: the naive caller's own frame holds the pair)
        assert_naive_get_leaks(tracker, naive, unknown, key_file, canaries, holder="test_frame_locals.naive_get")

    with api(tracker, db, key_file) as calls:
        assert_clean(calls.fail_store(unknown, valid_secret), canaries, pyaccess.GroupNotFoundError)
        assert_clean(calls.fail_get(unknown), canaries, pyaccess.GroupNotFoundError)


def test_secret_not_stored__get(api: type[Api], tracker: Tracker, db: str, group: uuid.UUID, key_file: Path) -> None:
    canaries = Canaries.of([key_file], [group])
    with plain(db) as naive:
        assert_naive_get_leaks(tracker, naive, group, key_file, canaries)
    with api(tracker, db, key_file) as calls:
        assert_clean(calls.fail_get(group), canaries, pyaccess.SecretNotFoundError)


def test_wrong_key__get(  # noqa: PLR0917 - fixtures
    api: type[Api], tracker: Tracker, db: str, stored: uuid.UUID, key_file: Path, other_key_file: Path
) -> None:
    canaries = Canaries.of([key_file, other_key_file], [stored])
    with plain(db) as naive:
        assert_control_leaks(
            control_get(tracker, naive, stored, opening(other_key_file, stored)),
            canaries,
            pair_name(other_key_file, stored),
        )
    with api(tracker, db, other_key_file) as calls:
        assert_clean(calls.fail_get(stored), canaries, pyaccess.WrongKeyError)


def test_altered_ciphertext__get(  # noqa: PLR0917 - fixtures
    api: type[Api], tracker: Tracker, db: str, conn: Conn, stored: uuid.UUID, key_file: Path
) -> None:
    conn.execute(
        "UPDATE ota_groups SET provision_secret_ciphertext = set_byte(provision_secret_ciphertext,"
        " length(provision_secret_ciphertext) - 1, get_byte(provision_secret_ciphertext,"
        " length(provision_secret_ciphertext) - 1) # 1) WHERE id = %s",
        (stored,),
    )
    conn.commit()
    canaries = Canaries.of([key_file], [stored])
    with plain(db) as naive:
        assert_naive_get_leaks(tracker, naive, stored, key_file, canaries)
    with api(tracker, db, key_file) as calls:
        assert_clean(calls.fail_get(stored), canaries, pyaccess.SecretIntegrityError)


def control_get_and_decode(tracker: Tracker, conn: Conn, group: object, keys: bytes) -> Failure:
    """pyaccess.open through plain psycopg, then the secret decoded where the rows are held."""

    def naive_get() -> str:
        rows = conn.execute(OPEN_PLAIN, (group, keys)).fetchall()
        return bytes(rows[0][1]).decode("utf-8")

    failure = fails(tracker, naive_get)
    conn.rollback()
    return failure


def test_stored_secret_not_utf8__get(api: type[Api], tracker: Tracker, db: str, conn: Conn, key_file: Path) -> None:
    """A secret sealed as bytes that are not UTF-8 (possible through pyaccess.seal): the plaintext
    reaches Python, and is refused there."""
    register_key(conn, key_file)
    group = new_group(conn)
    with plain(db) as naive:
        naive.execute(queries.SEAL, (group, TOKEN.encode() + b"\xff\xfe", sealing(key_file, group)))
        naive.commit()
        canaries = Canaries.of([key_file], [group])
        assert_control_leaks(
            control_get_and_decode(tracker, naive, group, opening(key_file, group)), canaries, "secret", holder=__name__
        )
    with api(tracker, db, key_file) as calls:
        failure = calls.fail_get(group)
    assert_clean(failure, canaries, pyaccess.SecretIntegrityError)
    assert "is not UTF-8 text" in str(failure.exc)


@pytest.mark.parametrize("kind", INVALID_SECRETS)
def test_invalid_secret__refused_before_any_query(  # noqa: PLR0917 - fixtures
    api: type[Api], kind: str, tracker: Tracker, db: str, conn: Conn, group: uuid.UUID, key_file: Path
) -> None:
    register_key(conn, key_file)
    make_secret = INVALID_SECRETS[kind]
    canaries = Canaries.of([key_file], [group])
    with plain(db) as naive:
        control = control_store(tracker, naive, group, make_secret(), sealing(key_file, group))
    assert_control_leaks(control, canaries, *([] if kind == "empty" else ["secret"]), pair_name(key_file, group))

    with api(tracker, db, key_file) as calls:
        failure = calls.fail_store(group, make_secret)
    assert_clean(failure, canaries, pyaccess.InvalidSecretError)
    assert_no_query(failure)


def test_malformed_group_id__refused_before_any_query(
    api: type[Api], tracker: Tracker, db: str, conn: Conn, key_file: Path
) -> None:
    register_key(conn, key_file)
    canaries = Canaries.of([key_file], [])
    with plain(db) as naive:
        control = control_store(tracker, naive, "urn:uuid:not-a-group", valid_secret(), b"\x00" * 72)
    assert_control_leaks(control, canaries, "secret")
    with api(tracker, db, key_file) as calls:
        failure = calls.fail_store("urn:uuid:not-a-group", valid_secret)
    assert_clean(failure, canaries, pyaccess.InvalidGroupIdError)
    assert_no_query(failure)


def test_key_id_not_active__store(  # noqa: PLR0917 - fixtures
    api: type[Api], tracker: Tracker, db: str, conn: Conn, group: uuid.UUID, key_file: Path, other_key_file: Path
) -> None:
    register_key(conn, key_file)  # the registry is not empty: another key id is refused
    canaries = Canaries.of([key_file, other_key_file], [group])
    with plain(db) as naive:
        assert_control_leaks(
            control_store(tracker, naive, group, valid_secret(), sealing(other_key_file, group)),
            canaries,
            "secret",
            pair_name(other_key_file, group),
        )
    with api(tracker, db, other_key_file) as calls:
        assert_clean(calls.fail_store(group, valid_secret), canaries, pyaccess.KeyNotActiveError)


def test_dropped_connection__store_and_get(  # noqa: PLR0917 - fixtures
    api: type[Api], tracker: Tracker, server: Server, db: str, stored: uuid.UUID, key_file: Path
) -> None:
    canaries = Canaries.of([key_file], [stored])
    with plain(db) as naive:
        kill(server, naive.info.backend_pid)
        assert_naive_store_leaks(tracker, naive, stored, key_file, canaries)
    with plain(db) as naive:
        kill(server, naive.info.backend_pid)
        assert_naive_get_leaks(tracker, naive, stored, key_file, canaries)

    with api(tracker, db, key_file) as calls:
        assert calls.get(stored) == valid_secret()  # a working, guarded session first
        kill(server, calls.backend_pid())
        assert_clean(calls.fail_store(stored, valid_secret), canaries, pyaccess.DatabaseError)
    with api(tracker, db, key_file) as calls:
        assert calls.get(stored) == valid_secret()
        kill(server, calls.backend_pid())
        assert_clean(calls.fail_get(stored), canaries, pyaccess.DatabaseError)


def test_access_denied__store_and_get(  # noqa: PLR0917 - fixtures
    api: type[Api], tracker: Tracker, db: str, outsider: str, stored: uuid.UUID, key_file: Path
) -> None:
    canaries = Canaries.of([key_file], [stored], {"the role's password": str(conninfo_to_dict(outsider)["password"])})
    with plain(outsider, guarded=False) as naive:
        assert_naive_store_leaks(tracker, naive, stored, key_file, canaries)
        assert_naive_get_leaks(tracker, naive, stored, key_file, canaries)
    # no configure hook: it would fail in the pool's worker, not in the call
    with api(tracker, outsider, key_file, guard_on_connect=False) as calls:
        assert_clean(calls.fail_store(stored, valid_secret), canaries, pyaccess.AccessDeniedError)
        assert_clean(calls.fail_get(stored), canaries, pyaccess.AccessDeniedError)


def test_guard_lost__store_and_get(  # noqa: PLR0917 - fixtures
    api: type[Api], tracker: Tracker, db: str, conn: Conn, stored: uuid.UUID, key_file: Path
) -> None:
    """RESET ALL on a guarded session: the server refuses (PA007), or the client guards again and the
    call goes on to its own error (here: an unknown group)."""
    unknown = uuid.uuid4()
    canaries = Canaries.of([key_file], [stored, unknown])
    with plain(db) as naive:
        naive.execute("RESET ALL")
        naive.commit()
        assert_naive_store_leaks(tracker, naive, stored, key_file, canaries)
        assert_naive_get_leaks(tracker, naive, stored, key_file, canaries)

    expected = pyaccess.GroupNotFoundError if api.survives_lost_guard else pyaccess.ParameterLoggingError
    with api(tracker, db, key_file) as calls:
        assert calls.get(stored) == valid_secret()
        calls.reset_all()
        assert_clean(calls.fail_store(unknown, valid_secret), canaries, expected)
        assert calls.get(stored) == valid_secret()  # guarded again
        calls.reset_all()
        assert_clean(calls.fail_get(unknown), canaries, expected)


def _truncated(current: str, previous: str) -> str:
    return json.dumps({"key": current, "previous_keys": [previous]})[:-5]


def _typo_in_previous_keys(current: str, previous: str) -> str:
    return json.dumps({"key": current, "previous_keys": [previous[:40] + "g" + previous[41:]]})


MALFORMED_KEY_FILES = {"truncated JSON": _truncated, "typo in previous_keys": _typo_in_previous_keys}


def naive_load(path: Path) -> bytes:
    """A key file parser that keeps the content in its locals (0.1.0 did)."""
    text = path.read_text()
    data = json.loads(text)
    return bytes.fromhex(data["key"]) + b"".join(bytes.fromhex(k) for k in data["previous_keys"])


def broken_key_file(
    kind: str, key_file: Path, tmp_path: Path, tracker: Tracker, groups: list[uuid.UUID]
) -> tuple[Path, Canaries]:
    """``key_file``'s key and a fresh previous one in a file malformed as ``kind``, and their canaries; first
    the control: a naive parse of that file leaks the key."""
    current = load_key_ring(key_file).current.material.hex()
    previous = secrets.token_hex(32)
    broken = tmp_path / "broken.json"
    broken.write_text(MALFORMED_KEY_FILES[kind](current, previous))
    canaries = Canaries.of([key_file], groups, {"previous key": previous[:40]})
    assert_control_leaks(fails(tracker, lambda: naive_load(broken)), canaries, "master key key.json[0]", holder="")
    return broken, canaries


@pytest.mark.parametrize("kind", MALFORMED_KEY_FILES)
def test_malformed_key_file__store_and_get(  # noqa: PLR0917 - fixtures
    api: type[Api], kind: str, tracker: Tracker, db: str, stored: uuid.UUID, key_file: Path, tmp_path: Path
) -> None:
    """Only what the call paths outside keyfile.py hold is checked here (keyfile.py: test_keyfile.py)."""
    broken, canaries = broken_key_file(kind, key_file, tmp_path, tracker, [stored])

    with api(tracker, db, broken) as calls:
        for failure in (calls.fail_store(stored, valid_secret), calls.fail_get(stored)):
            assert_clean(failure, canaries, pyaccess.KeyFileError, skip=(KEYFILE_PY,))


# --- rotation -----------------------------------------------------------------------------------


def _groups_with_secrets(conn: Conn, key_file: Path, n: int) -> list[uuid.UUID]:
    register_key(conn, key_file)
    groups = [new_group(conn) for _ in range(n)]
    for g in groups:
        pyaccess.store_provision_secret(conn, g, valid_secret(), key_file=key_file)
    conn.commit()
    return groups


def _rewrap_entries(old_file: Path, new_file: Path, groups: list[uuid.UUID]) -> tuple[Any, ...]:
    old, new = load_key_ring(old_file).current, load_key_ring(new_file).current
    return (
        groups,
        [b"\x02" + old.id_bytes + old.pair(2, g) for g in groups],
        [new.pair(2, g) for g in groups],
        new.id_bytes,
    )


def control_rewrap(tracker: Tracker, conn: Conn, old_file: Path, new_file: Path, groups: list[uuid.UUID]) -> Failure:
    """pyaccess.rewrap of ``groups`` from ``old_file``'s key to ``new_file``'s through plain psycopg: the old and
    new pairs plain bytes."""
    entries = _rewrap_entries(old_file, new_file, groups)
    failure = fails(tracker, lambda: conn.execute(queries.REWRAP, entries).fetchall())
    if not conn.closed:
        conn.rollback()
    return failure


def control_rewrap_from_a_key_not_in_the_key_file(
    tracker: Tracker, db: str, groups: list[uuid.UUID], key_file: Path, other_key_file: Path
) -> Canaries:
    """The control for secrets under a key the key file lacks: rewrapping from ``other_key_file``'s key (no key
    id matches) to ``key_file``'s, retired, leaks the pair. Returns the canaries of both key files."""
    canaries = Canaries.of([key_file, other_key_file], groups)
    with plain(db) as naive:
        naive.execute("SELECT pyaccess.retire_key(%b)", (load_key_ring(key_file).current.id_bytes,))
        failure = control_rewrap(tracker, naive, other_key_file, key_file, groups)
        assert_control_leaks(failure, canaries, pair_name(other_key_file, groups[0]))
    return canaries


def rotate_fails(
    tracker: Tracker, dsn: str, key_file: Path, *, between_batches: Callable[[Conn], object] | None = None
) -> Failure:
    """The recorded failure of ``rotate`` with ``key_file`` on a new autocommit connection to ``dsn``; with
    ``between_batches``, one secret a batch and ``between_batches(conn)`` after each."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        if between_batches is None:
            return fails(tracker, lambda: rotate(conn, key_file=key_file))

        def after_batch(_: int) -> None:
            between_batches(conn)

        return fails(tracker, lambda: rotate(conn, key_file=key_file, batch_size=1, on_batch=after_batch))


@pytest.fixture
def rotation(db: str, conn: Conn, key_file: Path, other_key_file: Path, tmp_path: Path) -> tuple[list[uuid.UUID], Path]:
    """Three secrets under ``key_file``, and a key file whose current key is new and which holds the old one."""
    groups = _groups_with_secrets(conn, key_file, 3)
    rotating = tmp_path / "rotating.json"
    new, old = load_key_ring(other_key_file).current, load_key_ring(key_file).current
    rotating.write_text(json.dumps({"key": new.material.hex(), "previous_keys": [old.material.hex()]}))
    register_key(conn, rotating)
    return groups, rotating


def test_rotation__secrets_under_a_key_not_in_the_key_file(
    tracker: Tracker, db: str, rotation: tuple[list[uuid.UUID], Path], key_file: Path, other_key_file: Path
) -> None:
    groups, _ = rotation
    canaries = control_rewrap_from_a_key_not_in_the_key_file(tracker, db, groups, key_file, other_key_file)
    assert_clean(rotate_fails(tracker, db, other_key_file), canaries, pyaccess.WrongKeyError)


def test_rotation__altered_ciphertext(
    tracker: Tracker, db: str, conn: Conn, rotation: tuple[list[uuid.UUID], Path], key_file: Path
) -> None:
    groups, rotating = rotation
    conn.execute(
        "UPDATE ota_groups SET provision_secret_ciphertext = set_byte(provision_secret_ciphertext, 40,"
        " get_byte(provision_secret_ciphertext, 40) # 1) WHERE id = %s",
        (groups[1],),
    )
    conn.commit()
    canaries = Canaries.of([rotating], groups)
    with plain(db) as naive:
        assert_control_leaks(
            control_rewrap(tracker, naive, key_file, rotating, groups),
            canaries,
            f"v2 pair {rotating.name}[1] {groups[1]}",
            f"v2 pair {rotating.name}[0] {groups[1]}",
        )
    assert_clean(rotate_fails(tracker, db, rotating), canaries, pyaccess.SecretIntegrityError)


def test_rotation__dropped_connection_between_batches(
    tracker: Tracker, server: Server, db: str, rotation: tuple[list[uuid.UUID], Path], key_file: Path
) -> None:
    groups, rotating = rotation
    canaries = Canaries.of([rotating], groups)
    with plain(db) as naive:
        kill(server, naive.info.backend_pid)
        assert_control_leaks(
            control_rewrap(tracker, naive, key_file, rotating, groups),
            canaries,
            f"v2 pair {rotating.name}[1] {groups[0]}",
        )
    failure = rotate_fails(tracker, db, rotating, between_batches=lambda conn: kill(server, conn.info.backend_pid))
    # The next batch's BEGIN fails: a DatabaseError like any other lost connection.
    assert_clean(failure, canaries, pyaccess.DatabaseError)


def kill_when_waiting_for_a_lock(server: Server, pid: int) -> None:
    with server.admin() as admin:
        for _ in range(300):
            row = admin.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
            if row == ("Lock",):
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
                return
            time.sleep(0.05)


def test_rotation__dropped_connection_during_a_batch(
    tracker: Tracker, server: Server, db: str, rotation: tuple[list[uuid.UUID], Path]
) -> None:
    """The connection dies while pyaccess.rewrap, holding the pairs, waits for a row lock."""
    groups, rotating = rotation
    canaries = Canaries.of([rotating], groups)
    with psycopg.connect(db) as locker, psycopg.connect(db, autocommit=True) as conn:
        locker.execute("SELECT 1 FROM ota_groups WHERE id = %s FOR UPDATE", (groups[0],))
        killer = threading.Thread(target=kill_when_waiting_for_a_lock, args=(server, conn.info.backend_pid))
        killer.start()
        try:
            failure = fails(tracker, lambda: rotate(conn, key_file=rotating))
        finally:
            killer.join()
        locker.rollback()
    assert_clean(failure, canaries, pyaccess.DatabaseError)
    sent = [
        f for f in _frames(failure.event) if f.get("function") == "_send" and f.get("module") == "pyaccess.execution"
    ]
    assert "pyaccess.rewrap(" in str(sent[-1]["vars"]["send"]), "it failed before the batch"


def test_rotation__guard_lost_between_batches(
    tracker: Tracker, db: str, rotation: tuple[list[uuid.UUID], Path], key_file: Path
) -> None:
    groups, rotating = rotation
    canaries = Canaries.of([rotating], groups)
    with plain(db) as naive:
        naive.execute("RESET ALL")
        naive.commit()
        assert_control_leaks(
            control_rewrap(tracker, naive, key_file, rotating, groups),
            canaries,
            f"v2 pair {rotating.name}[1] {groups[0]}",
        )
    failure = rotate_fails(tracker, db, rotating, between_batches=lambda conn: conn.execute("RESET ALL"))
    assert_clean(failure, canaries, pyaccess.ParameterLoggingError)


def test_rotation__access_denied(
    tracker: Tracker, outsider: str, rotation: tuple[list[uuid.UUID], Path], key_file: Path
) -> None:
    groups, rotating = rotation
    canaries = Canaries.of([rotating], groups)
    with plain(outsider, guarded=False) as naive:
        assert_control_leaks(
            control_rewrap(tracker, naive, key_file, rotating, groups),
            canaries,
            f"v2 pair {rotating.name}[1] {groups[0]}",
        )
    assert_clean(rotate_fails(tracker, outsider, rotating), canaries, pyaccess.AccessDeniedError)


@pytest.mark.parametrize("kind", MALFORMED_KEY_FILES)
def test_rotation__malformed_key_file(  # noqa: PLR0917 - fixtures
    kind: str, tracker: Tracker, db: str, rotation: tuple[list[uuid.UUID], Path], key_file: Path, tmp_path: Path
) -> None:
    groups, _ = rotation
    broken, canaries = broken_key_file(kind, key_file, tmp_path, tracker, groups)
    assert_clean(rotate_fails(tracker, db, broken), canaries, pyaccess.KeyFileError, skip=(KEYFILE_PY,))


# --- the command line ---------------------------------------------------------------------------


@pytest.fixture
def cli(tracker: Tracker, monkeypatch: pytest.MonkeyPatch) -> Tracker:
    """Records, as a tracker would, each exception the CLI turns into its one line on stderr."""
    fail = pyaccess.cli._fail

    def recording_fail(message: str, status: int = 1) -> None:
        exc = sys.exc_info()[1]
        if exc is not None:
            tracker.record(exc)
        fail(message, status)

    monkeypatch.setattr(pyaccess.cli, "_fail", recording_fail)
    return tracker


@dataclass(frozen=True)
class CliRun:
    status: int
    stdout: str
    stderr: str


def run_cli(command: click.Command, args: list[str], dsn: str, key_file: Path, stdin: bytes | None = None) -> CliRun:
    result = CliRunner().invoke(
        command,
        args,
        input=stdin,
        env={"PYACCESS_DSN": dsn, "PYACCESS_KEY_FILE": str(key_file)},
        catch_exceptions=False,
    )
    return CliRun(result.exit_code, result.stdout, result.stderr)


def assert_cli_clean(run: CliRun, tracker: Tracker, canaries: Canaries, expected: type[BaseException]) -> None:
    assert run.status == 1, run
    assert run.stdout == ""
    assert run.stderr.startswith("pyaccess: error: "), run.stderr
    assert run.stderr.count("\n") == 1, run.stderr
    assert "Traceback" not in run.stderr
    assert canaries.found_in(run.stderr) == []
    assert len(tracker.recorded) >= 1
    assert_clean(tracker.recorded[-1], canaries, expected)


@click.group(cls=pyaccess.cli._Group)
def naive_cli() -> None:
    """The CLI's own error handling around a naive store: the control for the command line."""


@naive_cli.command("store")
@click.argument("group_id")
@click.option("--dsn", envvar="PYACCESS_DSN")
@click.option("--keys", required=True)
@click.option("--guard/--no-guard", default=True)
def naive_store(group_id: str, dsn: str, keys: str, guard: bool) -> None:
    raw = sys.stdin.buffer.read()
    secret = raw.decode("utf-8").removesuffix("\n")
    with plain(dsn, guarded=guard) as conn:
        conn.execute(SEAL_WITH_TEXT, (group_id, secret, bytes.fromhex(keys)))


def cli_control(  # noqa: PLR0917 - fixtures
    tracker: Tracker,
    dsn: str,
    group: uuid.UUID,
    key_file: Path,
    stdin: bytes,
    canaries: Canaries,
    *,
    guard: bool = True,
    holder: str = "psycopg",
) -> None:
    """The same store by a naive command under the CLI's own error handling: it leaks."""
    before = len(tracker.recorded)
    args = ["store", str(group), "--keys", sealing(key_file, group).hex(), "--guard" if guard else "--no-guard"]
    run = run_cli(naive_cli, args, dsn, key_file, stdin)
    assert run.status == 1, run
    assert len(tracker.recorded) == before + 1
    names = ["secret"] if TOKEN.encode() in stdin else [pair_name(key_file, group)]
    assert_control_leaks(tracker.recorded[-1], canaries, *names, holder=holder)


def assert_cli_store_clean(  # noqa: PLR0917 - a store's whole context
    cli: Tracker, db: str, group: uuid.UUID, key_file: Path, stdin: bytes, canaries: Canaries, error: type[Exception]
) -> None:
    """``pyaccess store`` of ``stdin`` fails with ``error``, and nothing it leaves shows a canary."""
    assert_cli_clean(run_cli(pyaccess.cli.main, ["store", str(group)], db, key_file, stdin), cli, canaries, error)


def test_cli_store__unknown_group(cli: Tracker, db: str, conn: Conn, key_file: Path) -> None:
    register_key(conn, key_file)
    unknown = uuid.uuid4()
    canaries = Canaries.of([key_file], [unknown])
    stdin = valid_secret().encode() + b"\n"
    cli_control(cli, db, unknown, key_file, stdin, canaries)
    assert_cli_store_clean(cli, db, unknown, key_file, stdin, canaries, pyaccess.GroupNotFoundError)


@pytest.mark.parametrize(
    "stdin",
    [
        pytest.param(b"", id="empty"),
        pytest.param(secret_with_nul().encode(), id="NUL"),
        pytest.param(secret_too_long().encode(), id="too long"),
        pytest.param(TOKEN.encode() + b"\xff\xfe not UTF-8", id="not UTF-8"),
        pytest.param(TOKEN.encode() + b"\xed\xa0\x80 surrogate", id="encoded surrogate"),
    ],
)
def test_cli_store__invalid_secret(  # noqa: PLR0917 - fixtures
    stdin: bytes, cli: Tracker, db: str, conn: Conn, group: uuid.UUID, key_file: Path
) -> None:
    register_key(conn, key_file)
    canaries = Canaries.of([key_file], [group])
    utf8 = b"\xff" not in stdin and b"\xed" not in stdin
    # not UTF-8: the naive command fails decoding it, in its own frame
    cli_control(cli, db, group, key_file, stdin, canaries, holder="psycopg" if utf8 else __name__)
    assert_cli_store_clean(cli, db, group, key_file, stdin, canaries, pyaccess.InvalidSecretError)


def test_cli_store__key_id_not_active(  # noqa: PLR0917 - fixtures
    cli: Tracker, db: str, conn: Conn, group: uuid.UUID, key_file: Path, other_key_file: Path
) -> None:
    register_key(conn, key_file)
    canaries = Canaries.of([key_file, other_key_file], [group])
    stdin = valid_secret().encode()
    cli_control(cli, db, group, other_key_file, stdin, canaries)
    assert_cli_store_clean(cli, db, group, other_key_file, stdin, canaries, pyaccess.KeyNotActiveError)


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("nothing stored", pyaccess.SecretNotFoundError),
        ("other key", pyaccess.WrongKeyError),
        ("altered", pyaccess.SecretIntegrityError),
    ],
)
def test_cli_get__refused(  # noqa: PLR0917 - fixtures
    setup: str,
    expected: type[pyaccess.PyAccessError],
    cli: Tracker,
    db: str,
    conn: Conn,
    group: uuid.UUID,
    key_file: Path,
    other_key_file: Path,
) -> None:
    register_key(conn, key_file)
    reader = key_file
    if setup != "nothing stored":
        pyaccess.store_provision_secret(conn, group, valid_secret(), key_file=key_file)
    if setup == "other key":
        reader = other_key_file
    if setup == "altered":
        conn.execute(
            "UPDATE ota_groups SET provision_secret_ciphertext = set_byte(provision_secret_ciphertext, 30,"
            " get_byte(provision_secret_ciphertext, 30) # 1) WHERE id = %s",
            (group,),
        )
    conn.commit()
    canaries = Canaries.of([key_file, other_key_file], [group])
    with plain(db) as naive:
        assert_control_leaks(control_get(cli, naive, group, opening(reader, group)), canaries, pair_name(reader, group))
    assert_cli_clean(run_cli(pyaccess.cli.main, ["get", str(group)], db, reader), cli, canaries, expected)


def test_cli__access_denied(cli: Tracker, outsider: str, conn: Conn, group: uuid.UUID, key_file: Path) -> None:
    register_key(conn, key_file)
    canaries = Canaries.of([key_file], [group])
    stdin = valid_secret().encode()
    cli_control(cli, outsider, group, key_file, stdin, canaries, guard=False)
    for args in (["store", str(group)], ["get", str(group)]):
        assert_cli_clean(
            run_cli(pyaccess.cli.main, args, outsider, key_file, stdin), cli, canaries, pyaccess.AccessDeniedError
        )


def test_cli__dropped_connection(  # noqa: PLR0917 - fixtures
    cli: Tracker, server: Server, db: str, conn: Conn, group: uuid.UUID, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    register_key(conn, key_file)
    pyaccess.store_provision_secret(conn, group, valid_secret(), key_file=key_file)
    conn.commit()
    canaries = Canaries.of([key_file], [group])

    def connect_then_drop(dsn: str) -> Conn:
        dropped: Conn = psycopg.connect(dsn)
        kill(server, dropped.info.backend_pid)
        return dropped

    monkeypatch.setattr(pyaccess.cli, "_connect", connect_then_drop)
    with plain(db) as naive:
        kill(server, naive.info.backend_pid)
        assert_control_leaks(
            control_store(cli, naive, group, valid_secret(), sealing(key_file, group)), canaries, "secret"
        )
    for args in (["store", str(group)], ["get", str(group)]):
        assert_cli_clean(
            run_cli(pyaccess.cli.main, args, db, key_file, valid_secret().encode()),
            cli,
            canaries,
            pyaccess.DatabaseError,
        )


@pytest.mark.parametrize("kind", MALFORMED_KEY_FILES)
def test_cli__malformed_key_file(  # noqa: PLR0917 - fixtures
    kind: str, cli: Tracker, db: str, conn: Conn, group: uuid.UUID, key_file: Path, tmp_path: Path
) -> None:
    register_key(conn, key_file)
    broken, canaries = broken_key_file(kind, key_file, tmp_path, cli, [group])
    for args in (["store", str(group)], ["get", str(group)], ["rotate"]):
        run = run_cli(pyaccess.cli.main, args, db, broken, valid_secret().encode())
        assert run.status == 1, run
        assert run.stderr.count("\n") == 1, run.stderr
        assert canaries.found_in(run.stderr) == []
        assert_clean(cli.recorded[-1], canaries, pyaccess.KeyFileError, skip=(KEYFILE_PY,))


def test_cli_rotate__secrets_under_a_key_not_in_the_key_file(
    cli: Tracker, db: str, rotation: tuple[list[uuid.UUID], Path], key_file: Path, other_key_file: Path
) -> None:
    groups, _ = rotation
    canaries = control_rewrap_from_a_key_not_in_the_key_file(cli, db, groups, key_file, other_key_file)
    assert_cli_clean(run_cli(pyaccess.cli.main, ["rotate"], db, other_key_file), cli, canaries, pyaccess.WrongKeyError)


# --- the canary matcher itself ------------------------------------------------------------------


def test_matcher__finds_each_spelling_inside_longer_data(key_file: Path) -> None:
    key = load_key_ring(key_file).current
    group = uuid.uuid4()
    canaries = Canaries.of([key_file], [group])
    pair = key.pair(2, group)
    for prefix in (b"", b"\x01", b"\x01\x02", b"\x01\x02\x03"):
        data = prefix + key.id_bytes + pair + b"\x00tail"
        for text in (
            data.hex(),
            data.hex().upper(),
            repr(data),
            data.decode("latin-1"),
            base64.b64encode(data).decode(),
            base64.urlsafe_b64encode(data).decode(),
            str(list(data)),
            json.dumps(repr(data)),
            json.dumps(data.decode("latin-1")),
        ):
            assert any(f.startswith(f"v2 pair {key_file.name}[0] {group} ") for f in canaries.found_in(text)), text
    assert canaries.found_in(repr(pyaccess.load_key_ring(key_file))) == []
