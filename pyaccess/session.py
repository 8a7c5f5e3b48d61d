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

__all__ = ["GuardMode", "execute_guarded", "forget"]

GuardMode = Literal["once", "every-call"]

_guarded: weakref.WeakKeyDictionary[psycopg.Connection[Any], bool] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def forget(conn: psycopg.Connection[Any]) -> None:
    """Make the next call guard ``conn`` again (after ``RESET ALL`` or ``DISCARD ALL``)."""
    with _lock:
        _guarded.pop(conn, None)


def _guard_session(conn: psycopg.Connection[Any]) -> None:
    # Idle, so no transaction of the caller's is open: a transaction of our
    # own holds only the guard, and its SETs then last for the session.
    with conn.transaction():
        psycopg.Cursor(conn).execute(queries.SESSION_GUARD)
    with _lock:
        _guarded[conn] = True


def execute_guarded(
    conn: psycopg.Connection[Any], query: LiteralString, params: tuple[Any, ...] = (), guard: GuardMode = "once"
) -> psycopg.Cursor[Any]:
    """Execute ``query`` on a server-side binding cursor, with the session guard in front of it."""
    cursor: psycopg.Cursor[Any] = psycopg.Cursor(conn)
    if guard == "once" and conn not in _guarded:
        if conn.info.transaction_status == pq.TransactionStatus.IDLE:
            _guard_session(conn)
        else:
            guard = "every-call"
    if guard == "every-call":
        with conn.pipeline():
            cursor.execute(queries.SESSION_GUARD)
            cursor.execute(query, params)
    else:
        cursor.execute(query, params)
    return cursor
