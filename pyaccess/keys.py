"""Master keys in memory, and what the service derives from them (envelope v2).

Nothing here does I/O and nothing here is ever shown: see ``sql/0.2.0/10_crypto.sql`` for
the derivation, which the SQL functions compute the same way for the master-key path.

- key id: HMAC-SHA256(master key, "pyaccess key id"), first 8 bytes. Not secret.
- v2 pair of a group: HMAC-SHA512(master key, "pyaccess v2 group key" || 0x00 || group id (16 bytes)):
  enc key (32 bytes) || mac key (32 bytes). It opens that one group's secret only.
- v1 pair (0.1.0's envelopes): HMAC-SHA512(master key, "pyaccess v1 keys"), one for all groups.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from dataclasses import dataclass
from functools import cached_property
from typing import Final

from pyaccess.redacted import WireKeys

__all__ = ["Key", "KeyRing"]

KEY_ID_LABEL: Final = b"pyaccess key id"
V1_LABEL: Final = b"pyaccess v1 keys"
V2_LABEL: Final = b"pyaccess v2 group key\x00"


class Key:
    """A 256-bit master key. Its material never appears in ``repr`` or ``str``."""

    def __init__(self, material: bytes) -> None:
        self.material = material

    def __repr__(self) -> str:
        return "<pyaccess.Key (256 bits, redacted)>"

    @cached_property
    def id_bytes(self) -> bytes:
        """The key id as stored in envelopes (8 bytes)."""
        return hmac.new(self.material, KEY_ID_LABEL, hashlib.sha256).digest()[:8]

    @property
    def key_id(self) -> str:
        """The key id as 16 hex digits, as the census and doctor show it. Not secret."""
        return self.id_bytes.hex()

    def pair(self, version: int, group_id: uuid.UUID) -> bytes:
        """enc key || mac key of an envelope version for a group (v1 ignores the group)."""
        if version == 1:
            return self._v1_pair
        mac = self._v2_keyed.copy()
        mac.update(group_id.bytes)
        return mac.digest()

    @cached_property
    def _v2_keyed(self) -> hmac.HMAC:
        # HMAC-SHA512 keyed once, the label already absorbed: each group's pair is then a copy
        # and one update (measured about 40% cheaper than hmac.new for every call).
        return hmac.new(self.material, V2_LABEL, hashlib.sha512)

    @cached_property
    def _v1_pair(self) -> bytes:
        return hmac.new(self.material, V1_LABEL, hashlib.sha512).digest()

    def __deepcopy__(self, memo: dict[int, object]) -> Key:
        return self  # immutable (and its keyed HMAC state cannot be copied)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Key) and other.material == self.material

    def __hash__(self) -> int:
        return hash(self.material)


@dataclass(frozen=True, repr=False)
class KeyRing:
    """The current key (used for writing) and the previous keys (accepted for reading)."""

    current: Key
    previous: tuple[Key, ...] = ()

    @cached_property
    def keys(self) -> tuple[Key, ...]:
        """Every key, the current one first."""
        return (self.current, *self.previous)

    @property
    def materials(self) -> list[bytes]:
        """Every key's bytes, the current one first, as the master-key SQL functions take them."""
        return [key.material for key in self.keys]

    @property
    def key_ids(self) -> list[str]:
        """Every key's id (hex), the current one first."""
        return [key.key_id for key in self.keys]

    @cached_property
    def _ids(self) -> bytes:
        return b"".join(key.id_bytes for key in self.keys)

    def wire_keys(self, group_id: uuid.UUID, version: int = 2) -> WireKeys:
        """Every key's id, then its pair for this group and envelope version: what opens the group's secret."""
        return WireKeys(self._ids + b"".join(key.pair(version, group_id) for key in self.keys))

    def sealing_keys(self, group_id: uuid.UUID) -> WireKeys:
        """The current key's id and v2 pair for this group: what seals the group's secret."""
        return WireKeys(self.current.id_bytes + self.current.pair(2, group_id))

    def find(self, key_id: bytes) -> Key | None:
        """The key of the ring with this id, if any."""
        return next((key for key in self.keys if key.id_bytes == key_id), None)

    def __repr__(self) -> str:
        return f"<pyaccess.KeyRing current + {len(self.previous)} previous (redacted)>"
