"""The README's Python examples, run against a real database so that they cannot rot.

A block runs when its first line is ``# example: NAME``. It gets ``dsn``,
``key_file``, ``new_group(conn)`` and ``new_group_async(conn)``.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import ROOT, new_group

_BLOCK = re.compile(r"```python\n# example: (?P<name>[\w-]+)\n(?P<code>.*?)```", re.DOTALL)
EXAMPLES = {m["name"]: m["code"] for m in _BLOCK.finditer((ROOT / "README.md").read_text(encoding="utf-8"))}


async def _new_group_async(conn: psycopg.AsyncConnection[Any]) -> uuid.UUID:
    cursor = await conn.execute("INSERT INTO ota_groups (name) VALUES (%s) RETURNING id", (f"g-{uuid.uuid4()}",))
    row = await cursor.fetchone()
    await conn.commit()
    assert row is not None
    return uuid.UUID(str(row[0]))


def test_readme__has_the_examples_it_promises() -> None:
    assert {"basic", "transaction", "pool", "async", "fastapi"} <= set(EXAMPLES)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_readme_example__runs(name: str, db: str, key_file: Path) -> None:
    namespace = {"dsn": db, "key_file": key_file, "new_group": new_group, "new_group_async": _new_group_async}
    exec(compile(EXAMPLES[name], f"README.md example {name}", "exec"), namespace)  # noqa: S102 - our own README
