"""pyaccess: IoT provision secrets encrypted at rest in PostgreSQL.

Encryption happens inside PostgreSQL (pgcrypto, in stored functions); the 256-bit master
key comes from a file that the Vault agent renders and never leaves the service: each call
sends only the key derived for the one OTA group at hand (envelope v2).
"""

from pyaccess import aio
from pyaccess.client import AsyncProvisionSecrets, ProvisionSecrets
from pyaccess.errors import (
    AccessDeniedError,
    DatabaseError,
    GroupNotFoundError,
    InvalidGroupIdError,
    InvalidKeyError,
    InvalidSecretError,
    KeyFileError,
    KeyNotActiveError,
    MigrationRequiredError,
    ParameterLoggingError,
    PyAccessError,
    ReadOnlyError,
    SecretIntegrityError,
    SecretNotFoundError,
    WrongKeyError,
)
from pyaccess.execution import forget
from pyaccess.keyfile import DEFAULT_KEY_FILE, load_key_ring
from pyaccess.keys import Key, KeyRing
from pyaccess.provision import get_provision_secret, store_provision_secret

__version__ = "0.2.0"

__all__ = [
    "DEFAULT_KEY_FILE",
    "AccessDeniedError",
    "AsyncProvisionSecrets",
    "DatabaseError",
    "GroupNotFoundError",
    "InvalidGroupIdError",
    "InvalidKeyError",
    "InvalidSecretError",
    "Key",
    "KeyFileError",
    "KeyNotActiveError",
    "KeyRing",
    "MigrationRequiredError",
    "ParameterLoggingError",
    "ProvisionSecrets",
    "PyAccessError",
    "ReadOnlyError",
    "SecretIntegrityError",
    "SecretNotFoundError",
    "WrongKeyError",
    "__version__",
    "aio",
    "forget",
    "get_provision_secret",
    "load_key_ring",
    "store_provision_secret",
]
