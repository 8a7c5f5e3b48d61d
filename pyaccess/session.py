"""Keeping bound parameters out of the server log, without a round trip per call.

Before a key is sent on a connection, ``provision_secret_session_guard()``
turns off parameter logging for the session (where the role may) and fails
with PA007 if the server would still log parameters. A setting made inside
a transaction is undone if that transaction rolls back, so the guard counts
as done only once it has run outside any transaction of the caller's: then
it holds for the whole session and later calls cost nothing extra. Until
then it rides in the same pipeline as the call, in the caller's
transaction: one round trip either way.

Behind PgBouncer in transaction mode the server session can change under
the connection: pass ``guard="every-call"`` there (see the README).
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Literal, LiteralString

import psycopg
from psycopg import pq

from pyaccess import queries
from pyaccess.wire import prepare_adapters

__all__ = ["GuardMode", "execute_guarded", "execute_guarded_async", "forget", "guard_session", "guard_session_async"]

GuardMode = Literal["once", "every-call"]

AnyConnection = psycopg.Connection[Any] | psycopg.AsyncConnection[Any]

_guarded: weakref.WeakKeyDictionary[AnyConnection, bool] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def _needs_pipeline(conn: AnyConnection, guard: GuardMode) -> bool | None:
    """True: pipeline the guard with the call; False: send the call alone; None: guard the session first."""
    if guard == "every-call":
        return True
    if conn in _guarded:
        return False
    return None if conn.info.transaction_status == pq.TransactionStatus.IDLE else True


def _mark(conn: AnyConnection) -> None:
    with _lock:
        _guarded[conn] = True


def forget(conn: AnyConnection) -> None:
    """Make the next call guard ``conn`` again (after ``RESET ALL`` or ``DISCARD ALL``)."""
    with _lock:
        _guarded.pop(conn, None)


def guard_session(conn: psycopg.Connection[Any]) -> None:
    """Guard an idle connection for its whole session (a pool's ``configure`` hook may call this)."""
    # Idle, so no transaction of the caller's is open: a transaction of our
    # own holds only the guard, and its SETs then last for the session.
    with conn.transaction():
        psycopg.Cursor(conn).execute(queries.SESSION_GUARD)
    _mark(conn)


async def guard_session_async(conn: psycopg.AsyncConnection[Any]) -> None:
    """:func:`guard_session` for an :class:`psycopg.AsyncConnection`."""
    async with conn.transaction():
        await psycopg.AsyncCursor(conn).execute(queries.SESSION_GUARD)
    _mark(conn)


def execute_guarded(
    conn: psycopg.Connection[Any], query: LiteralString, params: tuple[Any, ...] = (), guard: GuardMode = "once"
) -> psycopg.Cursor[Any]:
    """Execute ``query`` on a server-side binding cursor, with the session guard in front of it."""
    prepare_adapters(conn)
    cursor: psycopg.Cursor[Any] = psycopg.Cursor(conn)
    pipeline = _needs_pipeline(conn, guard)
    if pipeline is None:
        guard_session(conn)
    if pipeline:
        with conn.pipeline():
            cursor.execute(queries.SESSION_GUARD)
            cursor.execute(query, params)
    else:
        cursor.execute(query, params)
    return cursor


async def execute_guarded_async(
    conn: psycopg.AsyncConnection[Any], query: LiteralString, params: tuple[Any, ...] = (), guard: GuardMode = "once"
) -> psycopg.AsyncCursor[Any]:
    """:func:`execute_guarded` for an :class:`psycopg.AsyncConnection`."""
    prepare_adapters(conn)
    cursor: psycopg.AsyncCursor[Any] = psycopg.AsyncCursor(conn)
    pipeline = _needs_pipeline(conn, guard)
    if pipeline is None:
        await guard_session_async(conn)
    if pipeline:
        async with conn.pipeline():
            await cursor.execute(queries.SESSION_GUARD)
            await cursor.execute(query, params)
    else:
        await cursor.execute(query, params)
    return cursor
