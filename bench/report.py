"""The printed table, bench/results.md and bench/chart.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.common import dist
from bench.dataset import CLUSTER_SETTINGS

TARGETS = {"get": (1.6, 1.2), "store": (1.6, 1.2), "rotation": (3.0, 2.0)}


# --------------------------------------------------------------------------- tables as rows


def _fmt_server(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def latency_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for c in results["latency"]["comparisons"]:
        s = results["latency"]["samples"][c.variant.name]
        rows.append(
            [
                c.variant.name,
                f"{c.per_op.median:.1f}",
                f"{c.per_op.p10:.1f} - {c.per_op.p90:.1f}",
                f"{c.ratio:.2f}x",
                f"{c.round_ratios.median:.2f}x ({c.round_ratios.q1:.2f} - {c.round_ratios.q3:.2f})",
                f"{s.client_us():.1f}",
                _fmt_server(s.server_us()),
            ]
        )
    return rows


LATENCY_HEADER = [
    "variant",
    "median µs",
    "p10 - p90 µs",
    "ratio of medians",
    "paired ratio per round: median (IQR)",
    "client CPU µs/op",
    "server CPU µs/op",
]


def throughput_rows(results: dict[str, Any]) -> list[list[str]]:
    tp = results["throughput"]
    rows = []
    for t in tp.thread_counts:
        plain = tp.median("plain SELECT (floor)", t)
        ours = tp.median("pyaccess get", t)
        spread_p = tp.ops_per_s["plain SELECT (floor)"][t]
        spread_o = tp.ops_per_s["pyaccess get"][t]
        rows.append(
            [
                str(t),
                f"{plain:,.0f} ({min(spread_p):,.0f} - {max(spread_p):,.0f})",
                f"{ours:,.0f} ({min(spread_o):,.0f} - {max(spread_o):,.0f})",
                f"{plain / ours:.2f}x",
            ]
        )
    return rows


THROUGHPUT_HEADER = ["threads", "plain SELECT ops/s (min - max)", "pyaccess get ops/s (min - max)", "floor / ours"]


def rotation_rows(results: dict[str, Any]) -> list[list[str]]:
    rot = results["rotation"]
    rows = []
    update = rot.d("update_s")

    def row(label: str, values: list[float], ratio: bool = True) -> list[str]:
        d = dist(values)
        return [
            label,
            f"{d.median:.2f}",
            f"{min(values):.2f} - {max(values):.2f}",
            f"{1e6 * d.median / rot.rows:.1f}",
            f"{d.median / update.median:.2f}x" if ratio else "",
        ]

    rows.append(row("pyaccess.rotation.rotate", rot.rotate_s))
    for name, values in rot.extra.items():
        rows.append(row(f"{name} rotate", values))
    rows.append(row("one-statement UPDATE (floor)", rot.update_s))
    rows.append([*row("no-op rotate() (fixed cost: census, one empty batch)", rot.noop_api_s, False)[:3], "", ""])
    rows.append([*row("no-op `pyaccess rotate` command (start-up included)", rot.noop_cli_s, False)[:3], "", ""])
    return rows


ROTATION_HEADER = ["run", "median s", "min - max s", "µs per row", "ratio vs UPDATE"]


def memory_rows(results: dict[str, Any]) -> list[list[str]]:
    return [
        [
            m.op,
            f"{m.calls:,}",
            f"{m.first_half_bytes:+,}",
            f"{m.second_half_bytes:+,}",
            f"{m.net_bytes:+,}",
            f"{m.bytes_per_call:+.3f}",
            f"{m.peak_bytes:,}",
        ]
        for m in results["memory"]
    ]


MEMORY_HEADER = [
    "op",
    "calls",
    "growth, 1st half (B)",
    "growth, 2nd half (B)",
    "net growth (B)",
    "B per call",
    "peak above start (B)",
]


def _text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- targets


def headline(results: dict[str, Any]) -> list[tuple[str, float, float, float]]:
    """(what, measured ratio, target, aim) for get, store and rotation, as far as measured."""
    out = []
    if "latency" in results:
        for c in results["latency"]["comparisons"]:
            if c.variant.name in ("get: pyaccess", "store: pyaccess"):
                target, aim = TARGETS[c.variant.op]
                out.append((c.variant.op, c.ratio, target, aim))
            elif c.variant.name.endswith("prototype SQL + Python"):
                target, aim = TARGETS[c.variant.op]
                out.append((f"{c.variant.op} (prototype)", c.ratio, target, aim))
    if "rotation" in results:
        rot = results["rotation"]
        target, aim = TARGETS["rotation"]
        out.append(("rotation", rot.ratio(), target, aim))
        update = rot.d("update_s").median
        out += [(f"rotation ({name})", dist(v).median / update, target, aim) for name, v in rot.extra.items()]
    return out


def _verdict(ratio: float, target: float, aim: float) -> str:
    if ratio <= aim:
        return "meets the aim"
    if ratio <= target:
        return "meets the target"
    return "MISSES the target"


# --------------------------------------------------------------------------- the printed table


def table(results: dict[str, Any]) -> str:
    parts = []
    if "latency" in results:
        parts += ["", "Latency: one connection, autocommit, one round trip per call (µs per call)", ""]
        parts.append(_text_table(LATENCY_HEADER, latency_rows(results)))
    if "throughput" in results:
        parts += ["", "Throughput: threads sharing a ConnectionPool, a pooled connection per call", ""]
        parts.append(_text_table(THROUGHPUT_HEADER, throughput_rows(results)))
    if "rotation" in results:
        parts += ["", f"Rotation of {results['rotation'].rows:,} rows", ""]
        parts.append(_text_table(ROTATION_HEADER, rotation_rows(results)))
    if "memory" in results:
        parts += ["", "Memory: tracemalloc after warm-up", ""]
        parts.append(_text_table(MEMORY_HEADER, memory_rows(results)))
    heads = headline(results)
    if heads:
        parts += ["", "Targets (ratio of medians against the floor):"]
        parts += [
            f"  {what:36s} {ratio:.2f}x  (target <= {target}x, aim {aim}x): {_verdict(ratio, target, aim)}"
            for what, ratio, target, aim in heads
        ]
    return "\n".join(parts)


# --------------------------------------------------------------------------- results.md


def _machine_md(results: dict[str, Any]) -> str:
    m = results.get("machine", {})
    settings = ", ".join(f"`{k}={v}`" for k, v in CLUSTER_SETTINGS.items())
    server = (
        f"throwaway local cluster (`pyaccess.cluster.throwaway_cluster`), `fsync=off`, {settings}"
        if results.get("server") == "throwaway cluster"
        else "given by `--dsn` / `PYACCESS_BENCH_DSN`"
    )
    rows = [
        ["date", m.get("date", "?")],
        ["command", f"`{results['command']}`"],
        ["run time", f"{results['seconds']:.0f} s"],
        ["nproc", m.get("nproc", "?")],
        ["CPU", m.get("cpu", "?")],
        ["kernel", m.get("kernel", "?")],
        ["Python", m.get("python", "?")],
        ["psycopg", m.get("psycopg", "?")],
        ["PostgreSQL", m.get("postgresql", "?")],
        ["server", server],
        ["connection", f"TCP to {results.get('server_host', '?')}"],
        ["load average (1, 5, 15 min) before / after", f"{results['load_before']} / {results['load_after']}"],
    ]
    return _md_table(["", ""], rows)


def _method_md(results: dict[str, Any]) -> str:
    a = results["args"]
    return f"""\
All connections are TCP over loopback, in autocommit (each call is one
statement, one transaction, one round trip), and warmed up before timing
({a["warmup"]} calls per variant: psycopg has prepared every statement, the
session guard has run). The latency section runs {a["rounds"]} rounds; in each
round every variant runs a block of {a["block"]} calls on the same randomly
drawn groups (of {a["groups"]:,}), in an order that rotates from round to
round, so that drift in the machine's load hits all variants alike. Each call
is timed on its own (`perf_counter_ns`): the median and p10 - p90 are over all
calls. The *ratio of medians* is median / median of the floor; the *paired
ratio* compares each block with its floor's block of the same round. Client
CPU is the benchmark thread's CPU time (`time.thread_time_ns`); server CPU is
the backend process's run time from `/proc/<pid>/schedstat`; both per call.
The floor for get is a prepared `SELECT secret FROM plain_table WHERE id = $1`,
for store a prepared `UPDATE plain_table SET secret = $2 WHERE id = $1`;
`plain_table` (and the AES-GCM and pgp tables) have the columns and indexes of
`ota_groups` (uuid primary key, unique name, created_at) and the same
43-character secrets. AES-GCM: `cryptography`'s `AESGCM`, a fresh 12-byte
nonce per store, the group id as associated data, only nonce || ciphertext
stored; the key is loaded once. pgp: `pgp_sym_encrypt`/`pgp_sym_decrypt` with
default options, the key as hex text passphrase, in a prepared statement.
CPU placement: `--pin {a["pin"]}` ({results.get("pinning", "?")}); see "CPU placement" below.
"""


def _findings(results: dict[str, Any], an: Any) -> list[str]:
    """Bullets computed from the figures below, so that they stay true for whatever code was measured."""
    out = []
    if an.client and len(an.client_variants) == 5:
        floor, one, lst, load, full = (an.client[v.name] for v in an.client_variants)
        med = [x.per_op_us().median for x in (floor, one, lst, load, full)]
        cpu = [x.client_us() for x in (floor, one, lst, load, full)]
        out.append(
            f"* Client: the key ring as a Python list (psycopg builds a `bytea[]` per call) costs "
            f"{med[2] - med[1]:+.1f} µs per call against one `bytea` ({cpu[2] - cpu[1]:+.1f} µs client CPU); "
            f"`load_key_ring()` per call {med[3] - med[2]:+.1f} µs ({cpu[3] - cpu[2]:+.1f} µs client CPU); "
            f"the rest of the Python layer {med[4] - med[3]:+.1f} µs ({cpu[4] - cpu[3]:+.1f} µs client CPU). "
            f"The bare GET statement itself: {med[2]:.1f} µs against {med[0]:.1f} µs for the plain SELECT."
        )
    if an.functions:
        for op in ("pyaccess get", "pyaccess store"):
            rows = [f for f in an.functions if f[0].startswith(op + ":")]
            if not rows:
                continue
            top = sorted(rows, key=lambda f: -f[3])[:4]
            listed = "; ".join(
                f"`{name.split(': ', 1)[1].split('(')[0]}` {self_:.1f} µs" for name, _n, _t, self_ in top
            )
            out.append(f"* Server, {op}, largest self times per call (track_functions): {listed}.")
    lat = results.get("latency")
    loops = dict(an.loops)
    in_loop = loops.get("public.get_provision_secret(uuid, bytea[])")
    if lat and in_loop is not None:
        ours, floor = lat["samples"]["get: pyaccess"], lat["samples"]["get: plain SELECT (floor)"]
        if ours.server_us() is not None and floor.server_us() is not None:
            plain_loop = loops.get("plain SELECT of the row", 0.0)
            out.append(
                f"* Server, per transaction: evaluated {in_loop:.1f} µs a call inside one transaction "
                f"(the plain SELECT {plain_loop:.1f} µs), get costs the server "
                f"{ours.server_us() - floor.server_us():.1f} µs more CPU than the plain SELECT when each call is "
                "its own transaction: the difference is set-up redone in every transaction (such as cached plans "
                "revalidated, expressions initialised, SQL-language functions that cannot be inlined parsed and "
                "planned again) and the protocol and commit of a statement that calls functions."
            )
    if out:
        out.append("")
    return out


def _where_md(results: dict[str, Any]) -> str:
    out = ["## Where the time goes", ""]
    lat = results.get("latency")
    if lat:
        s = lat["samples"]
        pairs = [("get: pyaccess", "get: plain SELECT (floor)"), ("store: pyaccess", "store: plain UPDATE (floor)")]
        for ours, floor in pairs:
            o, f = s[ours], s[floor]
            if o.server_us() is None or f.server_us() is None:
                continue
            extra = o.per_op_us().median - f.per_op_us().median
            out.append(
                f"* **{ours}** costs {extra:.0f} µs more than its floor (median). Client CPU "
                f"{o.client_us():.1f} vs {f.client_us():.1f} µs per call (**{o.client_us() - f.client_us():+.1f}**); "
                f"server CPU {o.server_us():.1f} vs {f.server_us():.1f} µs (**{o.server_us() - f.server_us():+.1f}**)."
            )
        out.append("")
    an = results.get("analysis")
    if an is None:
        return "\n".join(out)
    out += _findings(results, an)
    if an.client:
        out += [
            "### The client's share of a get",
            "",
            "The get call path taken apart, interleaved like the latency section "
            "(median µs per call and client CPU per call):",
            "",
        ]
        floor = an.client_variants[0].name
        fl = an.client[floor].per_op_us().median
        rows = []
        for v in an.client_variants:
            smp = an.client[v.name]
            rows.append(
                [
                    v.name,
                    f"{smp.per_op_us().median:.1f}",
                    f"{smp.per_op_us().median / fl:.2f}x",
                    f"{smp.client_us():.1f}",
                    _fmt_server(smp.server_us()),
                ]
            )
        out += [_md_table(["call", "median µs", "vs floor", "client CPU µs", "server CPU µs"], rows), ""]
    if an.placement:
        out += [
            "### CPU placement",
            "",
            "On this VM a round trip between two processes on the same CPU is a context switch; across the two "
            "CPUs it is a wake-up of the other (virtual) CPU, which costs far more and makes every ratio look "
            "smaller. Unpinned, the scheduler flips between the two. The latency section above uses "
            f"`--pin {results['args']['pin']}` ({results.get('pinning', '?')}). Median µs per call:",
            "",
            _md_table(
                ["placement", "", "plain SELECT", "pyaccess get", "ratio"],
                [[m, how, f"{f:.1f}", f"{o:.1f}", f"{r:.2f}x"] for m, how, f, o, r in an.placement],
            ),
            "",
        ]
    if an.loops:
        out += [
            "### Server work without the round trip",
            "",
            "Each expression evaluated in a loop inside one `DO` block (one transaction, "
            "no network, caches warm); best of 3, µs per evaluation:",
            "",
            _md_table(["expression", "µs"], [[label, f"{us:.1f}"] for label, us in an.loops]),
            "",
        ]
    if an.functions:
        out += [
            "### Functions one call runs (`track_functions = 'all'`)",
            "",
            "µs per API call (2,000 calls, autocommit; timing every function call adds some overhead of its own):",
            "",
            _md_table(
                ["call: function", "calls per API call", "total µs", "self µs"],
                [[name, str(n), f"{total:.1f}", f"{self_:.1f}"] for name, n, total, self_ in an.functions],
            ),
            "",
        ]
    if an.statements:
        out += [
            "### Statements one call runs (`pg_stat_statements.track = 'all'`)",
            "",
            "Mean execution time (executor only: no parse, bind, network or commit):",
            "",
            _md_table(
                ["call: statement", "per call", "mean exec µs"],
                [[q, str(n), f"{us:.1f}"] for q, n, us in an.statements],
            ),
            "",
        ]
    out += [f"* {note}" for note in an.notes]
    return "\n".join(out)


def markdown(results: dict[str, Any]) -> str:
    out = [
        "# pyaccess benchmark",
        "",
        "Generated by `make bench` (`bench/run.py`); do not edit by hand. Chart: `bench/chart.png`.",
        "",
        "![ratios against the floor, and throughput](chart.png)",
        "",
    ]
    heads = headline(results)
    if heads:
        out += ["## Summary", "", "Ratio of medians against the plain floor on this machine:", ""]
        out.append(
            _md_table(
                ["", "ratio", "target", "aim", "verdict"],
                [[w, f"{r:.2f}x", f"≤ {t}x", f"{a}x", _verdict(r, t, a)] for w, r, t, a in heads],
            )
        )
        out.append("")
    out += ["## Machine", "", _machine_md(results), ""]
    if "latency" in results:
        out += ["## Latency (µs per call)", "", _method_md(results), _md_table(LATENCY_HEADER, latency_rows(results))]
        out.append("")
    if "throughput" in results:
        a = results["args"]
        out += [
            "## Throughput",
            "",
            f"Threads calling get in a loop for {a['tp_seconds']} s, each call taking a connection from a "
            f"`psycopg_pool.ConnectionPool` of {max(a['thread_counts'])} warmed autocommit connections "
            f"and giving it back; median of {a['tp_rounds']} interleaved rounds. Python threads share one GIL, "
            f"and client and server share {results.get('machine', {}).get('nproc', '?')} cores.",
            "",
            _md_table(THROUGHPUT_HEADER, throughput_rows(results)),
            "",
        ]
    if "rotation" in results:
        rot = results["rotation"]
        out += [
            "## Rotation",
            "",
            f"{rot.rows:,} rows, each with a secret, all under the previous key. `pyaccess.rotation.rotate` "
            f"(batches of {results['args']['batch_size']}, one transaction each, census first) against one "
            "`UPDATE ota_groups SET provision_secret_ciphertext = overlay(provision_secret_ciphertext, "
            "'\\x01', 1, 1)` that rewrites the same column of the same rows (same length, no crypto). "
            "Alternating order, `VACUUM` and `CHECKPOINT` (untimed) after each run. "
            "The fixed cost is a no-op run (everything already under the current key) through the API and "
            "through the `pyaccess rotate` command (a new process: interpreter start-up, imports, connection).",
            "",
            _md_table(ROTATION_HEADER, rotation_rows(results)),
            "",
        ]
        if rot.batch_ms_first:
            out.append(
                f"Batch time, first 10% of batches vs last 10%: {dist(rot.batch_ms_first).median:.1f} ms vs "
                f"{dist(rot.batch_ms_last).median:.1f} ms (the batch query does not slow down as it moves along)."
            )
            out.append("")
    if "memory" in results:
        out += [
            "## Memory",
            "",
            "`tracemalloc` started after 2,000 warm-up calls; growth of traced memory after the first and the "
            "second half of the calls (`gc.collect()` before each reading). Nothing should grow with the "
            "number of calls.",
            "",
            _md_table(MEMORY_HEADER, memory_rows(results)),
            "",
        ]
    out += [_where_md(results), ""]
    return "\n".join(out)


# --------------------------------------------------------------------------- chart.png


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib  # noqa: PLC0415 - only here

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.5), gridspec_kw={"width_ratios": [1.35, 1]})
    labels, ratios, colors = [], [], []
    if "latency" in results:
        for c in results["latency"]["comparisons"]:
            if c.variant.floor == c.variant.name:
                continue
            labels.append(f"{c.variant.op}: {c.variant.label}")
            ratios.append(c.ratio)
            colors.append("tab:blue" if c.variant.op == "get" else "tab:orange")
    if "rotation" in results:
        rot = results["rotation"]
        labels.append("rotation: pyaccess")
        ratios.append(rot.ratio())
        colors.append("tab:green")
        update = rot.d("update_s").median
        for name, values in rot.extra.items():
            labels.append(f"rotation: {name}")
            ratios.append(dist(values).median / update)
            colors.append("tab:green")
    if ratios:
        y = list(range(len(ratios)))[::-1]
        left.barh(y, ratios, color=colors)
        left.set_yticks(y, labels, fontsize=8)
        for yi, r in zip(y, ratios, strict=True):
            left.text(r, yi, f" {r:.2f}x", va="center", fontsize=8)
        left.axvline(1.0, color="black", linewidth=0.8)
        left.axvline(1.6, color="red", linestyle="--", linewidth=0.8, label="get/store target 1.6x")
        left.axvline(3.0, color="green", linestyle=":", linewidth=0.8, label="rotation target 3x")
        left.set_xlabel("median / median of the plain floor (lower is better)")
        left.set_title("Cost against the plain round trip")
        left.legend(fontsize=8, loc="lower right")
        left.set_xlim(0, max(ratios) * 1.18)
    if "throughput" in results:
        tp = results["throughput"]
        for name in tp.ops_per_s:
            right.plot(tp.thread_counts, [tp.median(name, t) for t in tp.thread_counts], marker="o", label=name)
        right.set_xscale("log", base=2)
        right.set_xticks(tp.thread_counts, [str(t) for t in tp.thread_counts])
        right.set_xlabel("threads (one ConnectionPool)")
        right.set_ylabel("ops/s")
        right.set_ylim(bottom=0)
        right.set_title("get throughput")
        right.legend(fontsize=8)
        right.grid(alpha=0.3)
    m = results.get("machine", {})
    fig.suptitle(
        f"pyaccess bench, {m.get('date', '')}: {m.get('nproc', '?')} x {m.get('cpu', '?')}, "
        f"{str(m.get('postgresql', '')).split(' on ')[0]}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(markdown(results), encoding="utf-8")
    chart(results, out / "chart.png")
