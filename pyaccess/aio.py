"""The same two operations for :class:`psycopg.AsyncConnection`.

Same errors, same transaction rules (the caller's transaction, never a
commit), same log safety. The key file costs one ``stat`` per call; it is
read again only when the Vault agent has re-rendered it.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import psycopg

from pyaccess import queries
from pyaccess.errors import translate_errors
from pyaccess.keyfile import load_key_ring
from pyaccess.keys import KeyRing
from pyaccess.provision import KeyFilePath, check_group_id, check_secret
from pyaccess.session import GuardMode, execute_guarded_async

__all__ = ["get_provision_secret", "get_with_ring", "store_provision_secret", "store_with_ring"]

logger = logging.getLogger("pyaccess")


async def store_with_ring(
    conn: psycopg.AsyncConnection[Any],
    group_id: uuid.UUID | str,
    secret: str,
    ring: KeyRing,
    guard: GuardMode = "once",
) -> None:
    """:func:`store_provision_secret` with a key ring already loaded."""
    gid = check_group_id(group_id)
    with translate_errors():
        await execute_guarded_async(conn, queries.STORE, (gid, check_secret(secret), ring.current.material), guard)
    logger.debug("stored the provision secret of OTA group %s", gid)


async def get_with_ring(
    conn: psycopg.AsyncConnection[Any], group_id: uuid.UUID | str, ring: KeyRing, guard: GuardMode = "once"
) -> str:
    """:func:`get_provision_secret` with a key ring already loaded."""
    gid = check_group_id(group_id)
    with translate_errors():
        cursor = await execute_guarded_async(conn, queries.GET, (gid, ring.encoded), guard)
        row = await cursor.fetchone()
    assert row is not None  # a function call always returns one row
    logger.debug("read the provision secret of OTA group %s", gid)
    return str(row[0])


async def store_provision_secret(
    conn: psycopg.AsyncConnection[Any],
    group_id: uuid.UUID | str,
    secret: str,
    *,
    key_file: KeyFilePath = None,
) -> None:
    """Async :func:`pyaccess.store_provision_secret`."""
    await store_with_ring(conn, group_id, secret, load_key_ring(key_file))


async def get_provision_secret(
    conn: psycopg.AsyncConnection[Any],
    group_id: uuid.UUID | str,
    *,
    key_file: KeyFilePath = None,
) -> str:
    """Async :func:`pyaccess.get_provision_secret`."""
    return await get_with_ring(conn, group_id, load_key_ring(key_file))
