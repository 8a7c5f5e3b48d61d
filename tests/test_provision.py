"""The Python API against a real PostgreSQL: round trips, every error, the caller's transaction."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

import psycopg
import pytest

import pyaccess
from pyaccess.keyfile import load_key_ring, write_new_key_file
from tests.fix_db import new_group, register_key

Conn = psycopg.Connection[tuple[object, ...]]


def _ciphertext(conn: Conn, group_id: uuid.UUID) -> bytes:
    row = conn.execute("SELECT provision_secret_ciphertext FROM ota_groups WHERE id = %s", (group_id,)).fetchone()
    assert row is not None
    value = row[0]
    assert isinstance(value, bytes)
    return value


def _set_ciphertext(conn: Conn, group_id: uuid.UUID, value: bytes) -> None:
    conn.execute("UPDATE ota_groups SET provision_secret_ciphertext = %s WHERE id = %s", (value, group_id))
    conn.commit()


def _ring_file(tmp_path: Path, current: Path, *previous: Path) -> Path:
    def hex_key(path: Path) -> str:
        return str(json.loads(path.read_text())["key"])

    ring = tmp_path / "ring.json"
    ring.write_text(json.dumps({"key": hex_key(current), "previous_keys": [hex_key(p) for p in previous]}))
    return ring


@pytest.mark.parametrize(
    "secret",
    ["s3cr3t", "ünïcødé ✓ 秘密 🔐", "line one\nline two\ttab", " padded ", "x" * 4096, "é" * 2048, "🔐" * 1024],
)
def test_store_then_get__returns_the_same_secret(conn: Conn, group: uuid.UUID, key_file: Path, secret: str) -> None:
    pyaccess.store_provision_secret(conn, group, secret, key_file=key_file)
    assert pyaccess.get_provision_secret(conn, group, key_file=key_file) == secret


def test_group_id__may_be_a_string_in_any_case(conn: Conn, group: uuid.UUID, key_file: Path) -> None:
    pyaccess.store_provision_secret(conn, str(group).upper(), "abc", key_file=key_file)
    assert pyaccess.get_provision_secret(conn, str(group), key_file=key_file) == "abc"


def test_store__replaces_the_previous_secret(conn: Conn, group: uuid.UUID, key_file: Path) -> None:
    pyaccess.store_provision_secret(conn, group, "first", key_file=key_file)
    pyaccess.store_provision_secret(conn, group, "second", key_file=key_file)
    assert pyaccess.get_provision_secret(conn, group, key_file=key_file) == "second"


def test_store__keeps_no_plaintext_and_uses_a_fresh_iv(conn: Conn, group: uuid.UUID, key_file: Path) -> None:
    secret = "plain-secret-that-must-not-be-stored"
    pyaccess.store_provision_secret(conn, group, secret, key_file=key_file)
    first = _ciphertext(conn, group)
    pyaccess.store_provision_secret(conn, group, secret, key_file=key_file)
    second = _ciphertext(conn, group)
    assert first != second
    assert first[10:26] != second[10:26]  # the IVs differ
    assert secret.encode() not in first
    assert first[0] == 2  # envelope version 2: per-group keys
    row = conn.execute("SELECT t::text FROM ota_groups t WHERE id = %s", (group,)).fetchone()
    assert row is not None
    assert secret not in str(row[0])


def test_store__is_undone_when_the_callers_transaction_rolls_back(conn: Conn, group: uuid.UUID, key_file: Path) -> None:
    pyaccess.store_provision_secret(conn, group, "kept", key_file=key_file)
    conn.commit()
    pyaccess.store_provision_secret(conn, group, "rolled back", key_file=key_file)
    conn.rollback()
    assert pyaccess.get_provision_secret(conn, group, key_file=key_file) == "kept"


def test_group_and_secret__are_created_in_one_transaction(conn: Conn, key_file: Path, db: str) -> None:
    with conn.transaction():
        row = conn.execute("INSERT INTO ota_groups (name) VALUES ('atomic') RETURNING id").fetchone()
        assert row is not None
        group_id = row[0]
        assert isinstance(group_id, uuid.UUID)
        pyaccess.store_provision_secret(conn, group_id, "atomic secret", key_file=key_file)
        with psycopg.connect(db) as other:  # nothing visible before the commit
            assert other.execute("SELECT count(*) FROM ota_groups WHERE name = 'atomic'").fetchone() == (0,)
    with psycopg.connect(db) as other:
        assert pyaccess.get_provision_secret(other, group_id, key_file=key_file) == "atomic secret"


def test_api__never_commits(conn: Conn, group: uuid.UUID, key_file: Path, db: str) -> None:
    pyaccess.store_provision_secret(conn, group, "uncommitted", key_file=key_file)
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    with psycopg.connect(db) as other, pytest.raises(pyaccess.SecretNotFoundError):
        pyaccess.get_provision_secret(other, group, key_file=key_file)


def test_api__works_on_an_autocommit_connection(db: str, key_file: Path) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        group = new_group(conn)
        pyaccess.store_provision_secret(conn, group, "auto", key_file=key_file)
        assert pyaccess.get_provision_secret(conn, group, key_file=key_file) == "auto"


def test_api__uses_server_side_binding_even_with_a_client_cursor_factory(db: str, key_file: Path) -> None:
    with psycopg.connect(db, cursor_factory=psycopg.ClientCursor) as conn:
        group = new_group(conn)
        pyaccess.store_provision_secret(conn, group, "bound", key_file=key_file)
        assert pyaccess.get_provision_secret(conn, group, key_file=key_file) == "bound"
        key_hex = load_key_ring(key_file).current.material.hex()
        rows = conn.execute("SELECT query FROM pg_stat_activity WHERE datname = current_database()").fetchall()
        assert all(key_hex not in str(query).lower() for (query,) in rows)


# --- errors ---------------------------------------------------------------------------------


def test_get__unknown_group__raises_group_not_found(conn: Conn, key_file: Path) -> None:
    missing = uuid.uuid4()
    with pytest.raises(pyaccess.GroupNotFoundError, match=str(missing)):
        pyaccess.get_provision_secret(conn, missing, key_file=key_file)


def test_store__unknown_group__raises_group_not_found(conn: Conn, key_file: Path) -> None:
    with pytest.raises(pyaccess.GroupNotFoundError):
        pyaccess.store_provision_secret(conn, uuid.uuid4(), "x", key_file=key_file)


@pytest.mark.parametrize("bad", ["not-a-uuid", "", "'; DROP TABLE ota_groups; --", "1234", None, 42])
def test_malformed_group_id__raises_a_pyaccess_error_before_any_query(conn: Conn, key_file: Path, bad: object) -> None:
    with pytest.raises(pyaccess.InvalidGroupIdError):
        pyaccess.get_provision_secret(conn, bad, key_file=key_file)  # type: ignore[arg-type]
    with pytest.raises(pyaccess.GroupNotFoundError):
        pyaccess.store_provision_secret(conn, bad, "x", key_file=key_file)  # type: ignore[arg-type]
    assert conn.execute("SELECT count(*) FROM ota_groups").fetchone() == (0,)


def test_get__group_without_secret__raises_secret_not_found(conn: Conn, group: uuid.UUID, key_file: Path) -> None:
    with pytest.raises(pyaccess.SecretNotFoundError, match=str(group)):
        pyaccess.get_provision_secret(conn, group, key_file=key_file)


@pytest.mark.parametrize("secret", ["", "x" * 4097, "é" * 2049, "\x00", "a\x00b", "\ud800"])
def test_store__invalid_secret__raises_invalid_secret_and_keeps_the_old_one(
    conn: Conn, group: uuid.UUID, key_file: Path, secret: str
) -> None:
    pyaccess.store_provision_secret(conn, group, "old", key_file=key_file)
    conn.commit()
    with pytest.raises(pyaccess.InvalidSecretError):
        pyaccess.store_provision_secret(conn, group, secret, key_file=key_file)
    conn.rollback()
    assert pyaccess.get_provision_secret(conn, group, key_file=key_file) == "old"


def test_store__none_secret__raises_invalid_secret(conn: Conn, group: uuid.UUID, key_file: Path) -> None:
    with pytest.raises(pyaccess.InvalidSecretError):
        pyaccess.store_provision_secret(conn, group, None, key_file=key_file)  # type: ignore[arg-type]


def test_get__wrong_key__raises_wrong_key_with_key_ids_only(
    conn: Conn, group: uuid.UUID, key_file: Path, other_key_file: Path
) -> None:
    pyaccess.store_provision_secret(conn, group, "guarded", key_file=key_file)
    stored_id = conn.execute("SELECT provision_secret_key_id(%s)", (load_key_ring(key_file).current.material,))
    (stored_id_hex,) = stored_id.fetchone() or ("",)
    with pytest.raises(pyaccess.WrongKeyError) as caught:
        pyaccess.get_provision_secret(conn, group, key_file=other_key_file)
    message = str(caught.value)
    assert str(stored_id_hex) in message
    for path in (key_file, other_key_file):
        material = load_key_ring(path).current.material.hex()
        assert material not in message.lower()
    assert "guarded" not in message


def test_get__ciphertext_moved_to_another_group__is_refused(conn: Conn, key_file: Path) -> None:
    first, second = new_group(conn), new_group(conn)
    pyaccess.store_provision_secret(conn, first, "first's secret", key_file=key_file)
    pyaccess.store_provision_secret(conn, second, "second's secret", key_file=key_file)
    conn.commit()
    _set_ciphertext(conn, second, _ciphertext(conn, first))
    with pytest.raises(pyaccess.SecretIntegrityError, match=str(second)):
        pyaccess.get_provision_secret(conn, second, key_file=key_file)
    conn.rollback()
    assert pyaccess.get_provision_secret(conn, first, key_file=key_file) == "first's secret"


@pytest.mark.parametrize("position", [0, 9, 12, 30, -40, -1])
def test_get__one_altered_bit__is_refused(conn: Conn, group: uuid.UUID, key_file: Path, position: int) -> None:
    pyaccess.store_provision_secret(conn, group, "intact", key_file=key_file)
    conn.commit()
    altered = bytearray(_ciphertext(conn, group))
    altered[position] ^= 0x01
    _set_ciphertext(conn, group, bytes(altered))
    with pytest.raises(pyaccess.SecretIntegrityError):
        pyaccess.get_provision_secret(conn, group, key_file=key_file)


def test_get__altered_key_id__is_refused_as_wrong_key(conn: Conn, group: uuid.UUID, key_file: Path) -> None:
    pyaccess.store_provision_secret(conn, group, "intact", key_file=key_file)
    conn.commit()
    altered = bytearray(_ciphertext(conn, group))
    altered[3] ^= 0x80
    _set_ciphertext(conn, group, bytes(altered))
    with pytest.raises(pyaccess.WrongKeyError):
        pyaccess.get_provision_secret(conn, group, key_file=key_file)


@pytest.mark.parametrize("length", [0, 1, 9, 25, 72, 73, 88])
def test_get__truncated_ciphertext__is_refused(conn: Conn, group: uuid.UUID, key_file: Path, length: int) -> None:
    pyaccess.store_provision_secret(conn, group, "x" * 20, key_file=key_file)
    conn.commit()
    _set_ciphertext(conn, group, _ciphertext(conn, group)[:length])
    with pytest.raises(pyaccess.SecretIntegrityError):
        pyaccess.get_provision_secret(conn, group, key_file=key_file)


def test_key_ring__reads_under_previous_keys_and_writes_under_the_current_one(
    conn: Conn, key_file: Path, other_key_file: Path, tmp_path: Path
) -> None:
    old_group, new_group_id = new_group(conn), new_group(conn)
    pyaccess.store_provision_secret(conn, old_group, "under the old key", key_file=key_file)
    ring = _ring_file(tmp_path, other_key_file, key_file)
    register_key(conn, ring)
    pyaccess.store_provision_secret(conn, new_group_id, "under the new key", key_file=ring)
    assert pyaccess.get_provision_secret(conn, old_group, key_file=ring) == "under the old key"
    assert pyaccess.get_provision_secret(conn, new_group_id, key_file=ring) == "under the new key"
    assert pyaccess.get_provision_secret(conn, new_group_id, key_file=other_key_file) == "under the new key"
    with pytest.raises(pyaccess.WrongKeyError):
        pyaccess.get_provision_secret(conn, new_group_id, key_file=key_file)


def test_key_file_problem__raises_key_file_error_before_any_query(conn: Conn, group: uuid.UUID, tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"key": "abc"}')
    with pytest.raises(pyaccess.KeyFileError, match=r"broken\.json"):
        pyaccess.store_provision_secret(conn, group, "x", key_file=broken)
    with pytest.raises(pyaccess.InvalidKeyError):
        pyaccess.get_provision_secret(conn, group, key_file=tmp_path / "missing.json")
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_key_file__env_variable_is_used_when_no_path_is_given(
    conn: Conn, group: uuid.UUID, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYACCESS_KEY_FILE", str(key_file))
    pyaccess.store_provision_secret(conn, group, "via env", key_file=None)
    assert pyaccess.get_provision_secret(conn, group, key_file=key_file) == "via env"


def test_key_file__rerendered_by_rename__is_picked_up_without_restart(
    conn: Conn, group: uuid.UUID, tmp_path: Path
) -> None:
    path = write_new_key_file(tmp_path / "agent-rendered")
    pyaccess.store_provision_secret(conn, group, "before", key_file=path)
    staged = write_new_key_file(tmp_path / "agent-staged")
    staged.replace(path)  # what the Vault agent does
    with pytest.raises(pyaccess.WrongKeyError):
        pyaccess.get_provision_secret(conn, group, key_file=path)
    conn.rollback()
    pyaccess.store_provision_secret(conn, group, "after", key_file=path)
    assert pyaccess.get_provision_secret(conn, group, key_file=path) == "after"


def test_dropped_connection__raises_a_pyaccess_error(db: str, group: uuid.UUID, key_file: Path) -> None:
    with psycopg.connect(db) as conn:
        pid = conn.info.backend_pid
        with psycopg.connect(db, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(pyaccess.DatabaseError):
            pyaccess.get_provision_secret(conn, group, key_file=key_file)


def test_read_only_transaction__store_raises_read_only_and_get_works(
    conn: Conn, group: uuid.UUID, key_file: Path
) -> None:
    pyaccess.store_provision_secret(conn, group, "readable", key_file=key_file)
    conn.commit()
    conn.read_only = True
    with pytest.raises(pyaccess.ReadOnlyError):
        pyaccess.store_provision_secret(conn, group, "not stored", key_file=key_file)
    conn.rollback()
    assert pyaccess.get_provision_secret(conn, group, key_file=key_file) == "readable"


# --- nothing leaks --------------------------------------------------------------------------


def test_errors_and_reprs__never_show_key_or_secret(
    conn: Conn, group: uuid.UUID, key_file: Path, other_key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "top-secret-provision-value"
    pyaccess.store_provision_secret(conn, group, secret, key_file=key_file)
    conn.commit()
    ring = load_key_ring(key_file)
    texts = [repr(ring), str(ring), repr(ring.current), str(ring.current)]
    for call in (
        lambda: pyaccess.get_provision_secret(conn, group, key_file=other_key_file),
        lambda: pyaccess.store_provision_secret(conn, uuid.uuid4(), secret, key_file=key_file),
        lambda: pyaccess.store_provision_secret(conn, group, secret * 200, key_file=key_file),
    ):
        with pytest.raises(pyaccess.PyAccessError) as caught:
            call()
        conn.rollback()
        texts += [str(caught.value), repr(caught.value), str(caught.value.__cause__)]
    texts += [record.getMessage() for record in caplog.records]
    blob = "\n".join(texts).lower()
    for path in (key_file, other_key_file):
        assert load_key_ring(path).current.material.hex() not in blob
    assert secret not in blob


def test_every_error_class__is_importable_from_pyaccess_and_a_pyaccess_error() -> None:
    for name in (
        "InvalidKeyError",
        "KeyFileError",
        "InvalidSecretError",
        "GroupNotFoundError",
        "SecretNotFoundError",
        "WrongKeyError",
        "SecretIntegrityError",
        "AccessDeniedError",
    ):
        cls = getattr(pyaccess, name)
        assert issubclass(cls, pyaccess.PyAccessError), name
        assert cls.__doc__
    assert issubclass(pyaccess.KeyFileError, pyaccess.InvalidKeyError)
