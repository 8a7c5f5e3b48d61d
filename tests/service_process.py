"""A service that keeps running through a key rotation: ``python -m tests.service_process DSN KEY_FILE DIR``.

One long-lived ``pyaccess.ProvisionSecrets`` on one connection. It reads and rewrites the
secrets of the groups listed in ``DIR/groups.json`` round after round until ``DIR/stop``
exists, and keeps ``DIR/status.json`` up to date: rounds, calls, the key id its last call
used, every error (class and message: pyaccess messages hold no key and no secret), and
finally the value it last wrote to each group. It never restarts and never re-creates the
client: whatever it picks up, it picks up from the re-rendered key file.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path

import psycopg

import pyaccess


def _write_status(directory: Path, status: dict[str, object]) -> None:
    temporary = directory / "status.json.tmp"
    temporary.write_text(json.dumps(status))
    os.replace(temporary, directory / "status.json")


def main(dsn: str, key_file: str, directory: Path) -> None:
    groups = [uuid.UUID(g) for g in json.loads((directory / "groups.json").read_text())]
    client = pyaccess.ProvisionSecrets(key_file=key_file)
    written = {str(g): f"initial {g}" for g in groups}
    status: dict[str, object] = {"pid": os.getpid(), "rounds": 0, "calls": 0, "errors": [], "key_ids": []}
    key_ids: list[str] = []
    errors: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for group in groups:
            client.store(group, written[str(group)], conn=conn)
        rounds = calls = 0
        while not (directory / "stop").exists():
            rounds += 1
            for group in groups:
                try:
                    value = client.get(group, conn=conn)
                    if value != written[str(group)]:
                        errors.append(f"group {group}: read a value it did not write last")
                    new_value = f"round {rounds} {group}"
                    client.store(group, new_value, conn=conn)
                    written[str(group)] = new_value
                except pyaccess.PyAccessError as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                calls += 2
            key_id = pyaccess.load_key_ring(key_file).current.key_id
            if not key_ids or key_ids[-1] != key_id:
                key_ids.append(key_id)
            status |= {"rounds": rounds, "calls": calls, "errors": errors, "key_ids": key_ids}
            _write_status(directory, status)
            time.sleep(0.02)
    _write_status(directory, status | {"written": written, "stopped": True})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], Path(sys.argv[3]))
