"""Reading the key file that the Vault agent renders.

Accepted contents (see the README): JSON ``{"key": K, "previous_keys": [K, ...]}``;
the agent's default rendering (``data: map[key:K ...]`` for KV v2, ``key: K``
for KV v1); or K alone. K is 64 hex digits, or the whole output of
``openssl enc -aes-256-cbc -k secret -P -md sha1``, whose ``key=`` line is taken.

Keys are cached per path and re-read only when the file's identity or
modification time changes, so a re-rendered file is picked up by the next
call without a restart and without a read per call.
"""

from __future__ import annotations

import json
import os
import re
import stat
import threading
from pathlib import Path
from typing import Final

from pyaccess.errors import KeyFileError
from pyaccess.keys import Key, KeyRing

__all__ = [
    "DEFAULT_KEY_FILE",
    "Key",
    "KeyFilePath",
    "KeyRing",
    "load_key_ring",
    "parse_key_ring",
    "resolve_key_file",
    "write_new_key_file",
]

DEFAULT_KEY_FILE: Final = "/vault/secrets/provisioning_secret_enc_key"

#: A key file's path, or None for ``PYACCESS_KEY_FILE`` / :data:`DEFAULT_KEY_FILE`.
KeyFilePath = str | os.PathLike[str] | None
MAX_FILE_BYTES: Final = 64 * 1024

_HEX_KEY = re.compile(r"[0-9A-Fa-f]{64}")
_OPENSSL_KEY_LINE = re.compile(r"^\s*key\s*=\s*(\S*)\s*$", re.MULTILINE)
# Lazy: the map ends at the first "]" that ends a line, before the agent's "metadata: map[...]".
_AGENT_MAP = re.compile(r"^\s*data:\s*map\[(.*?)\]\s*$", re.MULTILINE | re.DOTALL)
_AGENT_KV1 = re.compile(r"^\s*key:\s*(.*?)\s*$", re.MULTILINE)


def _key_file_name(key_file: KeyFilePath) -> str:
    if key_file is not None:
        return os.fspath(key_file)
    return os.environ.get("PYACCESS_KEY_FILE") or DEFAULT_KEY_FILE


def resolve_key_file(key_file: KeyFilePath) -> Path:
    """The key file to use: the argument, else ``PYACCESS_KEY_FILE``, else the agent's default path."""
    return Path(_key_file_name(key_file))


def _parse_key(value: object, path: Path, what: str) -> Key:
    if not isinstance(value, str):
        raise KeyFileError(path, f"{what} is not a string")
    text = value.strip()
    if "\n" in text or "=" in text:
        match = _OPENSSL_KEY_LINE.search(text)
        if match is None:
            raise KeyFileError(path, f"{what} has no 'key=' line")
        text = match.group(1)
    if not _HEX_KEY.fullmatch(text):
        if re.fullmatch(r"[0-9A-Fa-f]*", text):
            raise KeyFileError(path, f"{what} has {len(text)} hex digits, not 64 (a 256-bit key)")
        raise KeyFileError(path, f"{what} is not hexadecimal")
    return Key(bytes.fromhex(text))


def _ring(current: Key, previous: list[Key]) -> KeyRing:
    unique: list[Key] = []
    for key in previous:
        if key != current and key not in unique:
            unique.append(key)
    return KeyRing(current, tuple(unique))


def _parse_json(data: object, path: Path) -> KeyRing:
    if not isinstance(data, dict):
        raise KeyFileError(path, "JSON content is not an object")
    if "key" not in data:
        raise KeyFileError(path, "JSON object has no 'key'")
    current = _parse_key(data["key"], path, "'key'")
    previous = data.get("previous_keys", [])
    if not isinstance(previous, list):
        raise KeyFileError(path, "'previous_keys' is not a list")
    return _ring(current, [_parse_key(k, path, f"previous_keys[{i}]") for i, k in enumerate(previous)])


def _parse_agent_map(body: str, path: Path) -> KeyRing:
    # Go's fmt of map[string]interface{}: "key:VALUE previous_keys:[K1 K2]".
    previous: list[Key] = []
    prev = re.search(r"(?:^|\s)previous_keys:\[([^\]]*)\]", body)
    if prev is not None:
        previous = [_parse_key(k, path, "previous_keys") for k in prev.group(1).split()]
        body = body[: prev.start()] + body[prev.end() :]
    match = re.search(r"(?:^|\s)key:(.*?)(?=\s\w+:|$)", body, re.DOTALL)
    if match is None:
        raise KeyFileError(path, "agent rendering has no 'key'")
    return _ring(_parse_key(match.group(1), path, "'key'"), previous)


_INVALID = object()


def _json(text: str) -> object:
    """The parsed JSON, or ``_INVALID``: the caller raises outside any except block,
    so no JSONDecodeError (whose .doc is the whole file) stays attached as __context__."""
    try:
        return json.loads(text)
    except ValueError:
        return _INVALID


def utf8_or_none(raw: bytes) -> str | None:
    """``raw`` decoded, or None: no UnicodeDecodeError (which holds the bytes) for a caller to keep."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def parse_key_ring(text: str, path: str | os.PathLike[str] = "<key file>") -> KeyRing:
    """Parse a key file's content; raise :class:`KeyFileError` naming ``path`` and the reason."""
    where = Path(path)
    stripped = text.strip()
    if not stripped:
        raise KeyFileError(where, "file is empty")
    if stripped.startswith(("{", "[", '"')):
        data = _json(stripped)
        if data is _INVALID:
            raise KeyFileError(where, "file is not valid JSON")
        return _parse_json(data, where)
    agent = _AGENT_MAP.search(stripped)
    if agent is not None:
        return _parse_agent_map(agent.group(1), where)
    kv1 = _AGENT_KV1.search(stripped)
    if kv1 is not None and _OPENSSL_KEY_LINE.search(stripped) is None:
        return _ring(_parse_key(kv1.group(1), where, "'key'"), [])
    return _ring(_parse_key(stripped, where, "file content"), [])


def _read(path: Path) -> tuple[tuple[int, ...], KeyRing]:
    try:
        # O_NONBLOCK: a FIFO in place of the file must not hang the service.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise KeyFileError(path, "file does not exist") from None
    except PermissionError:
        raise KeyFileError(path, "permission denied") from None
    except IsADirectoryError:
        raise KeyFileError(path, "is a directory") from None
    except OSError as exc:
        raise KeyFileError(path, f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise KeyFileError(path, "is a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file")
    with os.fdopen(fd, "rb") as handle:
        try:
            raw = handle.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise KeyFileError(path, f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise KeyFileError(path, f"file is larger than {MAX_FILE_BYTES} bytes")
    text = utf8_or_none(raw)
    if text is None:
        raise KeyFileError(path, "file is not UTF-8 text")
    return _signature(info), parse_key_ring(text, path)


def _signature(info: os.stat_result) -> tuple[int, ...]:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


_cache: dict[str, tuple[tuple[int, ...], KeyRing]] = {}
_cache_lock = threading.Lock()


def load_key_ring(key_file: KeyFilePath = None) -> KeyRing:
    """The key ring in the key file, re-read only when the file has changed (one ``stat`` per call)."""
    # The hot path of every call: a str, one stat, one dict lookup; no Path objects.
    name = _key_file_name(key_file)
    cached = _cache.get(name)
    if cached is not None:
        try:
            if _signature(os.stat(name)) == cached[0]:
                return cached[1]
        except OSError:
            pass  # gone or unreadable now: _read says why
    signature, ring = _read(Path(name))
    with _cache_lock:
        _cache[name] = (signature, ring)
    return ring


def write_new_key_file(path: str | os.PathLike[str]) -> Path:
    """Write a new key file holding a fresh 256-bit key from the OS's CSPRNG, mode 0600.

    Refuses to overwrite an existing file. The key is never printed.
    """
    import secrets  # noqa: PLC0415 - only keygen needs it

    target = Path(path)
    content = json.dumps({"key": secrets.token_hex(32)}) + "\n"
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(target, "already exists; refusing to overwrite it") from None
    except OSError as exc:
        raise KeyFileError(target, f"cannot be created ({exc.strerror or type(exc).__name__})") from None
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        os.fchmod(handle.fileno(), 0o600)  # whatever the umask
        handle.write(content)
    return target
