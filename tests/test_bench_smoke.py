"""The benchmark, whole, with tiny sizes: a broken benchmark fails the suite (no figure is asserted)."""

from __future__ import annotations

from pathlib import Path

from bench.run import main
from tests.fix_db import Server

TINY = "--groups 30 --rounds 2 --block 10 --warmup 2 --threads 1,2 --tp-calls 5 --tp-rounds 2 --rot-rounds 2"


def test_bench__tiny_sizes__writes_every_table_and_the_chart(server: Server, tmp_path: Path) -> None:
    assert main(["--dsn", server.dsn(), *TINY.split(), "--mem-calls", "20", "--out", str(tmp_path)]) == 0

    results = (tmp_path / "results.md").read_text(encoding="utf-8")
    for heading in ("## Latency", "## Against 0.1.0", "## Throughput", "## Rotation of 30 rows", "## Memory"):
        assert heading in results
    variants = ("get: sync function", "0.1.0: get", "store: AsyncProvisionSecrets", "pooled get, 2 thread(s)", "rotate")
    for variant in variants:
        assert variant in results
    assert (tmp_path / "chart.png").read_bytes().startswith(b"\x89PNG")
