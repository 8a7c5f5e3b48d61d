"""Bytes that must never show: keys and secrets on their way to (and from) the server.

They travel inside :class:`Redacted` objects from the moment pyaccess takes them until
psycopg's dumper writes them to the wire as a binary ``bytea``: ``repr``, ``str``, log
records and error trackers that record frame locals (sentry-sdk does by default) see
``<pyaccess keys: 72 bytes, redacted>``, never the bytes.
"""

from __future__ import annotations

import re
import struct
import weakref
from typing import Any, ClassVar, Final

import psycopg
from psycopg.adapt import Buffer, Dumper
from psycopg.pq import Format

from pyaccess.errors import InvalidSecretError

__all__ = ["MAX_SECRET_BYTES", "Plaintext", "Redacted", "WireKeyList", "WireKeys", "prepare_adapters"]

MAX_SECRET_BYTES: Final = 4096
_BYTEA_OID: Final = 17
_BYTEA_ARRAY_OID: Final = 1001
_SURROGATE = re.compile("[\ud800-\udfff]")


class Redacted:
    """Bytes bound to a query; never shown."""

    __slots__ = ("_payload",)
    kind: ClassVar[str] = "value"

    def __init__(self, payload: bytes) -> None:
        self._payload = payload

    def reveal(self) -> bytes:
        """The bytes themselves: only for the dumper and for key arithmetic."""
        return self._payload

    def __repr__(self) -> str:
        return f"<pyaccess {self.kind}: {len(self._payload)} bytes, redacted>"

    __str__ = __repr__


class WireKeys(Redacted):
    """A key ring on the wire: key ids, then the matching pairs (see sql/0.2.0/10_crypto.sql)."""

    __slots__ = ()
    kind = "keys"


class WireKeyList(Redacted):
    """Several key entries as one binary ``bytea[]`` parameter (a rotation batch), encoded once, never shown."""

    __slots__ = ()
    kind = "key list"

    @classmethod
    def of(cls, entries: list[bytes]) -> WireKeyList:
        # PostgreSQL's binary array: ndim, has-nulls, element type, (length, lower bound), then each element.
        header = struct.pack("!iiIii", 1, 0, _BYTEA_OID, len(entries), 1)
        return cls(header + b"".join(struct.pack("!i", len(entry)) + entry for entry in entries))


class Plaintext(Redacted):
    """A secret as UTF-8 bytes, or the reason it cannot be one.

    :meth:`wrap` never raises, so that the caller can drop its own reference to the
    secret before any error is raised: no frame on an error's traceback holds it.
    """

    __slots__ = ("problem",)
    kind = "secret"

    def __init__(self, payload: bytes, problem: str | None = None) -> None:
        super().__init__(payload)
        self.problem = problem

    @classmethod
    def wrap(cls, secret: object) -> Plaintext:
        """The secret's UTF-8 bytes; an empty payload and a :attr:`problem` when it cannot be stored."""
        if not isinstance(secret, str):
            return cls(b"", "the provision secret must be a str")
        if "\x00" in secret:
            return cls(b"", "the provision secret contains a NUL character, which PostgreSQL text cannot hold")
        # No secret.encode() in a try: its UnicodeEncodeError would carry the secret.
        if not secret.isascii() and _SURROGATE.search(secret):
            return cls(b"", "the provision secret is not valid Unicode (lone surrogate)")
        payload = secret.encode("utf-8")
        if not 1 <= len(payload) <= MAX_SECRET_BYTES:
            return cls(b"", f"the provision secret must be 1 to {MAX_SECRET_BYTES} bytes of UTF-8 text")
        return cls(payload)

    def checked(self) -> Plaintext:
        """Itself, or :class:`InvalidSecretError` saying why it cannot be stored."""
        if self.problem is not None:
            raise InvalidSecretError(self.problem)
        return self


class _RedactedDumper(Dumper):
    format = Format.BINARY
    oid = _BYTEA_OID

    def dump(self, obj: Any) -> Buffer:
        payload: bytes = obj.reveal()
        return payload


class _RedactedListDumper(_RedactedDumper):
    oid = _BYTEA_ARRAY_OID


_prepared: weakref.WeakSet[psycopg.Connection[Any] | psycopg.AsyncConnection[Any]] = weakref.WeakSet()


def prepare_adapters(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> None:
    """Teach ``conn`` to send :class:`Redacted` values as binary ``bytea`` (once per connection)."""
    if conn not in _prepared:
        conn.adapters.register_dumper(Redacted, _RedactedDumper)
        conn.adapters.register_dumper(WireKeyList, _RedactedListDumper)
        _prepared.add(conn)
