"""Where the time goes: server functions (track_functions), statements (pg_stat_statements), in-server loops,
and the client's share, measured on separate connections after the timed sections."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

import pyaccess
from bench.common import PIN_MODES, pin, unpin
from bench.dataset import Dataset
from bench.latency import PLAIN_GET, PLAIN_STORE, Samples, Variant, run_rounds, warm_up
from pyaccess import queries
from pyaccess.keyfile import load_key_ring
from pyaccess.wire import prepare_adapters

# The functions a get and a store call: where the helpers they use are looked up.
ENTRY_FUNCTIONS = {
    "pyaccess get": "public.get_provision_secret(uuid, bytea[])",
    "pyaccess store": "public.store_provision_secret(uuid, text, bytea)",
}
HELPER_PREFIX = "_provision_secret_"


@dataclass(frozen=True)
class FunctionStat:
    """One function as ``track_functions`` saw it during one kind of API call, per API call."""

    op: str  # "pyaccess get" or "pyaccess store"
    name: str  # schema.name(arguments)
    language: str
    calls: float
    total_us: float
    self_us: float

    @property
    def short(self) -> str:
        return self.name.split("(", 1)[0]


@dataclass(frozen=True)
class Helper:
    """A ``public._provision_secret_*`` function and how often one get and one store called it."""

    name: str
    language: str
    calls: dict[str, float | None]  # op -> calls per API call; None: the op does not use this helper


@dataclass
class Analysis:
    functions: list[FunctionStat] = field(default_factory=list)
    helpers: list[Helper] = field(default_factory=list)
    statements: list[tuple[str, str, int, float]] = field(default_factory=list)  # op, query, per op, mean exec µs
    loops: list[tuple[str, float]] = field(default_factory=list)  # expression, µs per evaluation in one transaction
    client: dict[str, Samples] = field(default_factory=dict)
    client_variants: list[Variant] = field(default_factory=list)
    placement: list[tuple[str, str, float, float, float]] = field(default_factory=list)  # mode, how, floor, ours, ratio
    notes: list[str] = field(default_factory=list)


def _ops(conn: psycopg.Connection[Any], data: Dataset) -> dict[str, Callable[[uuid.UUID], object]]:
    key_file = data.keys.current
    return {
        "pyaccess get": lambda gid: pyaccess.get_provision_secret(conn, gid, key_file=key_file),
        "pyaccess store": lambda gid: pyaccess.store_provision_secret(conn, gid, "x" * 43, key_file=key_file),
        "plain get": lambda gid: conn.execute(PLAIN_GET, (gid,), prepare=True).fetchone(),
        "plain store": lambda gid: conn.execute(PLAIN_STORE, ("x" * 43, gid), prepare=True),
    }


def _flush_stats(conn: psycopg.Connection[Any]) -> None:
    conn.execute("SELECT pg_catalog.pg_stat_force_next_flush()")
    conn.execute("SELECT 1")
    time.sleep(0.2)


def _function_stats(reader: psycopg.Connection[Any]) -> dict[tuple[str, str], tuple[int, float, float]]:
    """(name, language) -> (calls, total ms, self ms) of every function called so far."""
    reader.execute("SELECT pg_catalog.pg_stat_clear_snapshot()")
    rows = reader.execute(
        "SELECT s.schemaname || '.' || s.funcname || '(' || pg_catalog.pg_get_function_identity_arguments(s.funcid)"
        " || ')', l.lanname, s.calls, s.total_time, s.self_time FROM pg_catalog.pg_stat_user_functions AS s"
        " JOIN pg_catalog.pg_proc AS p ON p.oid = s.funcid JOIN pg_catalog.pg_language AS l ON l.oid = p.prolang"
    ).fetchall()
    return {(str(r[0]), str(r[1])): (int(r[2]), float(r[3]), float(r[4])) for r in rows}


def _helper_uses(reader: psycopg.Connection[Any]) -> tuple[dict[str, str], dict[str, set[str]]]:
    """The helpers' languages, and for each API call the helpers it uses, directly or through another helper."""
    rows = reader.execute(
        "SELECT p.proname, l.lanname, pg_catalog.pg_get_functiondef(p.oid) FROM pg_catalog.pg_proc AS p"
        " JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace"
        " JOIN pg_catalog.pg_language AS l ON l.oid = p.prolang"
        " WHERE n.nspname = 'public' AND pg_catalog.starts_with(p.proname, %s)",
        (HELPER_PREFIX,),
    ).fetchall()
    languages = {str(name): str(lang) for name, lang, _ in rows}
    pattern = re.compile(rf"\bpublic\.({HELPER_PREFIX}\w+)\(")
    refers = {str(name): set(pattern.findall(str(body))) - {str(name)} for name, _, body in rows}
    uses: dict[str, set[str]] = {}
    for op, entry in ENTRY_FUNCTIONS.items():
        row = reader.execute("SELECT pg_catalog.pg_get_functiondef(%s::regprocedure)", (entry,)).fetchone()
        todo = set(pattern.findall(str(row[0]))) if row else set()
        seen: set[str] = set()
        while todo:
            name = todo.pop()
            seen.add(name)
            todo |= refers.get(name, set()) - seen
        uses[op] = seen
    return languages, uses


def track_functions(dsn: str, data: Dataset, calls: int, analysis: Analysis) -> None:
    """Per function called by one get and one store: total and self time (track_functions = 'all')."""
    try:
        _track_functions(dsn, data, calls, analysis)
    except psycopg.Error as exc:
        analysis.notes.append(f"track_functions failed: {exc.diag.message_primary}")


def _track_functions(dsn: str, data: Dataset, calls: int, analysis: Analysis) -> None:
    with psycopg.connect(dsn, autocommit=True) as reader, psycopg.connect(dsn, autocommit=True) as conn:
        try:
            conn.execute("SET track_functions = 'all'")
        except psycopg.Error as exc:
            analysis.notes.append(f"track_functions not available: {exc.diag.message_primary}")
            return
        ops = _ops(conn, data)
        ids = data.group_ids
        per_op: dict[str, dict[str, float]] = {}
        for name in ENTRY_FUNCTIONS:
            for i in range(50):
                ops[name](ids[i])
            _flush_stats(conn)
            before = _function_stats(reader)
            for i in range(calls):
                ops[name](ids[i % len(ids)])
            _flush_stats(conn)
            after = _function_stats(reader)
            per_op[name] = {}
            for (fn, lang), (c, total, self_) in sorted(after.items(), key=lambda kv: -kv[1][1]):
                c0, t0, s0 = before.get((fn, lang), (0, 0.0, 0.0))
                if c - c0 <= 0:
                    continue
                stat = FunctionStat(
                    name, fn, lang, (c - c0) / calls, 1e3 * (total - t0) / calls, 1e3 * (self_ - s0) / calls
                )
                analysis.functions.append(stat)
                per_op[name][stat.short] = stat.calls
        languages, uses = _helper_uses(reader)
        for helper in sorted(languages):
            calls_by_op: dict[str, float | None] = {
                op: per_op[op].get(f"public.{helper}", 0.0) if helper in uses[op] else None for op in ENTRY_FUNCTIONS
            }
            analysis.helpers.append(Helper(helper, languages[helper], calls_by_op))


def statement_stats(dsn: str, data: Dataset, calls: int, analysis: Analysis) -> None:
    """Mean execution time of each statement one call runs, nested ones included (pg_stat_statements)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            conn.execute("SET pg_stat_statements.track = 'all'")
            conn.execute("SELECT pg_stat_statements_reset()")
        except psycopg.Error as exc:
            analysis.notes.append(f"pg_stat_statements not available: {exc.diag.message_primary}")
            return
        ops = _ops(conn, data)
        ids = data.group_ids
        for name, op in ops.items():
            for i in range(50):
                op(ids[i])
            conn.execute("SELECT pg_stat_statements_reset()")
            for i in range(calls):
                op(ids[i % len(ids)])
            rows = conn.execute(
                "SELECT query, calls, mean_exec_time FROM pg_stat_statements"
                " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
                " AND query NOT LIKE '%%pg_stat_statements%%' ORDER BY calls DESC, mean_exec_time DESC"
            ).fetchall()
            for query, n, mean_ms in rows:
                if int(n) >= calls // 2:
                    short = " ".join(str(query).split())
                    analysis.statements.append((name, short[:110], round(int(n) / calls), 1e3 * float(mean_ms)))


LOOP_EXPRESSIONS = [
    ("plain SELECT of the row", "(SELECT secret FROM public.plain_table WHERE id = g)"),
    ("public.get_provision_secret(uuid, bytea[])", "public.get_provision_secret(g, ARRAY[k])"),
    ("public.get_provision_secret(uuid, bytea)", "public.get_provision_secret(g, k)"),
    ("pgcrypto hmac(…, 'sha256')", "pg_catalog.encode(hmac(pg_catalog.uuid_send(g), k, 'sha256'), 'hex')"),
    ("pgcrypto hmac(…, 'sha512')", "pg_catalog.encode(hmac(pg_catalog.uuid_send(g), k, 'sha512'), 'hex')"),
    ("pgcrypto gen_random_bytes(16)", "pg_catalog.encode(gen_random_bytes(16), 'hex')"),
    (
        "pgcrypto encrypt_iv (48 bytes, aes-cbc)",
        "pg_catalog.encode(encrypt_iv(pg_catalog.convert_to(g::text, 'UTF8'), k, "
        "pg_catalog.substr(k, 1, 16), 'aes-cbc/pad:pkcs'), 'hex')",
    ),
]


def server_loops(dsn: str, data: Dataset, calls: int, analysis: Analysis) -> None:
    """The same work evaluated ``calls`` times inside one server-side loop: no network, no new transaction."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TEMP TABLE bench_loop_key AS SELECT %b::bytea AS k", (data.keys.key_a,))
        notices: list[str] = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        for label, expr in LOOP_EXPRESSIONS:
            best = float("inf")
            for _ in range(3):
                conn.execute(
                    "DO $$ DECLARE k bytea; ids uuid[]; g uuid; r text; t0 timestamptz; BEGIN"
                    " SELECT bench_loop_key.k INTO k FROM bench_loop_key;"
                    f" SELECT array_agg(id) INTO ids FROM (SELECT id FROM public.plain_table LIMIT {int(calls)}) s;"
                    f" FOREACH g IN ARRAY ids LOOP r := {expr}; END LOOP;"  # warm
                    " t0 := clock_timestamp();"
                    f" FOREACH g IN ARRAY ids LOOP r := {expr}; END LOOP;"
                    " RAISE NOTICE '%', extract(epoch FROM clock_timestamp() - t0) * 1e6 / cardinality(ids);"
                    " END $$"
                )
                best = min(best, float(notices[-1]))
            analysis.loops.append((label, best))


def client_share(conn: psycopg.Connection[Any], data: Dataset, rounds: int, block: int, seed: int) -> Analysis:
    """The pyaccess get call path taken apart, interleaved like the latency section."""
    key_file = data.keys.current
    ring = load_key_ring(key_file)
    prepare_adapters(conn)
    floor = "plain SELECT (floor)"

    def plain(gid: uuid.UUID, _s: str) -> object:
        return conn.execute(PLAIN_GET, (gid,), prepare=True).fetchone()

    def bare_list(gid: uuid.UUID, _s: str) -> object:
        return conn.execute(queries.GET, (gid, ring.materials), prepare=True).fetchone()

    def bare(gid: uuid.UUID, _s: str) -> object:
        return conn.execute(queries.GET, (gid, ring.encoded), prepare=True).fetchone()

    def bare_load(gid: uuid.UUID, _s: str) -> object:
        return conn.execute(queries.GET, (gid, load_key_ring(key_file).encoded), prepare=True).fetchone()

    def full(gid: uuid.UUID, _s: str) -> object:
        return pyaccess.get_provision_secret(conn, gid, key_file=key_file)

    variants = [
        Variant(floor, "get", "plain", floor, plain),
        Variant(
            "GET statement, key ring as a list (psycopg builds the bytea[] per call)", "get", "list", floor, bare_list
        ),
        Variant("GET statement, key ring pre-encoded (as pyaccess sends it)", "get", "encoded", floor, bare),
        Variant("+ load_key_ring() per call (cached: one stat)", "get", "+ key file", floor, bare_load),
        Variant("pyaccess.get_provision_secret", "get", "pyaccess", floor, full),
    ]
    ids: Sequence[uuid.UUID] = data.group_ids
    warm_up(variants, ids, ["x"], 50)
    analysis = Analysis()
    analysis.client_variants = variants
    analysis.client = run_rounds(conn, variants, ids, ["x"], rounds=rounds, block=block, seed=seed)
    return analysis


def placement(conn: psycopg.Connection[Any], data: Dataset, analysis: Analysis, *, rounds: int, block: int) -> None:
    """The same two calls with the client and its server process on one CPU, on two, and left to the scheduler."""
    key_file = data.keys.current
    floor = "plain SELECT (floor)"
    variants = [
        Variant(floor, "get", "plain", floor, lambda gid, _s: conn.execute(PLAIN_GET, (gid,), prepare=True).fetchone()),
        Variant(
            "pyaccess get",
            "get",
            "pyaccess",
            floor,
            lambda gid, _s: pyaccess.get_provision_secret(conn, gid, key_file=key_file),
        ),
    ]
    for mode in PIN_MODES:
        how = pin(conn, mode)
        warm_up(variants, data.group_ids, ["x"], 20)
        samples = run_rounds(conn, variants, data.group_ids, ["x"], rounds=rounds, block=block, seed=7)
        f, o = samples[floor].per_op_us().median, samples["pyaccess get"].per_op_us().median
        analysis.placement.append((mode, how, f, o, o / f))
    unpin()


def run_analysis(
    dsn: str,
    conn: psycopg.Connection[Any],
    data: Dataset,
    *,
    calls: int,
    rounds: int,
    block: int,
    seed: int,
    pin_mode: str,
) -> Analysis:
    pin(conn, pin_mode)
    analysis = client_share(conn, data, rounds, block, seed)
    placement(conn, data, analysis, rounds=max(4, rounds // 2), block=block)
    track_functions(dsn, data, calls, analysis)
    statement_stats(dsn, data, calls, analysis)
    server_loops(dsn, data, calls, analysis)
    return analysis
