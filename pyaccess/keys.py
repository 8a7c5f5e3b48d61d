"""Keys in memory: a 256-bit master key, a key ring, and what is derived from them.

Nothing here does I/O. Key material never appears in ``repr`` or ``str``.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from functools import cached_property

from pyaccess.wire import EncodedKeys

__all__ = ["Key", "KeyRing"]

KEY_ID_LABEL = b"pyaccess key id"


class Key:
    """A 256-bit key. Its material never appears in ``repr`` or ``str``."""

    def __init__(self, material: bytes) -> None:
        self.material = material

    def __repr__(self) -> str:
        return "<pyaccess.Key (256 bits, redacted)>"

    @cached_property
    def key_id(self) -> str:
        """The key's id as 16 hex digits: HMAC-SHA256(key, "pyaccess key id"), first 8 bytes. Not secret."""
        return hmac.new(self.material, KEY_ID_LABEL, hashlib.sha256).digest()[:8].hex()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Key) and other.material == self.material

    def __hash__(self) -> int:
        return hash(self.material)


@dataclass(frozen=True, repr=False)
class KeyRing:
    """The current key (used for writing) and the previous keys (accepted for reading)."""

    current: Key
    previous: tuple[Key, ...] = ()

    @property
    def materials(self) -> list[bytes]:
        """Every key's bytes, the current one first, as the SQL functions take them."""
        return [self.current.material, *(k.material for k in self.previous)]

    @cached_property
    def encoded(self) -> EncodedKeys:
        """:attr:`materials` as a binary ``bytea[]`` parameter, encoded once."""
        return EncodedKeys(self.materials)

    def __repr__(self) -> str:
        return f"<pyaccess.KeyRing current + {len(self.previous)} previous (redacted)>"
