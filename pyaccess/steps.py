"""What each call asks of the database, written once for sync and async (see :mod:`pyaccess.execution`).

A store sends the group's v2 pair under the current key; a get sends the group's v2 pairs
under every key of the ring. Only when the stored envelope is still v1 (0.1.0's format)
does a get send v1 pairs, which open every v1 secret: once ``pyaccess rotate`` has
converted them (``pyaccess census`` shows no version 1), no call sends them again.
"""

from __future__ import annotations

import logging
import re
import uuid

from pyaccess import queries
from pyaccess.errors import DatabaseError, InvalidGroupIdError, SecretIntegrityError
from pyaccess.execution import Statement, Steps
from pyaccess.keyfile import utf8_or_none
from pyaccess.keys import KeyRing
from pyaccess.redacted import Plaintext

__all__ = ["check_group_id", "get", "store"]

logger = logging.getLogger("pyaccess")

# The spellings PostgreSQL's uuid type reads (any case, optional braces, with or without the
# hyphens): uuid.UUID() alone would also take " 1111…", "urn:uuid:…" or digits with
# underscores, and read a damaged id as another's.
_UUID_TEXT = re.compile(
    r"(\{)?[0-9a-f]{8}(-?)[0-9a-f]{4}\2[0-9a-f]{4}\2[0-9a-f]{4}\2[0-9a-f]{12}(?(1)\})", re.ASCII | re.IGNORECASE
)

#: A get asks again when the envelope's version changed under it (a rotation); this often at most.
_READ_ATTEMPTS = 3


def check_group_id(group_id: object) -> uuid.UUID:
    """The group id as a UUID, or :class:`InvalidGroupIdError` before any query is sent."""
    if isinstance(group_id, uuid.UUID):
        return group_id
    if isinstance(group_id, str) and _UUID_TEXT.fullmatch(group_id):
        return uuid.UUID(group_id)
    raise InvalidGroupIdError("the OTA group id is not a UUID (8-4-4-4-12 hexadecimal digits)")


def store(group_id: object, plaintext: Plaintext, ring: KeyRing) -> Steps[None]:
    """Seal ``plaintext`` for the group under the ring's current key."""
    gid = check_group_id(group_id)
    yield Statement(queries.SEAL, (gid, plaintext.checked(), ring.sealing_keys(gid)))
    logger.debug("stored the provision secret of OTA group %s", gid)


def get(group_id: object, ring: KeyRing) -> Steps[str]:
    """Open the group's secret with the ring's keys, asking for the envelope's version if it differs."""
    gid = check_group_id(group_id)
    version = 2
    for _ in range(_READ_ATTEMPTS):
        rows = yield Statement(queries.OPEN, (gid, ring.wire_keys(gid, version), version))
        if not rows:  # no such group: the server says so (and records the refusal), or it exists by now
            yield Statement(queries.REFUSE_MISSING_GROUP, (gid,))
            continue
        ((found, secret),) = rows
        del rows
        if secret is not None:
            text = utf8_or_none(secret)
            del secret  # no frame on an error's traceback holds the secret
            if text is None:
                raise SecretIntegrityError(f"the provision secret of OTA group {gid} is not UTF-8 text")
            logger.debug("read the provision secret of OTA group %s", gid)
            return text
        version = found
    raise DatabaseError(f"the envelope of OTA group {gid} kept changing while it was read; try again")
