"""Running pyaccess's statements on a connection, behind the log guard, one round trip per call.

What a call asks of the database is written once, as *steps* (:mod:`pyaccess.steps`): a
generator that yields each :class:`Statement` and receives its rows. :func:`run` and
:func:`run_async` are the only two places where sync and async differ: the ``await``.

The log guard (``pyaccess.guard``, see ``sql/0.2.0/30_guard.sql``) must hold on the
session before a key is sent. A setting made inside a transaction is undone if that
transaction rolls back, so a session counts as guarded only once the guard ran outside
any transaction of the caller's; until then the guard rides in the same pipeline as the
call. The server checks the guard on every call too (no extra round trip): after a
``DISCARD ALL``, ``RESET ALL`` or a configuration reload it refuses with PA007, and the
connection is guarded again on its next call.
"""

from __future__ import annotations

import contextlib
import enum
import threading
import weakref
from collections.abc import Generator
from types import TracebackType
from typing import Any, Generic, LiteralString, NamedTuple, TypeVar

import psycopg
from psycopg import pq

from pyaccess import queries
from pyaccess.errors import ParameterLoggingError, from_psycopg
from pyaccess.redacted import prepare_adapters

__all__ = ["GuardMode", "Statement", "Steps", "forget", "guard_session", "guard_session_async", "run", "run_async"]

T = TypeVar("T")
AnyConnection = psycopg.Connection[Any] | psycopg.AsyncConnection[Any]


class GuardMode(enum.StrEnum):
    """When the log guard runs: once per session, or in front of every call (PgBouncer transaction pooling)."""

    ONCE = "once"
    EVERY_CALL = "every-call"


class Statement(NamedTuple):
    """One statement of a call, and its parameters (keys and secrets inside :class:`~pyaccess.redacted.Redacted`)."""

    query: LiteralString
    params: tuple[Any, ...] = ()


#: What a call asks of the database: yields statements, receives each one's rows, returns the result.
Steps = Generator[Statement, list[tuple[Any, ...]], T]


class _Plan(enum.Enum):
    ALONE = "the session is guarded: send the call alone"
    PIPELINED = "send the guard and the call in one pipeline, in the caller's transaction"
    GUARD_FIRST = "idle: guard the session in a transaction of its own, then send the call"


_sessions_guarded: weakref.WeakSet[AnyConnection] = weakref.WeakSet()
_lock = threading.Lock()


def _plan(conn: AnyConnection, mode: GuardMode) -> _Plan:
    if mode is GuardMode.EVERY_CALL:
        return _Plan.PIPELINED
    if conn in _sessions_guarded:
        return _Plan.ALONE
    if conn.info.transaction_status == pq.TransactionStatus.IDLE:
        return _Plan.GUARD_FIRST
    return _Plan.PIPELINED


def _mark(conn: AnyConnection) -> None:
    with _lock:
        _sessions_guarded.add(conn)


def forget(conn: AnyConnection) -> None:
    """Make the next call guard ``conn`` again (the server would refuse it otherwise)."""
    with _lock:
        _sessions_guarded.discard(conn)


def _translated(conn: AnyConnection, exc: psycopg.Error) -> Exception:
    error = from_psycopg(exc)
    if isinstance(error, ParameterLoggingError):
        forget(conn)  # lost or refused: the next call guards again
    return error


class _Send(NamedTuple):
    """One round trip: statements sent together, in a transaction of their own or in one pipeline."""

    statements: tuple[Statement, ...]
    own_transaction: bool = False
    pipelined: bool = False


_GUARD = Statement(queries.GUARD)
# Idle: a transaction of our own holds only the guard, and its SETs last for the session.
_GUARD_SESSION = _Send((_GUARD,), own_transaction=True)


def _around(conn: AnyConnection, send: _Send) -> Any:
    """The context a round trip runs in; the same methods exist on sync and async connections."""
    if send.own_transaction:
        return conn.transaction()
    return conn.pipeline() if send.pipelined else contextlib.nullcontext()


class _Call(Generic[T]):
    """A call's round trips, decided once for both drivers: the guard, then each statement of its steps."""

    result: T

    def __init__(self, conn: AnyConnection, steps: Steps[T], mode: GuardMode) -> None:
        prepare_adapters(conn)
        self.conn, self._steps, self._mode = conn, steps, mode
        self._statement = next(steps)
        self._guarding = _plan(conn, mode) is _Plan.GUARD_FIRST
        self.done = False

    @property
    def next(self) -> _Send:
        """The next round trip."""
        if self._guarding:
            return _GUARD_SESSION
        if _plan(self.conn, self._mode) is _Plan.PIPELINED:
            return _Send((_GUARD, self._statement), pipelined=True)
        return _Send((self._statement,))

    def receive(self, rows: list[tuple[Any, ...]]) -> None:
        """The rows of the last round trip."""
        if self._guarding:
            self._guarding = False
            _mark(self.conn)
            return
        try:
            self._statement = self._steps.send(rows)
        except StopIteration as stop:
            self.done = True
            self.result = stop.value
        except BaseException:
            rows.clear()  # no frame on the error's traceback keeps what the server returned
            raise


class _Translating:
    """psycopg errors become :class:`~pyaccess.PyAccessError`; a session whose guard was lost is forgotten.

    A class, not a generator: it runs on every call.
    """

    __slots__ = ("conn",)

    def __init__(self, conn: AnyConnection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if isinstance(exc, psycopg.Error):
            raise _translated(self.conn, exc) from exc


def _has_rows(cursor: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any]) -> bool:
    # (not cursor.description: it builds the column objects, on every call)
    result = cursor.pgresult
    return result is not None and result.status == pq.ExecStatus.TUPLES_OK


# The two drivers: the only code that differs between sync and async is the await.


def _send(conn: psycopg.Connection[Any], send: _Send) -> list[tuple[Any, ...]]:
    cursor = psycopg.Cursor(conn)
    with _around(conn, send):
        for statement in send.statements:
            cursor.execute(statement.query, statement.params)
    return cursor.fetchall() if _has_rows(cursor) else []


async def _send_async(conn: psycopg.AsyncConnection[Any], send: _Send) -> list[tuple[Any, ...]]:
    cursor = psycopg.AsyncCursor(conn)
    async with _around(conn, send):
        for statement in send.statements:
            await cursor.execute(statement.query, statement.params)
    return await cursor.fetchall() if _has_rows(cursor) else []


def run(conn: psycopg.Connection[Any], steps: Steps[T], mode: GuardMode = GuardMode.ONCE) -> T:
    """Run ``steps`` on ``conn`` behind the log guard; psycopg errors become :class:`PyAccessError`."""
    call = _Call(conn, steps, mode)
    with _Translating(conn):
        while not call.done:
            call.receive(_send(conn, call.next))
    return call.result


async def run_async(conn: psycopg.AsyncConnection[Any], steps: Steps[T], mode: GuardMode = GuardMode.ONCE) -> T:
    """:func:`run` for an :class:`psycopg.AsyncConnection`."""
    call = _Call(conn, steps, mode)
    with _Translating(conn):
        while not call.done:
            call.receive(await _send_async(conn, call.next))
    return call.result


def guard_session(conn: psycopg.Connection[Any]) -> None:
    """Guard an idle connection for its whole session (a pool's ``configure`` hook may call this)."""
    with _Translating(conn):
        _send(conn, _GUARD_SESSION)
    _mark(conn)


async def guard_session_async(conn: psycopg.AsyncConnection[Any]) -> None:
    """:func:`guard_session` for an :class:`psycopg.AsyncConnection`."""
    with _Translating(conn):
        await _send_async(conn, _GUARD_SESSION)
    _mark(conn)
