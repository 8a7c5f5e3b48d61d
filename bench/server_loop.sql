-- The server's own cost of a read and a store, without the protocol: each statement run
-- many times in one plpgsql loop, against the plain SELECT and UPDATE of the same rows.
-- README, "Performance", quotes what it prints. Run it as a superuser on a database that
-- `make bench` or `pyaccess demo` filled, with one of its keys (64 hex digits):
--
--     psql -d DB -v key=<hex> -f bench/server_loop.sql
--
-- Everything happens in one transaction that is rolled back; the audit records of the
-- stores go to the server log. The VACUUM first clears what earlier runs left behind
-- (their row versions stay until vacuumed, and slow every later read).

VACUUM public.ota_groups;
BEGIN;
SELECT pyaccess.guard(pyaccess.release());

CREATE TEMP TABLE rows_under_test AS
SELECT pg_catalog.row_number() OVER () AS n, g.id, g.provision_secret_ciphertext AS envelope,
       pyaccess._ring(2, ARRAY[pg_catalog.decode(:'key', 'hex')], g.id) AS keys
  FROM public.ota_groups AS g
 WHERE pg_catalog.substr(g.provision_secret_ciphertext, 1, 9)
       = '\x02'::bytea || pyaccess._key_id(pg_catalog.decode(:'key', 'hex'))
 LIMIT 2000;

-- Microseconds per statement for one of: floor-get, get, floor-store, store.
CREATE FUNCTION pg_temp.per_call(p_what text) RETURNS numeric
LANGUAGE plpgsql AS $$
DECLARE
    v_ids uuid[];
    v_envelopes bytea[];
    v_keys bytea[];
    v_secret bytea := pg_catalog.convert_to(pg_catalog.repeat('s', 43), 'UTF8');
    v_out bytea;
    v_start timestamptz;
BEGIN
    SELECT pg_catalog.array_agg(r.id ORDER BY r.n), pg_catalog.array_agg(r.envelope ORDER BY r.n),
           pg_catalog.array_agg(r.keys ORDER BY r.n)
      INTO v_ids, v_envelopes, v_keys FROM rows_under_test AS r;
    v_start := pg_catalog.clock_timestamp();
    FOR i IN 1 .. pg_catalog.cardinality(v_ids) LOOP
        CASE p_what
            WHEN 'floor-get' THEN
                SELECT g.provision_secret_ciphertext INTO v_out FROM public.ota_groups AS g WHERE g.id = v_ids[i];
            WHEN 'get' THEN
                SELECT o.secret INTO v_out FROM pyaccess.open(v_ids[i], v_keys[i], 2) AS o;
            WHEN 'floor-store' THEN
                UPDATE public.ota_groups SET provision_secret_ciphertext = v_envelopes[i] WHERE id = v_ids[i];
            WHEN 'store' THEN
                PERFORM pyaccess.seal(v_ids[i], v_secret, v_keys[i]);
        END CASE;
    END LOOP;
    RETURN pg_catalog.round((extract(epoch FROM pg_catalog.clock_timestamp() - v_start) * 1e6
                             / pg_catalog.cardinality(v_ids))::numeric, 1);
END
$$;

-- Five rounds, interleaved; the fastest round of each counts (the least disturbed).
SELECT w.what AS statement, pg_catalog.min(pg_temp.per_call(w.what)) AS "µs per call (fastest of 5 rounds)"
  FROM pg_catalog.generate_series(1, 5) AS round,
       pg_catalog.unnest(ARRAY['floor-get', 'get', 'floor-store', 'store']) WITH ORDINALITY AS w(what, k)
 GROUP BY w.what, w.k
 ORDER BY w.k;

ROLLBACK;
