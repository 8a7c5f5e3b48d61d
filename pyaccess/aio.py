"""The same two operations for :class:`psycopg.AsyncConnection`.

Same steps (:mod:`pyaccess.steps`), same errors, same transaction rules (the caller's
transaction, never a commit), same log safety. The key file costs one ``stat`` per call;
it is read again only when the Vault agent has re-rendered it.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg

from pyaccess import steps
from pyaccess.execution import GuardMode, run_async
from pyaccess.keyfile import KeyFilePath, load_key_ring
from pyaccess.keys import KeyRing
from pyaccess.redacted import Plaintext

__all__ = ["get_provision_secret", "get_with_ring", "store_provision_secret", "store_with_ring"]


async def store_with_ring(
    conn: psycopg.AsyncConnection[Any],
    group_id: uuid.UUID | str,
    plaintext: Plaintext,
    ring: KeyRing,
    guard: GuardMode = GuardMode.ONCE,
) -> None:
    """:func:`store_provision_secret` with the secret wrapped and the key ring loaded."""
    await run_async(conn, steps.store(group_id, plaintext, ring), guard)


async def get_with_ring(
    conn: psycopg.AsyncConnection[Any], group_id: uuid.UUID | str, ring: KeyRing, guard: GuardMode = GuardMode.ONCE
) -> str:
    """:func:`get_provision_secret` with the key ring loaded."""
    return await run_async(conn, steps.get(group_id, ring), guard)


async def store_provision_secret(
    conn: psycopg.AsyncConnection[Any],
    group_id: uuid.UUID | str,
    secret: str,
    *,
    key_file: KeyFilePath = None,
) -> None:
    """Async :func:`pyaccess.store_provision_secret`."""
    plaintext = Plaintext.wrap(secret)
    del secret
    await store_with_ring(conn, group_id, plaintext, load_key_ring(key_file))


async def get_provision_secret(
    conn: psycopg.AsyncConnection[Any],
    group_id: uuid.UUID | str,
    *,
    key_file: KeyFilePath = None,
) -> str:
    """Async :func:`pyaccess.get_provision_secret`."""
    return await get_with_ring(conn, group_id, load_key_ring(key_file))
