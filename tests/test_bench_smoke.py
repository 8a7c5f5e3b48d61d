"""The benchmark, whole, with tiny sizes: a broken benchmark fails the suite (no figure is asserted)."""

from __future__ import annotations

from pathlib import Path

from bench.run import main
from tests.fix_db import Server

TINY = "--groups 30 --rounds 2 --block 10 --warmup 2 --threads 1,2 --tp-calls 5 --tp-rounds 2 --rot-rounds 2"


def test_bench__tiny_sizes__writes_every_table_and_the_chart(server: Server, tmp_path: Path) -> None:
    assert main(["--dsn", server.dsn(), *TINY.split(), "--mem-calls", "20", "--out", str(tmp_path)]) == 0

    results = (tmp_path / "results.md").read_text(encoding="utf-8")
    for heading in ("## Latency", "## Throughput", "## Rotation of 30 rows", "## Memory"):
        assert heading in results
    for variant in ("get: sync function", "store: AsyncProvisionSecrets", "pooled get, 2 thread(s)", "rotate"):
        assert variant in results
    assert (tmp_path / "chart.png").read_bytes().startswith(b"\x89PNG")
