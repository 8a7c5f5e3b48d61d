"""Keys on the wire: a key ring encoded once per key-file load as a binary ``bytea[]``.

psycopg would build the array from a Python list on every call (about 12 µs
on the reference machine); the ring only changes when the Vault agent
re-renders the key file, so its encoding is made once and reused.
"""

from __future__ import annotations

import struct
import weakref
from collections.abc import Sequence
from typing import Any, Final

import psycopg
from psycopg.adapt import Buffer, Dumper
from psycopg.pq import Format

__all__ = ["EncodedKeys", "prepare_adapters"]

_BYTEA_OID: Final = 17
_BYTEA_ARRAY_OID: Final = 1001


class EncodedKeys:
    """Keys in PostgreSQL's binary array format; never shown in ``repr``."""

    __slots__ = ("payload",)

    def __init__(self, keys: Sequence[bytes]) -> None:
        # ndim, has-nulls, element type, then (length, lower bound) of the one dimension
        header = struct.pack("!iiIii", 1, 0, _BYTEA_OID, len(keys), 1)
        self.payload = header + b"".join(struct.pack("!i", len(key)) + key for key in keys)

    def __repr__(self) -> str:
        return f"<pyaccess EncodedKeys ({len(self.payload)} bytes, redacted)>"


class _EncodedKeysDumper(Dumper):
    format = Format.BINARY
    oid = _BYTEA_ARRAY_OID

    def dump(self, obj: Any) -> Buffer:
        payload: bytes = obj.payload
        return payload


_prepared: weakref.WeakSet[psycopg.Connection[Any] | psycopg.AsyncConnection[Any]] = weakref.WeakSet()


def prepare_adapters(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> None:
    """Teach ``conn`` to send :class:`EncodedKeys` (once per connection)."""
    if conn not in _prepared:
        conn.adapters.register_dumper(EncodedKeys, _EncodedKeysDumper)
        _prepared.add(conn)
