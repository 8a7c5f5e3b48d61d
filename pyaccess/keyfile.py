"""Reading the key file that the Vault agent renders.

Accepted contents (see the README, "The key file"):

- JSON ``{"key": K, "previous_keys": [K, ...]}``, as the documented templates
  render it, or wrapped as ``{"data": {...}, "metadata": {...}}`` as the
  injector's ``json`` default template renders a KV v2 secret;
- the injector's ``map`` default template: ``data: map[key:K previous_keys:[K ...]]``
  then ``metadata: map[...]`` for KV v2, or one ``name: value`` line per field for KV v1;
- K alone.

K is 64 hex digits, or the whole output of ``openssl enc -aes-256-cbc -k secret
-P -md sha1``, whose ``key=`` line is taken. ``previous_keys`` may be absent,
null, empty, a list, or a string that is exactly one key or a JSON list of keys
(what ``vault kv patch previous_keys='[...]'`` stores); any other string is
refused with the fix. Every run of 64 hex digits in the secret's data must be
``key`` or one of ``previous_keys``: a file is never read as holding fewer
keys than it does.

Error trackers record frame locals. Parsing therefore never raises from a frame
that holds file content: the content lives in frames that *return* a refusal,
and :class:`KeyFileError` is raised by their caller once they are gone.

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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pyaccess.errors import KeyFileError
from pyaccess.keys import Key, KeyRing

__all__ = [
    "DEFAULT_KEY_FILE",
    "MAX_FILE_BYTES",
    "Key",
    "KeyFilePath",
    "KeyRing",
    "load_key_ring",
    "parse_key_ring",
    "resolve_key_file",
    "utf8_or_none",
    "write_new_key_file",
]

DEFAULT_KEY_FILE: Final = "/vault/secrets/provisioning_secret_enc_key"

#: A key file's path, or None for ``PYACCESS_KEY_FILE`` / :data:`DEFAULT_KEY_FILE`.
KeyFilePath = str | os.PathLike[str] | None
MAX_FILE_BYTES: Final = 64 * 1024

#: The fix for a ``previous_keys`` stored as a string; the README's runbook does exactly this.
PREVIOUS_KEYS_HINT: Final = (
    "store it as a JSON list, from stdin: "
    """echo '{"previous_keys": ["<old key>"]}' | bao kv patch -mount=kv-dev provisioning_secret_enc_key -"""
    " (README: Rotating a key)"
)

_HEX_KEY = re.compile(r"[0-9A-Fa-f]{64}")
# A key-like value anywhere: exactly 64 hex digits, not part of a longer run.
_KEY_LIKE = re.compile(r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{64}(?![0-9A-Fa-f])")
_OPENSSL_KEY_LINE = re.compile(r"^\s*key\s*=\s*(\S*)\s*$", re.MULTILINE)
# One openssl -P output inside a Go list, where elements are separated by spaces and "iv =" has one.
_OPENSSL_BLOCK = re.compile(r"(?:salt=[0-9A-Fa-f]*\s+)?key=[0-9A-Fa-f]*(?:\s+iv\s*=[0-9A-Fa-f]*)?")
# The map template's "name: value" lines (KV v1 fields; "data" and "metadata" for KV v2).
_LINE_ENTRY = re.compile(r"^([A-Za-z_][\w.-]*):(?: |$)", re.MULTILINE)
# A "name:value" entry of Go's fmt of a map, at the start of the map or after the space between entries.
_GO_ENTRY = re.compile(r"([A-Za-z_][\w.-]*):")


class _Unreadable(Exception):
    """Why the content cannot be read. The reason is fixed text: never file content."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class _Refusal:
    """What a content-holding frame returns instead of raising: the reason only."""

    reason: str


# --------------------------------------------------------------------------- one key


def _key(value: object, what: str) -> Key:
    if not isinstance(value, str):
        raise _Unreadable(f"{what} is not a string")
    text = value.strip()
    if "\n" in text or "=" in text:
        match = _OPENSSL_KEY_LINE.search(text)
        if match is None:
            raise _Unreadable(f"{what} has no 'key=' line")
        text = match.group(1)
    if not _HEX_KEY.fullmatch(text):
        if re.fullmatch(r"[0-9A-Fa-f]*", text):
            raise _Unreadable(f"{what} has {len(text)} hex digits, not 64 (a 256-bit key)")
        raise _Unreadable(f"{what} is not hexadecimal")
    return Key(bytes.fromhex(text))


def _is_one_key(text: str) -> bool:
    try:
        _key(text, "")
    except _Unreadable:
        return False
    return True


# --------------------------------------------------------------------------- previous_keys


def _keys_in_json_list(items: list[object]) -> list[Key]:
    return [_key(item, f"previous_keys[{i}]") for i, item in enumerate(items)]


def _json_or_none(text: str) -> object:
    """Parsed JSON, or None: no JSONDecodeError (whose .doc is the content) for anyone to keep."""
    try:
        # strict=False: an openssl output pasted into a JSON string keeps its raw newlines.
        return json.loads(text, strict=False)
    except ValueError:
        return None


def _keys_in_string(text: str) -> list[Key]:
    """``previous_keys`` that arrived as a string: one key, or a JSON list of keys, else refused with the fix."""
    stripped = text.strip()
    if not stripped:
        return []
    if stripped.startswith("["):
        items = _json_or_none(stripped)
        if isinstance(items, list):
            return _keys_in_json_list(items)
    elif _is_one_key(stripped):
        return [_key(stripped, "previous_keys")]
    raise _Unreadable(
        f"'previous_keys' is a string that is neither one key nor a JSON list of keys; {PREVIOUS_KEYS_HINT}"
    )


def _previous_from_json(value: object) -> list[Key]:
    if value is None:
        return []  # what a template renders for a field removed with -remove-data
    if isinstance(value, list):
        return _keys_in_json_list(value)
    if isinstance(value, str):
        return _keys_in_string(value)
    raise _Unreadable("'previous_keys' is not a list")


def _keys_in_go_list(inner: str) -> list[Key]:
    """The elements of Go's ``[a b c]``: strings printed raw, one space apart; an openssl output is one element."""
    keys: list[Key] = []
    position = 0
    while True:
        while position < len(inner) and inner[position].isspace():
            position += 1
        if position == len(inner):
            return keys
        token = _OPENSSL_BLOCK.match(inner, position) or re.compile(r"\S+").match(inner, position)
        assert token is not None  # a non-space character is always a token
        keys.append(_key(token.group(0), f"previous_keys[{len(keys)}]"))
        position = token.end()


def _previous_from_go(raw: str) -> list[Key]:
    value = raw.strip()
    if value in ("", "<nil>"):
        return []
    if value.startswith("map["):
        raise _Unreadable("'previous_keys' is not a list")
    if not value.startswith("["):
        return _keys_in_string(value)
    if not value.endswith("]"):
        raise _Unreadable("'previous_keys' is a list that does not end")
    # Go prints strings without quotes: quotes mean a string holding JSON (kv patch previous_keys='[...]').
    as_json = _json_or_none(value)
    if isinstance(as_json, list) and all(isinstance(item, str) for item in as_json):
        return _keys_in_json_list(as_json)
    return _keys_in_go_list(value[1:-1])


# --------------------------------------------------------------------------- whole renderings


def _strings_in(value: object) -> list[str]:
    """Every string (and number, as text) in a JSON value, keys of objects included."""
    if isinstance(value, dict):
        return [text for k, v in value.items() for text in (str(k), *_strings_in(v))]
    if isinstance(value, list):
        return [text for item in value for text in _strings_in(item)]
    if value is None or isinstance(value, bool):
        return []
    return [str(value)]


def _from_json(data: object) -> tuple[list[Key], list[str]]:
    if not isinstance(data, dict):
        raise _Unreadable("JSON content is not an object")
    wrapped = data.get("data")
    if "key" not in data and isinstance(wrapped, dict) and "key" in wrapped:
        data = wrapped  # the injector's json default template: {"data": {...}, "metadata": {...}}
    if "key" not in data:
        raise _Unreadable("JSON object has no 'key'")
    keys = [_key(data["key"], "'key'"), *_previous_from_json(data.get("previous_keys"))]
    return keys, _strings_in(data)


def _bracket_depths(text: str) -> Iterator[tuple[int, str, int]]:
    """Each character of ``text`` with its position and the depth of ``[...]`` nesting just after it."""
    depth = 0
    for position, char in enumerate(text):
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        yield position, char, depth


def _go_map_body(value: str) -> str:
    """The inside of ``map[...]``, brackets balanced; refused when cut short."""
    if not value.startswith("map["):
        raise _Unreadable("agent rendering's 'data' is not a map")
    for position, char, depth in _bracket_depths(value):
        if char == "]" and depth == 0:
            if value[position + 1 :].strip():
                raise _Unreadable("agent rendering has text after the 'data' map")
            return value[4:position]
    raise _Unreadable("agent rendering's 'data' map does not end (truncated?)")


def _go_map_entries(body: str) -> dict[str, str]:
    """Go's fmt of ``map[string]interface{}``: ``name:value`` entries one space apart, at bracket depth 0."""
    starts: list[tuple[str, int, int]] = []  # name, where the entry starts, where its value starts
    for position, char, depth in _bracket_depths(body):
        if char not in "[]" and depth == 0 and (position == 0 or body[position - 1].isspace()):
            entry = _GO_ENTRY.match(body, position)
            if entry is not None:
                starts.append((entry.group(1), position, entry.end()))
    ends = [start for _, start, _ in starts[1:]] + [len(body)]
    return _entries([(name, body[value_start:end]) for (name, _, value_start), end in zip(starts, ends, strict=True)])


def _line_entries(text: str) -> dict[str, str] | None:
    """The map template's ``name: value`` lines (a value may span lines), or None if the text has none."""
    starts = list(_LINE_ENTRY.finditer(text))
    if not starts or text[: starts[0].start()].strip():
        return None
    ends = [match.start() for match in starts[1:]] + [len(text)]
    return _entries([(match.group(1), text[match.end() : end]) for match, end in zip(starts, ends, strict=True)])


def _entries(pairs: list[tuple[str, str]]) -> dict[str, str]:
    entries: dict[str, str] = {}
    for name, value in pairs:
        if name in entries:
            raise _Unreadable("agent rendering has a field twice")  # never the name: it is file content
        entries[name] = value
    return entries


def _from_entries(entries: dict[str, str]) -> list[Key]:
    if "key" not in entries:
        raise _Unreadable("agent rendering has no 'key'")
    return [_key(entries["key"], "'key'"), *_previous_from_go(entries.get("previous_keys", ""))]


def _from_text(stripped: str) -> tuple[list[Key], list[str]]:
    """Every key the content holds, current first, and the parts of it that are the secret's data."""
    if stripped.startswith(("{", "[", '"')):
        data = _json_or_none(stripped)
        if data is None:
            raise _Unreadable("file is not valid JSON")
        return _from_json(data)
    entries = _line_entries(stripped)
    if entries is None:
        return [_key(stripped, "file content")], [stripped]
    if "key" not in entries and "data" in entries:
        body = _go_map_body(entries["data"].strip())  # KV v2; "metadata" is not the secret's data
        return _from_entries(_go_map_entries(body)), [body]
    return _from_entries(entries), [stripped]


def _all_keys(stripped: str) -> list[Key]:
    """Every key the content holds, current first; raises :class:`_Unreadable` if one cannot be placed."""
    keys, data = _from_text(stripped)
    key_like = sum(len(_KEY_LIKE.findall(part)) for part in data)
    if key_like != len(keys):
        raise _Unreadable(
            f"holds {key_like} key-like values (64 hex digits) but 'key' and 'previous_keys' hold {len(keys)}; "
            "every key must be in one of them"
        )
    return keys


def _parse(text: str) -> KeyRing | _Refusal:
    """The key ring in ``text``, or why not. Never raises: see the module docstring."""
    stripped = text.strip()
    if not stripped:
        return _Refusal("file is empty")
    try:
        current, *previous = _all_keys(stripped)
    except _Unreadable as problem:
        return _Refusal(problem.reason)
    unique: list[Key] = []
    for key in previous:
        if key != current and key not in unique:
            unique.append(key)
    return KeyRing(current, tuple(unique))


def parse_key_ring(text: str, path: str | os.PathLike[str] = "<key file>") -> KeyRing:
    """Parse a key file's content; raise :class:`KeyFileError` naming ``path`` and the reason."""
    outcome = _parse(text)
    del text  # this frame raises: it must hold no file content (error trackers record locals)
    if isinstance(outcome, _Refusal):
        raise KeyFileError(path, outcome.reason)
    return outcome


# --------------------------------------------------------------------------- the file


def _key_file_name(key_file: KeyFilePath) -> str:
    if key_file is not None:
        return os.fspath(key_file)
    return os.environ.get("PYACCESS_KEY_FILE") or DEFAULT_KEY_FILE


def resolve_key_file(key_file: KeyFilePath) -> Path:
    """The key file to use: the argument, else ``PYACCESS_KEY_FILE``, else the agent's default path."""
    return Path(_key_file_name(key_file))


def utf8_or_none(raw: bytes) -> str | None:
    """``raw`` decoded, or None: no UnicodeDecodeError (which holds the bytes) for a caller to keep."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _open(name: str) -> tuple[int, os.stat_result] | _Refusal:
    try:
        # O_NONBLOCK: a FIFO in place of the file must not hang the service.
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return _Refusal("file does not exist")
    except PermissionError:
        return _Refusal("permission denied")
    except IsADirectoryError:
        return _Refusal("is a directory")
    except OSError as exc:
        return _Refusal(f"cannot be read ({exc.strerror or type(exc).__name__})")
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        return _Refusal("is a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file")
    return fd, info


def _read_text(fd: int) -> str | _Refusal:
    with os.fdopen(fd, "rb") as handle:
        try:
            raw = handle.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            return _Refusal(f"cannot be read ({exc.strerror or type(exc).__name__})")
    if len(raw) > MAX_FILE_BYTES:
        return _Refusal(f"file is larger than {MAX_FILE_BYTES} bytes")
    text = utf8_or_none(raw)
    if text is None:
        return _Refusal("file is not UTF-8 text")
    return text


def _load(name: str) -> tuple[tuple[int, ...], KeyRing] | _Refusal:
    """The file's signature and key ring, or why not. Returns, never raises: these frames hold the content."""
    opened = _open(name)
    if isinstance(opened, _Refusal):
        return opened
    fd, info = opened
    text = _read_text(fd)
    if isinstance(text, _Refusal):
        return text
    ring = _parse(text)
    if isinstance(ring, _Refusal):
        return ring
    return _signature(info), ring


def _signature(info: os.stat_result) -> tuple[int, ...]:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


_cache: dict[str, tuple[tuple[int, ...], KeyRing]] = {}
_cache_lock = threading.Lock()


def _cached_ring(name: str) -> KeyRing | None:
    cached = _cache.get(name)
    if cached is None:
        return None
    try:
        if _signature(os.stat(name)) == cached[0]:
            return cached[1]
    except OSError:
        pass  # gone or unreadable now: _load says why
    return None


def load_key_ring(key_file: KeyFilePath = None) -> KeyRing:
    """The key ring in the key file, re-read only when the file has changed (one ``stat`` per call)."""
    # The hot path of every call: a str, one stat, one dict lookup; no Path objects.
    name = _key_file_name(key_file)
    ring = _cached_ring(name)
    if ring is not None:
        return ring
    loaded = _load(name)
    if isinstance(loaded, _Refusal):
        error = KeyFileError(name, loaded.reason)  # shows the name redacted if it looks like a key
        # A key given by mistake as the file name (PYACCESS_KEY_FILE=<the key>) must not stay in
        # the locals of the frame that raises: error trackers record them.
        del key_file, name
        raise error
    with _cache_lock:
        _cache[name] = loaded
    return loaded[1]


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
