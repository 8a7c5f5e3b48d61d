"""The printed table, bench/results.md and bench/chart.png."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.analysis import ENTRY_FUNCTIONS, Analysis, FunctionStat, Helper
from bench.common import dist
from bench.dataset import CLUSTER_SETTINGS
from bench.service_paths import FLOOR, REFERENCE, ServiceResult

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


def service_rows(results: dict[str, Any]) -> list[list[str]]:
    svc: ServiceResult = results["service"]
    rows = []
    for c in svc.comparisons:
        smp = svc.samples[c.variant.name]
        rows.append(
            [
                c.variant.name,
                f"{c.per_op.median:.1f}",
                f"{c.per_op.p10:.1f} - {c.per_op.p90:.1f}",
                f"{c.ratio:.2f}x",
                f"{c.round_ratios.median:.2f}x ({c.round_ratios.q1:.2f} - {c.round_ratios.q3:.2f})",
                f"{smp.client_us():.1f}",
                _fmt_server(smp.server_us()),
            ]
        )
    return rows


SERVICE_HEADER = [
    "variant",
    "median µs",
    "p10 - p90 µs",
    "ratio vs sync function",
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
    update = dist(rot.update_s)

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


@dataclass(frozen=True)
class Headline:
    """A target: what was measured against its floor, as medians."""

    what: str
    ratio: float
    target: float
    aim: float
    ours: str  # median, with its unit
    floor: str  # the floor's median, with its unit


def headline(results: dict[str, Any]) -> list[Headline]:
    """get, store and rotation against their floors, as far as measured."""
    out = []
    if "latency" in results:
        for c in results["latency"]["comparisons"]:
            if c.variant.name in ("get: pyaccess", "store: pyaccess"):
                target, aim = TARGETS[c.variant.op]
                ours, floor = f"{c.per_op.median:.1f} µs", f"{c.floor_per_op.median:.1f} µs"
                out.append(Headline(c.variant.op, c.ratio, target, aim, ours, floor))
    if "rotation" in results:
        rot = results["rotation"]
        target, aim = TARGETS["rotation"]
        ours, floor = f"{dist(rot.rotate_s).median:.2f} s", f"{dist(rot.update_s).median:.2f} s"
        out.append(Headline("rotation", rot.ratio(), target, aim, ours, floor))
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
    if "service" in results:
        parts += [
            "",
            "Service paths: sync function, pooled client, async function, async pooled client (µs per call)",
            "",
        ]
        parts.append(_text_table(SERVICE_HEADER, service_rows(results)))
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
            f"  {h.what:9s} {h.ratio:.2f}x  ({h.ours} vs {h.floor}; target <= {h.target}x, aim {h.aim}x): "
            f"{_verdict(h.ratio, h.target, h.aim)}"
            for h in heads
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
CPU placement: `--pin {a["pin"]}` ({results.get("pinning", "?")}). {PIN_WHY[a["pin"]]}
"""


PIN_WHY = {
    "split": "Client and server on different CPUs: every round trip wakes the other CPU, as it crosses the "
    "network when the worker and its database are different hosts, so these are the latencies a deployment "
    "sees. The same-CPU view (pure CPU cost) is in the CPU placement table below.",
    "same": "Client and server on one CPU: a round trip is only a context switch, so these figures are pure "
    "CPU cost, without the wake-up of another CPU that a round trip between hosts includes (see the CPU "
    "placement table below).",
    "none": "Placement left to the scheduler; the pinned figures are in the CPU placement table below.",
}


def _placement_md(results: dict[str, Any], an: Analysis) -> list[str]:
    by_mode = {m: (f, o) for m, _how, f, o, _r in an.placement}
    out = ["### CPU placement", ""]
    if "split" in by_mode and "same" in by_mode:
        split, same = by_mode["split"][0], by_mode["same"][0]
        out.append(
            "The default is `--pin split`: a worker and its database run on different hosts, so in deployment "
            "every round trip waits for another CPU to wake up and answer, and putting the client thread and its "
            f"server process on different CPUs reproduces that ({split:.1f} µs for the plain SELECT here). "
            f"`same` keeps both on one CPU, where a round trip is a context switch ({same:.1f} µs): what remains "
            "is the pure CPU cost, so pyaccess's extra work weighs more in the ratio. `none` leaves placement to "
            "the scheduler" + (f" ({by_mode['none'][0]:.1f} µs for the plain SELECT)." if "none" in by_mode else ".")
        )
        out.append("")
    out += [
        f"The plain SELECT and pyaccess get once more, interleaved, under each placement (the latency section "
        f"above ran with `--pin {results['args']['pin']}`). Median µs per call:",
        "",
        _md_table(
            ["placement", "", "plain SELECT", "pyaccess get", "pyaccess - plain", "ratio"],
            [[m, how, f"{f:.1f}", f"{o:.1f}", f"{o - f:+.1f}", f"{r:.2f}x"] for m, how, f, o, r in an.placement],
        ),
        "",
    ]
    return out


def _service_md(results: dict[str, Any]) -> list[str]:
    svc: ServiceResult = results["service"]
    by = svc.by_name()
    a = results["args"]

    def extra(op: str, path: str) -> str:
        c = next(c for c in svc.comparisons if c.variant.op == op and c.variant.path == path)
        return f"{c.per_op.median - c.reference_per_op.median:+.1f} µs ({c.ratio:.2f}x)"

    def cpu(op: str) -> str:
        return ", ".join(
            f"{c.variant.path} {svc.samples[c.variant.name].client_us():.1f}"
            for c in svc.comparisons
            if c.variant.op == op and c.variant.path != "floor"
        )

    sync_get, floor = by[REFERENCE["get"]], by[FLOOR]
    vs_floor = sync_get.per_op.median / floor.per_op.median
    latency_note = ""
    if "latency" in results:
        lat = {c.variant.name: c for c in results["latency"]["comparisons"]}
        if "get: pyaccess" in lat:
            latency_note = f"; the latency section above: {lat['get: pyaccess'].ratio:.2f}x"
    pinned = all(v.pid is not None for v in svc.variants)
    placement = (
        f"`--pin {a['pin']}` ({svc.pinning}) for the sync connection, and the server processes of the pooled and "
        "async connections are placed the same way (the client is one thread throughout)"
        if pinned
        else f"`--pin {a['pin']}` ({svc.pinning}) for the sync connection; the pooled and async connections are "
        "not pinned"
    )
    text = (
        "How a service calls pyaccess: the sync module function on one autocommit connection (the reference, "
        "1.00x); `ProvisionSecrets` over a `psycopg_pool.ConnectionPool` of one connection (min_size = max_size "
        "= 1, autocommit, `configure=secrets.configure`), each call borrowing the connection and giving it back; "
        "`pyaccess.aio` on one autocommit `AsyncConnection`; `AsyncProvisionSecrets` over an "
        "`AsyncConnectionPool` of one, configured the same way; and, for get, the plain prepared SELECT of the "
        f"latency section. {svc.rounds} interleaved rounds, each a block of {svc.block} calls of every variant "
        f"on the same random groups in a rotating order, after {svc.warmup} warm-up calls each; the async calls "
        "are awaited one after another by a coroutine on one asyncio event loop that lives for the whole "
        f"section, each call timed with `perf_counter_ns`. CPU placement: {placement}."
    )
    findings = (
        f"Against the sync function, per get and per store (median): the pool {extra('get', 'pool')} and "
        f"{extra('store', 'pool')}, the async function {extra('get', 'async')} and {extra('store', 'async')}, "
        f"the async pool {extra('get', 'async pool')} and {extra('store', 'async pool')}. Client CPU per get, µs: "
        f"{cpu('get')}; per store: {cpu('store')}. The sync get is {vs_floor:.2f}x the plain SELECT "
        f"({sync_get.per_op.median:.1f} vs {floor.per_op.median:.1f} µs{latency_note})."
    )
    return [
        "## Service paths (µs per call)",
        "",
        text,
        "",
        findings,
        "",
        _md_table(SERVICE_HEADER, service_rows(results)),
        "",
    ]


def _fmt_calls(calls: float) -> str:
    return f"{calls:.0f}x" if abs(calls - round(calls)) < 0.01 else f"{calls:.2f}x"


def _lang(language: str) -> str:
    return "C" if language == "c" else language


def _called(f: FunctionStat) -> str:
    return f"`{f.short}` ({_lang(f.language)}) {_fmt_calls(f.calls)} {f.self_us:.1f} µs"


def _function_findings(an: Analysis) -> list[str]:
    out = []
    for op, entry in ENTRY_FUNCTIONS.items():
        stats = [f for f in an.functions if f.op == op]
        top = next((f for f in stats if f.short == entry.split("(", 1)[0]), None)
        if top is None:
            continue
        inner = sorted((f for f in stats if f is not top), key=lambda f: -f.self_us)
        text = (
            f"* Server, {op.split()[1]} (`track_functions`): `{top.short}` ({_lang(top.language)}) "
            f"{top.total_us:.1f} µs per call, {top.self_us:.1f} µs of it in its own body. "
        )
        text += (
            "What it still calls, self time per API call: " + ", ".join(_called(f) for f in inner) + "."
            if inner
            else "It calls no other tracked function."
        )
        used = [h for h in an.helpers if h.calls.get(op) is not None]
        inlined = [h.name for h in used if h.language == "sql" and not h.calls[op]]
        not_called = [f"`{h.name}` ({_lang(h.language)})" for h in used if h.language != "sql" and not h.calls[op]]
        sql_called = [h.name for h in used if h.language == "sql" and h.calls[op]]
        if inlined:
            text += (
                " The SQL helpers it uses, " + ", ".join(f"`{n}`" for n in inlined) + ", recorded no call: "
                "they were inlined into its statements."
            )
        if sql_called:
            text += " SQL helpers called as functions (not inlined): " + ", ".join(f"`{n}`" for n in sql_called) + "."
        if not_called:
            text += " Not called on this path: " + ", ".join(not_called) + "."
        out.append(text)
    return out


def _helper_cell(h: Helper, op: str) -> str:
    calls = h.calls[op]
    if calls is None:
        return "not used"
    if calls:
        return _fmt_calls(calls)
    return "0 (inlined)" if h.language == "sql" else "0 (not called)"


def _exec_us(an: Analysis, op: str, prefix: str) -> float | None:
    return next((us for o, q, _n, us in an.statements if o == op and q.startswith(prefix)), None)


def _findings(results: dict[str, Any], an: Analysis) -> list[str]:
    """Bullets computed from the figures below, so that they stay true for whatever code was measured."""
    out = []
    if an.client and len(an.client_variants) == 5:
        floor, as_list, encoded, load, full = (an.client[v.name] for v in an.client_variants)
        med = [x.per_op_us().median for x in (floor, as_list, encoded, load, full)]
        cpu = [x.client_us() for x in (floor, as_list, encoded, load, full)]
        out.append(
            "* Client: the key ring goes to the server pre-encoded as a binary `bytea[]` (`pyaccess.wire`, "
            "once per key-file load); psycopg building the array from a list on every call would cost "
            f"{med[1] - med[2]:+.1f} µs per call ({cpu[1] - cpu[2]:+.1f} µs client CPU). `load_key_ring()` on "
            f"every call (a cache hit: one `stat`) costs {med[3] - med[2]:+.1f} µs ({cpu[3] - cpu[2]:+.1f} µs "
            "client CPU); the rest of the Python layer (group id check, session-guard lookup, cursor, error "
            f"translation) {med[4] - med[3]:+.1f} µs ({cpu[4] - cpu[3]:+.1f} µs client CPU). The bare GET "
            f"statement: {med[2]:.1f} µs against {med[0]:.1f} µs for the plain SELECT."
        )
    out += _function_findings(an)
    lat = results.get("latency")
    loops = dict(an.loops)
    in_loop, plain_loop = loops.get("public.get_provision_secret(uuid, bytea[])"), loops.get("plain SELECT of the row")
    exec_ours = _exec_us(an, "pyaccess get", "SELECT public.get_provision_secret(")
    exec_plain = _exec_us(an, "plain get", "SELECT secret FROM public.plain_table")
    if lat and None not in (in_loop, plain_loop, exec_ours, exec_plain):
        ours, floor = lat["samples"]["get: pyaccess"], lat["samples"]["get: plain SELECT (floor)"]
        if ours.server_us() is not None and floor.server_us() is not None:
            out.append(
                f"* Server, get, the same work measured three ways (µs per call, pyaccess vs plain SELECT): "
                f"evaluated in a loop inside one `DO` block {in_loop:.1f} vs {plain_loop:.1f}; executor time of "
                f"the statement, each call its own transaction (`pg_stat_statements`) {exec_ours:.1f} vs "
                f"{exec_plain:.1f}; the server process's CPU time in the latency section {ours.server_us():.1f} "
                f"vs {floor.server_us():.1f}. The loop leaves out what PostgreSQL does once per statement or "
                "transaction (plan-cache checks, locks, plpgsql's expression set-up); the server CPU adds to the "
                "executor time parse/bind, the commit and the protocol, the kernel's network and wake-up work "
                "included."
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
                ["call: function", "language", "calls per API call", "total µs", "self µs"],
                [
                    [
                        f"{f.op}: {f.name}",
                        _lang(f.language),
                        _fmt_calls(f.calls),
                        f"{f.total_us:.1f}",
                        f"{f.self_us:.1f}",
                    ]
                    for f in an.functions
                ],
            ),
            "",
        ]
    if an.helpers:
        ops = list(ENTRY_FUNCTIONS)
        out += [
            "### The `_provision_secret_*` helpers",
            "",
            "Calls per API call recorded by `track_functions` for each helper the call uses, directly or through "
            "another helper. An SQL helper that is used and recorded no call was inlined.",
            "",
            _md_table(
                ["helper", "language", *(f"calls per {op.split()[1]}" for op in ops)],
                [
                    [
                        f"`{h.name}`",
                        _lang(h.language),
                        *(_helper_cell(h, op) for op in ops),
                    ]
                    for h in an.helpers
                ],
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
                [[f"{op}: {q}", str(n), f"{us:.1f}"] for op, q, n, us in an.statements],
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
        "![ratios against the floor, throughput"
        + (", and the service paths against the sync function" if "service" in results else "")
        + "](chart.png)",
        "",
    ]
    heads = headline(results)
    if heads:
        out += [
            "## Summary",
            "",
            "Medians against the plain floor on this machine (get and store: single calls with "
            f"`--pin {results['args']['pin']}`, see CPU placement; rotation: seconds for all rows):",
            "",
        ]
        out.append(
            _md_table(
                ["", "pyaccess", "floor", "ratio", "target", "aim", "verdict"],
                [
                    [
                        h.what,
                        h.ours,
                        h.floor,
                        f"{h.ratio:.2f}x",
                        f"≤ {h.target}x",
                        f"{h.aim}x",
                        _verdict(h.ratio, h.target, h.aim),
                    ]
                    for h in heads
                ],
            )
        )
        out.append("")
    out += ["## Machine", "", _machine_md(results), ""]
    if "latency" in results:
        out += ["## Latency (µs per call)", "", _method_md(results), _md_table(LATENCY_HEADER, latency_rows(results))]
        out.append("")
        an = results.get("analysis")
        if an is not None and an.placement:
            out += _placement_md(results, an)
    if "service" in results:
        out += _service_md(results)
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
            first, last = dist(rot.batch_ms_first).median, dist(rot.batch_ms_last).median
            trend = "no slower" if last <= 1.1 * first else "slower"
            out.append(
                f"Batch time, first 10% of batches vs last 10%: {first:.1f} ms vs {last:.1f} ms (the batches at the "
                f"end of the table are {trend} than those at its start)."
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

    if "service" in results:
        fig, (left, right, third) = plt.subplots(1, 3, figsize=(19, 5.5), gridspec_kw={"width_ratios": [1.35, 1, 1.05]})
        _service_chart(results["service"], third)
    else:
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
    if ratios:
        y = list(range(len(ratios)))[::-1]
        left.barh(y, ratios, color=colors)
        left.set_yticks(y, labels, fontsize=8)
        for yi, r in zip(y, ratios, strict=True):
            left.text(r, yi, f" {r:.2f}x", va="center", fontsize=8)
        left.axvline(1.0, color="black", linewidth=0.8)
        left.axvline(1.6, color="red", linestyle="--", linewidth=0.8, label="get/store target 1.6x")
        left.axvline(3.0, color="green", linestyle=":", linewidth=0.8, label="rotation target 3x")
        left.set_xlabel(
            f"median / median of the plain floor (lower is better; get, store: --pin {results['args']['pin']})"
        )
        left.set_title("Cost against the plain round trip")
        left.legend(fontsize=8, loc="upper right")
        left.set_xlim(0, max(3.2, max(ratios) * 1.18))
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


def _service_chart(svc: ServiceResult, ax: Any) -> None:
    shown = [c for c in svc.comparisons if c.variant.name not in REFERENCE.values()]
    labels = [f"{c.variant.op}: {c.variant.label}" for c in shown]
    ratios = [c.ratio for c in shown]
    colors = ["tab:blue" if c.variant.op == "get" else "tab:orange" for c in shown]
    y = list(range(len(ratios)))[::-1]
    ax.barh(y, ratios, color=colors)
    ax.set_yticks(y, labels, fontsize=8)
    for yi, c in zip(y, shown, strict=True):
        ax.text(c.ratio, yi, f" {c.ratio:.2f}x ({c.per_op.median:.0f} µs)", va="center", fontsize=8)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlim(0, max(ratios) * 1.45)
    ref = {c.variant.op: c.reference_per_op.median for c in shown}
    ax.set_xlabel("median / sync function's median (" + ", ".join(f"{op} {us:.0f} µs" for op, us in ref.items()) + ")")
    ax.set_title("Service paths against the sync function")


def write(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(markdown(results), encoding="utf-8")
    chart(results, out / "chart.png")
