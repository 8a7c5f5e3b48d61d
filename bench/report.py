"""The report: tables (``results.md``, also printed) and one chart of the ratios (``chart.png``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bench.sections import Growth, Section
from bench.timing import Comparison


def _num(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.3g}"


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def _row(c: Comparison, section: Section) -> list[str]:
    scale = section.scale
    cells = [
        c.name,
        "—" if c.reference == c.name else c.reference,
        _num(c.median_us * scale),
        f"{_num(c.p10_us * scale)} to {_num(c.p90_us * scale)}",
    ]
    if section.rate:
        cells.append(f"{1e6 / c.median_us:,.0f}")
    cells += [
        _ratio(c.ratio),
        _num(None if c.server_us is None else c.server_us * scale),
        _ratio(c.server_ratio),
        _num(c.client_us * scale),
    ]
    return cells + ([c.target] if _has_targets(section) else [])


def _has_targets(section: Section) -> bool:
    return any(c.target for c in section.comparisons)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)])


def section_table(section: Section) -> str:
    unit = section.unit
    header = ["variant", "compared with", f"median, {unit}", "p10 to p90"]
    header += ["ops/s"] if section.rate else []
    header += ["ratio", f"server CPU, {unit}", "ratio", f"client CPU, {unit}"]
    header += ["ceiling (ratios)"] if _has_targets(section) else []
    return f"## {section.title}\n\n" + _table(header, [_row(c, section) for c in section.comparisons])


def growth_table(growth: Sequence[Growth]) -> str:
    rows = [
        [g.name, f"{g.calls:,}", f"{g.first_half:+,}", f"{g.second_half:+,}", f"{g.second_half / (g.calls / 2):+.3f}"]
        for g in growth
    ]
    header = [
        "operation",
        "traced calls",
        "growth, 1st half (bytes)",
        "growth, 2nd half (bytes)",
        "bytes per call (2nd)",
    ]
    return "## Memory (tracemalloc)\n\n" + _table(header, rows)


def markdown(meta: dict[str, str], sections: Sequence[Section], growth: Sequence[Growth]) -> str:
    parts = [
        "# pyaccess benchmark",
        "Written by `make bench` (`bench/run.py`). Ratio: median time per operation over the reference's;"
        " server CPU: run time of the variant's backends (`/proc/<pid>/schedstat`) per operation.",
        _table(["", ""], list(meta.items())),
        "![ratios against the references](chart.png)",
        *(section_table(s) for s in sections),
        growth_table(growth),
    ]
    return "\n\n".join(parts) + "\n"


def chart(sections: Sequence[Section], path: Path) -> None:
    """Horizontal bars: latency and server CPU ratio of every variant that has a reference."""
    import matplotlib  # noqa: PLC0415 - only once there is something to draw

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    compared = [c for s in sections for c in s.comparisons if c.reference != c.name]
    labels = [f"{c.name}  (vs {'floor' if '(floor)' in c.reference else c.reference})" for c in compared]
    ys = range(len(compared))
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(compared) + 1.5))
    ax.barh([y - 0.2 for y in ys], [c.ratio for c in compared], height=0.4, label="time per operation")
    ax.barh([y + 0.2 for y in ys], [c.server_ratio or 0.0 for c in compared], height=0.4, label="server CPU")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(list(ys), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("ratio to the reference (1.0 = as costly)")
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncols=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
