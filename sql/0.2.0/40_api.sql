-- pyaccess 0.2.0, part 40: the service API (schema pyaccess) and the contract's functions.
--
-- The service (the Python library, the CLI) sends per call only what opens the one secret
-- at hand: a key ring on the wire of v2 pairs for that group (see 10_crypto.sql). The
-- contract's functions in public take a master key: they are for DBAs in psql and SQL-level
-- tests, and for pods of 0.1.0 during a rollout. They derive the same pairs in SQL.

-- =====================================================================
-- Refusals: each records an audit line, then raises. Called only on failing branches.
-- =====================================================================

-- Records the refusal of an event, then raises SQLSTATE p_code. Never returns.
CREATE OR REPLACE FUNCTION pyaccess._fail(p_event text, p_code text, p_group_id uuid, p_key_id bytea,
                                          p_message text, p_hint text DEFAULT NULL)
RETURNS bytea
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM pyaccess._audit(p_event, 'refused ' || p_code, p_group_id, p_key_id);
    RAISE EXCEPTION USING ERRCODE = p_code, MESSAGE = p_message, HINT = COALESCE(p_hint, '');
END
$$;
SELECT pyaccess._declare('pyaccess._fail(text,text,uuid,bytea,text,text)', 'provision_secret_reader');

-- The key ids of a key ring on the wire, as hex, for messages.
CREATE OR REPLACE FUNCTION pyaccess._ring_ids(p_keys bytea)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT pg_catalog.string_agg(pg_catalog.encode(pg_catalog.substr(p_keys, 8 * i + 1, 8), 'hex'), ', ' ORDER BY i)
      FROM pg_catalog.generate_series(0, pg_catalog.octet_length(p_keys) / 72 - 1) AS i;
END;
SELECT pyaccess._declare('pyaccess._ring_ids(bytea)', 'provision_secret_reader');

-- What a read of an existing group that pyaccess.open could not serve gets: NULL when the
-- envelope is of another version than p_version and the ring is well formed (the caller asks
-- again with pairs of that version), else the error, checked in this order: PA007 session not
-- guarded, PA001 bad key ring, PA004 no secret, PA006 malformed, PA005 key not given, PA006 tag
-- wrong (altered, or copied from another group).
CREATE OR REPLACE FUNCTION pyaccess._refuse_open(p_group_id uuid, p_envelope bytea, p_keys bytea, p_version integer)
RETURNS bytea
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_key_id bytea := pyaccess._envelope_key_id(p_envelope);
BEGIN
    IF NOT pyaccess._guarded() THEN
        PERFORM pyaccess._refuse_unguarded();
    ELSIF NOT pyaccess._ring_ok(p_keys) THEN
        RETURN pyaccess._fail('read', 'PA001', p_group_id, NULL,
            'the keys must be one or more 72-byte entries: 8-byte key ids, then the 64-byte pairs');
    ELSIF p_envelope IS NULL THEN
        RETURN pyaccess._fail('read', 'PA004', p_group_id, NULL,
            pg_catalog.format('OTA group %s has no provision secret stored', p_group_id));
    ELSIF pyaccess._envelope_version(p_envelope) IS NULL THEN
        RETURN pyaccess._fail('read', 'PA006', p_group_id, NULL, pg_catalog.format(
            'the provision secret of OTA group %s is malformed or of an unknown format', p_group_id));
    ELSIF pyaccess._envelope_version(p_envelope) IS DISTINCT FROM p_version THEN
        RETURN NULL;
    ELSIF pyaccess._pick(p_keys, v_key_id) IS NULL THEN
        RETURN pyaccess._fail('read', 'PA005', p_group_id, v_key_id, pg_catalog.format(
            'the provision secret of OTA group %s was encrypted under key id %s, not under the given key ids %s',
            p_group_id, pg_catalog.encode(v_key_id, 'hex'), pyaccess._ring_ids(p_keys)),
            'add the key with that id to previous_keys in the key file');
    END IF;
    RETURN pyaccess._fail('read', 'PA006', p_group_id, v_key_id, pg_catalog.format(
        'the provision secret of OTA group %s failed authentication: it was altered or copied from another group',
        p_group_id));
END
$$;
SELECT pyaccess._declare('pyaccess._refuse_open(uuid,bytea,bytea,integer)', 'provision_secret_reader');

-- =====================================================================
-- Reading
-- =====================================================================

-- The service's read: the secret of OTA group p_group_id if its envelope is of version
-- p_version and sealed under a key of p_keys, on a guarded session. Another version: that
-- version and a NULL secret (the caller asks again with pairs of that version). No group with
-- that id: no row (the caller then calls pyaccess.refuse_missing_group). Any other failure
-- raises: PA001 PA004 PA005 PA006 PA007.
--
-- Built for the hot path: SECURITY INVOKER with a SQL-standard body, called in FROM, so
-- PostgreSQL inlines it into the calling statement; one condition for success, and every other
-- case in a plpgsql function that runs only then. The caller needs SELECT on ota_groups (id,
-- provision_secret_ciphertext): the ciphertext, which is all a reader gets.
CREATE OR REPLACE FUNCTION pyaccess.open(p_group_id uuid, p_keys bytea, p_version integer)
RETURNS TABLE (version integer, secret bytea)
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT o.version,
           -- (COALESCE: AND goes on past a NULL, and _authentic must not see a malformed envelope)
           CASE WHEN pyaccess._guarded() AND COALESCE(o.version = p_version, false) AND o.pair IS NOT NULL
                     AND pyaccess._authentic(p_group_id, o.envelope, o.pair)
                     AND pyaccess._read_recorded(p_group_id, pyaccess._envelope_key_id(o.envelope))
                THEN pyaccess._plaintext(o.envelope, o.pair)
                ELSE pyaccess._refuse_open(p_group_id, o.envelope, p_keys, p_version)
           END
      FROM (SELECT g.provision_secret_ciphertext AS envelope,
                   pyaccess._envelope_version(g.provision_secret_ciphertext) AS version,
                   pyaccess._pick(p_keys, pyaccess._envelope_key_id(g.provision_secret_ciphertext)) AS pair
              FROM public.ota_groups AS g
             WHERE g.id = p_group_id
            OFFSET 0) AS o;  -- (not pulled up: each column is computed once, not once per use)
END;
SELECT pyaccess._declare('pyaccess.open(uuid,bytea,integer)', 'provision_secret_reader');

-- Why pyaccess.open gave no row: raises PA003 (recorded), or PA007 first on a session that is
-- not guarded. Returns when the group exists by now (created since): the caller reads again.
CREATE OR REPLACE FUNCTION pyaccess.refuse_missing_group(p_group_id uuid)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT pyaccess._guarded() THEN
        PERFORM pyaccess._refuse_unguarded();
    ELSIF NOT EXISTS (SELECT FROM public.ota_groups AS g WHERE g.id = p_group_id) THEN
        PERFORM pyaccess._fail('read', 'PA003', p_group_id, NULL, pg_catalog.format('no OTA group with id %s', p_group_id));
    END IF;
END
$$;
SELECT pyaccess._declare('pyaccess.refuse_missing_group(uuid)', 'provision_secret_reader');

-- =====================================================================
-- Writing
-- =====================================================================

-- Admits a key id that is not active for a store: registers it when the registry is empty
-- (the first store of a new installation), else raises PA008.
CREATE OR REPLACE FUNCTION pyaccess._admit_key(p_key_id bytea, p_group_id uuid)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_state  text;
    v_active text;
BEGIN
    LOCK TABLE pyaccess.keys IN SHARE ROW EXCLUSIVE MODE;  -- two first stores at once: one registers
    SELECT k.state INTO v_state FROM pyaccess.keys AS k WHERE k.key_id = p_key_id;
    IF v_state = 'active' THEN
        RETURN;
    END IF;
    IF v_state IS NULL AND NOT EXISTS (SELECT FROM pyaccess.keys) THEN
        INSERT INTO pyaccess.keys (key_id, state) VALUES (p_key_id, 'active');
        PERFORM pyaccess._audit('register key', 'ok', p_group_id, p_key_id, 'first key, registered by its first store');
        RETURN;
    END IF;
    SELECT pg_catalog.string_agg(pg_catalog.encode(k.key_id, 'hex'), ', ' ORDER BY k.registered_at)
      INTO v_active FROM pyaccess.keys AS k WHERE k.state = 'active';
    PERFORM pyaccess._fail('write', 'PA008', p_group_id, p_key_id, pg_catalog.format(
        'refusing to store under key id %s: it is %s; stores use only the active key ids (%s)',
        pg_catalog.encode(p_key_id, 'hex'), COALESCE(v_state, 'not registered'), COALESCE(v_active, 'none')),
        'a stale or wrong key file? Compare pyaccess doctor with pyaccess census; '
        'a new key is registered with pyaccess key register before Vault is patched');
END
$$;
SELECT pyaccess._declare('pyaccess._admit_key(bytea,uuid)', '');

-- Raises the error for a store whose session or arguments pyaccess.seal refused, checked in
-- this order: PA007 session not guarded, PA001 not exactly one key, PA002 bad secret.
CREATE OR REPLACE FUNCTION pyaccess._refuse_seal(p_group_id uuid, p_secret bytea, p_keys bytea)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT pyaccess._guarded() THEN
        PERFORM pyaccess._refuse_unguarded();
    ELSIF p_keys IS NULL OR pg_catalog.octet_length(p_keys) <> 72 THEN
        PERFORM pyaccess._fail('write', 'PA001', p_group_id, NULL,
            'give exactly one key: its 8-byte key id, then its 64-byte pair for this group');
    END IF;
    PERFORM pyaccess._fail('write', 'PA002', p_group_id, pg_catalog.substr(p_keys, 1, 8), pg_catalog.format(
        'the provision secret for OTA group %s must be 1 to 4096 bytes of UTF-8 text', p_group_id));
END
$$;
SELECT pyaccess._declare('pyaccess._refuse_seal(uuid,bytea,bytea)', '');

-- The service's store: seals p_secret (UTF-8 bytes) for OTA group p_group_id under the one
-- key of p_keys (its id, then its v2 pair for this group) with a fresh IV, and stores it, on a
-- guarded session. Errors: PA001 PA002 PA003 PA007 PA008.
--
-- Built for the hot path: one check of the session and the arguments, one UPDATE that also
-- checks the key registry, one audit record; the refusals run only when something failed.
CREATE OR REPLACE FUNCTION pyaccess.seal(p_group_id uuid, p_secret bytea, p_keys bytea)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_key_id bytea := pg_catalog.substr(p_keys, 1, 8);
    v_pair   bytea := pg_catalog.substr(p_keys, 9, 64);
    v_iv     bytea := pyaccess._random_iv();
    v_body   bytea;
BEGIN
    IF NOT COALESCE(pyaccess._guarded() AND pg_catalog.octet_length(p_keys) = 72
                    AND pg_catalog.octet_length(p_secret) BETWEEN 1 AND 4096, false) THEN
        PERFORM pyaccess._refuse_seal(p_group_id, p_secret, p_keys);
    END IF;
    -- (a volatile argument would keep _body from being inlined: hence v_iv)
    v_body := pyaccess._body(2, v_key_id, v_pair, v_iv, p_secret);
    -- Stored only under an active key id. Nothing stored: the key id is not active (admitted
    -- on an empty registry, else PA008), or, once the key is admitted, no such group (PA003).
    FOR attempt IN 1..2 LOOP
        UPDATE public.ota_groups
           SET provision_secret_ciphertext = v_body || pyaccess._tag(p_group_id, v_body, v_pair)
         WHERE id = p_group_id
           AND EXISTS (SELECT FROM pyaccess.keys AS k WHERE k.key_id = v_key_id AND k.state = 'active');
        EXIT WHEN FOUND;
        IF attempt = 2 THEN
            PERFORM pyaccess._fail('write', 'PA003', p_group_id, v_key_id,
                                   pg_catalog.format('no OTA group with id %s', p_group_id));
        END IF;
        PERFORM pyaccess._admit_key(v_key_id, p_group_id);
    END LOOP;
    RAISE LOG USING MESSAGE = pyaccess._audit_line('write', 'ok', p_group_id, v_key_id);
END
$$;
SELECT pyaccess._declare('pyaccess.seal(uuid,bytea,bytea)', 'provision_secret_writer');

-- =====================================================================
-- The session: release check and log guard, once per session (or per call behind PgBouncer)
-- =====================================================================

-- Raises PA009 when the installed SQL is older than release p_release, which the library
-- needs; then guards the session if it is not guarded already.
CREATE OR REPLACE FUNCTION pyaccess.guard(p_release text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_release IS NULL OR p_release !~ '^[0-9]+(\.[0-9]+)*$'
       OR pg_catalog.string_to_array(pyaccess.release(), '.')::integer[]
          < pg_catalog.string_to_array(p_release, '.')::integer[] THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PA009',
            MESSAGE = pg_catalog.format('this database has the SQL of pyaccess %s; the library needs %s',
                                        pyaccess.release(), p_release),
            HINT = 'run pyaccess migrate';
    END IF;
    IF NOT pyaccess._guarded() THEN
        PERFORM pyaccess.guard_session();
    END IF;
END
$$;
SELECT pyaccess._declare('pyaccess.guard(text)', 'provision_secret_reader,provision_secret_writer,provision_secret_rotator');

-- =====================================================================
-- The key registry and the census
-- =====================================================================

-- Makes a key id active: new, or a retired one brought back. Returns what it did.
CREATE OR REPLACE FUNCTION pyaccess.register_key(p_key_id bytea)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_before text;
BEGIN
    IF p_key_id IS NULL OR pg_catalog.octet_length(p_key_id) <> 8 THEN
        PERFORM pyaccess._fail('register key', 'PA001', NULL, NULL, 'a key id is 8 bytes');
    END IF;
    SELECT k.state INTO v_before FROM pyaccess.keys AS k WHERE k.key_id = p_key_id FOR UPDATE;
    INSERT INTO pyaccess.keys (key_id, state) VALUES (p_key_id, 'active')
    ON CONFLICT (key_id) DO UPDATE SET state = 'active', retired_at = NULL;
    PERFORM pyaccess._audit('register key', 'ok', NULL, p_key_id, COALESCE(v_before, 'new'));
    RETURN CASE v_before WHEN 'active' THEN 'already active' WHEN 'retired' THEN 'reactivated' ELSE 'registered' END;
END
$$;
SELECT pyaccess._declare('pyaccess.register_key(bytea)', 'provision_secret_rotator');

-- Retires an active key id: secrets under it still open, nothing new is sealed under it,
-- and rotation moves what it holds to an active key. Refuses to retire the last active key.
CREATE OR REPLACE FUNCTION pyaccess.retire_key(p_key_id bytea)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    LOCK TABLE pyaccess.keys IN SHARE ROW EXCLUSIVE MODE;
    IF NOT EXISTS (SELECT FROM pyaccess.keys AS k WHERE k.key_id = p_key_id) THEN
        PERFORM pyaccess._fail('retire key', 'PA008', NULL, p_key_id,
            pg_catalog.format('key id %s is not registered', pg_catalog.encode(p_key_id, 'hex')));
    END IF;
    IF NOT EXISTS (SELECT FROM pyaccess.keys AS k WHERE k.state = 'active' AND k.key_id <> p_key_id) THEN
        PERFORM pyaccess._fail('retire key', 'PA008', NULL, p_key_id, pg_catalog.format(
            'refusing to retire key id %s: it is the only active key, and every store would fail',
            pg_catalog.encode(p_key_id, 'hex')), 'register the new key first: pyaccess key register');
    END IF;
    UPDATE pyaccess.keys SET state = 'retired', retired_at = pg_catalog.now()
     WHERE key_id = p_key_id AND state = 'active';
    PERFORM pyaccess._audit('retire key', 'ok', NULL, p_key_id);
END
$$;
SELECT pyaccess._declare('pyaccess.retire_key(bytea)', 'provision_secret_rotator');

-- Every key id that is registered or in use: its envelope version, registry state
-- ('active', 'retired' or 'unregistered') and how many secrets it protects. Ids only.
CREATE OR REPLACE FUNCTION pyaccess.census()
RETURNS TABLE (key_id text, version integer, state text, secrets bigint)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT pg_catalog.encode(COALESCE(e.key_id, k.key_id), 'hex'), e.version,
           COALESCE(k.state, 'unregistered'), COALESCE(e.secrets, 0)
      FROM (SELECT pyaccess._envelope_key_id(g.provision_secret_ciphertext) AS key_id,
                   pyaccess._envelope_version(g.provision_secret_ciphertext) AS version,
                   pg_catalog.count(*) AS secrets
              FROM public.ota_groups AS g
             WHERE g.provision_secret_ciphertext IS NOT NULL
             GROUP BY 1, 2) AS e
      FULL JOIN pyaccess.keys AS k ON k.key_id = e.key_id
     ORDER BY 4 DESC, 1, 2;
END;
SELECT pyaccess._declare('pyaccess.census()', 'provision_secret_reader,provision_secret_writer,provision_secret_rotator');

-- =====================================================================
-- Rotation: the rotating process derives each row's pairs; the plaintext never leaves here
-- =====================================================================

-- Up to p_limit secrets after p_after (in id order) that are not v2 under key id p_key_id,
-- with their version (0: malformed) and key id. No lock: pyaccess.rewrap re-checks each row.
CREATE OR REPLACE FUNCTION pyaccess.rewrap_todo(p_key_id bytea, p_after uuid, p_limit integer)
RETURNS TABLE (group_id uuid, version integer, key_id bytea)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT g.id, COALESCE(pyaccess._envelope_version(g.provision_secret_ciphertext), 0),
           pyaccess._envelope_key_id(g.provision_secret_ciphertext)
      FROM public.ota_groups AS g
     WHERE g.provision_secret_ciphertext IS NOT NULL
       AND pg_catalog.substr(g.provision_secret_ciphertext, 1, 9) <> '\x02'::bytea || p_key_id
       AND g.id > COALESCE(p_after, '00000000-0000-0000-0000-000000000000'::uuid)
     ORDER BY g.id
     LIMIT p_limit;
END;
SELECT pyaccess._declare('pyaccess.rewrap_todo(bytea,uuid,integer)', 'provision_secret_rotator');

-- Raises the error for a row that rotation cannot open: PA006.
CREATE OR REPLACE FUNCTION pyaccess._refuse_rewrap(p_group_id uuid, p_envelope bytea)
RETURNS bytea
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT pyaccess._fail('rotate', 'PA006', p_group_id, pyaccess._envelope_key_id(p_envelope), pg_catalog.format(
        'the provision secret of OTA group %s failed authentication: it was altered or copied from another group',
        p_group_id));
END;
SELECT pyaccess._declare('pyaccess._refuse_rewrap(uuid,bytea)', '');

-- Re-seals, as v2 under the active key p_key_id, the secrets of p_group_ids. For each row:
-- p_old = its envelope's version byte || key id || pair (v1 pair or v2 group pair),
-- p_new = its v2 pair under p_key_id. Rows are locked and re-checked: a row whose version
-- and key id no longer match p_old (stored meanwhile) is left as it is. Returns the rows
-- re-sealed. A row that fails authentication rolls the whole batch back (PA006).
CREATE OR REPLACE FUNCTION pyaccess._rewrap(p_group_ids uuid[], p_old bytea[], p_new bytea[], p_key_id bytea)
RETURNS TABLE (group_id uuid, old_key_id text, old_version integer)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_count bigint;
BEGIN
    IF p_key_id IS NULL OR pg_catalog.octet_length(p_key_id) <> 8
       OR pg_catalog.cardinality(p_group_ids) IS DISTINCT FROM pg_catalog.cardinality(p_old)
       OR pg_catalog.cardinality(p_group_ids) IS DISTINCT FROM pg_catalog.cardinality(p_new)
       OR EXISTS (SELECT FROM ROWS FROM (pg_catalog.unnest(p_old), pg_catalog.unnest(p_new)) AS i(o, n)
                   WHERE pg_catalog.octet_length(o) IS DISTINCT FROM 73 OR pg_catalog.octet_length(n) IS DISTINCT FROM 64) THEN
        PERFORM pyaccess._fail('rotate', 'PA001', NULL, p_key_id,
            'rewrap takes, per group, a 73-byte old entry and a 64-byte new pair, and an 8-byte key id');
    END IF;
    IF NOT EXISTS (SELECT FROM pyaccess.keys AS k WHERE k.key_id = p_key_id AND k.state = 'active') THEN
        PERFORM pyaccess._fail('rotate', 'PA008', NULL, p_key_id, pg_catalog.format(
            'refusing to rotate to key id %s: rotation targets only an active key', pg_catalog.encode(p_key_id, 'hex')),
            'register it first: pyaccess key register');
    END IF;
    RETURN QUERY
    WITH todo AS (
        SELECT g.id, g.provision_secret_ciphertext AS envelope, i.old, i.new
          FROM public.ota_groups AS g
          JOIN ROWS FROM (pg_catalog.unnest(p_group_ids), pg_catalog.unnest(p_old), pg_catalog.unnest(p_new))
               AS i(gid, old, new) ON g.id = i.gid
         WHERE pg_catalog.substr(g.provision_secret_ciphertext, 1, 9) = pg_catalog.substr(i.old, 1, 9)
         ORDER BY g.id
           FOR UPDATE OF g
    ), opened AS (
        SELECT todo.id, todo.envelope, todo.new, pyaccess._random_iv() AS iv,
               CASE WHEN pyaccess._envelope_version(todo.envelope) IS NOT NULL
                         AND pyaccess._authentic(todo.id, todo.envelope, pg_catalog.substr(todo.old, 10, 64))
                    THEN pyaccess._plaintext(todo.envelope, pg_catalog.substr(todo.old, 10, 64))
                    ELSE pyaccess._refuse_rewrap(todo.id, todo.envelope)
               END AS plaintext
          FROM todo
    ), sealed AS MATERIALIZED (  -- (else each row's body, and its encryption, is computed twice below)
        SELECT opened.id, opened.envelope, opened.new,
               pyaccess._body(2, p_key_id, opened.new, opened.iv, opened.plaintext) AS body
          FROM opened
    ), done AS (
        UPDATE public.ota_groups AS g
           SET provision_secret_ciphertext = sealed.body || pyaccess._tag(g.id, sealed.body, sealed.new)
          FROM sealed
         WHERE g.id = sealed.id
        RETURNING g.id AS gid, pg_catalog.encode(pyaccess._envelope_key_id(sealed.envelope), 'hex') AS kid,
                  pg_catalog.get_byte(sealed.envelope, 0) AS ver
    )
    SELECT done.gid, done.kid, done.ver FROM done ORDER BY done.gid;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    PERFORM pyaccess._audit('rotate', 'ok', NULL, p_key_id, pg_catalog.format('%s secret(s) re-sealed', v_count));
END
$$;
SELECT pyaccess._declare('pyaccess._rewrap(uuid[],bytea[],bytea[],bytea)', '');

-- The rotator's re-seal: pyaccess._rewrap on a guarded session. Errors: PA001 PA006 PA007 PA008.
CREATE OR REPLACE FUNCTION pyaccess.rewrap(p_group_ids uuid[], p_old bytea[], p_new bytea[], p_key_id bytea)
RETURNS TABLE (group_id uuid, old_key_id text, old_version integer)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT pyaccess._guarded() THEN
        PERFORM pyaccess._refuse_unguarded();
    END IF;
    RETURN QUERY SELECT r.group_id, r.old_key_id, r.old_version FROM pyaccess._rewrap(p_group_ids, p_old, p_new, p_key_id) AS r;
END
$$;
SELECT pyaccess._declare('pyaccess.rewrap(uuid[],bytea[],bytea[],bytea)', 'provision_secret_rotator');
