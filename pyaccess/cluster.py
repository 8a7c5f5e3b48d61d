"""A throwaway local PostgreSQL cluster, for `pyaccess demo`, the tests and the benchmark.

Built from the machine's own server binaries (``pg_config --bindir``, else
the newest ``/usr/lib/postgresql/*/bin``). ``initdb`` and ``pg_ctl`` refuse
to run as root, so as root they run as the ``postgres`` user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ClusterError", "LocalCluster", "find_bindir", "free_port", "new_cluster", "throwaway_cluster"]


class ClusterError(RuntimeError):
    """No throwaway cluster could be started."""


def find_bindir() -> Path:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``."""
    candidates: list[str] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        candidates.append(out.stdout.strip())
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True)
    candidates.extend(versions)
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    raise ClusterError("no PostgreSQL server binaries found (install postgresql, or set PYACCESS_TEST_DSN)")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalCluster:
    """A running cluster in ``datadir``, reachable on 127.0.0.1:``port`` and a Unix socket in ``datadir``."""

    bindir: Path
    datadir: Path
    port: int
    settings: Mapping[str, str] = field(default_factory=dict)

    @property
    def logfile(self) -> Path:
        return self.datadir / "server.log"

    def dsn(self, dbname: str = "postgres", user: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} dbname={dbname} user={user}"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ClusterError(f"{args[0]} failed: {(result.stderr or result.stdout).strip()}")
        return result

    def init(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.datadir / "data"),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        )

    def start(self) -> None:
        options = [f"-p {self.port}", "-c listen_addresses=127.0.0.1", f"-k {self.datadir}", "-c fsync=off"]
        options += [f"-c {name}={value}" for name, value in self.settings.items()]
        self._run(
            "pg_ctl",
            "-D",
            str(self.datadir / "data"),
            "-l",
            str(self.logfile),
            "-w",
            "-t",
            "60",
            "-o",
            " ".join(options),
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.datadir / "data"), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(ClusterError):
            self.stop("immediate")
        shutil.rmtree(self.datadir, ignore_errors=True)


def new_cluster(settings: Mapping[str, str] | None = None) -> LocalCluster:
    """Create and start a cluster; the caller destroys it."""
    bindir = find_bindir()
    datadir = Path(tempfile.mkdtemp(prefix="pyaccess-pg-"))
    if os.geteuid() == 0:
        shutil.chown(datadir, "postgres", "postgres")
    cluster = LocalCluster(bindir, datadir, free_port(), dict(settings or {}))
    try:
        cluster.init()
        cluster.start()
    except BaseException:
        cluster.destroy()
        raise
    return cluster


@contextlib.contextmanager
def throwaway_cluster(settings: Mapping[str, str] | None = None) -> Iterator[LocalCluster]:
    """A running cluster for the duration of the ``with`` block, then gone."""
    cluster = new_cluster(settings)
    try:
        yield cluster
    finally:
        cluster.destroy()
