"""Hostile input against a real PostgreSQL: property-based secrets, group ids and key files, and every
bit flip and truncation of a stored ciphertext.

Only the documented exceptions may come out (never a psycopg error, never garbage), every accepted
secret must read back exactly, and the table must stay intact. Each test prints how many hostile
inputs it tried (run ``pytest -s`` to see them).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import Counter
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyaccess
from pyaccess.keyfile import MAX_FILE_BYTES, load_key_ring
from tests.fix_db import new_group

Conn = psycopg.Connection[tuple[object, ...]]

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Every code point, surrogates, controls, NUL and unassigned ones included.
ANY_CHAR = st.characters(codec=None, exclude_categories=())
INJECTIONS = [
    "'; DROP TABLE ota_groups; --",
    "' OR '1'='1",
    "1 OR 1=1",
    "x'); DELETE FROM ota_groups; --",
    "$$; DROP TABLE ota_groups; $$",
    "\\x00'; TRUNCATE ota_groups; --",
    "'::uuid; UPDATE ota_groups SET provision_secret_ciphertext = NULL; --",
    "%s%s%s%s",
    "%(group_id)s",
    "{}",
    "\\'; DROP TABLE ota_groups; --",
    "00000000-0000-0000-0000-000000000000' OR 'x'='x",
    "00000000-0000-0000-0000-000000000000; DROP TABLE ota_groups",
    "00000000-0000-0000-0000-000000000000\x00' OR 1=1 --",
]


def _table_digest(conn: Conn) -> tuple[object, ...]:
    row = conn.execute(
        "SELECT count(*), md5(string_agg(id::text || name || coalesce(encode(provision_secret_ciphertext, 'hex'), '-'),"
        " ',' ORDER BY id)) FROM ota_groups"
    ).fetchone()
    assert row is not None
    return tuple(row)


def _utf8_len(text: str) -> int | None:
    """The UTF-8 length of ``text``, or None when it cannot be encoded (a lone surrogate)."""
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return None


# --- secrets -------------------------------------------------------------------------------

# Secrets around the 4096-byte limit: 1- to 4-byte characters repeated to within a few bytes of it.
NEAR_LIMIT = st.builds(
    lambda char, delta, tail: char * ((4096 + delta) // len(char.encode())) + tail,
    st.sampled_from(["a", "é", "秘", "🔐", "\x01", "\u200b"]),
    st.integers(min_value=-8, max_value=8),
    st.text(ANY_CHAR, max_size=3),
)
SECRETS = st.one_of(
    st.text(ANY_CHAR, max_size=64),
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=300),
    st.text(st.characters(categories=["Cc", "Cf", "Zs", "Zl", "Zp", "Co", "Cn"]), min_size=1, max_size=40),
    st.sampled_from(INJECTIONS),
    NEAR_LIMIT,
    # Text around a NUL or a lone surrogate, which cannot reach the server.
    st.builds(
        lambda head, bad, tail: head + bad + tail,
        st.text(max_size=20),
        st.sampled_from(["\x00", "\ud800", "\udbff", "\udc00", "\udfff", "\udc80\udc80"]),
        st.text(max_size=20),
    ),
    st.sampled_from(["", "\x00", "a\x00b", "\ud800", "x\udfffy", "a" * 4096, "a" * 4097, "é" * 2048, "é" * 2048 + "a"]),
)


def test_secrets__any_unicode__documented_errors_only_and_exact_read_back(db: str, key_file: Path) -> None:
    tried: Counter[str] = Counter()
    with psycopg.connect(db, autocommit=True) as conn:
        gid = new_group(conn)
        pyaccess.store_provision_secret(conn, gid, "sentinel", key_file=key_file)
        last_accepted = ["sentinel"]

        @FAST
        @given(secret=SECRETS)
        def check(secret: str) -> None:
            size = _utf8_len(secret)
            valid = size is not None and "\x00" not in secret and 1 <= size <= 4096
            refused: pyaccess.InvalidSecretError | None = None
            try:
                pyaccess.store_provision_secret(conn, gid, secret, key_file=key_file)
            except pyaccess.InvalidSecretError as exc:
                refused = exc
            if refused is not None:
                assert not valid, f"refused a valid secret of {size} bytes"
                assert secret not in str(refused) or len(secret) < 4
                if size is None:
                    tried["refused: lone surrogate"] += 1
                elif "\x00" in secret:
                    tried["refused: NUL"] += 1
                else:
                    tried["refused: empty" if size == 0 else "refused: over 4096 bytes"] += 1
            else:
                assert valid, f"accepted an invalid secret ({size} bytes)"
                last_accepted[0] = secret
                tried["accepted: 4000 to 4096 bytes" if (size or 0) >= 4000 else "accepted"] += 1
            # Refused or not, the group holds exactly the last accepted secret.
            assert pyaccess.get_provision_secret(conn, gid, key_file=key_file) == last_accepted[0]

        check()
    print(f"\nhostile secrets: {sum(tried.values())} tried, {dict(tried)}")
    assert len(tried) == 6  # every kind was tried


# --- group ids -----------------------------------------------------------------------------

UUID_SHAPED = st.builds(
    lambda u, form: form(u),
    st.uuids(),
    st.sampled_from(
        [
            lambda u: str(u)[:-1],  # too short
            lambda u: str(u) + "0",  # too long
            lambda u: str(u).replace("-", "", 1),
            lambda u: str(u)[:-1] + "g",  # not hex
            lambda u: " " + str(u),
            lambda u: str(u) + "\n",
            lambda u: str(u) + "\x00",
            lambda u: str(u).replace("-", "\u2010"),  # a Unicode hyphen
            lambda u: str(u).replace("a", "\uff41"),  # a full-width 'a'
            lambda u: str(u) + "'; DROP TABLE ota_groups; --",
        ]
    ),
)
GROUP_IDS = st.one_of(st.text(ANY_CHAR, max_size=60), st.sampled_from(INJECTIONS), UUID_SHAPED)


def _parses(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def test_group_ids__malformed_and_injection__pyaccess_errors_only_and_table_intact(db: str, key_file: Path) -> None:
    tried: Counter[str] = Counter()
    with psycopg.connect(db, autocommit=True) as conn:
        gid = new_group(conn)
        pyaccess.store_provision_secret(conn, gid, "untouched", key_file=key_file)
        before = _table_digest(conn)

        @FAST
        @given(group_id=GROUP_IDS, operation=st.sampled_from(["store", "get"]))
        def check(group_id: str, operation: str) -> None:
            try:
                if operation == "store":
                    pyaccess.store_provision_secret(conn, group_id, "hostile", key_file=key_file)
                else:
                    pyaccess.get_provision_secret(conn, group_id, key_file=key_file)
            except pyaccess.InvalidGroupIdError:
                tried["malformed"] += 1
            except pyaccess.GroupNotFoundError:
                # Only a string that is a UUID may reach the server, and then finds no group.
                assert _parses(group_id), f"{group_id!r} reached the server"
                tried["well-formed, no such group"] += 1
            else:
                pytest.fail(f"{operation} with {group_id!r} did not raise")
            # (Any other exception, a psycopg error included, fails the test as it is.)

        check()
        for spelling in (str(gid).upper(), "{" + str(gid).upper() + "}", str(gid).replace("-", "").upper()):
            assert pyaccess.get_provision_secret(conn, spelling, key_file=key_file) == "untouched"
            tried["upper-case spellings of a real id"] += 1
        pyaccess.store_provision_secret(conn, str(gid).upper(), "untouched", key_file=key_file)
        after = _table_digest(conn)
        assert after[0] == before[0]
        assert conn.execute("SELECT to_regclass('public.ota_groups') IS NOT NULL").fetchone() == (True,)
    print(f"\nhostile group ids: {sum(tried.values())} tried, {dict(tried)}")
    assert tried["malformed"] > 0


# Malformed ids that Python's uuid.UUID() accepts (it strips "urn:" and "uuid:" anywhere, removes every
# hyphen, and int() allows surrounding whitespace, a sign, underscores and non-ASCII digits), and that
# PostgreSQL's uuid type refuses: each resolves to some real UUID instead of raising InvalidGroupIdError.
LAX_SPELLINGS = {
    "leading space, 31 digits": " " + "1" * 31,
    "plus sign, 31 digits": "+" + "1" * 31,
    "31 digits and a newline": "1" * 31 + "\n",
    "underscores between digits": "00" + "_0" * 15,
    "Arabic-Indic digits": "\u0660" * 32,
    "hyphen after every digit": "-1" * 32,
    "'uuid:' in the middle": "1" * 16 + "uuid:" + "1" * 16,
}


@pytest.mark.parametrize("spelling", LAX_SPELLINGS.values(), ids=LAX_SPELLINGS.keys())
def test_group_ids__spellings_postgresql_refuses__raise_invalid_group_id(
    conn: Conn, key_file: Path, spelling: str
) -> None:
    with pytest.raises(psycopg.errors.InvalidTextRepresentation):
        conn.execute("SELECT %s::text::uuid", (spelling,))
    conn.rollback()
    with pytest.raises(pyaccess.InvalidGroupIdError):
        pyaccess.get_provision_secret(conn, spelling, key_file=key_file)


# --- key files -----------------------------------------------------------------------------


def _hex_runs(content: bytes) -> list[str]:
    """Runs of 8 or more hex digits in the content: what a message must never repeat."""
    return [run.lower() for run in re.findall(r"[0-9A-Fa-f]{8,}", content.decode("latin-1"))]


def _valid_file(key_hex: str, previous: list[str]) -> bytes:
    return json.dumps({"key": key_hex, "previous_keys": previous}).encode()


KEY_HEX = st.binary(min_size=32, max_size=32).map(bytes.hex)
KEY_FILES = st.one_of(
    st.binary(max_size=300).map(lambda b: ("random bytes", b)),
    st.text(ANY_CHAR.filter(lambda c: _utf8_len(c) is not None), max_size=200).map(
        lambda t: ("random text", t.encode())
    ),
    # Valid JSON key files cut short anywhere: never JSON any more.
    st.builds(
        lambda key, prev, cut: ("truncated JSON", _valid_file(key, prev)[: max(1, cut)]),
        KEY_HEX,
        st.lists(KEY_HEX, max_size=2),
        st.integers(min_value=1, max_value=170),
    ).filter(lambda case: not case[1].endswith(b"}")),
    # JSON of the right shape with a wrong key: short, long, not hex, not a string.
    st.builds(
        lambda key, junk: ("wrong key in JSON", json.dumps({"key": key[: len(key) - 1] + junk}).encode()),
        KEY_HEX,
        st.sampled_from(["", "00", "g", "Z", " 0", "\u0660", "\uff10"]),
    ),
    st.builds(
        lambda key, value: ("wrong previous_keys", json.dumps({"key": key, "previous_keys": value}).encode()),
        KEY_HEX,
        st.one_of(st.text(max_size=70), st.lists(st.text(max_size=70), min_size=1, max_size=2), st.integers()),
    ),
    # The agent's renderings and openssl's output with a key of the wrong length.
    st.builds(
        lambda key, cut, form: ("broken agent or openssl rendering", form.format(key[:cut]).encode()),
        KEY_HEX,
        st.integers(min_value=0, max_value=63),
        st.sampled_from(["data: map[key:{}]\nmetadata: map[version:1]", "key: {}", "salt=00\nkey={}\niv =00", "{}"]),
    ),
)


def test_key_files__hostile_content__key_file_error_only_and_no_content_shown(
    db: str, key_file: Path, tmp_path: Path
) -> None:
    tried: Counter[str] = Counter()
    counter = [0]
    with psycopg.connect(db, autocommit=True) as conn:
        gid = new_group(conn)
        pyaccess.store_provision_secret(conn, gid, "kept", key_file=key_file)

        @FAST
        @given(case=KEY_FILES, operation=st.sampled_from(["store", "get"]))
        def check(case: tuple[str, bytes], operation: str) -> None:
            kind, content = case
            counter[0] += 1
            path = tmp_path / f"hostile-{counter[0]}.key"  # a new path each time: no cache in the way
            path.write_bytes(content)
            problem: pyaccess.KeyFileError | None = None
            try:
                if operation == "store":
                    pyaccess.store_provision_secret(conn, gid, "not stored", key_file=path)
                else:
                    pyaccess.get_provision_secret(conn, gid, key_file=path)
            except pyaccess.KeyFileError as exc:
                problem = exc
            except (pyaccess.WrongKeyError, pyaccess.KeyNotActiveError):
                # content that happens to be a valid key file (64 hex digits, an empty previous_keys
                # string): another key, which get refuses and the registry refuses to store under
                pass
            if problem is None:
                load_key_ring(path)  # accepted: it must really be a valid key file
                tried["valid by chance"] += 1
                return
            assert str(path) in str(problem)
            message = str(problem).lower()
            for run in _hex_runs(content):
                assert run not in message, f"the message shows file content: {problem}"
            tried[kind] += 1

        check()
        assert pyaccess.get_provision_secret(conn, gid, key_file=key_file) == "kept"

        # Huge files: refused, whatever the size, after reading no more than the cap.
        valid = _valid_file(load_key_ring(key_file).current.material.hex(), [])
        for kind, size in (("huge (just over the cap)", MAX_FILE_BYTES + 1), ("huge (1 GiB, sparse)", 1 << 30)):
            path = tmp_path / f"huge-{size}.key"
            with path.open("wb") as handle:
                handle.write(valid + b" " * (MAX_FILE_BYTES + 1 - len(valid)))
                handle.truncate(size)
            started = time.monotonic()
            with pytest.raises(pyaccess.KeyFileError, match="larger than") as caught:
                pyaccess.get_provision_secret(conn, gid, key_file=path)
            assert time.monotonic() - started < 1.0
            assert load_key_ring(key_file).current.material.hex() not in str(caught.value).lower()
            tried[kind] += 1
    print(f"\nhostile key files: {sum(tried.values())} tried, {dict(tried)}")
    assert len(tried.keys() - {"valid by chance"}) >= 8  # every kind was tried


# --- the stored ciphertext -----------------------------------------------------------------


def test_ciphertext__every_bit_flip_and_every_truncation__refused_never_a_value(db: str, key_file: Path) -> None:
    """Flip each bit of each byte of one stored envelope, and cut it at every length: never a value."""
    tried: Counter[str] = Counter()
    with psycopg.connect(db, autocommit=True) as admin, psycopg.connect(db, autocommit=True) as conn:
        gid = new_group(admin)
        pyaccess.store_provision_secret(admin, gid, "a secret of 3 AES blocks (38 bytes)...", key_file=key_file)
        row = admin.execute("SELECT provision_secret_ciphertext FROM ota_groups WHERE id = %s", (gid,)).fetchone()
        assert row is not None
        assert isinstance(row[0], bytes)
        original = row[0]
        assert len(original) == 1 + 8 + 16 + 48 + 32

        def attempt(envelope: bytes) -> type[BaseException] | str:
            admin.execute("UPDATE ota_groups SET provision_secret_ciphertext = %s WHERE id = %s", (envelope, gid))
            try:
                return pyaccess.get_provision_secret(conn, gid, key_file=key_file)
            except pyaccess.PyAccessError as exc:
                return type(exc)

        for position in range(len(original)):
            for bit in range(8):
                altered = bytearray(original)
                altered[position] ^= 1 << bit
                outcome = attempt(bytes(altered))
                expected = pyaccess.WrongKeyError if 1 <= position <= 8 else pyaccess.SecretIntegrityError
                assert outcome is expected, f"bit {bit} of byte {position}: {outcome!r}"
                tried["bit flips"] += 1
        for length in range(len(original)):
            outcome = attempt(original[:length])
            assert outcome is pyaccess.SecretIntegrityError, f"cut to {length} bytes: {outcome!r}"
            tried["truncations"] += 1
        for extra in (b"\x00", b"\x00" * 16, original[-16:], original[9:25]):
            assert attempt(original + extra) is pyaccess.SecretIntegrityError
            tried["extensions"] += 1
        assert attempt(original) == "a secret of 3 AES blocks (38 bytes)..."
    print(f"\nhostile ciphertexts: {sum(tried.values())} tried on a {len(original)}-byte envelope, {dict(tried)}")
