"""Prototypes of a faster hot path, measured beside the real one (``--prototypes``); nothing here is used by pyaccess.

SQL: the same envelope (format v1), the same SQLSTATEs and the same rules
(SECURITY DEFINER, pinned search_path, schema-qualified calls, no EXECUTE
for PUBLIC), in a schema ``bench_proto`` of the benchmark's own database.
What changes is only how the work is spread over functions:

* no helper function per call: each API function is one plpgsql function
  with one ``SET search_path``. In the current code a get runs four
  functions that each carry ``SET search_path`` (each a GUC save/restore and
  two search-path recomputations), one of them the SQL-language
  ``_provision_secret_key_id``, which a ``SET`` clause keeps from being
  inlined: PostgreSQL 15 parses and plans its body again in every
  transaction;
* rotation derives the ring's key ids and sub-keys once per batch, not
  once per row, and does the per-row work in the UPDATE itself; the batch
  predicate ``id > coalesce(after, min uuid)`` can use the primary key
  even in a generic plan.

Python: the same checks and the same session guard, but the key ring goes
to the server as a pre-encoded binary ``bytea[]`` (encoded once per key-file
load instead of once per call).
"""

from __future__ import annotations

import os
import struct
import uuid
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, LiteralString

import psycopg
from psycopg.adapt import Buffer, Dumper
from psycopg.pq import Format

from bench.dataset import Dataset
from bench.latency import Variant
from pyaccess.errors import translate_errors
from pyaccess.keyfile import KeyRing, load_key_ring
from pyaccess.provision import check_group_id, check_secret
from pyaccess.rotation import key_census
from pyaccess.session import execute_guarded

PROTO_SQL = r"""
CREATE SCHEMA IF NOT EXISTS bench_proto;

CREATE OR REPLACE FUNCTION bench_proto.get_provision_secret(group_id uuid, keys bytea[])
RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p_group_id ALIAS FOR $1;
    p_keys     ALIAS FOR $2;
    v_key  bytea;
    v_env  bytea;
    v_len  integer;
    v_kid  bytea;
    v_sub  bytea;  -- enc key || mac key of the key that sealed v_env
BEGIN
    IF p_keys IS NULL OR pg_catalog.cardinality(p_keys) = 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'PA001', MESSAGE = 'no key given';
    END IF;
    IF pg_catalog.array_ndims(p_keys) <> 1 OR pg_catalog.array_lower(p_keys, 1) <> 1 THEN
        RAISE EXCEPTION USING ERRCODE = 'PA001', MESSAGE = 'the keys must be a one-dimensional array starting at 1';
    END IF;
    FOREACH v_key IN ARRAY p_keys LOOP
        IF v_key IS NULL OR pg_catalog.octet_length(v_key) <> 32 THEN
            RAISE EXCEPTION USING ERRCODE = 'PA001', MESSAGE = 'a key must be exactly 32 bytes',
                HINT = 'pass the 256-bit key as raw bytes (bytea), not as hex text';
        END IF;
    END LOOP;
    SELECT g.provision_secret_ciphertext, pg_catalog.octet_length(g.provision_secret_ciphertext)
      INTO v_env, v_len
      FROM public.ota_groups AS g
     WHERE g.id = p_group_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'PA003', MESSAGE = pg_catalog.format('no OTA group with id %s', p_group_id);
    END IF;
    IF v_env IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'PA004',
            MESSAGE = pg_catalog.format('OTA group %s has no provision secret stored', p_group_id);
    END IF;
    IF v_len < 73 OR (v_len - 57) % 16 <> 0 OR pg_catalog.get_byte(v_env, 0) <> 1 THEN
        RAISE EXCEPTION USING ERRCODE = 'PA006', MESSAGE = pg_catalog.format(
            'the provision secret of OTA group %s is malformed or of an unknown format', p_group_id);
    END IF;
    v_kid := pg_catalog.substr(v_env, 2, 8);
    FOREACH v_key IN ARRAY p_keys LOOP
        IF pg_catalog.substr(@extschema@.hmac('pyaccess key id'::bytea, v_key, 'sha256'), 1, 8) = v_kid THEN
            v_sub := @extschema@.hmac('pyaccess v1 keys'::bytea, v_key, 'sha512');
            EXIT;
        END IF;
    END LOOP;
    IF v_sub IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'PA005', MESSAGE = pg_catalog.format(
            'the provision secret of OTA group %s was encrypted under key id %s, not under the given key ids %s',
            p_group_id, pg_catalog.encode(v_kid, 'hex'),
            (SELECT pg_catalog.string_agg(pg_catalog.encode(pg_catalog.substr(
                        @extschema@.hmac('pyaccess key id'::bytea, k, 'sha256'), 1, 8), 'hex'), ', ')
               FROM pg_catalog.unnest(p_keys) AS k)),
            HINT = 'add the key with that id to previous_keys in the key file';
    END IF;
    IF @extschema@.hmac(pg_catalog.uuid_send(p_group_id) || pg_catalog.substr(v_env, 1, v_len - 32),
                        pg_catalog.substr(v_sub, 33, 32), 'sha256')
       <> pg_catalog.substr(v_env, v_len - 31, 32) THEN
        RAISE EXCEPTION USING ERRCODE = 'PA006', MESSAGE = pg_catalog.format(
            'the provision secret of OTA group %s failed authentication: it was altered or copied from another group',
            p_group_id);
    END IF;
    RETURN pg_catalog.convert_from(@extschema@.decrypt_iv(pg_catalog.substr(v_env, 26, v_len - 57),
                                                          pg_catalog.substr(v_sub, 1, 32),
                                                          pg_catalog.substr(v_env, 10, 16), 'aes-cbc/pad:pkcs'),
                                   'UTF8');
END
$$;

CREATE OR REPLACE FUNCTION bench_proto.store_provision_secret(group_id uuid, secret text, key bytea)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p_group_id ALIAS FOR $1;
    p_secret   ALIAS FOR $2;
    p_key      ALIAS FOR $3;
    v_plain bytea := pg_catalog.convert_to(p_secret, 'UTF8');
    v_sub   bytea;
    v_iv    bytea;
    v_body  bytea;
BEGIN
    IF p_key IS NULL OR pg_catalog.octet_length(p_key) <> 32 THEN
        RAISE EXCEPTION USING ERRCODE = 'PA001', MESSAGE = 'a key must be exactly 32 bytes',
            HINT = 'pass the 256-bit key as raw bytes (bytea), not as hex text';
    END IF;
    IF v_plain IS NULL OR pg_catalog.octet_length(v_plain) NOT BETWEEN 1 AND 4096 THEN
        RAISE EXCEPTION USING ERRCODE = 'PA002', MESSAGE = pg_catalog.format(
            'the provision secret for OTA group %s must be 1 to 4096 bytes of UTF-8 text', p_group_id);
    END IF;
    v_sub := @extschema@.hmac('pyaccess v1 keys'::bytea, p_key, 'sha512');
    v_iv := @extschema@.gen_random_bytes(16);
    v_body := '\x01'::bytea || pg_catalog.substr(@extschema@.hmac('pyaccess key id'::bytea, p_key, 'sha256'), 1, 8)
        || v_iv || @extschema@.encrypt_iv(v_plain, pg_catalog.substr(v_sub, 1, 32), v_iv, 'aes-cbc/pad:pkcs');
    UPDATE public.ota_groups
       SET provision_secret_ciphertext = v_body || @extschema@.hmac(pg_catalog.uuid_send(p_group_id) || v_body,
                                                                    pg_catalog.substr(v_sub, 33, 32), 'sha256')
     WHERE id = p_group_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'PA003', MESSAGE = pg_catalog.format('no OTA group with id %s', p_group_id);
    END IF;
END
$$;

-- Raises the error of a secret that cannot be re-encrypted; only ever called for such a row.
CREATE OR REPLACE FUNCTION bench_proto._rewrap_refuse(p_group_id uuid, p_envelope bytea, p_known boolean)
RETURNS bytea
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT p_known THEN
        RAISE EXCEPTION USING ERRCODE = 'PA005', MESSAGE = pg_catalog.format(
            'the provision secret of OTA group %s was encrypted under key id %s, which the key ring does not hold',
            p_group_id, pg_catalog.encode(pg_catalog.substr(p_envelope, 2, 8), 'hex')),
            HINT = 'add the key with that id to previous_keys in the key file';
    END IF;
    RAISE EXCEPTION USING ERRCODE = 'PA006', MESSAGE = pg_catalog.format(
        'the provision secret of OTA group %s failed authentication: it was altered or copied from another group',
        p_group_id);
END
$$;

CREATE OR REPLACE FUNCTION bench_proto.rewrap_provision_secrets(
    keys bytea[], after_group_id uuid DEFAULT NULL, batch_size integer DEFAULT 1000)
RETURNS TABLE (group_id uuid, old_key_id text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p_keys  ALIAS FOR $1;
    p_after ALIAS FOR $2;
    p_limit ALIAS FOR $3;
    v_key  bytea;
    v_ids  bytea[] := '{}';  -- the key id of each key of the ring
    v_subs bytea[] := '{}';  -- enc key || mac key of each key of the ring
BEGIN
    IF p_keys IS NULL OR pg_catalog.cardinality(p_keys) = 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'PA001', MESSAGE = 'no key given';
    END IF;
    IF pg_catalog.array_ndims(p_keys) <> 1 OR pg_catalog.array_lower(p_keys, 1) <> 1 THEN
        RAISE EXCEPTION USING ERRCODE = 'PA001', MESSAGE = 'the keys must be a one-dimensional array starting at 1';
    END IF;
    FOREACH v_key IN ARRAY p_keys LOOP
        IF v_key IS NULL OR pg_catalog.octet_length(v_key) <> 32 THEN
            RAISE EXCEPTION USING ERRCODE = 'PA001', MESSAGE = 'a key must be exactly 32 bytes';
        END IF;
        v_ids := v_ids || pg_catalog.substr(@extschema@.hmac('pyaccess key id'::bytea, v_key, 'sha256'), 1, 8);
        v_subs := v_subs || @extschema@.hmac('pyaccess v1 keys'::bytea, v_key, 'sha512');
    END LOOP;
    IF p_limit IS NULL OR p_limit < 1 THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'batch_size must be at least 1';
    END IF;
    RETURN QUERY
    WITH todo AS (
        SELECT g.id, g.provision_secret_ciphertext AS env,
               pg_catalog.octet_length(g.provision_secret_ciphertext) AS len,
               v_subs[pg_catalog.array_position(v_ids, pg_catalog.substr(g.provision_secret_ciphertext, 2, 8))] AS sub
          FROM public.ota_groups AS g
         WHERE g.provision_secret_ciphertext IS NOT NULL
           AND pg_catalog.substr(g.provision_secret_ciphertext, 2, 8) <> v_ids[1]
           AND g.id > COALESCE(p_after, '00000000-0000-0000-0000-000000000000'::uuid)
         ORDER BY g.id
         LIMIT p_limit
           FOR UPDATE
    ), opened AS (
        SELECT todo.id, todo.env, @extschema@.gen_random_bytes(16) AS iv,
               CASE WHEN todo.sub IS NULL
                      OR todo.len < 73 OR (todo.len - 57) % 16 <> 0 OR pg_catalog.get_byte(todo.env, 0) <> 1
                      OR @extschema@.hmac(
                             pg_catalog.uuid_send(todo.id) || pg_catalog.substr(todo.env, 1, todo.len - 32),
                             pg_catalog.substr(todo.sub, 33, 32), 'sha256')
                         <> pg_catalog.substr(todo.env, todo.len - 31, 32)
                    THEN bench_proto._rewrap_refuse(todo.id, todo.env, todo.sub IS NOT NULL)
                    ELSE @extschema@.decrypt_iv(pg_catalog.substr(todo.env, 26, todo.len - 57),
                                                pg_catalog.substr(todo.sub, 1, 32),
                                                pg_catalog.substr(todo.env, 10, 16), 'aes-cbc/pad:pkcs')
               END AS plain
          FROM todo
    ), sealed AS (
        SELECT opened.id, opened.env,
               '\x01'::bytea || v_ids[1] || opened.iv
               || @extschema@.encrypt_iv(opened.plain, pg_catalog.substr(v_subs[1], 1, 32), opened.iv,
                                         'aes-cbc/pad:pkcs') AS body
          FROM opened
    ), done AS (
        UPDATE public.ota_groups AS g
           SET provision_secret_ciphertext = sealed.body || @extschema@.hmac(
                   pg_catalog.uuid_send(sealed.id) || sealed.body, pg_catalog.substr(v_subs[1], 33, 32), 'sha256')
          FROM sealed
         WHERE g.id = sealed.id
        RETURNING g.id AS gid, pg_catalog.encode(pg_catalog.substr(sealed.env, 2, 8), 'hex') AS kid
    )
    SELECT done.gid, done.kid FROM done ORDER BY done.gid;
END
$$;

REVOKE ALL ON FUNCTION bench_proto.get_provision_secret(uuid, bytea[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION bench_proto.store_provision_secret(uuid, text, bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION bench_proto._rewrap_refuse(uuid, bytea, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION bench_proto.rewrap_provision_secrets(bytea[], uuid, integer) FROM PUBLIC;
"""

CURRENT_GET: LiteralString = "SELECT public.get_provision_secret(%s::uuid, %b::bytea[])"
CURRENT_STORE: LiteralString = "SELECT public.store_provision_secret(%s::uuid, %s::text, %b::bytea)"
PROTO_GET: LiteralString = "SELECT bench_proto.get_provision_secret(%s::uuid, %b::bytea[])"
PROTO_STORE: LiteralString = "SELECT bench_proto.store_provision_secret(%s::uuid, %s::text, %b::bytea)"
PROTO_REWRAP: LiteralString = (
    "SELECT group_id, old_key_id FROM bench_proto.rewrap_provision_secrets(%b::bytea[], %s::uuid, %s::integer)"
)
PROTO_REWRAP_NOLOCK: LiteralString = (
    "SELECT group_id, old_key_id FROM bench_proto.rewrap_provision_secrets_nolock(%b::bytea[], %s::uuid, %s::integer)"
)


def _nolock_variant(sql: str) -> str:
    """The rewrap function without FOR UPDATE: the UPDATE re-checks that the row still holds what was opened."""
    start = sql.index("CREATE OR REPLACE FUNCTION bench_proto.rewrap_provision_secrets(")
    end = sql.index("$$;", start) + 3
    body = sql[start:end].replace("rewrap_provision_secrets(", "rewrap_provision_secrets_nolock(", 1)
    body = body.replace("\n           FOR UPDATE", "")
    body = body.replace(
        "WHERE g.id = sealed.id\n",
        "WHERE g.id = sealed.id\n           AND g.provision_secret_ciphertext = sealed.env\n",
    )
    assert "FOR UPDATE" not in body
    assert "= sealed.env" in body
    return (
        body
        + "\nREVOKE ALL ON FUNCTION bench_proto.rewrap_provision_secrets_nolock(bytea[], uuid, integer) FROM PUBLIC;\n"
    )


def install(dsn: str) -> None:
    """Create the prototype functions in the database of ``dsn``."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT pg_catalog.quote_ident(n.nspname) FROM pg_catalog.pg_extension AS e"
            " JOIN pg_catalog.pg_namespace AS n ON n.oid = e.extnamespace WHERE e.extname = 'pgcrypto'"
        ).fetchone()
        assert row is not None
        sql = PROTO_SQL.replace("@extschema@", str(row[0]))
        conn.execute(sql)
        conn.execute(_nolock_variant(sql))


# --- Python: the key ring encoded once per key-file load --------------------------------------

BYTEA_OID = 17
BYTEA_ARRAY_OID = 1001


class EncodedRing:
    """A key ring already in PostgreSQL's binary ``bytea[]`` format; its repr shows no key."""

    __slots__ = ("payload",)

    def __init__(self, keys: list[bytes]) -> None:
        header = struct.pack("!iiIii", 1, 0, BYTEA_OID, len(keys), 1)
        self.payload = header + b"".join(struct.pack("!i", len(k)) + k for k in keys)

    def __repr__(self) -> str:
        return "<EncodedRing (redacted)>"


class EncodedRingDumper(Dumper):
    format = Format.BINARY
    oid = BYTEA_ARRAY_OID

    def dump(self, obj: Any) -> Buffer:
        payload: bytes = obj.payload
        return payload


_encoded: weakref.WeakKeyDictionary[KeyRing, EncodedRing] = weakref.WeakKeyDictionary()
_by_name: dict[str, tuple[tuple[int, ...], KeyRing]] = {}


def fast_key_ring(key_file: str | os.PathLike[str]) -> KeyRing:
    """``load_key_ring`` with its hot path cut to one ``os.stat`` of the name as given (no Path objects).

    Still re-reads the file as soon as its identity or modification time changes.
    """
    name = os.fspath(key_file)
    try:
        info = os.stat(name)
    except OSError:
        return load_key_ring(name)  # raises the right KeyFileError
    signature = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
    hit = _by_name.get(name)
    if hit is not None and hit[0] == signature:
        return hit[1]
    ring = load_key_ring(name)
    _by_name[name] = (signature, ring)
    return ring


def encoded_ring(ring: KeyRing) -> EncodedRing:
    found = _encoded.get(ring)
    if found is None:
        found = _encoded[ring] = EncodedRing(ring.materials)
    return found


def proto_get(conn: psycopg.Connection[Any], group_id: uuid.UUID | str, key_file: Path) -> str:
    gid = check_group_id(group_id)
    ring = encoded_ring(fast_key_ring(key_file))
    with translate_errors():
        row = execute_guarded(conn, PROTO_GET, (gid, ring)).fetchone()
    assert row is not None
    return str(row[0])


def proto_store(conn: psycopg.Connection[Any], group_id: uuid.UUID | str, secret: str, key_file: Path) -> None:
    gid = check_group_id(group_id)
    key = fast_key_ring(key_file).current.material
    with translate_errors():
        execute_guarded(conn, PROTO_STORE, (gid, check_secret(secret), key))


def latency_variants(conn: psycopg.Connection[Any], data: Dataset) -> list[Variant]:
    """The current SQL and the prototype SQL called the same bare way, and the whole prototype call path."""
    install(data.dsn)
    conn.adapters.register_dumper(EncodedRing, EncodedRingDumper)
    key_file = data.keys.current
    ring = load_key_ring(key_file)
    key = ring.current.material
    materials = ring.materials

    def current_sql_get(gid: uuid.UUID, _secret: str) -> object:
        return conn.execute(CURRENT_GET, (gid, materials), prepare=True).fetchone()

    def proto_sql_get(gid: uuid.UUID, _secret: str) -> object:
        return conn.execute(PROTO_GET, (gid, materials), prepare=True).fetchone()

    def current_sql_store(gid: uuid.UUID, secret: str) -> object:
        return conn.execute(CURRENT_STORE, (gid, secret, key), prepare=True)

    def proto_sql_store(gid: uuid.UUID, secret: str) -> object:
        return conn.execute(PROTO_STORE, (gid, secret, key), prepare=True)

    def proto_path_get(gid: uuid.UUID, _secret: str) -> object:
        return proto_get(conn, gid, key_file)

    def proto_path_store(gid: uuid.UUID, secret: str) -> object:
        proto_store(conn, gid, secret, key_file)
        return None

    get_floor, store_floor = "get: plain SELECT (floor)", "store: plain UPDATE (floor)"
    return [
        Variant("get: current SQL, bare execute", "get", "current SQL (bare)", get_floor, current_sql_get),
        Variant("get: prototype SQL, bare execute", "get", "proto SQL (bare)", get_floor, proto_sql_get),
        Variant("get: prototype SQL + Python", "get", "proto SQL + Python", get_floor, proto_path_get),
        Variant("store: current SQL, bare execute", "store", "current SQL (bare)", store_floor, current_sql_store),
        Variant("store: prototype SQL, bare execute", "store", "proto SQL (bare)", store_floor, proto_sql_store),
        Variant("store: prototype SQL + Python", "store", "proto SQL + Python", store_floor, proto_path_store),
    ]


def proto_rotator(
    conn: psycopg.Connection[Any],
    key_file: Path,
    batch_size: int,
    on_batch: Callable[[int], None],
    query: LiteralString = PROTO_REWRAP,
) -> int:
    """``pyaccess.rotation.rotate``'s census and loop, over the prototype rewrap function."""
    key_census(conn, key_file=key_file)
    ring = load_key_ring(key_file)
    after = None
    done = 0
    while True:
        with translate_errors(), conn.transaction():
            rows = execute_guarded(conn, query, (ring.materials, after, batch_size)).fetchall()
        if not rows:
            return done
        after = rows[-1][0]
        done += len(rows)
        on_batch(len(rows))


def rotators() -> dict[str, Callable[[psycopg.Connection[Any], Path, int, Callable[[int], None]], int]]:
    def nolock(conn: psycopg.Connection[Any], key_file: Path, batch_size: int, on_batch: Callable[[int], None]) -> int:
        return proto_rotator(conn, key_file, batch_size, on_batch, PROTO_REWRAP_NOLOCK)

    return {"prototype": proto_rotator, "prototype, no FOR UPDATE": nolock}
