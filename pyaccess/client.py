"""Key-holding clients for services that call many times.

A client remembers the key file (cached, hot-reloaded) and, optionally, a
psycopg connection pool. Give its ``configure`` to the pool so that each
pooled connection is guarded once, when it is created::

    secrets = ProvisionSecrets(key_file="/vault/secrets/provisioning_secret_enc_key")
    pool = ConnectionPool(dsn, configure=secrets.configure)
    secrets.pool = pool
    secret = secrets.get(group_id)
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from pyaccess import aio, provision
from pyaccess.keyfile import load_key_ring, resolve_key_file
from pyaccess.provision import KeyFilePath
from pyaccess.session import GuardMode, guard_session, guard_session_async

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool, ConnectionPool

__all__ = ["AsyncProvisionSecrets", "ProvisionSecrets"]


class _Base:
    def __init__(self, *, key_file: KeyFilePath = None, guard: GuardMode = "once") -> None:
        self.key_file: Path = resolve_key_file(key_file)
        self.guard: GuardMode = guard

    def __repr__(self) -> str:
        pool = getattr(self, "pool", None)
        pool_name = getattr(pool, "name", None) if pool is not None else None
        return f"<{type(self).__name__} key_file={str(self.key_file)!r} pool={pool_name!r} guard={self.guard!r}>"


class ProvisionSecrets(_Base):
    """Store and read provision secrets through a pool (or a connection you pass per call)."""

    def __init__(
        self, pool: ConnectionPool[Any] | None = None, *, key_file: KeyFilePath = None, guard: GuardMode = "once"
    ) -> None:
        super().__init__(key_file=key_file, guard=guard)
        self.pool = pool

    def configure(self, conn: psycopg.Connection[Any]) -> None:
        """A pool ``configure`` hook: guards the new connection for its whole session."""
        if self.guard == "once":
            guard_session(conn)

    def store(self, group_id: uuid.UUID | str, secret: str, *, conn: psycopg.Connection[Any] | None = None) -> None:
        """Store a secret: in ``conn``'s transaction if given, else in a pooled connection, committed."""
        ring = load_key_ring(self.key_file)
        if conn is not None:
            provision.store_with_ring(conn, group_id, secret, ring, self.guard)
            return
        with self._pool().connection() as pooled:
            provision.store_with_ring(pooled, group_id, secret, ring, self.guard)

    def get(self, group_id: uuid.UUID | str, *, conn: psycopg.Connection[Any] | None = None) -> str:
        """Read a secret: on ``conn`` if given, else on a pooled connection."""
        ring = load_key_ring(self.key_file)
        if conn is not None:
            return provision.get_with_ring(conn, group_id, ring, self.guard)
        with self._pool().connection() as pooled:
            return provision.get_with_ring(pooled, group_id, ring, self.guard)

    def _pool(self) -> ConnectionPool[Any]:
        if self.pool is None:
            raise TypeError("this client has no pool: pass conn=")
        return self.pool


class AsyncProvisionSecrets(_Base):
    """:class:`ProvisionSecrets` for asyncio, over an ``AsyncConnectionPool`` or an ``AsyncConnection``."""

    def __init__(
        self, pool: AsyncConnectionPool[Any] | None = None, *, key_file: KeyFilePath = None, guard: GuardMode = "once"
    ) -> None:
        super().__init__(key_file=key_file, guard=guard)
        self.pool = pool

    async def configure(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """An async pool ``configure`` hook: guards the new connection for its whole session."""
        if self.guard == "once":
            await guard_session_async(conn)

    async def store(
        self, group_id: uuid.UUID | str, secret: str, *, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> None:
        """Store a secret: in ``conn``'s transaction if given, else in a pooled connection, committed."""
        ring = load_key_ring(self.key_file)
        if conn is not None:
            await aio.store_with_ring(conn, group_id, secret, ring, self.guard)
            return
        async with self._pool().connection() as pooled:
            await aio.store_with_ring(pooled, group_id, secret, ring, self.guard)

    async def get(self, group_id: uuid.UUID | str, *, conn: psycopg.AsyncConnection[Any] | None = None) -> str:
        """Read a secret: on ``conn`` if given, else on a pooled connection."""
        ring = load_key_ring(self.key_file)
        if conn is not None:
            return await aio.get_with_ring(conn, group_id, ring, self.guard)
        async with self._pool().connection() as pooled:
            return await aio.get_with_ring(pooled, group_id, ring, self.guard)

    def _pool(self) -> AsyncConnectionPool[Any]:
        if self.pool is None:
            raise TypeError("this client has no pool: pass conn=")
        return self.pool
