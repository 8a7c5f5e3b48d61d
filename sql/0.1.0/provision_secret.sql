-- pyaccess: provision secrets encrypted at rest with pgcrypto.
--
-- The single source of every pyaccess function. The migrations install this
-- file (migrations/0005_provision_secret_functions.py) after replacing
-- @extschema@ with the schema that holds pgcrypto, as PostgreSQL's own
-- extension scripts do. Every statement is idempotent.
--
-- Envelope format, version 1 (column ota_groups.provision_secret_ciphertext):
--
--   byte  1        format version, 0x01
--   bytes 2..9     key id: HMAC-SHA256(key, 'pyaccess key id'), first 8 bytes
--   bytes 10..25   IV, 16 fresh random bytes per encryption
--   bytes 26..n-32 AES-256-CBC (PKCS#7 padding) of the UTF-8 secret
--   bytes n-31..n  tag: HMAC-SHA256(mac key, group id (16 bytes) || bytes 1..n-32)
--
-- enc key || mac key = HMAC-SHA512(key, 'pyaccess v1 keys'): the key is 256
-- random bits already, so one HMAC separates the two keys without stretching.
-- The tag binds the ciphertext to its group: copied to another row it fails.

-- =====================================================================
-- Private helpers (no EXECUTE for anyone but the owner)
--
-- The envelope's arithmetic is written once, in single-expression SQL
-- functions with SQL-standard bodies: their names are resolved when they
-- are created (no search_path is consulted at run time), and PostgreSQL
-- inlines them into the calling statement, so they cost nothing per call.
-- A SET clause would prevent the inlining; it is not needed either.
-- The plpgsql functions all pin search_path.
-- =====================================================================

-- The id of a key: the first 8 bytes of HMAC-SHA256(key, 'pyaccess key id').
CREATE OR REPLACE FUNCTION public._provision_secret_key_id(p_key bytea)
RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN pg_catalog.substr(@extschema@.hmac('pyaccess key id'::bytea, p_key, 'sha256'), 1, 8);

-- enc key (bytes 1..32) || mac key (bytes 33..64) of a key.
CREATE OR REPLACE FUNCTION public._provision_secret_subkeys(p_key bytea)
RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN @extschema@.hmac('pyaccess v1 keys'::bytea, p_key, 'sha512');

-- version || key id || IV || AES-256-CBC(plaintext): the envelope without its tag.
CREATE OR REPLACE FUNCTION public._provision_secret_body(
    p_key_id bytea, p_subkeys bytea, p_iv bytea, p_plaintext bytea)
RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN pg_catalog.decode('01', 'hex') || p_key_id || p_iv
       || @extschema@.encrypt_iv(p_plaintext, pg_catalog.substr(p_subkeys, 1, 32), p_iv, 'aes-cbc/pad:pkcs');

-- The tag of an envelope body for its group: this is what binds it to the row.
CREATE OR REPLACE FUNCTION public._provision_secret_tag(p_group_id uuid, p_body bytea, p_subkeys bytea)
RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN @extschema@.hmac(pg_catalog.uuid_send(p_group_id) || p_body, pg_catalog.substr(p_subkeys, 33, 32), 'sha256');

-- Whether an envelope has the length and version of format 1.
CREATE OR REPLACE FUNCTION public._provision_secret_well_formed(p_envelope bytea)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN pg_catalog.octet_length(p_envelope) >= 73
       AND (pg_catalog.octet_length(p_envelope) - 57) % 16 = 0
       AND pg_catalog.get_byte(p_envelope, 0) = 1;

-- Whether a (well-formed) envelope carries the right tag for its group.
CREATE OR REPLACE FUNCTION public._provision_secret_authentic(p_group_id uuid, p_envelope bytea, p_subkeys bytea)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN public._provision_secret_tag(
           p_group_id, pg_catalog.substr(p_envelope, 1, pg_catalog.octet_length(p_envelope) - 32), p_subkeys)
       = pg_catalog.substr(p_envelope, pg_catalog.octet_length(p_envelope) - 31, 32);

-- The plaintext bytes of an authentic envelope.
CREATE OR REPLACE FUNCTION public._provision_secret_plaintext(p_envelope bytea, p_subkeys bytea)
RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN @extschema@.decrypt_iv(pg_catalog.substr(p_envelope, 26, pg_catalog.octet_length(p_envelope) - 57),
                              pg_catalog.substr(p_subkeys, 1, 32),
                              pg_catalog.substr(p_envelope, 10, 16), 'aes-cbc/pad:pkcs');

-- Raises PA001 unless p_keys is a one-dimensional array from index 1 with at
-- least one key, and every key is 32 bytes.
CREATE OR REPLACE FUNCTION public._provision_secret_check_keys(p_keys bytea[])
RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_key bytea;
BEGIN
    IF p_keys IS NULL OR pg_catalog.cardinality(p_keys) = 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'PA001', MESSAGE = 'no key given';
    END IF;
    IF pg_catalog.array_ndims(p_keys) <> 1 OR pg_catalog.array_lower(p_keys, 1) <> 1 THEN
        RAISE EXCEPTION USING ERRCODE = 'PA001', MESSAGE = 'the keys must be a one-dimensional array starting at 1';
    END IF;
    FOREACH v_key IN ARRAY p_keys LOOP
        IF v_key IS NULL OR pg_catalog.octet_length(v_key) <> 32 THEN
            RAISE EXCEPTION USING
                ERRCODE = 'PA001',
                MESSAGE = 'a key must be exactly 32 bytes',
                HINT = 'pass the 256-bit key as raw bytes (bytea), not as hex text';
        END IF;
    END LOOP;
END
$$;

-- Raises the error for an envelope that cannot be opened with p_keys: PA006
-- when malformed, PA005 when no key of p_keys sealed it, else PA006 (its tag
-- is wrong). Called only on those paths; returns nothing ever.
CREATE OR REPLACE FUNCTION public._provision_secret_refuse(p_group_id uuid, p_envelope bytea, p_keys bytea[])
RETURNS bytea
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_ids text[];
BEGIN
    IF NOT public._provision_secret_well_formed(p_envelope) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PA006',
            MESSAGE = pg_catalog.format(
                'the provision secret of OTA group %s is malformed or of an unknown format', p_group_id);
    END IF;
    SELECT pg_catalog.array_agg(pg_catalog.encode(public._provision_secret_key_id(k), 'hex'))
      INTO v_ids
      FROM pg_catalog.unnest(p_keys) AS k;
    IF NOT pg_catalog.encode(pg_catalog.substr(p_envelope, 2, 8), 'hex') = ANY (v_ids) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PA005',
            MESSAGE = pg_catalog.format(
                'the provision secret of OTA group %s was encrypted under key id %s, not under the given key ids %s',
                p_group_id, pg_catalog.encode(pg_catalog.substr(p_envelope, 2, 8), 'hex'),
                pg_catalog.array_to_string(v_ids, ', ')),
            HINT = 'add the key with that id to previous_keys in the key file';
    END IF;
    RAISE EXCEPTION USING
        ERRCODE = 'PA006',
        MESSAGE = pg_catalog.format(
            'the provision secret of OTA group %s failed authentication: it was altered or copied from another group',
            p_group_id);
END
$$;

-- The settings that would make the server write this session's bound
-- parameters (the key, the secret) to its log. Empty when none would.
-- SECURITY INVOKER: it reads the settings of the calling session.
CREATE OR REPLACE FUNCTION public.provision_secret_log_exposure()
RETURNS text[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_reasons text[] := '{}';
BEGIN
    IF pg_catalog.current_setting('log_parameter_max_length')::integer <> 0 THEN
        IF pg_catalog.current_setting('log_statement') = 'all' THEN
            v_reasons := v_reasons || 'log_statement = all'::text;
        END IF;
        IF pg_catalog.current_setting('log_min_duration_statement')::integer >= 0 THEN
            v_reasons := v_reasons || 'log_min_duration_statement >= 0'::text;
        END IF;
        IF pg_catalog.current_setting('log_min_duration_sample')::integer >= 0
           AND pg_catalog.current_setting('log_statement_sample_rate')::float8 > 0 THEN
            v_reasons := v_reasons || 'log_min_duration_sample >= 0'::text;
        END IF;
        IF pg_catalog.current_setting('log_transaction_sample_rate')::float8 > 0 THEN
            v_reasons := v_reasons || 'log_transaction_sample_rate > 0'::text;
        END IF;
        IF pg_catalog.cardinality(v_reasons) > 0 THEN
            v_reasons := v_reasons || 'log_parameter_max_length <> 0'::text;
        END IF;
    END IF;
    IF pg_catalog.current_setting('log_parameter_max_length_on_error')::integer <> 0 THEN
        v_reasons := v_reasons || 'log_parameter_max_length_on_error <> 0'::text;
    END IF;
    IF pg_catalog.current_setting('pgaudit.log_parameter', true) = 'on'
       AND COALESCE(pg_catalog.current_setting('pgaudit.log', true), 'none') <> 'none' THEN
        v_reasons := v_reasons || 'pgaudit.log_parameter = on'::text;
    END IF;
    RETURN v_reasons;
END
$$;

-- =====================================================================
-- The service API
-- =====================================================================

-- Sets or replaces the provision secret of OTA group group_id, encrypted
-- under key with a fresh IV. PA001 bad key, PA002 bad secret, PA003 no group.
CREATE OR REPLACE FUNCTION public.store_provision_secret(group_id uuid, secret text, key bytea)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p_group_id ALIAS FOR $1;
    p_secret   ALIAS FOR $2;
    p_key      ALIAS FOR $3;
    v_plaintext bytea := pg_catalog.convert_to(p_secret, 'UTF8');
    v_iv        bytea := @extschema@.gen_random_bytes(16);
    v_subkeys   bytea;
    v_body      bytea;
BEGIN
    PERFORM public._provision_secret_check_keys(ARRAY[p_key]);
    IF v_plaintext IS NULL OR pg_catalog.octet_length(v_plaintext) NOT BETWEEN 1 AND 4096 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PA002',
            MESSAGE = pg_catalog.format(
                'the provision secret for OTA group %s must be 1 to 4096 bytes of UTF-8 text', p_group_id);
    END IF;
    v_subkeys := public._provision_secret_subkeys(p_key);
    -- (a volatile argument would keep _provision_secret_body from being inlined: hence v_iv)
    v_body := public._provision_secret_body(public._provision_secret_key_id(p_key), v_subkeys, v_iv, v_plaintext);
    UPDATE public.ota_groups
       SET provision_secret_ciphertext = v_body || public._provision_secret_tag(p_group_id, v_body, v_subkeys)
     WHERE id = p_group_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PA003',
            MESSAGE = pg_catalog.format('no OTA group with id %s', p_group_id);
    END IF;
END
$$;

-- Returns the provision secret of OTA group group_id, sealed under any key
-- of keys (a key ring: the current key and the previous ones), picked by the
-- stored key id. PA001 bad key, PA003 no group, PA004 no secret, PA005 key
-- not given, PA006 altered, truncated or moved ciphertext.
CREATE OR REPLACE FUNCTION public.get_provision_secret(group_id uuid, keys bytea[])
RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p_group_id ALIAS FOR $1;
    p_keys     ALIAS FOR $2;
    v_envelope bytea;
    v_key      bytea;
    v_subkeys  bytea;
BEGIN
    PERFORM public._provision_secret_check_keys(p_keys);
    SELECT g.provision_secret_ciphertext INTO v_envelope
      FROM public.ota_groups AS g
     WHERE g.id = p_group_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PA003',
            MESSAGE = pg_catalog.format('no OTA group with id %s', p_group_id);
    END IF;
    IF v_envelope IS NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PA004',
            MESSAGE = pg_catalog.format('OTA group %s has no provision secret stored', p_group_id);
    END IF;
    IF public._provision_secret_well_formed(v_envelope) THEN
        FOREACH v_key IN ARRAY p_keys LOOP
            IF public._provision_secret_key_id(v_key) = pg_catalog.substr(v_envelope, 2, 8) THEN
                v_subkeys := public._provision_secret_subkeys(v_key);
                EXIT;
            END IF;
        END LOOP;
    END IF;
    IF v_subkeys IS NULL OR NOT public._provision_secret_authentic(p_group_id, v_envelope, v_subkeys) THEN
        PERFORM public._provision_secret_refuse(p_group_id, v_envelope, p_keys);
    END IF;
    RETURN pg_catalog.convert_from(public._provision_secret_plaintext(v_envelope, v_subkeys), 'UTF8');
END
$$;

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

-- The key ids in use and how many secrets each protects. Ids only: an id
-- reveals nothing about its key.
CREATE OR REPLACE FUNCTION public.provision_secret_key_census()
RETURNS TABLE (key_id text, secrets bigint)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.encode(pg_catalog.substr(g.provision_secret_ciphertext, 2, 8), 'hex'),
           pg_catalog.count(*)
      FROM public.ota_groups AS g
     WHERE g.provision_secret_ciphertext IS NOT NULL
     GROUP BY 1
     ORDER BY 2 DESC, 1
$$;

-- The id of a key, as stored in envelopes and shown by the census.
CREATE OR REPLACE FUNCTION public.provision_secret_key_id(key bytea)
RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM public._provision_secret_check_keys(ARRAY[$1]);
    RETURN pg_catalog.encode(public._provision_secret_key_id($1), 'hex');
END
$$;

-- Re-encrypts under keys[1] up to batch_size secrets that are under another
-- key of keys, taking them in id order after after_group_id, and returns
-- each group re-encrypted with the id of its old key. Rows are locked, so a
-- secret stored concurrently is never overwritten by a stale re-encryption.
-- The plaintext never leaves the server. The ring's key ids and subkeys are
-- derived once per batch, not per row. PA005 for a secret under a key not
-- in keys, PA006 for one that fails authentication (the batch then rolls
-- back as a whole).
CREATE OR REPLACE FUNCTION public.rewrap_provision_secrets(
    keys bytea[], after_group_id uuid DEFAULT NULL, batch_size integer DEFAULT 1000)
RETURNS TABLE (group_id uuid, old_key_id text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p_keys  ALIAS FOR $1;
    p_after ALIAS FOR $2;
    p_limit ALIAS FOR $3;
    v_ids     bytea[];
    v_subkeys bytea[];
BEGIN
    PERFORM public._provision_secret_check_keys(p_keys);
    IF p_limit IS NULL OR p_limit < 1 THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'batch_size must be at least 1';
    END IF;
    SELECT pg_catalog.array_agg(public._provision_secret_key_id(k) ORDER BY n),
           pg_catalog.array_agg(public._provision_secret_subkeys(k) ORDER BY n)
      INTO v_ids, v_subkeys
      FROM pg_catalog.unnest(p_keys) WITH ORDINALITY AS r(k, n);
    RETURN QUERY
    WITH todo AS (
        SELECT g.id, g.provision_secret_ciphertext AS envelope,
               v_subkeys[pg_catalog.array_position(v_ids, pg_catalog.substr(g.provision_secret_ciphertext, 2, 8))]
                   AS subkeys
          FROM public.ota_groups AS g
         WHERE g.provision_secret_ciphertext IS NOT NULL
           AND pg_catalog.substr(g.provision_secret_ciphertext, 2, 8) <> v_ids[1]
           AND g.id > COALESCE(p_after, '00000000-0000-0000-0000-000000000000'::uuid)
         ORDER BY g.id
         LIMIT p_limit
           FOR UPDATE
    ), opened AS (
        SELECT todo.id, todo.envelope, @extschema@.gen_random_bytes(16) AS iv,
               CASE WHEN todo.subkeys IS NOT NULL
                         AND public._provision_secret_well_formed(todo.envelope)
                         AND public._provision_secret_authentic(todo.id, todo.envelope, todo.subkeys)
                    THEN public._provision_secret_plaintext(todo.envelope, todo.subkeys)
                    ELSE public._provision_secret_refuse(todo.id, todo.envelope, p_keys)
               END AS plaintext
          FROM todo
    ), sealed AS (
        SELECT opened.id, opened.envelope,
               public._provision_secret_body(v_ids[1], v_subkeys[1], opened.iv, opened.plaintext) AS body
          FROM opened
    ), done AS (
        UPDATE public.ota_groups AS g
           SET provision_secret_ciphertext = sealed.body || public._provision_secret_tag(g.id, sealed.body, v_subkeys[1])
          FROM sealed
         WHERE g.id = sealed.id
        RETURNING g.id AS gid, pg_catalog.encode(pg_catalog.substr(sealed.envelope, 2, 8), 'hex') AS kid
    )
    SELECT done.gid, done.kid FROM done ORDER BY done.gid;
END
$$;

-- Turns off the logging of bound parameters for this session where the
-- caller may (see GRANT SET ON PARAMETER in the migrations), then raises
-- PA007 if the server would still log them. Run once per session before
-- a key is sent; SECURITY INVOKER on purpose: it changes only the caller's
-- own session, with the caller's own rights.
CREATE OR REPLACE FUNCTION public.provision_secret_session_guard()
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_setting text;
    v_reasons text[];
BEGIN
    FOREACH v_setting IN ARRAY ARRAY['log_parameter_max_length', 'log_parameter_max_length_on_error'] LOOP
        IF pg_catalog.current_setting(v_setting)::integer <> 0
           AND pg_catalog.has_parameter_privilege(v_setting, 'SET') THEN
            PERFORM pg_catalog.set_config(v_setting, '0', false);
        END IF;
    END LOOP;
    v_reasons := public.provision_secret_log_exposure();
    IF pg_catalog.cardinality(v_reasons) > 0 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PA007',
            MESSAGE = 'the server would write the key to its log: '
                      || pg_catalog.array_to_string(v_reasons, ', '),
            HINT = 'GRANT SET ON PARAMETER log_parameter_max_length, log_parameter_max_length_on_error '
                   'to provision_secret_reader and provision_secret_writer, or set them to 0 for this role';
    END IF;
END
$$;

-- =====================================================================
-- Privileges: nothing for PUBLIC, each role exactly its function
-- =====================================================================

REVOKE ALL ON FUNCTION public._provision_secret_key_id(bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION public._provision_secret_subkeys(bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION public._provision_secret_body(bytea, bytea, bytea, bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION public._provision_secret_tag(uuid, bytea, bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION public._provision_secret_well_formed(bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION public._provision_secret_authentic(uuid, bytea, bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION public._provision_secret_plaintext(bytea, bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION public._provision_secret_check_keys(bytea[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION public._provision_secret_refuse(uuid, bytea, bytea[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION public.store_provision_secret(uuid, text, bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION public.get_provision_secret(uuid, bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION public.get_provision_secret(uuid, bytea[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION public.provision_secret_key_census() FROM PUBLIC;
REVOKE ALL ON FUNCTION public.provision_secret_key_id(bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION public.rewrap_provision_secrets(bytea[], uuid, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION public.provision_secret_session_guard() FROM PUBLIC;
REVOKE ALL ON FUNCTION public.provision_secret_log_exposure() FROM PUBLIC;

GRANT EXECUTE ON FUNCTION public.store_provision_secret(uuid, text, bytea) TO provision_secret_writer;
GRANT EXECUTE ON FUNCTION public.rewrap_provision_secrets(bytea[], uuid, integer) TO provision_secret_writer;
GRANT EXECUTE ON FUNCTION public.get_provision_secret(uuid, bytea) TO provision_secret_reader;
GRANT EXECUTE ON FUNCTION public.get_provision_secret(uuid, bytea[]) TO provision_secret_reader;
GRANT EXECUTE ON FUNCTION public.provision_secret_key_census() TO provision_secret_reader, provision_secret_writer;
GRANT EXECUTE ON FUNCTION public.provision_secret_key_id(bytea) TO provision_secret_reader, provision_secret_writer;
GRANT EXECUTE ON FUNCTION public.provision_secret_session_guard() TO provision_secret_reader, provision_secret_writer;
GRANT EXECUTE ON FUNCTION public.provision_secret_log_exposure() TO provision_secret_reader, provision_secret_writer;
