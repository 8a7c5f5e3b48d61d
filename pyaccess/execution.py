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

import enum
import threading
import weakref
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, LiteralString, TypeVar

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


@dataclass(frozen=True)
class Statement:
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


def guard_session(conn: psycopg.Connection[Any]) -> None:
    """Guard an idle connection for its whole session (a pool's ``configure`` hook may call this)."""
    try:
        # Idle: a transaction of our own holds only the guard, and its SETs last for the session.
        with conn.transaction():
            psycopg.Cursor(conn).execute(queries.GUARD)
    except psycopg.Error as exc:
        raise _translated(conn, exc) from exc
    _mark(conn)


async def guard_session_async(conn: psycopg.AsyncConnection[Any]) -> None:
    """:func:`guard_session` for an :class:`psycopg.AsyncConnection`."""
    try:
        async with conn.transaction():
            await psycopg.AsyncCursor(conn).execute(queries.GUARD)
    except psycopg.Error as exc:
        raise _translated(conn, exc) from exc
    _mark(conn)


def run(conn: psycopg.Connection[Any], steps: Steps[T], mode: GuardMode = GuardMode.ONCE) -> T:
    """Run ``steps`` on ``conn`` behind the log guard; psycopg errors become :class:`PyAccessError`."""
    prepare_adapters(conn)
    cursor: psycopg.Cursor[Any] = psycopg.Cursor(conn)
    statement = next(steps)
    try:
        plan = _plan(conn, mode)
        if plan is _Plan.GUARD_FIRST:
            guard_session(conn)
        while True:
            if plan is _Plan.PIPELINED:
                with conn.pipeline():
                    cursor.execute(queries.GUARD)
                    cursor.execute(statement.query, statement.params)
                plan = _plan(conn, mode)
            else:
                cursor.execute(statement.query, statement.params)
            statement = steps.send(cursor.fetchall() if cursor.description else [])
    except StopIteration as done:
        result: T = done.value
        return result
    except psycopg.Error as exc:
        raise _translated(conn, exc) from exc


async def run_async(conn: psycopg.AsyncConnection[Any], steps: Steps[T], mode: GuardMode = GuardMode.ONCE) -> T:
    """:func:`run` for an :class:`psycopg.AsyncConnection`."""
    prepare_adapters(conn)
    cursor: psycopg.AsyncCursor[Any] = psycopg.AsyncCursor(conn)
    statement = next(steps)
    try:
        plan = _plan(conn, mode)
        if plan is _Plan.GUARD_FIRST:
            await guard_session_async(conn)
        while True:
            if plan is _Plan.PIPELINED:
                async with conn.pipeline():
                    await cursor.execute(queries.GUARD)
                    await cursor.execute(statement.query, statement.params)
                plan = _plan(conn, mode)
            else:
                await cursor.execute(statement.query, statement.params)
            statement = steps.send(await cursor.fetchall() if cursor.description else [])
    except StopIteration as done:
        result: T = done.value
        return result
    except psycopg.Error as exc:
        raise _translated(conn, exc) from exc
