"""Storing and reading provision secrets: one call each, one round trip each."""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any

import psycopg

from pyaccess import queries
from pyaccess.errors import InvalidGroupIdError, InvalidSecretError, translate_errors
from pyaccess.keyfile import load_key_ring
from pyaccess.session import execute_guarded

__all__ = ["get_provision_secret", "store_provision_secret"]

logger = logging.getLogger("pyaccess")

KeyFilePath = str | os.PathLike[str] | None


def _group_id(group_id: uuid.UUID | str) -> uuid.UUID:
    if isinstance(group_id, uuid.UUID):
        return group_id
    if isinstance(group_id, str):
        try:
            return uuid.UUID(group_id)
        except ValueError:
            pass
    raise InvalidGroupIdError("the OTA group id is not a UUID")


def _check_encodable(secret: str) -> None:
    # What cannot reach the server: SQL checks the rest (NULL, empty, size).
    if not isinstance(secret, str):
        raise InvalidSecretError("the provision secret must be a str")
    if "\x00" in secret:
        raise InvalidSecretError("the provision secret contains a NUL character, which PostgreSQL text cannot hold")
    try:
        secret.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidSecretError("the provision secret is not valid Unicode (lone surrogate)") from None


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
    gid = _group_id(group_id)
    _check_encodable(secret)
    ring = load_key_ring(key_file)
    with translate_errors():
        execute_guarded(conn, queries.STORE, (gid, secret, ring.current.material))
    logger.debug("stored the provision secret of OTA group %s", gid)


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
    gid = _group_id(group_id)
    ring = load_key_ring(key_file)
    with translate_errors():
        row = execute_guarded(conn, queries.GET, (gid, ring.materials)).fetchone()
    assert row is not None  # a function call always returns one row
    secret: str = row[0]
    logger.debug("read the provision secret of OTA group %s", gid)
    return secret
