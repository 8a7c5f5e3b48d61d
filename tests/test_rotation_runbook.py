"""The README's rotation runbook (deploy/rotate-key.sh), executed against a real OpenBao server and agent.

A service process keeps reading and writing through the whole rotation and never restarts;
every command the runbook runs is recorded, and no key may appear on any command line.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

import pyaccess
from pyaccess.keyfile import load_key_ring
from tests.fix_db import ROOT, new_group, user_dsn
from tests.fix_vault import (
    README,
    SECRET,
    Agent,
    Vault,
    bao_binary,
    documented_templates,
    key_hexes,
    running,
    wait_until,
)

StartAgent = Callable[..., Agent]
RUNBOOK = ROOT / "deploy" / "rotate-key.sh"
ROLE_PASSWORD = "runbook-test-password"
_CENSUS_LINE = re.compile(r"^(?P<key_id>[0-9a-f]{16})\s+(?P<version>v\d|--)\s+(?P<state>\w+)\s+(?P<secrets>\d+) secret")


# 0.1.0's runbook, step 1, as an operator without jq would type it: both keys on the command line.
OLD_RUNBOOK_PATCH = """
new_key=$(python3 -c 'import json; print(json.load(open("pyaccess-rotation/new-key.json"))["key"])')
bao kv patch kv-dev/provisioning_secret_enc_key key="$new_key" previous_keys="[\\"$OLD\\"]"
"""


def test_readme__gives_each_runbook_step() -> None:
    rotating = README[README.index("## Rotating a key") :]
    for step in range(1, 7):
        assert f"deploy/rotate-key.sh {step}" in rotating
    assert "VAULT_NAMESPACE" in rotating
    assert "template-static-secret-render-interval" in rotating


def _shim(directory: Path, name: str, target: str) -> None:
    """``name`` on PATH that records its argv in $ARGV_LOG, then runs ``target``: what `ps` would show."""
    path = directory / name
    path.write_text(f'#!/bin/sh\nprintf "%s\\0" "$0" "$@" >>"$ARGV_LOG"\necho >>"$ARGV_LOG"\nexec "{target}" "$@"\n')
    path.chmod(0o755)


@dataclass(repr=False)
class Runbook:
    """deploy/rotate-key.sh as an operator runs it, every command's argv recorded."""

    env: dict[str, str]
    workdir: Path
    argv_log: Path

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(RUNBOOK), *args],
            env=env or self.env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def step(self, *args: str) -> str:
        done = self.run(*args)
        assert done.returncode == 0, f"step {args}: {done.stdout}{done.stderr}"
        return done.stdout


def _runbook(vault: Vault, tmp_path: Path, rotator_dsn: str, key_file: Path) -> Runbook:
    shims = tmp_path / "shims"
    shims.mkdir()
    _shim(shims, "bao", bao_binary())
    _shim(shims, "pyaccess", str(Path(sys.executable).with_name("pyaccess")))
    _shim(shims, "python3", sys.executable)
    workdir = tmp_path / "operator"
    workdir.mkdir()
    env = vault.server.env() | {
        "PATH": f"{shims}{os.pathsep}{os.environ['PATH']}",
        "VAULT_CLI": "bao",
        "ARGV_LOG": str(tmp_path / "argv.log"),
        "PYACCESS_DSN": rotator_dsn,
        "PYACCESS_KEY_FILE": str(key_file),  # steps 3 and 4 run where the agent's file is, as in a pod
    }
    return Runbook(env, workdir, tmp_path / "argv.log")


def _census(output: str) -> dict[str, tuple[str, int]]:
    return {m["key_id"]: (m["state"], int(m["secrets"])) for m in map(_CENSUS_LINE.match, output.splitlines()) if m}


class Service:
    """tests/service_process.py running against the agent's file; it must never restart."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def status(self) -> dict[str, Any]:
        try:
            return dict(json.loads((self.directory / "status.json").read_text()))
        except FileNotFoundError:
            return {"rounds": 0, "key_ids": []}

    def wait_rounds(self, more: int, process: subprocess.Popen[bytes]) -> None:
        target = self.status()["rounds"] + more
        wait_until(lambda: self.status()["rounds"] >= target, 15, "service rounds", alive=process)


def _key_id(hex_key: str) -> str:
    return pyaccess.Key(bytes.fromhex(hex_key)).key_id


def test_rotation_runbook__whole_lifecycle_through_the_agent__service_never_restarts(
    vault: Vault, vault_agent: StartAgent, db: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    agent = vault_agent(documented_templates("vault-agent-annotations"))
    key_file = agent.file(SECRET)
    suffix = uuid.uuid4().hex[:8]
    service_role, rotator_role = f"svc_{suffix}", f"rot_{suffix}"
    with psycopg.connect(db, autocommit=True) as admin:
        for role, groups in (
            (service_role, ("provision_secret_reader", "provision_secret_writer")),
            (rotator_role, ("provision_secret_rotator",)),
        ):
            admin.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(ROLE_PASSWORD))
            )
            for pyaccess_role in groups:
                admin.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(pyaccess_role), sql.Identifier(role)))
        try:
            # Secrets at rest under the ADR key, which registers itself by the first store.
            idle = [new_group(admin) for _ in range(20)]
            for group in idle:
                pyaccess.store_provision_secret(admin, group, f"idle {group}", key_file=key_file)
            busy = [new_group(admin) for _ in range(4)]
            service_dir = tmp_path / "service"
            service_dir.mkdir()
            (service_dir / "groups.json").write_text(json.dumps([str(g) for g in busy]))
            service = Service(service_dir)
            runbook = _runbook(vault, tmp_path, user_dsn(db, rotator_role, ROLE_PASSWORD), key_file)
            old_id = _key_id(vault.adr_key)
            service_args = [sys.executable, "-m", "tests.service_process", user_dsn(db, service_role, ROLE_PASSWORD)]
            with running(
                [*service_args, str(key_file), str(service_dir)],
                tmp_path / "service.log",
                env=os.environ | {"PYTHONPATH": str(ROOT)},
            ) as process:
                service.wait_rounds(2, process)
                pid = service.status()["pid"]

                # 1. a new key, registered before Vault hands it to any pod
                out = runbook.step("1")
                new_hex = json.loads((runbook.workdir / "pyaccess-rotation" / "new-key.json").read_text())["key"]
                new_id = _key_id(new_hex)
                assert new_id in out
                assert stat.S_IMODE((runbook.workdir / "pyaccess-rotation").stat().st_mode) == 0o700

                # Controls: 0.1.0's runbook command puts both keys on argv, and without the namespace Vault
                # refuses it; this script refuses to run step 2 without one. Nothing changes in Vault.
                version = vault.version()
                no_namespace = {k: v for k, v in runbook.env.items() if k != "VAULT_NAMESPACE"}
                old_runbook = subprocess.run(
                    ["bash", "-c", OLD_RUNBOOK_PATCH],
                    env=no_namespace | {"OLD": vault.adr_key, "ARGV_LOG": str(tmp_path / "control-argv.log")},
                    cwd=runbook.workdir,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                assert old_runbook.returncode != 0, "without VAULT_NAMESPACE the patch must fail"
                assert new_hex in (tmp_path / "control-argv.log").read_text(errors="replace"), "control: argv recorded"
                refused = runbook.run("2", env=no_namespace)
                assert refused.returncode != 0
                assert "VAULT_NAMESPACE" in refused.stderr
                assert vault.version() == version

                # 2. Vault: the new key current, the ADR key (its whole openssl output) previous; check-and-set
                patched = time.monotonic()
                runbook.step("2")
                assert vault.version() == version + 1
                assert not (runbook.workdir / "pyaccess-rotation" / "new-key.json").exists()
                agent.wait_for(SECRET, lambda text: new_hex in text, "the new key rendered")
                pickup = time.monotonic() - patched
                wait_until(lambda: service.status()["key_ids"][-1] == new_id, 15, "the service on the new key")
                assert key_hexes(load_key_ring(key_file)) == [new_hex, vault.adr_key]

                # 3. re-encrypt; 4. the census shows only the new key id in use
                out = runbook.step("3")
                reencrypted = re.search(r"re-encrypted (\d+) secret", out)
                assert reencrypted is not None, out
                assert int(reencrypted[1]) >= len(idle)
                census = _census(runbook.step("4"))
                assert {kid for kid, (_, n) in census.items() if n} == {new_id}, census
                assert "nothing to re-encrypt" in runbook.step("3")

                # 5. Vault: drop the old key; wait for the pods; 6. retire its id
                runbook.step("5")
                agent.wait_for(SECRET, lambda text: vault.adr_key not in text.lower(), "the old key dropped")
                assert key_hexes(load_key_ring(key_file)) == [new_hex]
                runbook.step("6", old_id)
                census = _census(runbook.step("4"))
                assert census[old_id] == ("retired", 0), census
                assert census[new_id][0] == "active"

                service.wait_rounds(3, process)
                (service_dir / "stop").touch()
                assert process.wait(15) == 0
            status = service.status()
            assert status["stopped"]
            assert status["pid"] == pid == process.pid, "the service restarted"
            assert status["errors"] == []
            assert status["key_ids"] == [old_id, new_id]
            for group, value in status["written"].items():
                assert pyaccess.get_provision_secret(admin, uuid.UUID(group), key_file=key_file) == value
            for group in idle:
                assert pyaccess.get_provision_secret(admin, group, key_file=key_file) == f"idle {group}"

            # No key ever on a command line: every bao, pyaccess and python3 the runbook ran, recorded.
            argv = runbook.argv_log.read_text(errors="replace").replace("\0", " ")
            assert "kv patch" in argv
            assert "key register" in argv
            for secret in (new_hex, *re.findall(r"[0-9A-Fa-f]{16,}", vault.adr_output)):  # key, salt, iv
                assert secret.lower() not in argv.lower()
        finally:
            for role in (service_role, rotator_role):
                admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
    print(
        f"\nrotation lifecycle: {time.monotonic() - started:.1f} s, step 2 to pickup {pickup:.2f} s, "
        f"{status['calls']} service calls in {status['rounds']} rounds, 0 errors"
    )
