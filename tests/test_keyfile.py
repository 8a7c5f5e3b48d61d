"""The key file the Vault agent renders: every accepted format, every problem, caching and hot reload.

All of it runs against the real files on disk: no mocks. Whatever goes wrong
must raise ``KeyFileError`` naming the file and the reason, and no exception
text, ``repr`` or traceback may show key material or anything else the file holds.
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import tempfile
import threading
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import sentry_sdk
import sentry_sdk.envelope
import sentry_sdk.transport

import pyaccess
from pyaccess import InvalidKeyError, KeyFileError, PyAccessError, keyfile
from pyaccess.keyfile import (
    DEFAULT_KEY_FILE,
    MAX_FILE_BYTES,
    Key,
    KeyRing,
    load_key_ring,
    parse_key_ring,
    resolve_key_file,
    write_new_key_file,
)
from tests.fix_vault import adr_key_output

NOBODY = 65534
CANARY = "canary-not-a-key-7Q3zX"  # other file content that must never be shown


def new_hex() -> str:
    return os.urandom(32).hex()


def _write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def _openssl_key(output: str) -> str:
    (line,) = [line for line in output.splitlines() if line.startswith("key=")]
    key = line.removeprefix("key=").strip()
    assert re.fullmatch(r"[0-9A-F]{64}", key), "openssl prints the key as 64 upper-case hex digits"
    return key


def test_openssl_output_has_the_expected_shape() -> None:
    output = adr_key_output()
    lines = output.splitlines()
    assert [line.split("=")[0] for line in lines] == ["salt", "key", "iv "]
    _openssl_key(output)


# --------------------------------------------------------------------------- accepted formats

KV2_METADATA = (
    "metadata: map[created_time:2023-10-06T00:00:00Z custom_metadata:<nil> deletion_time: destroyed:false version:3]"
)

KV2_METADATA_JSON = {
    "created_time": "2023-10-06T00:00:00Z",
    "custom_metadata": None,
    "deletion_time": "",
    "destroyed": False,
    "version": 3,
}

# Each case: (content, current key hex, previous keys hex) built from fresh random keys.
Case = tuple[str, str, list[str]]


def _accepted() -> dict[str, Case]:
    """Every rendering the key file may have, by name, each with the keys it must yield."""
    k, p1, p2 = new_hex(), new_hex(), new_hex()
    mixed = "".join(c.upper() if i % 2 else c for i, c in enumerate(k))
    current, old = adr_key_output(), adr_key_output()  # openssl outputs: the ADR's key, and an older one
    current_hex, old_hex = _openssl_key(current).lower(), _openssl_key(old).lower()
    return {
        "json-lower": (json.dumps({"key": k}), k, []),
        "json-upper": (json.dumps({"key": k.upper()}), k, []),
        "json-mixed-case-and-whitespace": ("\n\n  " + json.dumps({"key": f" \t{mixed}\n "}) + "  \n\n", k, []),
        "json-pretty-printed": (json.dumps({"key": k}, indent=4) + "\n", k, []),
        "json-previous-keys": (json.dumps({"key": k, "previous_keys": [p1.upper(), f" {p2} "]}), k, [p1, p2]),
        "json-empty-previous-keys": (json.dumps({"key": k, "previous_keys": []}), k, []),
        "json-openssl-output": (json.dumps({"key": current}), current_hex, []),
        "json-openssl-output-in-previous-keys": (json.dumps({"key": k, "previous_keys": [old]}), k, [old_hex]),
        "bare-openssl-output": (current, current_hex, []),
        "bare-hex": (k, k, []),
        "bare-hex-upper-with-whitespace": (f"\n  {k.upper()}  \n\n", k, []),
        "kv2-agent-default": (f"data: map[key:{k}]\n{KV2_METADATA}\n", k, []),
        "kv2-agent-default-upper": (f"data: map[key:{k.upper()}]\n{KV2_METADATA}\n", k, []),
        "kv2-agent-default-previous-keys": (
            f"data: map[key:{k} previous_keys:[{p1} {p2}]]\n{KV2_METADATA}\n",
            k,
            [p1, p2],
        ),
        "kv2-data-line-only": (f"data: map[key:{k}]\n", k, []),
        "kv2-data-line-only-previous-keys": (f"data: map[key:{k} previous_keys:[{p1} {p2}]]\n", k, [p1, p2]),
        "kv1-agent-default": (f"key: {k}\n", k, []),
        "kv1-agent-default-upper": (f"key: {k.upper()}\n", k, []),
        # What the agent really renders (OpenBao 2.7.2 agent, seen in tests/test_vault_agent.py): the injector's
        # json default wraps KV v2 data; Go's fmt prints nil as <nil>, lists as [a b], strings raw (an openssl
        # output keeps its newlines, and a string holding JSON keeps its quotes).
        "json-injector-default-kv2": (
            json.dumps({"data": {"key": k, "previous_keys": [p1]}, "metadata": KV2_METADATA_JSON}) + "\n",
            k,
            [p1],
        ),
        "json-injector-default-kv2-openssl-output": (
            json.dumps({"data": {"key": current}, "metadata": KV2_METADATA_JSON}) + "\n",
            current_hex,
            [],
        ),
        "json-previous-keys-null": (json.dumps({"key": k, "previous_keys": None}), k, []),
        # vault kv patch ... previous_keys='["<hex>","<hex>"]' stores that text as a string
        "json-previous-keys-string-holding-a-json-list": (
            json.dumps({"key": k, "previous_keys": json.dumps([p1, p2])}),
            k,
            [p1, p2],
        ),
        # previous_keys='["<openssl output>"]' typed in a shell: real newlines inside the JSON string
        "json-previous-keys-string-holding-an-openssl-output-raw": (
            json.dumps({"key": k, "previous_keys": f'["{old}"]'}),
            k,
            [old_hex],
        ),
        "json-previous-keys-string-one-key": (json.dumps({"key": k, "previous_keys": f" {p1.upper()} "}), k, [p1]),
        "json-previous-keys-empty-string": (json.dumps({"key": k, "previous_keys": ""}), k, []),
        "kv2-agent-default-previous-keys-nil": (f"data: map[key:{k} previous_keys:<nil>]\n{KV2_METADATA}\n", k, []),
        "kv2-agent-default-previous-keys-empty": (f"data: map[key:{k} previous_keys:[]]\n{KV2_METADATA}\n", k, []),
        "kv2-agent-default-previous-keys-string-holding-a-json-list": (
            f'data: map[key:{k} previous_keys:["{p1}","{p2}"]]\n{KV2_METADATA}\n',
            k,
            [p1, p2],
        ),
        "kv2-agent-default-previous-keys-string-one-key": (
            f"data: map[key:{k} previous_keys:{p1}]\n{KV2_METADATA}\n",
            k,
            [p1],
        ),
        # the ADR's key, and a previous list holding an openssl output and a hex key
        "kv2-agent-default-openssl-outputs": (
            f"data: map[key:{current} previous_keys:[{old} {p1}]]\n{KV2_METADATA}\n",
            current_hex,
            [old_hex, p1],
        ),
        "kv2-agent-default-other-fields": (
            f"data: map[b:true f:1.5 key:{k} note:rotated in May previous_keys:[{p1}]]\n{KV2_METADATA}\n",
            k,
            [p1],
        ),
        "kv1-agent-default-previous-keys": (f"key: {k}\nprevious_keys: [{p1} {p2}]\nttl: 2s\n", k, [p1, p2]),
        "kv1-agent-default-openssl-outputs": (f"key: {current}\nprevious_keys: [{old}]\n", current_hex, [old_hex]),
        "kv1-agent-default-previous-keys-string-holding-a-json-list": (f'key: {k}\nprevious_keys: ["{p1}"]\n', k, [p1]),
        "kv1-agent-default-previous-keys-nil": (f"key: {k}\nprevious_keys: <nil>\n", k, []),
    }


ACCEPTED = _accepted()


def _assert_ring(ring: KeyRing, current: str, previous: list[str]) -> None:
    assert isinstance(ring, KeyRing)
    assert isinstance(ring.current, Key)
    assert ring.current.material == bytes.fromhex(current)
    assert len(ring.current.material) == 32
    assert [k.material for k in ring.previous] == [bytes.fromhex(p) for p in previous]
    assert ring.materials == [bytes.fromhex(current), *(bytes.fromhex(p) for p in previous)]


@pytest.mark.parametrize(("content", "current", "previous"), ACCEPTED.values(), ids=ACCEPTED.keys())
def test_parse_key_ring_accepts(content: str, current: str, previous: list[str]) -> None:
    _assert_ring(parse_key_ring(content, "/vault/secrets/k"), current, previous)


@pytest.mark.parametrize(("content", "current", "previous"), ACCEPTED.values(), ids=ACCEPTED.keys())
def test_load_key_ring_accepts(content: str, current: str, previous: list[str], tmp_path: Path) -> None:
    path = _write(tmp_path / "provisioning_secret_enc_key", content)
    _assert_ring(load_key_ring(path), current, previous)
    _assert_ring(load_key_ring(str(path)), current, previous)


def test_crlf_line_endings_are_accepted(tmp_path: Path) -> None:
    k, p = new_hex(), new_hex()
    _assert_ring(load_key_ring(_write(tmp_path / "v2", f"data: map[key:{k} previous_keys:[{p}]]\r\n")), k, [p])
    _assert_ring(load_key_ring(_write(tmp_path / "v1", f"key: {k}\r\n")), k, [])
    content = json.dumps({"key": k}, indent=2).replace("\n", "\r\n") + "\r\n"
    _assert_ring(load_key_ring(_write(tmp_path / "json", content)), k, [])


def test_previous_key_equal_to_current_is_not_repeated() -> None:
    k, p = new_hex(), new_hex()
    ring = parse_key_ring(json.dumps({"key": k, "previous_keys": [k.upper(), p, p]}))
    assert ring.materials == [bytes.fromhex(k), bytes.fromhex(p)]


def test_file_of_exactly_the_size_limit_is_accepted(tmp_path: Path) -> None:
    k = new_hex()
    body = json.dumps({"key": k})
    content = body + " " * (MAX_FILE_BYTES - len(body))
    assert len(content.encode()) == MAX_FILE_BYTES == 64 * 1024
    _assert_ring(load_key_ring(_write(tmp_path / "k", content)), k, [])


# --------------------------------------------------------------------------- problems

HEX_RUN = re.compile(r"[0-9A-Fa-f]{16,}")


def _assert_clean(exc: KeyFileError, path: str | Path, forbidden: list[str]) -> None:
    """Names the file and a reason; shows no key material and no other content of the file."""
    assert isinstance(exc, KeyFileError)
    assert isinstance(exc, InvalidKeyError)
    assert isinstance(exc, PyAccessError)
    assert exc.reason.strip()
    assert exc.path == str(path)
    shown = [str(exc), repr(exc), *map(str, exc.args), "".join(traceback.format_exception(exc))]
    assert str(path) in str(exc)
    assert exc.reason in str(exc)
    for text in shown:
        for secret in forbidden:
            assert secret.lower() not in text.lower(), f"file content {secret[:6]}... shown in {text!r}"
    assert HEX_RUN.search(str(exc)) is None, f"a run of hex digits in {str(exc)!r}"
    assert HEX_RUN.search(repr(exc)) is None


# Each case: content -> (bytes to write, strings never to show, words expected in the reason).
Problem = tuple[bytes, list[str], str]


def _problem(content: str | bytes, forbidden: list[str], reason: str) -> Problem:
    raw = content.encode() if isinstance(content, str) else content
    return raw, forbidden, reason


def _problems() -> dict[str, Problem]:
    k, p = new_hex(), new_hex()
    return {
        "empty": _problem("", [], "empty"),
        "whitespace-only": _problem(" \n\t\n ", [], "empty"),
        "not-json": _problem("{bad " + k + " " + CANARY, [k, CANARY], "json"),
        "not-json-truncated": _problem('{"key": "' + k, [k], "json"),
        "json-without-key": _problem(json.dumps({"kee": k, "note": CANARY}), [k, CANARY], "key"),
        "json-not-an-object": _problem(json.dumps([k, CANARY]), [k, CANARY], "object"),
        "json-string": _problem(json.dumps(k + CANARY), [k, CANARY], "object"),
        "key-is-a-number": _problem(
            '{"key": 123456789012345678901234567890}', ["123456789012345678901234567890"], "str"
        ),
        "key-is-null": _problem('{"key": null, "x": "' + CANARY + '"}', [CANARY], "str"),
        "key-is-a-list": _problem(json.dumps({"key": [k]}), [k], "str"),
        "key-63-hex-digits": _problem(json.dumps({"key": k[:63]}), [k[:63]], "63"),
        "key-65-hex-digits": _problem(json.dumps({"key": k + "a"}), [k], "65"),
        "key-empty-string": _problem(json.dumps({"key": ""}), [], "0"),
        "key-not-hex": _problem(json.dumps({"key": "g" + k[1:]}), [k[1:]], "hex"),
        "key-with-0x-prefix": _problem(json.dumps({"key": "0x" + k}), [k], "hex"),
        "key-128-bit": _problem(json.dumps({"key": k[:32]}), [k[:32]], "32"),
        "openssl-output-without-key-line": _problem(
            json.dumps({"key": f"salt={k[:16]}\niv ={k[:32]}\n"}), [k[:16], k[:32]], "key="
        ),
        "previous-keys-a-number": _problem(json.dumps({"key": k, "previous_keys": 7}), [k], "previous_keys"),
        "previous-keys-a-string-of-two-keys": _problem(
            json.dumps({"key": k, "previous_keys": f"{p},{k}"}), [k, p], "bao kv patch"
        ),
        "previous-keys-a-string-not-a-key": _problem(
            json.dumps({"key": k, "previous_keys": CANARY}), [k, CANARY], "JSON list"
        ),
        "previous-keys-a-string-holding-a-bad-json-list": _problem(
            json.dumps({"key": k, "previous_keys": f'["{p}",]'}), [k, p], "bao kv patch"
        ),
        "key-like-value-outside-key-and-previous-keys": _problem(
            json.dumps({"key": k, "previous_key": [p]}), [k, p], "key-like"
        ),
        "injector-json-default-without-key": _problem(
            json.dumps({"data": {"kee": k}, "metadata": KV2_METADATA_JSON}), [k], "key"
        ),
        "injector-json-default-second-key-outside": _problem(
            json.dumps({"data": {"key": k, "old": p}, "metadata": KV2_METADATA_JSON}), [k, p], "key-like"
        ),
        "kv2-key-like-value-outside-key-and-previous-keys": _problem(
            f"data: map[key:{k} previous_key:[{p}]]\n{KV2_METADATA}\n", [k, p], "key-like"
        ),
        "kv2-previous-keys-a-map": _problem(
            f"data: map[key:{k} previous_keys:map[a:{p}]]\n{KV2_METADATA}\n", [k, p], "not a list"
        ),
        "kv2-previous-keys-a-string-not-a-key": _problem(
            f"data: map[key:{k} previous_keys:{CANARY}]\n{KV2_METADATA}\n", [k, CANARY], "bao kv patch"
        ),
        "kv2-previous-key-truncated": _problem(
            f"data: map[key:{k} previous_keys:[{p} {p[:40]}]]\n", [k, p], "previous_keys[1]"
        ),
        "kv2-truncated-render": _problem(f"data: map[key:{k} previous_keys:[{p}", [k, p], "does not end"),
        "kv1-key-like-value-outside-key-and-previous-keys": _problem(f"key: {k}\nold_key: {p}\n", [k, p], "key-like"),
        "kv1-previous-keys-not-keys": _problem(f"key: {k}\nprevious_keys: [{p} {CANARY}]\n", [k, p, CANARY], "hex"),
        "kv1-field-twice": _problem(f"key: {k}\nkey: {p}\n", [k, p], "twice"),
        "two-openssl-outputs": _problem(adr_key_output() + adr_key_output(), [], "key-like"),
        "previous-keys-an-object": _problem(json.dumps({"key": k, "previous_keys": {"a": p}}), [k, p], "previous_keys"),
        "previous-key-63-hex-digits": _problem(
            json.dumps({"key": k, "previous_keys": [p[:63]]}), [k, p[:63]], "previous_keys"
        ),
        "previous-key-not-a-string": _problem(json.dumps({"key": k, "previous_keys": [None]}), [k], "previous_keys"),
        "bare-63-hex-digits": _problem(k[:63] + "\n", [k[:63]], "63"),
        "bare-65-hex-digits": _problem(k + "0\n", [k], "65"),
        "bare-text": _problem(CANARY + "\n", [CANARY], "hex"),
        "kv2-63-hex-digits": _problem(f"data: map[key:{k[:63]}]\n{KV2_METADATA}\n", [k[:63]], "63"),
        "kv2-without-key": _problem(f"data: map[other:{k}]\n{KV2_METADATA}\n", [k], "key"),
        "kv1-not-hex": _problem(f"key: {CANARY}{k[:40]}\n", [CANARY, k[:40]], "hex"),
        "larger-than-64-KiB": _problem(
            json.dumps({"key": k}) + " " * MAX_FILE_BYTES + CANARY, [k, CANARY], str(MAX_FILE_BYTES)
        ),
        "not-utf-8": _problem(
            b'{"key": "' + k.encode() + b'", "x": "\xff\xfe' + CANARY.encode() + b'"}', [k, CANARY], "utf-8"
        ),
        "latin-1": _problem(("key: " + k + " caf\u00e9").encode("latin-1"), [k], "utf-8"),
    }


PROBLEMS = _problems()


@pytest.mark.parametrize(("content", "forbidden", "reason"), PROBLEMS.values(), ids=PROBLEMS.keys())
def test_problem_raises_key_file_error(content: bytes, forbidden: list[str], reason: str, tmp_path: Path) -> None:
    path = _write(tmp_path / "provisioning_secret_enc_key", content)
    with pytest.raises(KeyFileError) as info:
        load_key_ring(path)
    _assert_clean(info.value, path, forbidden)
    assert reason.lower() in info.value.reason.lower()


@pytest.mark.parametrize(
    ("content", "forbidden", "reason"),
    [v for k, v in PROBLEMS.items() if k not in ("larger-than-64-KiB", "not-utf-8", "latin-1")],
    ids=[k for k in PROBLEMS if k not in ("larger-than-64-KiB", "not-utf-8", "latin-1")],
)
def test_parse_problem_raises_key_file_error(content: bytes, forbidden: list[str], reason: str) -> None:
    with pytest.raises(KeyFileError) as info:
        parse_key_ring(content.decode(), "/vault/secrets/provisioning_secret_enc_key")
    _assert_clean(info.value, "/vault/secrets/provisioning_secret_enc_key", forbidden)
    assert reason.lower() in info.value.reason.lower()


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "provisioning_secret_enc_key"
    with pytest.raises(KeyFileError) as info:
        load_key_ring(path)
    _assert_clean(info.value, path, [])
    assert "exist" in info.value.reason


def test_dangling_symlink(tmp_path: Path) -> None:
    path = tmp_path / "provisioning_secret_enc_key"
    path.symlink_to(tmp_path / "rendered-later")
    with pytest.raises(KeyFileError) as info:
        load_key_ring(path)
    _assert_clean(info.value, path, [])


def test_symlink_to_a_key_file_is_followed(tmp_path: Path) -> None:
    k = new_hex()
    target = _write(tmp_path / "real", json.dumps({"key": k}))
    path = tmp_path / "provisioning_secret_enc_key"
    path.symlink_to(target)
    _assert_ring(load_key_ring(path), k, [])


def test_directory(tmp_path: Path) -> None:
    path = tmp_path / "provisioning_secret_enc_key"
    path.mkdir()
    with pytest.raises(KeyFileError) as info:
        load_key_ring(path)
    _assert_clean(info.value, path, [])
    assert "director" in info.value.reason


def test_parent_is_a_file(tmp_path: Path) -> None:
    k = new_hex()
    parent = _write(tmp_path / "secrets", json.dumps({"key": k}))
    path = parent / "provisioning_secret_enc_key"
    with pytest.raises(KeyFileError) as info:
        load_key_ring(path)
    _assert_clean(info.value, path, [k])


def test_character_device(tmp_path: Path) -> None:
    path = tmp_path / "provisioning_secret_enc_key"
    path.symlink_to("/dev/null")
    with pytest.raises(KeyFileError) as info:
        load_key_ring(path)
    _assert_clean(info.value, path, [])
    assert "regular" in info.value.reason


def test_unix_socket(tmp_path: Path) -> None:
    # Short path: AF_UNIX addresses are limited to about 100 bytes.
    with tempfile.TemporaryDirectory(prefix="pa") as short:
        path = Path(short) / "k"
        with socket.socket(socket.AF_UNIX) as listener:
            listener.bind(str(path))
            with pytest.raises(KeyFileError) as info:
                load_key_ring(path)
        _assert_clean(info.value, path, [])


def test_fifo_raises_without_blocking(tmp_path: Path) -> None:
    """A FIFO at the key file's path is an error, not a hang waiting for a writer that never comes."""
    path = tmp_path / "provisioning_secret_enc_key"
    os.mkfifo(path)
    outcome: dict[str, BaseException | None] = {}

    def load() -> None:
        try:
            load_key_ring(path)
        except BaseException as exc:  # noqa: BLE001 - reported to the test below
            outcome["error"] = exc
        else:
            outcome["error"] = None

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(5)
    blocked = thread.is_alive()
    if blocked:
        # Release the reader so that no thread outlives the test: it is blocked in open(), so a writer may open.
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(5)
    assert not blocked, "load_key_ring() blocked forever opening a FIFO"
    error = outcome["error"]
    assert isinstance(error, KeyFileError)
    _assert_clean(error, path, [])


def _load_in_child_as_nobody(path: Path) -> str:
    """Run load_key_ring(path) in a forked child that dropped root for uid/gid nobody; its outcome."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            try:
                load_key_ring(path)
                message = "loaded"
            except KeyFileError as exc:
                message = f"KeyFileError\n{exc.reason}\n{exc}"
            except BaseException as exc:  # noqa: BLE001 - reported to the parent
                message = f"other\n{exc!r}"
            os.write(write_end, message.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return message


def test_unreadable_file(tmp_path: Path) -> None:
    """chmod 000. Root reads any file, so as root the load runs in a child process that became nobody."""
    k = new_hex()
    if os.geteuid() != 0:
        path = _write(tmp_path / "provisioning_secret_enc_key", json.dumps({"key": k}))
        path.chmod(0)
        with pytest.raises(KeyFileError) as info:
            load_key_ring(path)
        _assert_clean(info.value, path, [k])
        assert "permission" in info.value.reason
        return
    with tempfile.TemporaryDirectory() as parent:
        Path(parent).chmod(0o711)  # nobody may traverse it: the file's own mode is what refuses
        path = _write(Path(parent) / "provisioning_secret_enc_key", json.dumps({"key": k}))
        path.chmod(0)
        outcome = _load_in_child_as_nobody(path)
        path.chmod(0o600)
        assert outcome.startswith("KeyFileError\n"), outcome
        _, reason, message = outcome.split("\n", 2)
        assert "permission" in reason
        assert str(path) in message
        assert k not in message.lower()
        # And the same file, readable, loads for nobody: the refusal above was the mode's.
        path.chmod(0o644)
        assert _load_in_child_as_nobody(path) == "loaded"


def test_error_names_the_path_given(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError) as info:
        parse_key_ring("{bad", tmp_path / "some-file")
    assert info.value.path == str(tmp_path / "some-file")
    with pytest.raises(KeyFileError) as info:
        parse_key_ring("{bad")
    assert info.value.reason


def test_key_file_error_is_exported() -> None:
    assert pyaccess.KeyFileError is KeyFileError
    assert issubclass(KeyFileError, InvalidKeyError)
    assert issubclass(KeyFileError, PyAccessError)


# --------------------------------------------------------------------------- caching and hot reload


def _replace_atomically(path: Path, content: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(content)
    os.replace(tmp, path)


def test_unchanged_file_gives_the_same_ring_object(tmp_path: Path) -> None:
    k = new_hex()
    path = _write(tmp_path / "k", json.dumps({"key": k}))
    first = load_key_ring(path)
    assert load_key_ring(path) is first
    assert load_key_ring(str(path)) is first
    _assert_ring(first, k, [])


def test_atomic_replace_is_picked_up(tmp_path: Path) -> None:
    old, new, prev = new_hex(), new_hex(), new_hex()
    path = _write(tmp_path / "k", json.dumps({"key": old}))
    first = load_key_ring(path)
    _replace_atomically(path, json.dumps({"key": new, "previous_keys": [prev]}))
    second = load_key_ring(path)
    assert second is not first
    _assert_ring(second, new, [prev])
    assert load_key_ring(path) is second


def test_atomic_replace_with_same_size_and_times_is_picked_up(tmp_path: Path) -> None:
    old, new = new_hex(), new_hex()
    path = _write(tmp_path / "k", json.dumps({"key": old}))
    load_key_ring(path)
    before = path.stat()
    tmp = _write(tmp_path / "k.tmp", json.dumps({"key": new}))
    os.utime(tmp, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(tmp, path)
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    _assert_ring(load_key_ring(path), new, [])


def test_rewrite_in_place_is_picked_up(tmp_path: Path) -> None:
    old, new = new_hex(), new_hex()
    path = _write(tmp_path / "k", f"data: map[key:{old}]\n")
    _assert_ring(load_key_ring(path), old, [])
    inode = path.stat().st_ino
    with path.open("r+b") as handle:  # same inode, same size: only the content and times change
        handle.write(f"data: map[key:{new}]\n".encode())
    assert path.stat().st_ino == inode
    _assert_ring(load_key_ring(path), new, [])


def test_rewrite_in_place_with_truncation_is_picked_up(tmp_path: Path) -> None:
    old, new, prev = new_hex(), new_hex(), new_hex()
    path = _write(tmp_path / "k", json.dumps({"key": old}))
    _assert_ring(load_key_ring(path), old, [])
    path.write_text(json.dumps({"key": new, "previous_keys": [old, prev]}))
    _assert_ring(load_key_ring(path), new, [old, prev])


def test_file_broken_after_load_raises_and_recovers(tmp_path: Path) -> None:
    good, other = new_hex(), new_hex()
    path = _write(tmp_path / "k", json.dumps({"key": good}))
    load_key_ring(path)
    _replace_atomically(path, json.dumps({"key": other[:63]}))
    with pytest.raises(KeyFileError) as info:
        load_key_ring(path)
    _assert_clean(info.value, path, [good, other[:63]])
    _replace_atomically(path, json.dumps({"key": other}))
    _assert_ring(load_key_ring(path), other, [])


def test_file_removed_after_load_raises(tmp_path: Path) -> None:
    k = new_hex()
    path = _write(tmp_path / "k", json.dumps({"key": k}))
    load_key_ring(path)
    path.unlink()
    with pytest.raises(KeyFileError) as info:
        load_key_ring(path)
    _assert_clean(info.value, path, [k])


def test_each_path_has_its_own_ring(tmp_path: Path) -> None:
    a, b = new_hex(), new_hex()
    pa = _write(tmp_path / "a", json.dumps({"key": a}))
    pb = _write(tmp_path / "b", json.dumps({"key": b}))
    _assert_ring(load_key_ring(pa), a, [])
    _assert_ring(load_key_ring(pb), b, [])
    _assert_ring(load_key_ring(pa), a, [])


# --------------------------------------------------------------------------- resolve_key_file


@pytest.fixture
def no_key_file_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("PYACCESS_KEY_FILE", raising=False)
    return monkeypatch


def test_default_key_file_is_the_agent_path() -> None:
    assert DEFAULT_KEY_FILE == "/vault/secrets/provisioning_secret_enc_key"
    assert pyaccess.DEFAULT_KEY_FILE == DEFAULT_KEY_FILE


def test_resolve_default(no_key_file_env: pytest.MonkeyPatch) -> None:
    assert resolve_key_file(None) == Path("/vault/secrets/provisioning_secret_enc_key")
    no_key_file_env.setenv("PYACCESS_KEY_FILE", "")
    assert resolve_key_file(None) == Path("/vault/secrets/provisioning_secret_enc_key")


def test_resolve_env(no_key_file_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    no_key_file_env.setenv("PYACCESS_KEY_FILE", str(tmp_path / "from-env"))
    assert resolve_key_file(None) == tmp_path / "from-env"


def test_resolve_argument_wins(no_key_file_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    no_key_file_env.setenv("PYACCESS_KEY_FILE", str(tmp_path / "from-env"))
    assert resolve_key_file(tmp_path / "from-arg") == tmp_path / "from-arg"
    assert resolve_key_file(str(tmp_path / "from-arg")) == tmp_path / "from-arg"


def test_load_key_ring_uses_env_then_default(no_key_file_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env_key, arg_key = new_hex(), new_hex()
    env_file = _write(tmp_path / "from-env", json.dumps({"key": env_key}))
    arg_file = _write(tmp_path / "from-arg", json.dumps({"key": arg_key}))
    no_key_file_env.setenv("PYACCESS_KEY_FILE", str(env_file))
    _assert_ring(load_key_ring(), env_key, [])
    _assert_ring(load_key_ring(None), env_key, [])
    _assert_ring(load_key_ring(arg_file), arg_key, [])
    no_key_file_env.delenv("PYACCESS_KEY_FILE")
    if Path(DEFAULT_KEY_FILE).exists():
        return  # a real agent-rendered key on this machine: nothing to assert about its absence
    with pytest.raises(KeyFileError) as info:
        load_key_ring()
    _assert_clean(info.value, DEFAULT_KEY_FILE, [env_key, arg_key])


# --------------------------------------------------------------------------- write_new_key_file


@pytest.fixture
def umask() -> Iterator[Callable[[int], None]]:
    saved = os.umask(0o022)
    os.umask(saved)

    def set_umask(value: int) -> None:
        os.umask(value)

    yield set_umask
    os.umask(saved)


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o077, 0o777])
def test_new_key_file_mode_0600_whatever_the_umask(mask: int, umask: Callable[[int], None], tmp_path: Path) -> None:
    umask(mask)
    path = write_new_key_file(tmp_path / "key.json")
    assert path == tmp_path / "key.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_ISREG(path.stat().st_mode)


def test_new_key_file_content(tmp_path: Path) -> None:
    path = write_new_key_file(str(tmp_path / "key.json"))
    assert isinstance(path, Path)
    data = json.loads(path.read_text())
    assert set(data) == {"key"}
    assert re.fullmatch(r"[0-9a-f]{64}", data["key"])
    _assert_ring(load_key_ring(path), data["key"], [])


def test_new_key_files_differ(tmp_path: Path) -> None:
    keys = {json.loads(write_new_key_file(tmp_path / f"k{i}").read_text())["key"] for i in range(4)}
    assert len(keys) == 4


def test_new_key_file_refuses_to_overwrite(tmp_path: Path) -> None:
    k = new_hex()
    path = _write(tmp_path / "key.json", json.dumps({"key": k}))
    path.chmod(0o640)
    before = path.read_bytes()
    with pytest.raises(KeyFileError) as info:
        write_new_key_file(path)
    _assert_clean(info.value, path, [k])
    assert "exist" in info.value.reason
    assert path.read_bytes() == before
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_new_key_file_refuses_to_overwrite_an_empty_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "key.json", b"")
    with pytest.raises(KeyFileError):
        write_new_key_file(path)
    assert path.read_bytes() == b""


def test_new_key_file_does_not_follow_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    path = tmp_path / "key.json"
    path.symlink_to(target)
    with pytest.raises(KeyFileError):
        write_new_key_file(path)
    assert not target.exists()


def test_new_key_file_in_missing_directory(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "key.json"
    with pytest.raises(KeyFileError) as info:
        write_new_key_file(path)
    _assert_clean(info.value, path, [])
    assert not path.exists()


def test_reprs_show_no_material(tmp_path: Path) -> None:
    k, p = new_hex(), new_hex()
    ring = load_key_ring(_write(tmp_path / "k", json.dumps({"key": k, "previous_keys": [p]})))
    for shown in (repr(ring), str(ring), repr(ring.current), str(ring.current), repr(ring.previous), f"{ring}"):
        for material in (k, p):
            assert material not in shown.lower()
        assert HEX_RUN.search(shown) is None
        assert repr(ring.current.material) not in shown
    generated = write_new_key_file(tmp_path / "new.json")
    new_ring = load_key_ring(generated)
    assert new_ring.current.material.hex() not in repr(new_ring).lower()
    assert new_ring.current.material.hex() not in repr(new_ring.current).lower()


# --------------------------------------------------------------------------- frame locals (issue 12)
#
# Error trackers record the locals of every frame a raised exception passed through: sentry-sdk does
# by default. A malformed key file must raise KeyFileError from frames that hold neither the file's
# content nor key material, on every call until the file is fixed. Each test first shows the
# detector catching the content in the frames of a parser that raises where it reads (what 0.1.0
# did), then that load_key_ring's frames are clean.


class MemoryTransport(sentry_sdk.transport.Transport):
    """A real sentry-sdk transport that keeps the envelopes in memory instead of sending them."""

    def __init__(self) -> None:
        super().__init__()
        self.envelopes: list[sentry_sdk.envelope.Envelope] = []

    def capture_envelope(self, envelope: sentry_sdk.envelope.Envelope) -> None:
        self.envelopes.append(envelope)


def _sentry_event(exc: BaseException) -> str:
    """The event sentry-sdk would send for ``exc``, locals included, as JSON text."""
    transport = MemoryTransport()
    client = sentry_sdk.Client(
        "https://public@sentry.invalid/1",
        transport=transport,
        default_integrations=False,  # no global patching of http.client, logging, threads
        auto_enabling_integrations=False,
        include_local_variables=True,  # the default, said out loud
        max_value_length=1_000_000,  # nothing truncated that could hide a leak
    )
    try:
        with sentry_sdk.isolation_scope() as scope:
            scope.set_client(client)
            sentry_sdk.capture_exception(exc)
        client.flush()
    finally:
        client.close()
    events = [event for envelope in transport.envelopes if (event := envelope.get_event()) is not None]
    assert len(events) == 1
    frames = [f for v in events[0]["exception"]["values"] for f in v["stacktrace"]["frames"]]
    assert any(frame.get("vars") for frame in frames), "sentry recorded no locals: the check would be vacuous"
    return json.dumps(events[0])


def _pyaccess_locals(exc: BaseException) -> list[str]:
    """``name=repr`` of every local of every pyaccess frame the exception (or its chain) passed through."""
    shown: list[str] = []
    seen_pyaccess_frame = False
    te: traceback.TracebackException | None = traceback.TracebackException.from_exception(exc, capture_locals=True)
    while te is not None:
        for frame in te.stack:
            if f"{os.sep}pyaccess{os.sep}" in frame.filename:
                seen_pyaccess_frame = True
                shown += [f"{frame.name}: {name}={value}" for name, value in (frame.locals or {}).items()]
        te = te.__cause__ or te.__context__
    assert seen_pyaccess_frame, "no pyaccess frame in the traceback: the check would be vacuous"
    return shown


def _leaks(texts: list[str], forbidden: list[str]) -> list[str]:
    return [f"{secret[:6]}… in {text[:80]}" for text in texts for secret in forbidden if secret.lower() in text.lower()]


def _raised(call: Callable[[], object]) -> BaseException:
    """The exception ``call`` raises; this frame's own locals are the callable only."""
    try:
        call()
    except BaseException as exc:  # noqa: BLE001 - the test inspects it
        return exc
    raise AssertionError("nothing was raised")


def _load_raising_where_it_reads(path: Path) -> object:
    """The control: 0.1.0's arrangement, where the frames that read and parse the file raise."""
    raw = path.read_bytes()
    text = raw.decode("utf-8")
    return keyfile._all_keys(text.strip())  # raises from the parser's own frames


def _malformed() -> dict[str, tuple[str, list[str]]]:
    """A malformed file -> (content, what must never be recorded: the keys in it and other content)."""
    k, p = new_hex(), new_hex()
    output = adr_key_output()
    return {
        "previous-keys-typo": (json.dumps({"key": k, "previous_keys": f"{p},{k}", "note": CANARY}), [k, p, CANARY]),
        "truncated-json-render": (json.dumps({"key": k, "previous_keys": [p]})[:-3], [k, p]),
        "previous-key-63-hex-digits": (json.dumps({"key": k, "previous_keys": [p[:63]]}), [k, p[:63]]),
        "truncated-map-render": (f"data: map[key:{output} previous_keys:[{p}", [_openssl_key(output), p]),
        "kv1-key-outside-previous-keys": (f"key: {k}\nold: {p}\nnote: {CANARY}\n", [k, p, CANARY]),
    }


MALFORMED = _malformed()


@pytest.mark.parametrize(("content", "forbidden"), MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_key_file__raises_from_frames_without_content__traceback_locals(
    content: str, forbidden: list[str], tmp_path: Path
) -> None:
    path = _write(tmp_path / "provisioning_secret_enc_key", content)
    control = _raised(lambda: _load_raising_where_it_reads(path))
    assert _leaks(_pyaccess_locals(control), forbidden), "control: the parser's own frames hold the content"

    error = _raised(lambda: load_key_ring(path))
    assert isinstance(error, KeyFileError)
    assert error.__context__ is None
    assert error.__cause__ is None
    assert _leaks(_pyaccess_locals(error), forbidden) == []
    assert _leaks([str(error), repr(error)], forbidden) == []

    parse_error = _raised(lambda: parse_key_ring(path.read_text()))
    assert isinstance(parse_error, KeyFileError)
    assert _leaks(_pyaccess_locals(parse_error), forbidden) == []


@pytest.mark.parametrize(("content", "forbidden"), MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_key_file__raises_from_frames_without_content__sentry(
    content: str, forbidden: list[str], tmp_path: Path
) -> None:
    path = _write(tmp_path / "provisioning_secret_enc_key", content)
    control = _sentry_event(_raised(lambda: _load_raising_where_it_reads(path)))
    assert _leaks([control], forbidden), "control: sentry records the parser's locals, content included"

    for _ in range(2):  # every call raises afresh until the file is fixed: no cache in the way
        event = _sentry_event(_raised(lambda: load_key_ring(path)))
        assert "KeyFileError" in event
        assert _leaks([event], forbidden) == []


def test_malformed_key_file__through_the_service_calls__sentry_records_no_content(
    conn: psycopg.Connection[tuple[object, ...]], group: uuid.UUID, key_file: Path, tmp_path: Path
) -> None:
    """From the service's own call down: every pyaccess and psycopg frame on the way is clean."""
    pyaccess.store_provision_secret(conn, group, CANARY, key_file=key_file)
    for label, (content, forbidden) in MALFORMED.items():
        path = _write(tmp_path / f"{label}.key", content)
        for call in (
            lambda path=path: pyaccess.get_provision_secret(conn, group, key_file=path),
            lambda path=path: pyaccess.store_provision_secret(conn, group, "another secret", key_file=path),
            lambda path=path: pyaccess.ProvisionSecrets(key_file=path).get(group, conn=conn),
        ):
            error = _raised(call)
            assert isinstance(error, KeyFileError), label
            assert _leaks([_sentry_event(error), *_pyaccess_locals(error)], [*forbidden, CANARY]) == []
    assert pyaccess.get_provision_secret(conn, group, key_file=key_file) == CANARY


# --------------------------------------------------------------------------- a key given as the file name


def _mistaken_names() -> dict[str, str]:
    output = adr_key_output()
    return {"64-hex-key": new_hex(), "openssl-output": output, "json-key-file-content": json.dumps({"key": new_hex()})}


MISTAKEN_NAMES = _mistaken_names()


def _key_material_in(name: str) -> list[str]:
    return [run for run in re.findall(r"[0-9A-Fa-f]{16,}", name)]


@pytest.mark.parametrize("name", MISTAKEN_NAMES.values(), ids=MISTAKEN_NAMES.keys())
def test_key_given_as_the_file_name__message_and_locals_redacted(
    name: str, no_key_file_env: pytest.MonkeyPatch
) -> None:
    material = _key_material_in(name)
    assert material
    # The control: 0.1.0's message echoed the name, and a frame holding the name records it.
    assert _leaks([f"key file {name!r}: file does not exist"], material)

    no_key_file_env.setenv("PYACCESS_KEY_FILE", name)
    error = _raised(load_key_ring)
    assert isinstance(error, KeyFileError)
    assert "file does not exist" in error.reason
    assert "key material" in str(error)
    assert "<redacted>" in error.path
    assert _leaks([str(error), repr(error), error.path, error.reason], material) == []
    assert _leaks(_pyaccess_locals(error), material) == []
    assert _leaks([_sentry_event(error)], material) == []


@pytest.mark.parametrize("name", MISTAKEN_NAMES.values(), ids=MISTAKEN_NAMES.keys())
def test_key_given_as_the_file_name__client_frames_show_it_redacted(
    name: str, no_key_file_env: pytest.MonkeyPatch
) -> None:
    """A client's ``self`` is a local of every frame of its methods: its repr must not show the name."""
    material = _key_material_in(name)
    no_key_file_env.setenv("PYACCESS_KEY_FILE", name)
    client = pyaccess.ProvisionSecrets()
    assert _leaks([str(client.key_file)], material), "control: the client holds the name as given"

    error = _raised(lambda: client.get(uuid.uuid4(), conn=None))  # the key file is read first
    assert isinstance(error, KeyFileError)
    assert _leaks([repr(client), *_pyaccess_locals(error), _sentry_event(error)], material) == []


def test_ordinary_file_names_are_shown_as_given(tmp_path: Path) -> None:
    path = tmp_path / "deploy-2024" / "provisioning_secret_enc_key"
    error = _raised(lambda: load_key_ring(path))
    assert isinstance(error, KeyFileError)
    assert error.path == str(path)
    assert "key material" not in str(error)
