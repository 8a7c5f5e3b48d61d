"""The exceptions of pyaccess, and the one place that maps database errors to them.

Every message names OTA groups, files and key ids only: never a key, never
a secret. The psycopg error stays reachable as ``__cause__``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from os import PathLike
from typing import Final

import psycopg

__all__ = [
    "AccessDeniedError",
    "DatabaseError",
    "GroupNotFoundError",
    "InvalidGroupIdError",
    "InvalidKeyError",
    "InvalidSecretError",
    "KeyFileError",
    "KeyNotActiveError",
    "MigrationRequiredError",
    "ParameterLoggingError",
    "PyAccessError",
    "ReadOnlyError",
    "SecretIntegrityError",
    "SecretNotFoundError",
    "WrongKeyError",
    "translate_errors",
]


class PyAccessError(Exception):
    """Base class of every error pyaccess raises."""

    #: The SQLSTATE the SQL functions raise for this error, if any.
    sqlstate: str | None = None


class InvalidKeyError(PyAccessError):
    """The key is missing or not exactly 32 bytes (SQLSTATE PA001)."""

    sqlstate = "PA001"


# A run of hex digits as long as a salt, an IV or a key: never a part of a sane file name.
_KEY_LIKE_RUN: Final = re.compile(r"[0-9A-Fa-f]{16,}")


def redact_key_file_name(path: str | PathLike[str]) -> str:
    """``path`` as text, with every run of 16 or more hex digits replaced: a key given by mistake
    as the file name (``PYACCESS_KEY_FILE=<the key>``, or openssl's output pasted) is never shown."""
    return _KEY_LIKE_RUN.sub("<redacted>", str(path))


class KeyFileError(InvalidKeyError):
    """The key file is missing, unreadable or malformed; the message names the file and why.

    A file name that looks like key material is shown redacted, with a hint.
    """

    def __init__(self, path: str | PathLike[str], reason: str) -> None:
        shown = redact_key_file_name(path)
        if shown != str(path):
            reason = f"{reason} (the name looks like key material, shown redacted: give the file's path, not the key)"
        super().__init__(f"key file {shown!r}: {reason}")
        self.path = shown
        self.reason = reason


class InvalidSecretError(PyAccessError):
    """The secret is not 1 to 4096 bytes of UTF-8 text without NUL (SQLSTATE PA002)."""

    sqlstate = "PA002"


class GroupNotFoundError(PyAccessError):
    """No OTA group has that id (SQLSTATE PA003)."""

    sqlstate = "PA003"


class InvalidGroupIdError(GroupNotFoundError):
    """The group id is not a UUID, so no OTA group can have it (raised before any query)."""


class SecretNotFoundError(PyAccessError):
    """The OTA group has no provision secret stored (SQLSTATE PA004)."""

    sqlstate = "PA004"


class WrongKeyError(PyAccessError):
    """The secret was encrypted under a key that was not given; the message gives the key ids (SQLSTATE PA005)."""

    sqlstate = "PA005"


class SecretIntegrityError(PyAccessError):
    """The stored ciphertext failed authentication: altered, truncated or copied from another group (SQLSTATE PA006)."""

    sqlstate = "PA006"


class ParameterLoggingError(PyAccessError):
    """The server would write bound parameters (the key) to its log, and this role may not stop it (SQLSTATE PA007)."""

    sqlstate = "PA007"


class KeyNotActiveError(PyAccessError):
    """The key id is not active in the database's key registry: unknown (a stale or wrong key file?) or
    retired. Nothing was written; the message names the active key ids (SQLSTATE PA008)."""

    sqlstate = "PA008"


class MigrationRequiredError(PyAccessError):
    """The database has the SQL of an older pyaccess than this library needs: run ``pyaccess migrate``
    (SQLSTATE PA009, or a pyaccess function or schema that does not exist yet)."""

    sqlstate = "PA009"


class AccessDeniedError(PyAccessError):
    """The role may not call this function: grant it provision_secret_reader or _writer (SQLSTATE 42501)."""

    sqlstate = "42501"


class ReadOnlyError(PyAccessError):
    """The server or transaction is read-only (a standby): secrets can be read there, not stored (SQLSTATE 25006)."""

    sqlstate = "25006"


class DatabaseError(PyAccessError):
    """Any other database failure: connection lost, server shut down, aborted transaction..."""


_BY_SQLSTATE: Final[dict[str, type[PyAccessError]]] = {
    cls.sqlstate: cls
    for cls in (
        InvalidKeyError,
        InvalidSecretError,
        GroupNotFoundError,
        SecretNotFoundError,
        WrongKeyError,
        SecretIntegrityError,
        ParameterLoggingError,
        KeyNotActiveError,
        MigrationRequiredError,
        AccessDeniedError,
        ReadOnlyError,
    )
    if cls.sqlstate is not None
}


# undefined_function, invalid_schema_name, naming pyaccess's own: the database's SQL is older.
_MISSING_SQL: Final = frozenset({"42883", "3F000"})


def from_psycopg(exc: psycopg.Error) -> PyAccessError:
    """The pyaccess error for a psycopg error.

    Messages of mapped errors come from pyaccess's own functions (or are
    PostgreSQL's privilege and read-only messages), which carry no key or
    secret. Anything else is described by its class and SQLSTATE only, since
    some server messages quote parameter values.
    """
    if exc.sqlstate in _MISSING_SQL and "pyaccess" in (exc.diag.message_primary or ""):
        return MigrationRequiredError(
            f"this database lacks the SQL this pyaccess needs ({exc.diag.message_primary}): run pyaccess migrate"
        )
    cls = _BY_SQLSTATE.get(exc.sqlstate or "")
    if cls is not None:
        return cls(exc.diag.message_primary or cls.__doc__ or cls.__name__)
    if isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None:
        # libpq's own words ("server closed the connection unexpectedly"):
        # they never quote parameters.
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return DatabaseError(f"database connection failed: {reason}")
    return DatabaseError(f"database error {type(exc).__name__} (SQLSTATE {exc.sqlstate})")


@contextmanager
def translate_errors() -> Iterator[None]:
    """Re-raise psycopg errors as the matching :class:`PyAccessError`."""
    try:
        yield
    except psycopg.Error as exc:
        raise from_psycopg(exc) from exc
