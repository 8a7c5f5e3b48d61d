"""Storing and reading provision secrets: one call each, one round trip each.

Each function drops its reference to the secret as soon as it is wrapped, so that no frame
on an error's traceback holds it (error trackers record frame locals).
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg

from pyaccess import steps
from pyaccess.execution import GuardMode, run
from pyaccess.keyfile import KeyFilePath, load_key_ring
from pyaccess.keys import KeyRing
from pyaccess.redacted import Plaintext

__all__ = ["KeyFilePath", "get_provision_secret", "get_with_ring", "store_provision_secret", "store_with_ring"]


def store_with_ring(
    conn: psycopg.Connection[Any],
    group_id: uuid.UUID | str,
    plaintext: Plaintext,
    ring: KeyRing,
    guard: GuardMode = GuardMode.ONCE,
) -> None:
    """:func:`store_provision_secret` with the secret wrapped and the key ring loaded."""
    run(conn, steps.store(group_id, plaintext, ring), guard)


def get_with_ring(
    conn: psycopg.Connection[Any], group_id: uuid.UUID | str, ring: KeyRing, guard: GuardMode = GuardMode.ONCE
) -> str:
    """:func:`get_provision_secret` with the key ring loaded."""
    return run(conn, steps.get(group_id, ring), guard)


def store_provision_secret(
    conn: psycopg.Connection[Any],
    group_id: uuid.UUID | str,
    secret: str,
    *,
    key_file: KeyFilePath = None,
) -> None:
    """Set or replace the provision secret of OTA group ``group_id``, encrypted under the current key.

    Runs in the caller's transaction and never commits. Raises a
    :class:`~pyaccess.PyAccessError` subclass on any failure.
    """
    plaintext = Plaintext.wrap(secret)
    del secret
    store_with_ring(conn, group_id, plaintext, load_key_ring(key_file))


def get_provision_secret(
    conn: psycopg.Connection[Any],
    group_id: uuid.UUID | str,
    *,
    key_file: KeyFilePath = None,
) -> str:
    """Return the provision secret of OTA group ``group_id``, sealed under any key of the key file.

    Runs in the caller's transaction and never commits. Raises a
    :class:`~pyaccess.PyAccessError` subclass on any failure.
    """
    return get_with_ring(conn, group_id, load_key_ring(key_file))
