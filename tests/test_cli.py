"""The `pyaccess` command line, against a real PostgreSQL: keygen, migrate, store, get, and how it fails.

Errors are one line on stderr starting ``pyaccess: error:`` with exit status 1,
usage errors exit 2, never a traceback; no key and no secret is ever printed
except the secret by ``get``; a secret or key is never taken from argv.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import click
import psycopg
import pytest
from click.testing import CliRunner, Result
from psycopg.conninfo import conninfo_to_dict

import pyaccess
from pyaccess.cli import main
from pyaccess.migrate import migrations_dir
from tests.fix_db import Server, new_group

SECRET = "pr0vision-S3CRET-do-not-print-9f7c"
ENV_VARS = ("PYACCESS_DSN", "PYACCESS_KEY_FILE")
PG_VARS = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "password": "PGPASSWORD", "dbname": "PGDATABASE"}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No PYACCESS_* or PG* variable of the caller's may change what a test runs against."""
    for name in (*ENV_VARS, *PG_VARS.values(), "PGSERVICE", "PGSERVICEFILE"):
        monkeypatch.delenv(name, raising=False)


def invoke(
    args: Sequence[str], input: str | bytes | None = None, env: Mapping[str, str | None] | None = None
) -> Result:
    return CliRunner().invoke(main, list(args), input=input, env=env)


def key_hex(key_file: Path) -> str:
    value = json.loads(key_file.read_text())["key"]
    assert isinstance(value, str)
    return value.lower()


def key_id(key_file: Path) -> str:
    """The key id as the contract's SQL derives it: the first 8 bytes of HMAC-SHA256(key, 'pyaccess key id')."""
    material = bytes.fromhex(key_hex(key_file))
    return hmac.new(material, b"pyaccess key id", hashlib.sha256).digest()[:8].hex()


def assert_no_material(result: Result, *secrets: str) -> None:
    for text in (result.stdout, result.stderr, result.output):
        for secret in secrets:
            assert secret.lower() not in text.lower(), f"{secret[:6]}... printed"


def assert_one_error_line(result: Result, status: int = 1) -> str:
    """Exit ``status``, exactly one line on stderr starting ``pyaccess: error:``, no traceback; that line."""
    # CliRunner turns an escaping exception into exit status 1 too: require a deliberate exit.
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == status, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pyaccess: error: ")
    assert len(lines[0]) > len("pyaccess: error: ")
    assert result.stdout == ""
    return lines[0]


def store(group_id: object, dsn: str, key_file: Path, input: str | bytes = SECRET + "\n", *extra: str) -> Result:
    return invoke(["store", str(group_id), "--dsn", dsn, "--key-file", str(key_file), *extra], input=input)


def get(group_id: object, dsn: str, key_file: Path) -> Result:
    return invoke(["get", str(group_id), "--dsn", dsn, "--key-file", str(key_file)])


def stored_secret(dsn: str, group_id: uuid.UUID, key_file: Path) -> str:
    """What the database holds for the group, read through the Python API on a connection of its own."""
    with psycopg.connect(dsn) as conn:
        return pyaccess.get_provision_secret(conn, group_id, key_file=key_file)


# --------------------------------------------------------------------------- keygen


@pytest.fixture
def umask_zero() -> Iterator[None]:
    saved = os.umask(0)
    yield
    os.umask(saved)


@pytest.mark.usefixtures("umask_zero")
def test_keygen_writes_a_0600_key_file_and_never_prints_the_key(tmp_path: Path) -> None:
    output = tmp_path / "key.json"
    result = invoke(["keygen", "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(output.stat().st_mode) == 0o600
    material = key_hex(output)
    assert re.fullmatch(r"[0-9a-f]{64}", material)
    assert_no_material(result, material)
    assert str(output) in result.stdout
    ring = pyaccess.load_key_ring(output)
    assert ring.current.material == bytes.fromhex(material)


def test_keygen_short_option(tmp_path: Path) -> None:
    result = invoke(["keygen", "-o", str(tmp_path / "k")])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600


def test_keygen_twice_gives_different_keys(tmp_path: Path) -> None:
    assert invoke(["keygen", "--output", str(tmp_path / "a")]).exit_code == 0
    assert invoke(["keygen", "--output", str(tmp_path / "b")]).exit_code == 0
    assert key_hex(tmp_path / "a") != key_hex(tmp_path / "b")


def test_keygen_refuses_to_overwrite(key_file: Path) -> None:
    before = key_file.read_bytes()
    result = invoke(["keygen", "--output", str(key_file)])
    line = assert_one_error_line(result)
    assert str(key_file) in line
    assert key_file.read_bytes() == before
    assert_no_material(result, key_hex(key_file))


def test_keygen_requires_output() -> None:
    result = invoke(["keygen"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------- migrate


def _migration_ids() -> list[str]:
    return sorted({p.name.split(".")[0] for p in migrations_dir().iterdir() if p.suffix in (".sql", ".py")})


@pytest.fixture
def fresh_database(server: Server) -> Iterator[str]:
    """A new, empty database (no migrations), dropped afterwards; its superuser DSN."""
    name = server.create_database()
    yield server.dsn(name)
    server.drop_database(name)


def test_migrate_applies_then_has_nothing_to_apply(fresh_database: str) -> None:
    ids = _migration_ids()
    assert ids
    first = invoke(["migrate", "--dsn", fresh_database])
    assert first.exit_code == 0, first.output
    assert f"applied {len(ids)} migration(s)" in first.stdout
    for migration_id in ids:
        assert migration_id in first.stdout
    with psycopg.connect(fresh_database) as conn:
        found = conn.execute(
            "SELECT to_regprocedure('public.store_provision_secret(uuid, text, bytea)') IS NOT NULL,"
            " to_regprocedure('public.get_provision_secret(uuid, bytea)') IS NOT NULL"
        ).fetchone()
        assert found == (True, True)
        assert conn.execute("SELECT to_regclass('public.ota_groups') IS NOT NULL").fetchone() == (True,)

    second = invoke(["migrate", "--dsn", fresh_database])
    assert second.exit_code == 0, second.output
    assert "nothing to apply" in second.stdout
    assert "applied" not in second.stdout


def test_migrate_reads_pyaccess_dsn(fresh_database: str) -> None:
    result = invoke(["migrate"], env={"PYACCESS_DSN": fresh_database})
    assert result.exit_code == 0, result.output
    assert "applied" in result.stdout
    assert "nothing to apply" in invoke(["migrate"], env={"PYACCESS_DSN": fresh_database}).stdout


def test_migrate_unreachable_database_is_one_line() -> None:
    # Port 1 on loopback: nothing listens there, the connection is refused at once.
    result = invoke(["migrate", "--dsn", "host=127.0.0.1 port=1 dbname=nowhere connect_timeout=3"])
    assert_one_error_line(result)


# --------------------------------------------------------------------------- store and get


@pytest.mark.parametrize(
    ("stdin", "expected"),
    [
        ("abc\n\n", "abc\n"),
        ("abc\n", "abc"),
        ("abc", "abc"),
        ("  spaced secret \t\n", "  spaced secret \t"),
        ("line one\nline two\n", "line one\nline two"),
        ("p\u00e4ssw\u00f6rd \u2713\n", "p\u00e4ssw\u00f6rd \u2713"),
    ],
    ids=["two-newlines", "one-newline", "no-newline", "spaces", "multi-line", "unicode"],
)
def test_store_reads_stdin_dropping_one_trailing_newline(
    stdin: str, expected: str, db: str, group: uuid.UUID, key_file: Path
) -> None:
    result = store(group, db, key_file, stdin)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert str(group) in result.stderr
    assert_no_material(result, key_hex(key_file))
    # The group id is hex: "abc" may be part of it. Only the rest of the output must not show the secret.
    assert expected.strip() not in result.output.replace(str(group), "<group>")
    assert stored_secret(db, group, key_file) == expected

    shown = get(group, db, key_file)
    assert shown.exit_code == 0, shown.output
    assert shown.stdout == expected + "\n"
    assert shown.stderr == ""
    assert_no_material(shown, key_hex(key_file))


def test_store_replaces_the_secret(db: str, group: uuid.UUID, key_file: Path) -> None:
    assert store(group, db, key_file, "first\n").exit_code == 0
    assert store(group, db, key_file, "second\n").exit_code == 0
    assert stored_secret(db, group, key_file) == "second"
    assert get(group, db, key_file).stdout == "second\n"


def test_store_accepts_the_longest_secret(db: str, group: uuid.UUID, key_file: Path) -> None:
    longest = "x" * 4096
    assert store(group, db, key_file, longest + "\n").exit_code == 0
    assert stored_secret(db, group, key_file) == longest


def test_environment_instead_of_options(db: str, group: uuid.UUID, key_file: Path) -> None:
    env = {"PYACCESS_DSN": db, "PYACCESS_KEY_FILE": str(key_file)}
    result = invoke(["store", str(group)], input=SECRET + "\n", env=env)
    assert result.exit_code == 0, result.output
    assert stored_secret(db, group, key_file) == SECRET
    shown = invoke(["get", str(group)], env=env)
    assert shown.exit_code == 0, shown.output
    assert shown.stdout == SECRET + "\n"


def test_options_win_over_environment(db: str, group: uuid.UUID, key_file: Path, other_key_file: Path) -> None:
    env = {"PYACCESS_DSN": "host=127.0.0.1 port=1 dbname=nowhere", "PYACCESS_KEY_FILE": str(other_key_file)}
    result = invoke(["store", str(group), "--dsn", db, "--key-file", str(key_file)], input=SECRET, env=env)
    assert result.exit_code == 0, result.output
    shown = invoke(["get", str(group), "--dsn", db, "--key-file", str(key_file)], env=env)
    assert shown.stdout == SECRET + "\n"


def test_pg_environment_variables_when_no_dsn(db: str, group: uuid.UUID, key_file: Path) -> None:
    env = {PG_VARS[k]: str(v) for k, v in conninfo_to_dict(db).items() if k in PG_VARS}
    env["PYACCESS_KEY_FILE"] = str(key_file)
    assert "PGDATABASE" in env
    assert invoke(["store", str(group)], input=SECRET, env=env).exit_code == 0
    shown = invoke(["get", str(group)], env=env)
    assert shown.exit_code == 0, shown.output
    assert shown.stdout == SECRET + "\n"


def test_get_with_previous_key_after_rotation(db: str, group: uuid.UUID, key_file: Path, tmp_path: Path) -> None:
    assert store(group, db, key_file).exit_code == 0
    rotated = tmp_path / "rotated.json"
    rotated.write_text(json.dumps({"key": os.urandom(32).hex(), "previous_keys": [key_hex(key_file)]}))
    shown = get(group, db, rotated)
    assert shown.exit_code == 0, shown.output
    assert shown.stdout == SECRET + "\n"


# --------------------------------------------------------------------------- errors


def test_get_unknown_group(db: str, key_file: Path) -> None:
    missing = uuid.uuid4()
    result = get(missing, db, key_file)
    line = assert_one_error_line(result)
    assert str(missing) in line
    assert_no_material(result, key_hex(key_file))


def test_store_unknown_group(db: str, key_file: Path) -> None:
    missing = uuid.uuid4()
    result = store(missing, db, key_file)
    line = assert_one_error_line(result)
    assert str(missing) in line
    assert_no_material(result, SECRET, key_hex(key_file))


def test_get_group_without_secret(db: str, group: uuid.UUID, key_file: Path) -> None:
    result = get(group, db, key_file)
    line = assert_one_error_line(result)
    assert str(group) in line


@pytest.mark.parametrize("bad_id", ["not-a-uuid", "1234", "", "' OR 1=1 --", "00000000-0000-0000-0000-00000000000g"])
def test_malformed_group_id(bad_id: str, db: str, key_file: Path) -> None:
    assert_one_error_line(get(bad_id, db, key_file))
    result = store(bad_id, db, key_file)
    assert_one_error_line(result)
    assert_no_material(result, SECRET, key_hex(key_file))


def test_wrong_key_names_key_ids_not_keys(db: str, group: uuid.UUID, key_file: Path, other_key_file: Path) -> None:
    assert store(group, db, key_file).exit_code == 0
    result = get(group, db, other_key_file)
    line = assert_one_error_line(result)
    assert key_id(key_file) in line  # the key that encrypted it
    assert key_id(other_key_file) in line  # the key given
    assert_no_material(result, key_hex(key_file), key_hex(other_key_file), SECRET)


@pytest.mark.parametrize("command", ["store", "get"])
def test_missing_key_file(command: str, db: str, group: uuid.UUID, tmp_path: Path) -> None:
    missing = tmp_path / "vault" / "provisioning_secret_enc_key"
    result = invoke([command, str(group), "--dsn", db, "--key-file", str(missing)], input=SECRET + "\n")
    line = assert_one_error_line(result)
    assert str(missing) in line
    assert_no_material(result, SECRET)


def test_malformed_key_file(db: str, group: uuid.UUID, tmp_path: Path) -> None:
    material = os.urandom(32).hex()[:63]
    bad = tmp_path / "provisioning_secret_enc_key"
    bad.write_text(json.dumps({"key": material}))
    result = store(group, db, bad)
    line = assert_one_error_line(result)
    assert str(bad) in line
    assert_no_material(result, material, SECRET)


@pytest.mark.parametrize(
    "args",
    [["store"], ["get"], ["store", "--dsn"], ["nonexistent-command"], ["get", str(uuid.UUID(int=1)), "--bogus"]],
    ids=["store-without-group", "get-without-group", "option-without-value", "unknown-command", "unknown-option"],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    result = invoke(args, input=SECRET)
    assert isinstance(result.exception, SystemExit)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""
    assert_no_material(result, SECRET)


@pytest.mark.parametrize("stdin", ["", "\n", b""], ids=["empty", "only-newline", "empty-bytes"])
def test_empty_secret(stdin: str | bytes, db: str, group: uuid.UUID, key_file: Path) -> None:
    line = assert_one_error_line(store(group, db, key_file, stdin))
    assert str(group) in line or "secret" in line


@pytest.mark.parametrize(
    "stdin",
    [SECRET + "-" + "x" * 4096 + "\n", "nul\x00" + SECRET, b"\xff\xfe" + SECRET.encode()],
    ids=["too-long", "nul", "not-utf-8"],
)
def test_invalid_secret_is_not_echoed(stdin: str | bytes, db: str, group: uuid.UUID, key_file: Path) -> None:
    result = store(group, db, key_file, stdin)
    assert_one_error_line(result)
    assert_no_material(result, SECRET, key_hex(key_file))
    # Nothing was stored.
    with pytest.raises(pyaccess.SecretNotFoundError):
        stored_secret(db, group, key_file)


def test_secret_given_in_argv_by_mistake_is_not_echoed(db: str, group: uuid.UUID, key_file: Path) -> None:
    """`pyaccess store GROUP SECRET` is a usage error; the error must not repeat the would-be secret."""
    result = invoke(["store", str(group), SECRET, "--dsn", db, "--key-file", str(key_file)], input="")
    assert result.exit_code == 2
    assert_no_material(result, SECRET)


# --------------------------------------------------------------------------- no secret or key in argv

SECRETISH = re.compile(r"secret|passw|passphrase|token|^--key$|^-k$|material|plaintext|value", re.IGNORECASE)


def test_store_takes_no_secret_or_key_in_argv() -> None:
    command = main.commands["store"]
    assert {p.name for p in command.params} == {"group_id", "dsn", "key_file"}
    arguments = [p for p in command.params if isinstance(p, click.Argument)]
    assert [a.name for a in arguments] == ["group_id"]

    result = invoke(["store", "--help"])
    assert result.exit_code == 0
    options = set(re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", result.stdout.split("Options:", 1)[1]))
    assert options == {"--dsn", "--key-file", "-h", "--help"}
    assert "stdin" in result.stdout.lower() or "standard input" in result.stdout.lower()


def test_no_command_takes_a_secret_or_key_option() -> None:
    assert set(main.commands) >= {"migrate", "keygen", "store", "get"}
    for name, command in main.commands.items():
        for param in command.params:
            for opt in (*param.opts, *param.secondary_opts):
                assert not SECRETISH.search(opt), f"{name} {opt}"


# --------------------------------------------------------------------------- the real console script


def _console_script() -> str:
    beside = Path(sys.executable).with_name("pyaccess")
    if beside.exists():
        return str(beside)
    found = shutil.which("pyaccess")
    assert found is not None, "the pyaccess console script is not installed"
    return found


def _run(args: Sequence[str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS and k not in PG_VARS.values()}
    return subprocess.run(
        [_console_script(), *args], input=stdin, capture_output=True, text=True, env=env, timeout=120, check=False
    )


def test_console_script_version() -> None:
    done = _run(["--version"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"pyaccess, version {pyaccess.__version__}"


def test_console_script_round_trip_and_failure(
    db: str, conn: psycopg.Connection[tuple[object, ...]], key_file: Path, other_key_file: Path
) -> None:
    group_id = new_group(conn)
    stored = _run(["store", str(group_id), "--dsn", db, "--key-file", str(key_file)], stdin=SECRET + "\n\n")
    assert stored.returncode == 0, stored.stderr
    assert SECRET not in stored.stdout + stored.stderr
    shown = _run(["get", str(group_id), "--dsn", db, "--key-file", str(key_file)])
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == SECRET + "\n\n"

    for failing in (
        ["get", str(uuid.uuid4()), "--dsn", db, "--key-file", str(key_file)],
        ["get", str(group_id), "--dsn", db, "--key-file", str(other_key_file)],
        ["get", "not-a-uuid", "--dsn", db, "--key-file", str(key_file)],
        ["keygen", "--output", str(key_file)],
    ):
        done = _run(failing)
        assert done.returncode == 1, (failing, done.stderr)
        assert "Traceback" not in done.stderr
        lines = done.stderr.splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith("pyaccess: error: ")
        assert done.stdout == ""
        for material in (SECRET, key_hex(key_file), key_hex(other_key_file)):
            assert material.lower() not in done.stderr.lower()

    usage = _run(["store"])
    assert usage.returncode == 2
    assert "Traceback" not in usage.stderr


def test_demo__on_the_test_database__stores_reads_back_and_cleans_up(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYACCESS_DSN", db)
    result = CliRunner().invoke(main, ["demo"])
    assert result.exit_code == 0, result.output
    assert "what a worker gets back: 'demo-provision-secret-0123456789'" in result.output
    assert "at rest in ota_groups.provision_secret_ciphertext (key id " in result.output
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM ota_groups").fetchone() == (0,)
