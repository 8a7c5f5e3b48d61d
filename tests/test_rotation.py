"""Key rotation against a real PostgreSQL: census, rewrap, refusal, kill and resume, concurrency."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

import pyaccess
from pyaccess.cli import main
from pyaccess.keyfile import load_key_ring, write_new_key_file
from pyaccess.rotation import key_census, rotate
from tests.fix_db import register_key

Conn = psycopg.Connection[tuple[object, ...]]


def _hex(path: Path) -> str:
    return str(json.loads(path.read_text())["key"])


def _ring(tmp_path: Path, current: Path, *previous: Path) -> Path:
    ring = tmp_path / f"ring-{uuid.uuid4().hex[:6]}.json"
    ring.write_text(json.dumps({"key": _hex(current), "previous_keys": [_hex(p) for p in previous]}))
    return ring


def _populate(conn: Conn, key_file: Path, count: int) -> None:
    """``count`` groups, each with secret 'secret-<name>', stored under the key of ``key_file``."""
    conn.execute(
        "INSERT INTO ota_groups (name) SELECT 'g' || i FROM generate_series(1, %s) AS i",
        (count,),
    )
    conn.execute(
        "SELECT count(store_provision_secret(id, 'secret-' || name, %s)) FROM ota_groups",
        (load_key_ring(key_file).current.material,),
    )
    conn.commit()


def _all_readable(conn: Conn, key_file: Path) -> dict[str, int]:
    """Read every secret back with the key ring: name -> 1, and check each value."""
    rows = conn.execute(
        "SELECT name, get_provision_secret(id, %s::bytea[]) FROM ota_groups ORDER BY name",
        (load_key_ring(key_file).materials,),
    ).fetchall()
    conn.commit()
    for name, secret in rows:
        assert secret == f"secret-{name}"
    return {str(name): 1 for name, _ in rows}


def test_rotate__reencrypts_thousands_of_rows_under_the_current_key(
    conn: Conn, key_file: Path, other_key_file: Path, tmp_path: Path
) -> None:
    _populate(conn, key_file, 3000)
    ring = _ring(tmp_path, other_key_file, key_file)
    report = rotate(conn, key_file=ring, batch_size=500)
    assert report.reencrypted == 3000
    assert report.batches == 6
    (old_id,) = report.by_old_key_id
    assert report.by_old_key_id[old_id] == 3000
    census = key_census(conn, key_file=ring)
    assert [(e.key_id, e.secrets, e.in_key_file) for e in census if e.secrets] == [
        (report.current_key_id, 3000, "current")
    ]
    assert len(_all_readable(conn, other_key_file)) == 3000  # readable with the new key alone


def test_rotate__second_run__reencrypts_nothing(
    conn: Conn, key_file: Path, other_key_file: Path, tmp_path: Path
) -> None:
    _populate(conn, key_file, 50)
    ring = _ring(tmp_path, other_key_file, key_file)
    assert rotate(conn, key_file=ring).reencrypted == 50
    second = rotate(conn, key_file=ring)
    assert second.reencrypted == 0
    assert second.batches == 0


def test_rotate__dry_run__changes_nothing(conn: Conn, key_file: Path, other_key_file: Path, tmp_path: Path) -> None:
    _populate(conn, key_file, 20)
    ring = _ring(tmp_path, other_key_file, key_file)
    before = conn.execute("SELECT md5(string_agg(provision_secret_ciphertext::text, '' ORDER BY id)) FROM ota_groups")
    before_hash = before.fetchone()
    conn.commit()
    report = rotate(conn, key_file=ring, dry_run=True)
    assert report.reencrypted == 20
    after = conn.execute("SELECT md5(string_agg(provision_secret_ciphertext::text, '' ORDER BY id)) FROM ota_groups")
    assert after.fetchone() == before_hash


def test_rotate__secrets_under_a_key_not_in_the_ring__refuses_before_changing_anything(
    conn: Conn, key_file: Path, other_key_file: Path, tmp_path: Path
) -> None:
    _populate(conn, key_file, 10)
    third = write_new_key_file(tmp_path / "third.json")
    ring_without_old = _ring(tmp_path, third, other_key_file)
    with pytest.raises(pyaccess.WrongKeyError, match=r"10 secret") as caught:
        rotate(conn, key_file=ring_without_old)
    assert _hex(key_file) not in str(caught.value).lower()
    assert len(_all_readable(conn, key_file)) == 10


def test_rotate__inside_a_callers_transaction__refuses(conn: Conn, key_file: Path) -> None:
    conn.execute("SELECT 1")
    with pytest.raises(pyaccess.PyAccessError, match="outside any transaction"):
        rotate(conn, key_file=key_file)


def test_rotate__killed_midway__leaves_every_row_readable_and_resumes(
    db: str, conn: Conn, key_file: Path, other_key_file: Path, tmp_path: Path
) -> None:
    total = 4000
    _populate(conn, key_file, total)
    ring = _ring(tmp_path, other_key_file, key_file)
    script = (
        "import sys, psycopg\n"
        "from pyaccess.rotation import rotate\n"
        "with psycopg.connect(sys.argv[1]) as c:\n"
        "    rotate(c, key_file=sys.argv[2], batch_size=20)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script, db, str(ring)])
    try:
        deadline = time.monotonic() + 60
        new_id = ""
        while time.monotonic() < deadline:
            census = {e.in_key_file: e.secrets for e in key_census(conn, key_file=ring)}
            conn.commit()
            if census.get("current", 0) >= 200:
                break
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL
    census = {e.in_key_file: e.secrets for e in key_census(conn, key_file=ring)}
    conn.commit()
    assert 0 < census.get("current", 0) < total, census  # really killed mid-way
    assert sum(census.values()) == total
    assert len(_all_readable(conn, ring)) == total
    resumed = rotate(conn, key_file=ring, batch_size=500)
    assert resumed.reencrypted == census["previous"]
    new_id = resumed.current_key_id
    assert [(e.key_id, e.secrets) for e in key_census(conn, key_file=ring) if e.secrets] == [(new_id, total)]
    assert len(_all_readable(conn, other_key_file)) == total


def test_rotate__concurrent_stores_and_gets__see_no_error_and_lose_no_write(
    db: str, conn: Conn, key_file: Path, other_key_file: Path, tmp_path: Path
) -> None:
    _populate(conn, key_file, 2000)
    ring = _ring(tmp_path, other_key_file, key_file)
    register_key(conn, ring)  # the runbook: the new key is registered before pods pick it up
    ids = [uuid.UUID(str(row[0])) for row in conn.execute("SELECT id FROM ota_groups ORDER BY id").fetchall()]
    conn.commit()
    errors: list[BaseException] = []
    last_written: dict[uuid.UUID, str] = {}
    stop = threading.Event()

    def writer(offset: int) -> None:
        mine = ids[offset::2]
        with psycopg.connect(db, autocommit=True) as c:
            n = 0
            while not stop.is_set():
                gid = mine[(n * 7) % len(mine)]
                value = f"rewritten-{offset}-{n}"
                try:
                    pyaccess.store_provision_secret(c, gid, value, key_file=ring)
                    last_written[gid] = value
                except BaseException as exc:  # noqa: BLE001 - collected, asserted below
                    errors.append(exc)
                n += 1

    def reader(offset: int) -> None:
        with psycopg.connect(db, autocommit=True) as c:
            n = 0
            while not stop.is_set():
                try:
                    pyaccess.get_provision_secret(c, ids[(offset + n * 13) % len(ids)], key_file=ring)
                except BaseException as exc:  # noqa: BLE001
                    errors.append(exc)
                n += 1

    # Writers own disjoint halves of the groups, so the last write of each group is well defined.
    threads = [threading.Thread(target=writer, args=(i,)) for i in (0, 1)]
    threads += [threading.Thread(target=reader, args=(i,)) for i in (0, 1)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.2)
        report = rotate(conn, key_file=ring, batch_size=100)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert errors == []
    assert report.reencrypted > 0
    assert len(last_written) > 50  # the writers really ran during the rotation
    rotate(conn, key_file=ring)  # rows rewritten under the new key need nothing; a no-op or the tail
    for gid, value in last_written.items():
        assert pyaccess.get_provision_secret(conn, gid, key_file=other_key_file) == value
    assert [e.in_key_file for e in key_census(conn, key_file=ring) if e.secrets] == ["current"]


def test_cli_rotate_and_census__report_counts_per_key_id(
    db: str, conn: Conn, key_file: Path, other_key_file: Path, tmp_path: Path
) -> None:
    _populate(conn, key_file, 30)
    ring = _ring(tmp_path, other_key_file, key_file)
    runner = CliRunner()
    census = runner.invoke(main, ["census", "--dsn", db, "--key-file", str(ring)])
    assert census.exit_code == 0, census.output
    assert "previous" in census.output
    dry = runner.invoke(main, ["rotate", "--dry-run", "--dsn", db, "--key-file", str(ring)])
    assert dry.exit_code == 0, dry.output
    assert "would re-encrypt 30 secret(s)" in dry.output
    done = runner.invoke(main, ["rotate", "--batch-size", "7", "--dsn", db, "--key-file", str(ring)])
    assert done.exit_code == 0, done.output
    assert "re-encrypted 30 secret(s)" in done.output
    assert "5 batch(es)" in done.output
    again = runner.invoke(main, ["rotate", "--dsn", db, "--key-file", str(ring)])
    assert "nothing to re-encrypt" in again.output
    unknown = runner.invoke(main, ["census", "--dsn", db, "--key-file", str(key_file)])
    assert unknown.exit_code == 1
    assert "absent in key file" in unknown.output


def test_cli_rotate__on_a_terminal__shows_a_progress_bar_with_rows_and_rate(
    db: str, conn: Conn, key_file: Path, other_key_file: Path, tmp_path: Path
) -> None:
    _populate(conn, key_file, 300)
    ring = _ring(tmp_path, other_key_file, key_file)
    command = [sys.executable, "-m", "pyaccess.cli", "rotate", "--batch-size", "50", "--dsn", db]
    command += ["--key-file", str(ring)]
    controller, terminal = pty.openpty()
    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=terminal,
            timeout=60,
            check=False,
        )
        os.close(terminal)
        screen = b""
        with contextlib.suppress(OSError):  # EIO once everything written to the terminal is read
            while chunk := os.read(controller, 65536):
                screen += chunk
    finally:
        os.close(controller)
    assert done.returncode == 0
    assert b"re-encrypted 300 secret(s)" in done.stdout
    text = screen.decode(errors="replace")
    assert "re-encrypting" in text
    assert "300/300" in text
    assert "rows/s" in text
