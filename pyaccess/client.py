"""Key-holding clients for services that call many times.

A client remembers the key file (cached, hot-reloaded) and, optionally, a psycopg
connection pool. Give its ``configure`` to the pool so that each pooled connection is
guarded once, when it is created::

    secrets = ProvisionSecrets(key_file="/vault/secrets/provisioning_secret_enc_key")
    pool = ConnectionPool(dsn, configure=secrets.configure)
    secrets.pool = pool
    secret = secrets.get(group_id)

A pool that resets sessions should use the client's own hook, ``reset=secrets.reset``
(``DISCARD ALL``, then the guard again), so that every connection it hands out is
guarded. With any other ``reset`` hook the client cannot vouch for a connection it
borrows, so it sends the guard in the same pipeline in front of every call (one round
trip still, a little more CPU). Whatever else removes the guard (a ``DISCARD ALL`` or
``RESET ALL`` of your own, a configuration reload) the server notices: it refuses the
call (PA007) before it opens anything, and the client guards the connection again and
retries that call once.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg

from pyaccess import aio, provision
from pyaccess.errors import ParameterLoggingError, redact_key_file_name
from pyaccess.execution import GuardMode, forget, guard_session, guard_session_async
from pyaccess.keyfile import KeyFilePath, load_key_ring, resolve_key_file
from pyaccess.redacted import Plaintext

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool, ConnectionPool

__all__ = ["AsyncProvisionSecrets", "ProvisionSecrets"]

T = TypeVar("T")


def _forget_prepared(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> None:
    """Drop psycopg's record of prepared statements, which DISCARD ALL deallocated on the server.

    psycopg (3.3) notices a DISCARD ALL only the first time it sees that statement's text; from
    the second reset on it would execute statements the server no longer has.
    """
    prepared = getattr(conn, "_prepared", None)
    if prepared is not None:
        prepared.clear()


class _Base:
    def __init__(self, *, key_file: KeyFilePath = None, guard: GuardMode | str = GuardMode.ONCE) -> None:
        self.key_file: Path = resolve_key_file(key_file)
        self.guard = GuardMode(guard)

    def _pooled_mode(self, pool: Any) -> GuardMode:
        """ONCE only where the pool keeps sessions as they are, or resets them with our hook."""
        reset = getattr(pool, "_reset", False)  # psycopg_pool keeps the reset hook there
        if self.guard is GuardMode.ONCE and reset is not None and reset != getattr(self, "reset", None):
            return GuardMode.EVERY_CALL
        return self.guard

    def __repr__(self) -> str:
        pool = getattr(self, "pool", None)
        pool_name = getattr(pool, "name", None) if pool is not None else None
        # Redacted: error trackers record `self`, and PYACCESS_KEY_FILE may hold the key itself by mistake.
        key_file = redact_key_file_name(self.key_file)
        return f"<{type(self).__name__} key_file={key_file!r} pool={pool_name!r} guard={self.guard.value!r}>"


class ProvisionSecrets(_Base):
    """Store and read provision secrets through a pool (or a connection you pass per call)."""

    def __init__(
        self,
        pool: ConnectionPool[Any] | None = None,
        *,
        key_file: KeyFilePath = None,
        guard: GuardMode | str = GuardMode.ONCE,
    ) -> None:
        super().__init__(key_file=key_file, guard=guard)
        self.pool = pool

    def configure(self, conn: psycopg.Connection[Any]) -> None:
        """A pool ``configure`` hook: guards the new connection for its whole session."""
        if self.guard is GuardMode.ONCE:
            guard_session(conn)

    def reset(self, conn: psycopg.Connection[Any]) -> None:
        """A pool ``reset`` hook: ``DISCARD ALL`` for the next user of the connection, then the guard again."""
        autocommit, conn.autocommit = conn.autocommit, True  # DISCARD ALL cannot run in a transaction block
        try:
            conn.execute("DISCARD ALL", prepare=False)  # a prepared DISCARD ALL would deallocate itself
        finally:
            conn.autocommit = autocommit
        _forget_prepared(conn)
        forget(conn)
        if self.guard is GuardMode.ONCE:
            guard_session(conn)

    def store(self, group_id: uuid.UUID | str, secret: str, *, conn: psycopg.Connection[Any] | None = None) -> None:
        """Store a secret: in ``conn``'s transaction if given, else in a pooled connection, committed."""
        plaintext = Plaintext.wrap(secret)
        del secret
        ring = load_key_ring(self.key_file)
        if conn is not None:
            provision.store_with_ring(conn, group_id, plaintext, ring, self.guard)
            return
        self._on_pool(lambda pooled, mode: provision.store_with_ring(pooled, group_id, plaintext, ring, mode))

    def get(self, group_id: uuid.UUID | str, *, conn: psycopg.Connection[Any] | None = None) -> str:
        """Read a secret: on ``conn`` if given, else on a pooled connection."""
        ring = load_key_ring(self.key_file)
        if conn is not None:
            return provision.get_with_ring(conn, group_id, ring, self.guard)
        return self._on_pool(lambda pooled, mode: provision.get_with_ring(pooled, group_id, ring, mode))

    def _on_pool(self, call: Callable[[psycopg.Connection[Any], GuardMode], T]) -> T:
        """``call`` on a pooled connection; once more on another borrowing if the server found it unguarded."""
        try:
            with self._pool().connection() as pooled:
                return call(pooled, self._pooled_mode(self.pool))
        except ParameterLoggingError:  # the guard was lost (forgotten by now): the next borrowing guards again
            with self._pool().connection() as pooled:
                return call(pooled, self._pooled_mode(self.pool))

    def _pool(self) -> ConnectionPool[Any]:
        if self.pool is None:
            raise TypeError("this client has no pool: pass conn=")
        return self.pool


class AsyncProvisionSecrets(_Base):
    """:class:`ProvisionSecrets` for asyncio, over an ``AsyncConnectionPool`` or an ``AsyncConnection``."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any] | None = None,
        *,
        key_file: KeyFilePath = None,
        guard: GuardMode | str = GuardMode.ONCE,
    ) -> None:
        super().__init__(key_file=key_file, guard=guard)
        self.pool = pool

    async def configure(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """An async pool ``configure`` hook: guards the new connection for its whole session."""
        if self.guard is GuardMode.ONCE:
            await guard_session_async(conn)

    async def reset(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """An async pool ``reset`` hook: ``DISCARD ALL`` for the next user of the connection, then the guard again."""
        autocommit = conn.autocommit
        await conn.set_autocommit(True)  # DISCARD ALL cannot run in a transaction block
        try:
            await conn.execute("DISCARD ALL", prepare=False)  # a prepared DISCARD ALL would deallocate itself
        finally:
            await conn.set_autocommit(autocommit)
        _forget_prepared(conn)
        forget(conn)
        if self.guard is GuardMode.ONCE:
            await guard_session_async(conn)

    async def store(
        self, group_id: uuid.UUID | str, secret: str, *, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> None:
        """Store a secret: in ``conn``'s transaction if given, else in a pooled connection, committed."""
        plaintext = Plaintext.wrap(secret)
        del secret
        ring = load_key_ring(self.key_file)
        if conn is not None:
            await aio.store_with_ring(conn, group_id, plaintext, ring, self.guard)
            return
        await self._on_pool(lambda pooled, mode: aio.store_with_ring(pooled, group_id, plaintext, ring, mode))

    async def get(self, group_id: uuid.UUID | str, *, conn: psycopg.AsyncConnection[Any] | None = None) -> str:
        """Read a secret: on ``conn`` if given, else on a pooled connection."""
        ring = load_key_ring(self.key_file)
        if conn is not None:
            return await aio.get_with_ring(conn, group_id, ring, self.guard)
        return await self._on_pool(lambda pooled, mode: aio.get_with_ring(pooled, group_id, ring, mode))

    async def _on_pool(self, call: Callable[[psycopg.AsyncConnection[Any], GuardMode], Awaitable[T]]) -> T:
        """:meth:`ProvisionSecrets._on_pool` for asyncio."""
        try:
            async with self._pool().connection() as pooled:
                return await call(pooled, self._pooled_mode(self.pool))
        except ParameterLoggingError:
            async with self._pool().connection() as pooled:
                return await call(pooled, self._pooled_mode(self.pool))

    def _pool(self) -> AsyncConnectionPool[Any]:
        if self.pool is None:
            raise TypeError("this client has no pool: pass conn=")
        return self.pool
