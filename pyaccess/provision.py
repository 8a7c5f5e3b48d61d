"""Storing and reading provision secrets: one call each, one round trip each."""

from __future__ import annotations

import logging
import os
import re
import uuid
from typing import Any

import psycopg

from pyaccess import queries
from pyaccess.errors import InvalidGroupIdError, InvalidSecretError, translate_errors
from pyaccess.keyfile import load_key_ring
from pyaccess.keys import KeyRing
from pyaccess.session import GuardMode, execute_guarded

__all__ = ["KeyFilePath", "check_group_id", "check_secret", "get_provision_secret", "store_provision_secret"]

logger = logging.getLogger("pyaccess")

KeyFilePath = str | os.PathLike[str] | None


# The spellings PostgreSQL's uuid type reads (any case, optional braces, with
# or without the hyphens): uuid.UUID() alone would also take " 1111…",
# "urn:uuid:…" or digits with underscores, and read a damaged id as another's.
_UUID_TEXT = re.compile(
    r"(\{)?[0-9a-f]{8}(-?)[0-9a-f]{4}\2[0-9a-f]{4}\2[0-9a-f]{4}\2[0-9a-f]{12}(?(1)\})", re.ASCII | re.IGNORECASE
)


def check_group_id(group_id: uuid.UUID | str) -> uuid.UUID:
    """The group id as a UUID, or :class:`InvalidGroupIdError` before any query is sent."""
    if isinstance(group_id, uuid.UUID):
        return group_id
    if isinstance(group_id, str) and _UUID_TEXT.fullmatch(group_id):
        return uuid.UUID(group_id)
    raise InvalidGroupIdError("the OTA group id is not a UUID (8-4-4-4-12 hexadecimal digits)")


_SURROGATE = re.compile("[\ud800-\udfff]")


def check_secret(secret: str) -> str:
    """Refuse what cannot reach the server; SQL checks the rest (NULL, empty, over 4096 bytes)."""
    if not isinstance(secret, str):
        raise InvalidSecretError("the provision secret must be a str")
    if "\x00" in secret:
        raise InvalidSecretError("the provision secret contains a NUL character, which PostgreSQL text cannot hold")
    # Not secret.encode() in a try: its UnicodeEncodeError, kept as __context__, would carry the secret.
    if not secret.isascii() and _SURROGATE.search(secret):
        raise InvalidSecretError("the provision secret is not valid Unicode (lone surrogate)")
    return secret


def store_with_ring(
    conn: psycopg.Connection[Any], group_id: uuid.UUID | str, secret: str, ring: KeyRing, guard: GuardMode = "once"
) -> None:
    """:func:`store_provision_secret` with a key ring already loaded."""
    gid = check_group_id(group_id)
    with translate_errors():
        execute_guarded(conn, queries.STORE, (gid, check_secret(secret), ring.current.material), guard)
    logger.debug("stored the provision secret of OTA group %s", gid)


def get_with_ring(
    conn: psycopg.Connection[Any], group_id: uuid.UUID | str, ring: KeyRing, guard: GuardMode = "once"
) -> str:
    """:func:`get_provision_secret` with a key ring already loaded."""
    gid = check_group_id(group_id)
    with translate_errors():
        row = execute_guarded(conn, queries.GET, (gid, ring.encoded), guard).fetchone()
    assert row is not None  # a function call always returns one row
    logger.debug("read the provision secret of OTA group %s", gid)
    return str(row[0])


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
    store_with_ring(conn, group_id, secret, load_key_ring(key_file))


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
