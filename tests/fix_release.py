"""The previous release, 0.1.0, as its users have it: its own files and its own virtualenv.

Built once per test session from the commit that was released (the repository's history),
so the upgrade tests run 0.1.0's migrations and 0.1.0's library, not a copy kept by hand.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: main at the release of 0.1.0 (tagged v0.1.0).
RELEASE_0_1_0 = "8ef794a6ae80c13481dd0df506d6101bb99a1e58"


@dataclass(frozen=True)
class Release:
    """A released pyaccess: its source tree and the ``pyaccess`` command of its own virtualenv."""

    source: Path
    bin: Path

    @property
    def migrations(self) -> Path:
        return self.source / "migrations"

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYACCESS_", "PG"))}
        return subprocess.run(
            [str(self.bin / "pyaccess"), *args],
            check=False,
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )

    def store(self, dsn: str, group_id: uuid.UUID, secret: str, key_file: Path) -> None:
        result = self.cli("store", str(group_id), "--dsn", dsn, "--key-file", str(key_file), stdin=secret)
        assert result.returncode == 0, result.stderr

    def get(self, dsn: str, group_id: uuid.UUID, key_file: Path) -> str:
        result = self.cli("get", str(group_id), "--dsn", dsn, "--key-file", str(key_file))
        assert result.returncode == 0, result.stderr
        return result.stdout.removesuffix("\n")


@pytest.fixture(scope="session")
def release_0_1_0(tmp_path_factory: pytest.TempPathFactory) -> Release:
    base = tmp_path_factory.mktemp("release-0.1.0")
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", RELEASE_0_1_0], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(base / "src", filter="data")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", str(base / "src")],
        check=True,
        timeout=600,
    )
    return Release(base / "src", venv / "bin")
