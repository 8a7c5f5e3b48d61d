"""The README's Python examples, run against a real database so that they cannot rot.

A block runs when its first line is ``# example: NAME``. It gets ``dsn``,
``key_file``, ``new_group(conn)`` and ``new_group_async(conn)``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.fix_db import ROOT, new_group, new_group_async

_BLOCK = re.compile(r"```python\n# example: (?P<name>[\w-]+)\n(?P<code>.*?)```", re.DOTALL)
EXAMPLES = {m["name"]: m["code"] for m in _BLOCK.finditer((ROOT / "README.md").read_text(encoding="utf-8"))}


def test_readme__has_the_examples_it_promises() -> None:
    assert {"basic", "transaction", "pool", "async", "fastapi"} <= set(EXAMPLES)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_readme_example__runs(name: str, db: str, key_file: Path) -> None:
    namespace = {"dsn": db, "key_file": key_file, "new_group": new_group, "new_group_async": new_group_async}
    exec(compile(EXAMPLES[name], f"README.md example {name}", "exec"), namespace)  # noqa: S102 - our own README
