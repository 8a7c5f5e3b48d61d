"""pyaccess: IoT provision secrets encrypted at rest in PostgreSQL.

Encryption happens inside PostgreSQL (pgcrypto, in ``store_provision_secret``
and ``get_provision_secret``); the 256-bit key comes from a file that the
Vault agent renders, and travels to the server as a bound parameter.
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
    ParameterLoggingError,
    PyAccessError,
    ReadOnlyError,
    SecretIntegrityError,
    SecretNotFoundError,
    WrongKeyError,
)
from pyaccess.keyfile import DEFAULT_KEY_FILE, load_key_ring
from pyaccess.keys import Key, KeyRing
from pyaccess.provision import get_provision_secret, store_provision_secret
from pyaccess.session import forget

__version__ = "0.1.0"

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
    "KeyRing",
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
