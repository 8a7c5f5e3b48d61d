"""The master key never reaches PostgreSQL from the service path (issue 13), proven on the wire.

A TCP relay between client and server records every byte (tests/fix_wire.py). A control
case shows the matcher finds a master key that does cross (the contract's master-key SQL
function); then every service path (module functions, a pool, asyncio, the CLI, rotation)
sends only the per-group pairs of the group at hand.
"""

from __future__ import annotations

import asyncio
import base64
import re
import uuid
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from psycopg_pool import ConnectionPool

import pyaccess
from pyaccess import aio
from pyaccess.cli import main
from pyaccess.keyfile import load_key_ring
from pyaccess.keys import Key
from pyaccess.migrate import apply_migrations
from pyaccess.rotation import key_census, rotate
from tests.fix_db import ROOT, new_group, register_key, scalar
from tests.fix_release import Release
from tests.fix_wire import Relay


def _forms(secret: bytes) -> list[bytes]:
    """Every spelling of some key bytes an observer could find: raw, hex either case, base64."""
    return [secret, secret.hex().encode(), secret.hex().upper().encode(), base64.b64encode(secret)]


def _crossed(wire: bytes, secret: bytes) -> bool:
    return any(form in wire for form in _forms(secret))


def _master(key_file: Path) -> Key:
    return load_key_ring(key_file).current


def test_control__the_master_key_sql_function__does_send_the_master_key(
    db: str, relay: Relay, key_file: Path, group: uuid.UUID
) -> None:
    with psycopg.connect(relay.dsn(db), autocommit=True) as conn:
        conn.execute("SELECT public.store_provision_secret(%s, 'x', %b)", (group, _master(key_file).material))
    assert _crossed(relay.take(), _master(key_file).material), "the relay records and the matcher finds keys"


def test_service_path__store_get_pool_async_cli_and_rotation__send_no_master_key(
    db: str, relay: Relay, key_file: Path, other_key_file: Path, tmp_path: Path
) -> None:
    old, new = _master(key_file), _master(other_key_file)
    with psycopg.connect(db) as admin:
        groups = [new_group(admin) for _ in range(300)]
    via = relay.dsn(db)
    runner = CliRunner()
    with psycopg.connect(via, autocommit=True) as conn:
        for gid in groups:
            pyaccess.store_provision_secret(conn, gid, f"secret of {gid}", key_file=key_file)
        assert pyaccess.get_provision_secret(conn, groups[0], key_file=key_file) == f"secret of {groups[0]}"
    secrets = pyaccess.ProvisionSecrets(key_file=key_file)
    with ConnectionPool(via, kwargs={"autocommit": True}, configure=secrets.configure, min_size=1, max_size=2) as pool:
        secrets.pool = pool
        assert secrets.get(groups[1]) == f"secret of {groups[1]}"

    async def read_async() -> str:
        async with await psycopg.AsyncConnection.connect(via, autocommit=True) as conn:
            return await aio.get_provision_secret(conn, groups[2], key_file=key_file)

    assert asyncio.run(read_async()) == f"secret of {groups[2]}"
    stored = runner.invoke(main, ["store", str(groups[3]), "--dsn", via, "--key-file", str(key_file)], input="cli\n")
    assert stored.exit_code == 0, stored.output
    for command in (["get", str(groups[3])], ["census"], ["doctor"]):
        result = runner.invoke(main, [*command, "--dsn", via, "--key-file", str(key_file)])
        assert result.exit_code == 0, (command, result.output)
    ring = tmp_path / "ring.json"
    ring.write_text(f'{{"key": "{new.material.hex()}", "previous_keys": ["{old.material.hex()}"]}}')
    with psycopg.connect(via) as conn:
        register_key(conn, ring)
        report = rotate(conn, key_file=ring, batch_size=100)
    assert report.reencrypted == 300

    wire = relay.take()
    assert not _crossed(wire, old.material), "the old master key crossed the wire"
    assert not _crossed(wire, new.material), "the new master key crossed the wire"
    assert _crossed(wire, old.pair(2, groups[0])), "what crosses is the group's own pair"
    assert not _crossed(wire, old.pair(1, groups[0])), "no v1 pair: there was no v1 envelope"


def test_v1_envelopes_from_0_1_0__read_then_rotated__then_no_v1_pair_crosses_any_more(
    empty_db: str, relay: Relay, release_0_1_0: Release, key_file: Path
) -> None:
    assert release_0_1_0.cli("migrate", "--dsn", empty_db).returncode == 0
    with psycopg.connect(empty_db) as admin:
        groups = [new_group(admin) for _ in range(5)]
    for gid in groups:
        release_0_1_0.store(empty_db, gid, f"v1 secret of {gid}", key_file)
    apply_migrations(empty_db)
    master = _master(key_file)
    via = relay.dsn(empty_db)
    with psycopg.connect(via, autocommit=True) as conn:
        assert pyaccess.get_provision_secret(conn, groups[0], key_file=key_file) == f"v1 secret of {groups[0]}"
    wire = relay.take()
    assert _crossed(wire, master.pair(1, groups[0])), "reading a v1 envelope hands the server the v1 pair"
    assert not _crossed(wire, master.material)

    with psycopg.connect(via) as conn:
        assert rotate(conn, key_file=key_file).reencrypted == 5
        assert {(e.version, e.secrets) for e in key_census(conn, key_file=key_file)} == {(2, 5)}
    relay.take()
    with psycopg.connect(via, autocommit=True) as conn:
        for gid in groups:
            assert pyaccess.get_provision_secret(conn, gid, key_file=key_file) == f"v1 secret of {gid}"
    wire = relay.take()
    assert not _crossed(wire, master.pair(1, groups[0])), "no v1 pair once the census shows no v1"
    assert not _crossed(wire, master.material)


_RECIPE = re.compile(r"```python\n# recipe: open-v2\n(?P<code>.*?)```", re.DOTALL)


def test_readme_recipe__opens_an_envelope_that_pyaccess_wrote_without_pyaccess(
    db: str, conn: psycopg.Connection[tuple[object, ...]], group: uuid.UUID, key_file: Path
) -> None:
    pyaccess.store_provision_secret(conn, group, "opened by the recipe — ünïcödé", key_file=key_file)
    conn.commit()
    envelope = scalar(db, "SELECT provision_secret_ciphertext FROM ota_groups WHERE id = %s", (group,))
    match = _RECIPE.search((ROOT / "README.md").read_text(encoding="utf-8"))
    assert match, "README.md has no '# recipe: open-v2' block"
    namespace: dict[str, object] = {}
    exec(compile(match["code"], "README.md recipe open-v2", "exec"), namespace)  # noqa: S102 - our own README
    open_v2 = namespace["open_v2"]
    assert callable(open_v2)
    master = _master(key_file).material
    assert open_v2(master, group, envelope) == "opened by the recipe — ünïcödé"
    moved = uuid.uuid4()
    with pytest.raises(ValueError, match="tag"):
        open_v2(master, moved, envelope)


def test_doctor__prints_the_key_ids_the_key_file_holds__never_a_key(db: str, key_file: Path, tmp_path: Path) -> None:
    ring = tmp_path / "ring.json"
    old = _master(key_file)
    new = Key(bytes(range(32)))
    ring.write_text(f'{{"key": "{new.material.hex()}", "previous_keys": ["{old.material.hex()}"]}}')
    result = CliRunner().invoke(main, ["doctor", "--json", "--dsn", db, "--key-file", str(ring)])
    (key_file_check,) = [line for line in result.output.splitlines() if '"key file"' in line]
    assert f"current {new.key_id}, previous {old.key_id}" in key_file_check
    for material in (new.material, old.material):
        assert not _crossed(result.output.encode(), material)
