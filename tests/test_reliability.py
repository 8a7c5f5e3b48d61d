"""What pyaccess survives, against real PostgreSQL servers: concurrent load, rotation under load,
server crashes, killed clients, dropped connections, a streaming replica, pg_dump and pg_restore.

Each test prints its figures (run ``pytest -s`` to see them) and asserts 0 errors and 0 lost writes.
Values written under load are self-checking (group id, writer, sequence number, checksum), so a torn,
mixed or misplaced value cannot pass for a good one. Tests that start clusters of their own are
marked ``cluster``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import psycopg
import pytest
from psycopg_pool import ConnectionPool

import pyaccess
from pyaccess.cluster import find_bindir, throwaway_cluster
from pyaccess.keyfile import load_key_ring
from pyaccess.migrate import apply_migrations
from pyaccess.rotation import key_census, rotate
from tests.fix_clusters import start_standby
from tests.fix_db import Server, new_group, register_key, user_dsn

Conn = psycopg.Connection[tuple[object, ...]]

WRITERS = 8
READERS = 4
LOAD_SECONDS = 3.0


# --- self-checking values ------------------------------------------------------------------


def _value(group_id: uuid.UUID, writer: int, seq: int) -> str:
    """A secret naming its group, writer and sequence number, 1 to 5 AES blocks long, with a checksum."""
    head = f"{group_id}:w{writer}:n{seq}:"
    filler = "x" * ((seq * 7) % 40)
    return f"{head}{filler}#{hashlib.sha256((head + filler).encode()).hexdigest()[:16]}"


@dataclass(frozen=True)
class Parsed:
    group_id: uuid.UUID
    writer: int
    seq: int


def _parse(value: str) -> Parsed:
    """The parts of a value written by ``_value``; AssertionError if torn, mixed or not one of ours."""
    body, sep, checksum = value.rpartition("#")
    assert sep, f"not a value of this test: {value[:60]!r}"
    assert hashlib.sha256(body.encode()).hexdigest()[:16] == checksum, f"torn or mixed value: {value[:60]!r}"
    group, writer, seq, _ = body.split(":", 3)
    return Parsed(uuid.UUID(group), int(writer.removeprefix("w")), int(seq.removeprefix("n")))


def _groups(conn: Conn, count: int, prefix: str) -> list[uuid.UUID]:
    rows = conn.execute(
        "INSERT INTO ota_groups (name) SELECT %s || i FROM generate_series(1, %s) AS i RETURNING id",
        (f"{prefix}-{uuid.uuid4().hex[:8]}-", count),
    ).fetchall()
    conn.commit()
    return [row[0] for row in rows]  # type: ignore[misc]


def _store_initial(conn: Conn, groups: list[uuid.UUID], key_file: Path, writer: int) -> dict[uuid.UUID, str]:
    initial = {gid: _value(gid, writer, 0) for gid in groups}
    for gid, value in initial.items():
        pyaccess.store_provision_secret(conn, gid, value, key_file=key_file)
    conn.commit()
    return initial


@dataclass
class Ledger:
    """What the writers attempted and what returned, shared by every thread of a load."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    attempted: dict[uuid.UUID, set[str]] = field(default_factory=dict)  # every value ever sent per group
    returned: dict[tuple[uuid.UUID, int], tuple[int, str]] = field(default_factory=dict)  # (group, writer) -> last
    in_flight: dict[tuple[uuid.UUID, int], str] = field(default_factory=dict)
    errors: list[BaseException] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)  # torn, mixed, unknown or stale values read
    ops: Counter[str] = field(default_factory=Counter)

    def begin(self, gid: uuid.UUID, writer: int, value: str) -> None:
        with self.lock:
            self.attempted.setdefault(gid, set()).add(value)
            self.in_flight[(gid, writer)] = value

    def done(self, gid: uuid.UUID, writer: int, seq: int, value: str) -> None:
        with self.lock:
            self.returned[(gid, writer)] = (seq, value)
            self.in_flight.pop((gid, writer), None)
            self.ops["store"] += 1

    def floor(self, gid: uuid.UUID, writer: int) -> int:
        with self.lock:
            return self.returned.get((gid, writer), (-1, ""))[0]

    def check_read(self, gid: uuid.UUID, value: str, owner: int | None, floor: int) -> Parsed | None:
        """Record a violation unless ``value`` is whole, of ``gid``, sent by a writer, and not older than ``floor``."""
        try:
            parsed = _parse(value)
        except (AssertionError, ValueError) as exc:
            self.violations.append(f"{gid}: {exc}")
            return None
        with self.lock:
            known = value in self.attempted.get(gid, set())
            self.ops["get"] += 1
        if parsed.group_id != gid or not known:
            self.violations.append(f"{gid}: read a value never written to it: {value[:60]!r}")
        elif owner is not None and parsed.seq < floor:
            self.violations.append(f"{gid}: read n{parsed.seq} after n{floor} had returned: a lost write")
        return parsed

    def report_and_check(self, headline: str, lost: list[str]) -> None:
        """Print ``headline`` and the load's figures, then assert no error, no bad read and no lost write."""
        print(
            f"\n{headline}: {self.ops['store']} stores, {self.ops['get']} gets, {len(self.errors)} errors, "
            f"{len(self.violations)} torn/mixed/stale reads, {len(lost)} lost writes"
        )
        assert self.errors == []
        assert self.violations == []
        assert lost == []


def _run_threads(targets: list[Callable[[], None]], main: Callable[[], None] | None = None) -> float:
    """Start every target, run ``main`` meanwhile, join them all (bounded); the seconds it took."""
    threads = [threading.Thread(target=target, daemon=True) for target in targets]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    try:
        if main is not None:
            main()
    finally:
        deadline = time.monotonic() + 60
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not any(thread.is_alive() for thread in threads), "a load thread hung"
    return time.monotonic() - started


# --- concurrency ---------------------------------------------------------------------------


def test_concurrent_stores_and_gets__no_error_no_torn_value_no_lost_write(db: str, key_file: Path) -> None:
    """WRITERS threads store to one shared group and to groups of their own while READERS threads read."""
    with psycopg.connect(db) as setup:
        hot, *owned = _groups(setup, 1 + 2 * WRITERS, "load")
        initial = _store_initial(setup, [hot, *owned], key_file, writer=WRITERS)
    owner = {gid: i % WRITERS for i, gid in enumerate(owned)}
    ledger = Ledger()
    for gid, value in initial.items():
        ledger.attempted[gid] = {value}
        ledger.returned[(gid, WRITERS)] = (0, value)
    deadline = time.monotonic() + LOAD_SECONDS

    def writer(w: int) -> Callable[[], None]:
        mine = [gid for gid in owned if owner[gid] == w]

        def run() -> None:
            # Even writers autocommit; odd ones wrap each store in a transaction of their own,
            # which takes the pipelined "guard every call" path.
            with psycopg.connect(db, autocommit=w % 2 == 0) as conn:
                seq = 0
                while time.monotonic() < deadline:
                    seq += 1
                    gid = hot if seq % 2 else mine[(seq // 2) % len(mine)]
                    value = _value(gid, w, seq)
                    ledger.begin(gid, w, value)
                    try:
                        if conn.autocommit:
                            pyaccess.store_provision_secret(conn, gid, value, key_file=key_file)
                        else:
                            with conn.transaction():
                                conn.execute("SELECT 1")  # the caller's transaction is open
                                pyaccess.store_provision_secret(conn, gid, value, key_file=key_file)
                    except BaseException as exc:  # noqa: BLE001 - counted and asserted below
                        ledger.errors.append(exc)
                        return
                    ledger.done(gid, w, seq, value)

        return run

    def reader(r: int, pool: ConnectionPool[Conn]) -> Callable[[], None]:
        def run() -> None:
            rng = random.Random(r)
            seen: dict[uuid.UUID, int] = {}
            while time.monotonic() < deadline:
                gid = rng.choice([hot, *owned])
                gid_owner = owner.get(gid)
                floor = ledger.floor(gid, gid_owner) if gid_owner is not None else -1
                try:
                    # Pooled connections move between reader threads.
                    with pool.connection() as conn:
                        value = pyaccess.get_provision_secret(conn, gid, key_file=key_file)
                except BaseException as exc:  # noqa: BLE001
                    ledger.errors.append(exc)
                    return
                parsed = ledger.check_read(gid, value, gid_owner, max(floor, seen.get(gid, -1)))
                if parsed is not None and gid_owner is not None and parsed.writer == gid_owner:
                    seen[gid] = parsed.seq  # monotonic reads per reader

        return run

    with ConnectionPool(db, min_size=2, max_size=2, kwargs={"autocommit": True}, open=True) as pool:
        seconds = _run_threads([writer(w) for w in range(WRITERS)] + [reader(r, pool) for r in range(READERS)])

    lost: list[str] = []
    with psycopg.connect(db, autocommit=True) as conn:
        for gid in owned:
            final = pyaccess.get_provision_secret(conn, gid, key_file=key_file)
            last = ledger.returned.get((gid, owner[gid]), ledger.returned[(gid, WRITERS)])[1]
            if final != last:
                lost.append(f"{gid}: final {final[:50]!r}, last write {last[:50]!r}")
        final_hot = pyaccess.get_provision_secret(conn, hot, key_file=key_file)
        last_writes = {value for (gid, w), (_, value) in ledger.returned.items() if gid == hot and w < WRITERS}
        if final_hot not in last_writes:
            lost.append(f"shared group: final value {final_hot[:50]!r} is not one of the last writes")
    hot_writes = sum(1 for (gid, w) in ledger.returned if gid == hot and w < WRITERS)
    ledger.report_and_check(
        f"concurrency: {WRITERS} writers + {READERS} readers for {seconds:.1f} s, "
        f"{hot_writes} writers reached the shared group",
        lost,
    )
    assert hot_writes == WRITERS
    assert ledger.ops["store"] > 100
    assert ledger.ops["get"] > 100


def test_rotation_under_load__no_reader_error_and_no_write_lost(
    db: str, key_file: Path, other_key_file: Path, tmp_path: Path
) -> None:
    """Stores and gets run while ``rotate`` re-encrypts every secret under the new key, batch by batch."""
    total, writers, readers = 4000, 4, 4
    ring = tmp_path / "ring.json"
    ring.write_text(
        json.dumps(
            {
                "key": load_key_ring(other_key_file).current.material.hex(),
                "previous_keys": [load_key_ring(key_file).current.material.hex()],
            }
        )
    )
    with psycopg.connect(db) as setup:
        groups = _groups(setup, total, "rotate")
        setup.execute(
            "SELECT count(store_provision_secret(id, %s || id::text, %s)) FROM ota_groups WHERE id = ANY(%s)",
            ("initial:", load_key_ring(key_file).current.material, groups),
        )
        setup.commit()
        register_key(setup, ring)  # the runbook: the new key is registered before pods pick it up
    ledger = Ledger()
    owner = {gid: i % writers for i, gid in enumerate(groups)}
    stop = threading.Event()

    def writer(w: int) -> Callable[[], None]:
        mine = groups[w::writers]

        def run() -> None:
            rng = random.Random(w)
            with psycopg.connect(db, autocommit=True) as conn:
                seq = 0
                while not stop.is_set():
                    seq += 1
                    gid = rng.choice(mine)
                    value = _value(gid, w, seq)
                    ledger.begin(gid, w, value)
                    try:
                        pyaccess.store_provision_secret(conn, gid, value, key_file=ring)
                    except BaseException as exc:  # noqa: BLE001
                        ledger.errors.append(exc)
                        return
                    ledger.done(gid, w, seq, value)

        return run

    def reader(r: int) -> Callable[[], None]:
        def run() -> None:
            rng = random.Random(100 + r)
            with psycopg.connect(db, autocommit=True) as conn:
                while not stop.is_set():
                    gid = rng.choice(groups)
                    w = owner[gid]
                    floor = ledger.floor(gid, w)
                    try:
                        value = pyaccess.get_provision_secret(conn, gid, key_file=ring)
                    except BaseException as exc:  # noqa: BLE001
                        ledger.errors.append(exc)
                        return
                    if value == f"initial:{gid}":
                        if floor >= 0:
                            ledger.violations.append(f"{gid}: initial value read after n{floor} had returned")
                        with ledger.lock:
                            ledger.ops["get"] += 1
                    else:
                        ledger.check_read(gid, value, w, floor)

        return run

    reports = []
    stores_during: list[int] = []

    def rotation() -> None:
        try:
            time.sleep(0.1)
            stores_during.append(-ledger.ops["store"])
            with psycopg.connect(db) as conn:
                reports.append(rotate(conn, key_file=ring, batch_size=25))
            stores_during[0] += ledger.ops["store"]
            time.sleep(0.2)
        finally:
            stop.set()

    seconds = _run_threads([writer(w) for w in range(writers)] + [reader(r) for r in range(readers)], rotation)
    (report,) = reports

    lost: list[str] = []
    with psycopg.connect(db, autocommit=True) as conn:
        census = [(e.in_key_file, e.secrets) for e in key_census(conn, key_file=ring) if e.secrets]
        for i, gid in enumerate(groups):
            # The new key alone must read everything: nothing is left under the old key.
            final = pyaccess.get_provision_secret(conn, gid, key_file=other_key_file)
            expected = ledger.returned.get((gid, i % writers), (0, f"initial:{gid}"))[1]
            if final != expected:
                lost.append(f"{gid}: {final[:50]!r} instead of {expected[:50]!r}")
    ledger.report_and_check(
        f"rotation under load: {report.reencrypted} of {total} secrets re-encrypted in {report.batches} batches "
        f"({report.seconds:.2f} s, {stores_during[0]} stores meanwhile); "
        f"{writers} writers + {readers} readers ran {seconds:.1f} s",
        lost,
    )
    assert census == [("current", total)]
    assert total / 4 < report.reencrypted <= total
    assert stores_during[0] > 20  # the rotation really ran under the load
    assert ledger.ops["store"] > 50


# --- crashes -------------------------------------------------------------------------------


def _store_until_cut_off(
    dsn: str,
    groups: list[uuid.UUID],
    w: int,
    *,
    seq_base: int,
    key_file: Path,
    ledger: Ledger,
    enough: threading.Event,
) -> None:
    """Writer ``w`` stores to its share of ``groups`` in a loop until the server goes away."""
    mine = groups[w::WRITERS]
    with psycopg.connect(dsn, autocommit=True) as conn:
        seq = seq_base
        while True:
            seq += 1
            gid = mine[seq % len(mine)]
            value = _value(gid, w, seq)
            ledger.begin(gid, w, value)
            try:
                pyaccess.store_provision_secret(conn, gid, value, key_file=key_file)
            except BaseException as exc:  # noqa: BLE001 - the crash: checked by the caller
                ledger.errors.append(exc)
                return
            ledger.done(gid, w, seq, value)
            if ledger.ops["store"] >= 400:
                enough.set()


@pytest.mark.cluster
def test_immediate_shutdown_mid_load__every_store_that_returned_survives(key_file: Path) -> None:
    """``pg_ctl stop -m immediate`` under a store load, twice: after each restart every returned store reads back."""
    with throwaway_cluster({"fsync": "on"}) as cluster:
        apply_migrations(cluster.dsn())
        with psycopg.connect(cluster.dsn()) as setup:
            groups = _groups(setup, 4 * WRITERS, "crash")
            state = _store_initial(setup, groups, key_file, writer=WRITERS)  # what each group holds now
        owner = {gid: i % WRITERS for i, gid in enumerate(groups)}
        for crash in (1, 2):
            ledger = Ledger()
            enough = threading.Event()
            writers: list[Callable[[], None]] = [
                partial(
                    _store_until_cut_off,
                    cluster.dsn(),
                    groups,
                    w,
                    seq_base=crash * 1_000_000,
                    key_file=key_file,
                    ledger=ledger,
                    enough=enough,
                )
                for w in range(WRITERS)
            ]

            def crash_server(enough: threading.Event = enough) -> None:
                assert enough.wait(timeout=30), "the load never got going"
                cluster.stop("immediate")

            seconds = _run_threads(writers, crash_server)
            cluster.start()
            assert "not properly shut down; automatic recovery in progress" in cluster.logfile.read_text()
            stray = [exc for exc in ledger.errors if not isinstance(exc, pyaccess.DatabaseError)]
            in_flight = dict(ledger.in_flight)
            lost, committed_in_flight = [], 0
            with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
                for gid in groups:
                    value = pyaccess.get_provision_secret(conn, gid, key_file=key_file)
                    last = ledger.returned.get((gid, owner[gid]), (0, state[gid]))[1]
                    if value == in_flight.get((gid, owner[gid])):
                        committed_in_flight += 1  # committed, but the crash took the reply
                    elif value != last:
                        lost.append(f"{gid}: {value[:50]!r} instead of {last[:50]!r}")
                    state[gid] = value
            print(
                f"\ncrash {crash}: immediate shutdown after {seconds:.1f} s of load by {WRITERS} writers: "
                f"{ledger.ops['store']} stores returned, {len(ledger.errors)} writers cut off "
                f"({len(stray)} with anything but DatabaseError), {len(in_flight)} stores in flight "
                f"({committed_in_flight} of them committed), {len(lost)} returned stores lost"
            )
            assert stray == []
            assert lost == []
            assert len(ledger.errors) == WRITERS  # every writer was cut off mid-load
            assert ledger.ops["store"] >= 400


_CHILD = """
import sys, psycopg, pyaccess
dsn, key_file, mode, *groups = sys.argv[1:]
with psycopg.connect(dsn, autocommit=(mode == "autocommit"), application_name="pyaccess-victim") as conn:
    n = 0
    while True:
        n += 1
        for i, gid in enumerate(groups):
            print(f"begin {n} {i}", flush=True)
            pyaccess.store_provision_secret(conn, gid, f"round-{n}-group-{i}-" + "s" * (n % 300), key_file=key_file)
            print(f"done {n} {i}", flush=True)
        if mode == "transaction":
            conn.commit()
            print(f"committed {n}", flush=True)
"""


def _wait_backend_gone(conn: Conn, application_name: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND datname = current_database()",
            (application_name,),
        )
        if row.fetchone() == (0,):
            return
        time.sleep(0.02)
    raise AssertionError("the killed client's backend is still there")


def _kill_child_when(
    db: str, key_file: Path, mode: str, groups: list[uuid.UUID], *, trigger: str, delay: float = 0.0
) -> list[str]:
    """Run the child, SIGKILL it ``delay`` seconds after it prints ``trigger``; every line it printed."""
    lines: list[str] = []
    with subprocess.Popen(
        [sys.executable, "-c", _CHILD, db, str(key_file), mode, *map(str, groups)],
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdout is not None
        watchdog = threading.Timer(60, child.kill)  # a child stuck without output must not hang the test
        watchdog.start()
        try:
            for line in child.stdout:
                lines.append(line.strip())
                if line.strip() == trigger:
                    time.sleep(delay)
                    os.kill(child.pid, signal.SIGKILL)
                    break
        finally:
            if child.poll() is None:
                os.kill(child.pid, signal.SIGKILL)
            lines += [line.strip() for line in child.stdout if line.endswith("\n")]  # not a line cut by the kill
            watchdog.cancel()
    assert child.returncode == -signal.SIGKILL, lines[-3:]
    assert trigger in lines, f"killed by the watchdog, stuck after {lines[-3:]}"
    return lines


def test_client_killed_mid_transaction__leaves_every_group_at_one_committed_round(db: str, key_file: Path) -> None:
    """A client storing to 20 groups per transaction is SIGKILLed early in round 3: no group is half-written,
    and all 20 hold the same round, the last committed one (or the next if its commit got out before the kill)."""
    with psycopg.connect(db, autocommit=True) as conn:
        groups = _groups(conn, 20, "kill")
        lines = _kill_child_when(db, key_file, "transaction", groups, trigger="done 3 0")
        _wait_backend_gone(conn, "pyaccess-victim")
        values = [pyaccess.get_provision_secret(conn, gid, key_file=key_file) for gid in groups]
    committed = max(int(line.split()[1]) for line in lines if line.startswith("committed"))
    rounds = {int(value.split("-")[1]) for value in values}
    assert len(rounds) == 1, f"a transaction was half applied: rounds {sorted(rounds)}"
    (held,) = rounds
    assert held == committed or (held == committed + 1 and f"done {held} 19" in lines), (held, lines[-3:])
    assert values == [f"round-{held}-group-{i}-" + "s" * held for i in range(20)]
    print(
        f"\nclient SIGKILLed mid-transaction after {len(lines)} lines (last committed round {committed}): "
        f"20 of 20 groups at round {held}"
    )


def test_client_killed_mid_call__leaves_the_old_or_the_new_value_whole(db: str, key_file: Path) -> None:
    """An autocommit client storing in a loop is SIGKILLed at random moments: the group holds a whole value."""
    rng = random.Random(6)
    outcomes: Counter[str] = Counter()
    with psycopg.connect(db, autocommit=True) as conn:
        groups = _groups(conn, 3, "kill")
        for _ in range(6):
            trigger = f"begin {rng.randint(5, 40)} {rng.randint(0, 2)}"
            # A store takes about a millisecond: kill before, during or after it.
            lines = _kill_child_when(db, key_file, "autocommit", groups, trigger=trigger, delay=rng.random() * 0.002)
            _wait_backend_gone(conn, "pyaccess-victim")
            done = [line.split()[1:] for line in lines if line.startswith("done")]
            begun = lines[-1].split()[1:] if lines[-1].startswith("begin") else None
            for i, gid in enumerate(groups):
                value = pyaccess.get_provision_secret(conn, gid, key_file=key_file)
                last_n = max(int(n) for n, g in done if int(g) == i)
                allowed = {f"round-{last_n}-group-{i}-" + "s" * (last_n % 300)}
                if begun is not None and int(begun[1]) == i:
                    allowed.add(f"round-{begun[0]}-group-{i}-" + "s" * (int(begun[0]) % 300))
                assert value in allowed, (lines[-3:], value[:40])
                if begun is not None and int(begun[1]) == i:
                    outcomes["in-flight store committed" if value.startswith(f"round-{begun[0]}-") else "not"] += 1
    print(f"\nclient SIGKILLed mid-call 6 times: every group holds a whole old or new value ({dict(outcomes)})")


@pytest.mark.parametrize("call", ["store", "get", "store-in-callers-transaction"])
def test_connection_dropped_mid_call__raises_database_error_never_a_value(db: str, key_file: Path, call: str) -> None:
    """The call waits on a lock inside the server when pg_terminate_backend drops its connection."""
    with psycopg.connect(db, autocommit=True) as admin, psycopg.connect(db) as blocker:
        gid = new_group(admin)
        pyaccess.store_provision_secret(admin, gid, "before", key_file=key_file)
        victim = psycopg.connect(db, autocommit=call != "store-in-callers-transaction")
        try:
            if victim.autocommit:
                pyaccess.get_provision_secret(victim, gid, key_file=key_file)  # the session guard is done
            else:
                victim.execute("SELECT 1")  # the caller's transaction: the call is pipelined with the guard
            if call == "get":
                blocker.execute("LOCK TABLE ota_groups IN ACCESS EXCLUSIVE MODE")
            else:
                blocker.execute("SELECT 1 FROM ota_groups WHERE id = %s FOR UPDATE", (gid,))
            outcome: list[object] = []

            def run() -> None:
                try:
                    if call == "get":
                        outcome.append(pyaccess.get_provision_secret(victim, gid, key_file=key_file))
                    else:
                        pyaccess.store_provision_secret(victim, gid, "after", key_file=key_file)
                        outcome.append("stored")
                except BaseException as exc:  # noqa: BLE001
                    outcome.append(exc)

            thread = threading.Thread(target=run)
            thread.start()
            pid = victim.info.backend_pid
            deadline = time.monotonic() + 10
            while admin.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() != (
                "Lock",
            ):
                assert time.monotonic() < deadline, "the call never waited on the lock"
                time.sleep(0.01)
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            thread.join(timeout=10)
            assert not thread.is_alive()
            blocker.rollback()
            (result,) = outcome
            assert isinstance(result, pyaccess.DatabaseError), repr(result)
            assert isinstance(result.__cause__, psycopg.OperationalError)
            # The dead connection keeps failing the same documented way.
            with pytest.raises(pyaccess.DatabaseError):
                pyaccess.get_provision_secret(victim, gid, key_file=key_file)
            with pytest.raises(pyaccess.DatabaseError):
                pyaccess.store_provision_secret(victim, gid, "again", key_file=key_file)
        finally:
            victim.close()
        assert pyaccess.get_provision_secret(admin, gid, key_file=key_file) == "before"
    print(f"\nconnection dropped mid-{call}: {type(result).__name__}: {result}")


# --- replicas ------------------------------------------------------------------------------


def _wait_for_replay(primary: Conn, standby: Conn) -> None:
    row = primary.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    deadline = time.monotonic() + 30
    while standby.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (row[0],)).fetchone() != (True,):
        assert time.monotonic() < deadline, "the standby never caught up"
        time.sleep(0.05)


@pytest.mark.cluster
def test_streaming_replica__get_works_and_store_raises_read_only(
    key_file: Path, other_key_file: Path, tmp_path: Path
) -> None:
    """A hot standby built with pg_basebackup -R: reads work there (the session guard included), writes are refused."""
    key_hex = load_key_ring(key_file).current.material.hex()
    with throwaway_cluster({"wal_level": "replica", "max_wal_senders": "4"}) as primary:
        apply_migrations(primary.dsn())
        with psycopg.connect(primary.dsn(), autocommit=True) as conn:
            for role, member_of in (
                ("worker_reader", "provision_secret_reader"),
                ("worker_writer", "provision_secret_writer"),
            ):
                conn.execute(f"CREATE ROLE {role} LOGIN IN ROLE {member_of}")
            groups = _groups(conn, 10, "replica")
            expected = _store_initial(conn, groups[:5], key_file, writer=0)
        # The standby logs bound parameters with errors: only the session guard keeps the key out of its log.
        standby = start_standby(primary, {"log_parameter_max_length_on_error": "-1"})
        try:
            with psycopg.connect(primary.dsn(), autocommit=True) as conn:
                # Streamed after the base backup, not copied by it.
                expected.update(_store_initial(conn, groups[3:], key_file, writer=1))
                with psycopg.connect(standby.dsn(), autocommit=True) as sconn:
                    assert sconn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
                    _wait_for_replay(conn, sconn)
                    read_super = {gid: pyaccess.get_provision_secret(sconn, gid, key_file=key_file) for gid in groups}
            assert read_super == expected
            # A worker login role on a fresh non-autocommit session: the session guard's set_config runs there.
            with psycopg.connect(user_dsn(standby.dsn(), "worker_reader")) as worker:
                read_worker = {gid: pyaccess.get_provision_secret(worker, gid, key_file=key_file) for gid in groups}
                worker.commit()
                guarded = worker.execute(
                    "SELECT current_setting('log_parameter_max_length'),"
                    " current_setting('log_parameter_max_length_on_error')"
                ).fetchone()
            assert read_worker == expected
            assert guarded == ("0", "0")
            refused = []
            for user, autocommit in (("worker_writer", True), ("worker_writer", False), ("postgres", True)):
                with psycopg.connect(user_dsn(standby.dsn(), user), autocommit=autocommit) as sconn:
                    if not autocommit:
                        sconn.execute("SELECT 1")  # inside the caller's transaction: guard and call pipelined
                    with pytest.raises(pyaccess.ReadOnlyError) as caught:
                        pyaccess.store_provision_secret(sconn, groups[0], "not on a standby", key_file=key_file)
                    refused.append(str(caught.value))
            # Rotation pointed at the standby by mistake: refused the same way, before anything changes.
            ring = tmp_path / "ring.json"
            ring.write_text(
                json.dumps({"key": load_key_ring(other_key_file).current.material.hex(), "previous_keys": [key_hex]})
            )
            with psycopg.connect(standby.dsn()) as sconn, pytest.raises(pyaccess.ReadOnlyError):
                rotate(sconn, key_file=ring)
            with psycopg.connect(primary.dsn(), autocommit=True) as conn:
                still = pyaccess.get_provision_secret(conn, groups[0], key_file=key_file)
            assert still == expected[groups[0]]
            standby_log = standby.logfile.read_text()
        finally:
            standby.destroy()
    assert "read-only transaction" in standby_log  # the refused stores were logged...
    assert key_hex not in standby_log.lower()  # ...without their parameters
    print(
        f"\nreplica: {len(groups)} secrets read on the hot standby (superuser and worker_reader), "
        f"store refused {len(refused)} times and rotate once: {refused[0]}; the key is not in the standby's log"
    )


# --- backups -------------------------------------------------------------------------------


def _rows(conn: Conn) -> dict[uuid.UUID, tuple[object, ...]]:
    rows = conn.execute("SELECT id, name, created_at, provision_secret_ciphertext FROM ota_groups").fetchall()
    conn.commit()
    return {row[0]: tuple(row[1:]) for row in rows}  # type: ignore[misc]


def test_pg_dump_and_restore__every_secret_reads_back_with_the_same_ciphertext(
    server: Server, db: str, key_file: Path, tmp_path: Path
) -> None:
    with psycopg.connect(db) as conn:
        groups = _groups(conn, 200, "backup")
        expected = _store_initial(conn, groups[:150], key_file, writer=0)  # 50 groups without a secret
        before = _rows(conn)
        census_before = [(e.key_id, e.secrets) for e in key_census(conn, key_file=key_file)]
    dump = tmp_path / "ota.dump"
    bindir = find_bindir()
    started = time.monotonic()
    subprocess.run(
        [str(bindir / "pg_dump"), "-Fc", "-f", str(dump), "-d", db], check=True, capture_output=True, timeout=120
    )
    restored = server.create_database()
    try:
        done = subprocess.run(
            [str(bindir / "pg_restore"), "--exit-on-error", "-d", server.dsn(restored), str(dump)],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        seconds = time.monotonic() - started
        with psycopg.connect(server.dsn(restored)) as conn:
            after = _rows(conn)
            read = {gid: pyaccess.get_provision_secret(conn, gid, key_file=key_file) for gid in expected}
            census_after = [(e.key_id, e.secrets) for e in key_census(conn, key_file=key_file)]
            grants = conn.execute(
                "SELECT has_function_privilege('provision_secret_reader', 'get_provision_secret(uuid, bytea[])',"
                " 'EXECUTE'), has_function_privilege('public', 'get_provision_secret(uuid, bytea[])', 'EXECUTE')"
            ).fetchone()
            conn.rollback()
            pyaccess.store_provision_secret(conn, groups[-1], "stored after the restore", key_file=key_file)
            assert pyaccess.get_provision_secret(conn, groups[-1], key_file=key_file) == "stored after the restore"
    finally:
        server.drop_database(restored)
    identical = sum(1 for gid, row in before.items() if after.get(gid) == row)
    print(
        f"\nbackup: pg_dump -Fc + pg_restore of {len(before)} groups in {seconds:.1f} s: {len(after)} rows restored, "
        f"{identical} byte-identical, {sum(read[g] == v for g, v in expected.items())} of {len(expected)} secrets read"
    )
    assert len(after) == len(before)
    assert after == before  # same ids, names, times and ciphertexts: nothing re-encrypted, duplicated or lost
    assert read == expected
    assert census_after == census_before
    assert grants == (True, False)
