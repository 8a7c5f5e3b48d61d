"""`pyaccess demo`: the whole job once, on a throwaway PostgreSQL, narrated."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg

from pyaccess import queries
from pyaccess.cluster import throwaway_cluster
from pyaccess.keyfile import write_new_key_file
from pyaccess.migrate import apply_migrations
from pyaccess.provision import get_provision_secret, store_provision_secret

__all__ = ["run_demo"]

DEMO_SECRET = "demo-provision-secret-0123456789"  # noqa: S105 - shown on purpose


@contextlib.contextmanager
def _database(say: Callable[[str], None]) -> Iterator[str]:
    dsn = os.environ.get("PYACCESS_DSN")
    if dsn:
        say("using the database in PYACCESS_DSN")
        yield dsn
        return
    say("starting a throwaway PostgreSQL cluster ...")
    with throwaway_cluster() as cluster:
        say(f"  running on 127.0.0.1:{cluster.port}, data in {cluster.datadir}")
        yield cluster.dsn()
    say("throwaway cluster stopped and removed")


def run_demo(say: Callable[[str], None] = print) -> None:
    """Migrate, make a key, store and read back a secret, and show what lies at rest."""
    with _database(say) as dsn, tempfile.TemporaryDirectory(prefix="pyaccess-demo-") as tmp:
        applied = apply_migrations(dsn)
        say(f"migrated: {', '.join(applied) if applied else 'already current'}")
        key_file = write_new_key_file(Path(tmp) / "provisioning_secret_enc_key")
        say(f"generated a 256-bit key in {key_file} (mode 0600; the key itself is never printed)")
        with psycopg.connect(dsn) as conn:
            row = conn.execute(queries.DEMO_CREATE_GROUP, (f"demo-group-{os.getpid()}",)).fetchone()
            assert row is not None
            group_id = row[0]
            say(f"created OTA group {group_id}")
            store_provision_secret(conn, group_id, DEMO_SECRET, key_file=key_file)
            conn.commit()
            say(f"stored its provision secret: {DEMO_SECRET!r}")
            at_rest = conn.execute(queries.DEMO_AT_REST, (group_id,)).fetchone()
            assert at_rest is not None
            say(f"at rest in ota_groups.provision_secret_ciphertext (key id {at_rest[1]}):")
            say(f"  \\x{at_rest[0]}")
            secret = get_provision_secret(conn, group_id, key_file=key_file)
            say(f"what a worker gets back: {secret!r}")
            if secret != DEMO_SECRET:
                raise RuntimeError("the secret read back differs from the one stored")
            conn.execute(queries.DEMO_DELETE_GROUP, (group_id,))
            conn.commit()
            say("removed the demo group")
