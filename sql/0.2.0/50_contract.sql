-- pyaccess 0.2.0, part 50: the contract's functions in public, which take master keys.
--
-- For DBAs in psql, SQL-level tests, and pods of 0.1.0 during a rollout. They hand the
-- master key to the server: whatever sees this call's values (a log, an extension, a
-- backend's memory) sees the key that opens every secret. The service path never uses them.
-- They produce and read the same envelopes as the service, deriving the pairs in SQL.

-- Raises PA001 unless p_keys is a one-dimensional array from index 1 of 32-byte keys.
CREATE OR REPLACE FUNCTION pyaccess._check_masters(p_keys bytea[])
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_keys IS NULL OR pg_catalog.cardinality(p_keys) = 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'PA001', MESSAGE = 'no key given';
    END IF;
    IF pg_catalog.array_ndims(p_keys) <> 1 OR pg_catalog.array_lower(p_keys, 1) <> 1 THEN
        RAISE EXCEPTION USING ERRCODE = 'PA001', MESSAGE = 'the keys must be a one-dimensional array starting at 1';
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.unnest(p_keys) AS k WHERE k IS NULL OR pg_catalog.octet_length(k) <> 32) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PA001',
            MESSAGE = 'a key must be exactly 32 bytes',
            HINT = 'pass the 256-bit key as raw bytes (bytea), not as hex text';
    END IF;
END
$$;
SELECT pyaccess._declare('pyaccess._check_masters(bytea[])', '');

-- Raises PA003 for a NULL group id (no group has it), before any key is derived for it.
CREATE OR REPLACE FUNCTION pyaccess._check_group_id(p_group_id uuid)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_group_id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'PA003', MESSAGE = 'no OTA group with id NULL';
    END IF;
END
$$;
SELECT pyaccess._declare('pyaccess._check_group_id(uuid)', '');

-- p_plaintext as text in the database's encoding; PA002 (without the bytes, which PostgreSQL's own
-- message would quote) when it cannot hold it or it is not UTF-8.
CREATE OR REPLACE FUNCTION pyaccess._as_text(p_group_id uuid, p_plaintext bytea)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN pg_catalog.convert_from(p_plaintext, 'UTF8');
EXCEPTION WHEN untranslatable_character OR character_not_in_repertoire THEN
    RAISE EXCEPTION USING
        ERRCODE = 'PA002',
        MESSAGE = pg_catalog.format('the provision secret of OTA group %s cannot be shown as text in this '
                                    'database''s encoding %s', p_group_id, pg_catalog.getdatabaseencoding()),
        HINT = 'read it with the pyaccess library, which takes it as UTF-8 bytes';
END
$$;
SELECT pyaccess._declare('pyaccess._as_text(uuid,bytea)', '');

-- Sets or replaces the provision secret of OTA group group_id, sealed (envelope v2) under
-- key with a fresh IV. PA001 bad key, PA002 bad secret, PA003 no group, PA008 key not active.
CREATE OR REPLACE FUNCTION public.store_provision_secret(group_id uuid, secret text, key bytea)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM pyaccess._check_masters(ARRAY[$3]);
    PERFORM pyaccess._check_group_id($1);
    -- This call's values reached the server already (see get_provision_secret below).
    PERFORM pg_catalog.set_config('pyaccess.guarded', pyaccess._guard_token(), true);
    PERFORM pyaccess.seal($1, pg_catalog.convert_to($2, 'UTF8'), pyaccess._ring(2, ARRAY[$3], $1));
END
$$;
SELECT pyaccess._declare('public.store_provision_secret(uuid,text,bytea)', 'provision_secret_writer');

-- Returns the provision secret of OTA group group_id, sealed under any key of keys (a key
-- ring: the current key and the previous ones), envelope v1 or v2. PA001 bad key, PA003 no
-- group, PA004 no secret, PA005 key not given, PA006 altered, truncated or moved ciphertext.
CREATE OR REPLACE FUNCTION public.get_provision_secret(group_id uuid, keys bytea[])
RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_version integer := 2;
    v_found   integer;
    v_secret  bytea;
BEGIN
    PERFORM pyaccess._check_masters($2);
    PERFORM pyaccess._check_group_id($1);
    -- This call's values reached the server already: the service's session guard has nothing
    -- left to protect here. Marked for this function only (its SET clause restores it on exit).
    PERFORM pg_catalog.set_config('pyaccess.guarded', pyaccess._guard_token(), true);
    FOR attempt IN 1..3 LOOP  -- the envelope's version can change between two reads (a rotation)
        SELECT o.version, o.secret INTO v_found, v_secret
          FROM pyaccess.open($1, pyaccess._ring(v_version, $2, $1), v_version) AS o;
        IF NOT FOUND THEN
            PERFORM pyaccess.refuse_missing_group($1);  -- raises, unless the group was created since
            CONTINUE;
        END IF;
        IF v_secret IS NOT NULL THEN
            RETURN pyaccess._as_text($1, v_secret);
        END IF;
        v_version := v_found;
    END LOOP;
    RAISE EXCEPTION USING ERRCODE = '40001', MESSAGE = 'the envelope kept changing while it was read; try again';
END
$$;
SELECT pyaccess._declare('public.get_provision_secret(uuid,bytea[])', 'provision_secret_reader');

-- Returns the provision secret of OTA group group_id, sealed under key.
CREATE OR REPLACE FUNCTION public.get_provision_secret(group_id uuid, key bytea)
RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN public.get_provision_secret($1, ARRAY[$2]);
END
$$;
SELECT pyaccess._declare('public.get_provision_secret(uuid,bytea)', 'provision_secret_reader');

-- The id of a key, as stored in envelopes and shown by the census.
CREATE OR REPLACE FUNCTION public.provision_secret_key_id(key bytea)
RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM pyaccess._check_masters(ARRAY[$1]);
    RETURN pg_catalog.encode(pyaccess._key_id($1), 'hex');
END
$$;
SELECT pyaccess._declare('public.provision_secret_key_id(bytea)', 'provision_secret_reader,provision_secret_writer,provision_secret_rotator');

-- 0.1.0's census: key ids in use and how many secrets each protects (any envelope version).
CREATE OR REPLACE FUNCTION public.provision_secret_key_census()
RETURNS TABLE (key_id text, secrets bigint)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT pg_catalog.encode(pyaccess._envelope_key_id(g.provision_secret_ciphertext), 'hex'), pg_catalog.count(*)
      FROM public.ota_groups AS g
     WHERE g.provision_secret_ciphertext IS NOT NULL
     GROUP BY 1
     ORDER BY 2 DESC, 1;
END;
SELECT pyaccess._declare('public.provision_secret_key_census()', 'provision_secret_reader,provision_secret_writer,provision_secret_rotator');

-- 0.1.0's rotation, for the rotator in psql: re-seals (v2, under keys[1], which must be
-- active) up to batch_size secrets after after_group_id that are not v2 under keys[1].
-- PA005 for a secret under a key not in keys; PA006 for one that fails authentication.
CREATE OR REPLACE FUNCTION public.rewrap_provision_secrets(
    keys bytea[], after_group_id uuid DEFAULT NULL, batch_size integer DEFAULT 1000)
RETURNS TABLE (group_id uuid, old_key_id text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_ids     bytea[];
    v_missing uuid;
    v_key_id  bytea;
BEGIN
    PERFORM pyaccess._check_masters($1);
    IF $3 IS NULL OR $3 < 1 THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'batch_size must be at least 1';
    END IF;
    SELECT pg_catalog.array_agg(pyaccess._key_id(k) ORDER BY n) INTO v_ids
      FROM pg_catalog.unnest($1) WITH ORDINALITY AS r(k, n);
    SELECT t.group_id INTO v_missing FROM pyaccess.rewrap_todo(v_ids[1], $2, $3) AS t WHERE t.version = 0 LIMIT 1;
    IF v_missing IS NOT NULL THEN
        PERFORM pyaccess._fail('rotate', 'PA006', v_missing, NULL, pg_catalog.format(
            'the provision secret of OTA group %s is malformed or of an unknown format', v_missing));
    END IF;
    SELECT t.group_id, t.key_id INTO v_missing, v_key_id
      FROM pyaccess.rewrap_todo(v_ids[1], $2, $3) AS t
     WHERE t.key_id <> ALL (v_ids)
     LIMIT 1;
    IF v_missing IS NOT NULL THEN
        PERFORM pyaccess._fail('rotate', 'PA005', v_missing, v_key_id, pg_catalog.format(
            'the provision secret of OTA group %s was encrypted under key id %s, not under the given key ids %s',
            v_missing, pg_catalog.encode(v_key_id, 'hex'),
            (SELECT pg_catalog.string_agg(pg_catalog.encode(i, 'hex'), ', ') FROM pg_catalog.unnest(v_ids) AS i)));
    END IF;
    RETURN QUERY
    SELECT r.group_id, r.old_key_id
      FROM pyaccess._rewrap(
               ARRAY(SELECT t.group_id FROM pyaccess.rewrap_todo(v_ids[1], $2, $3) AS t ORDER BY t.group_id),
               ARRAY(SELECT pg_catalog.set_byte('\x00'::bytea, 0, t.version) || t.key_id
                            || pyaccess._pair(t.version, $1[pg_catalog.array_position(v_ids, t.key_id)], t.group_id)
                       FROM pyaccess.rewrap_todo(v_ids[1], $2, $3) AS t ORDER BY t.group_id),
               ARRAY(SELECT pyaccess._pair(2, $1[1], t.group_id)
                       FROM pyaccess.rewrap_todo(v_ids[1], $2, $3) AS t ORDER BY t.group_id),
               v_ids[1]) AS r;
END
$$;
SELECT pyaccess._declare('public.rewrap_provision_secrets(bytea[],uuid,integer)', 'provision_secret_rotator');
