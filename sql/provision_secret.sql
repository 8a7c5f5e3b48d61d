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
-- =====================================================================

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

-- The id of a (checked) key: the first 8 bytes of HMAC-SHA256(key, 'pyaccess key id').
CREATE OR REPLACE FUNCTION public._provision_secret_key_id(p_key bytea)
RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT pg_catalog.substr(@extschema@.hmac('pyaccess key id'::bytea, p_key, 'sha256'), 1, 8) $$;

-- Seals p_plaintext for group p_group_id under p_key, whose id is p_key_id.
CREATE OR REPLACE FUNCTION public._provision_secret_seal(
    p_group_id uuid, p_plaintext bytea, p_key bytea, p_key_id bytea)
RETURNS bytea
LANGUAGE plpgsql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_keys bytea := @extschema@.hmac('pyaccess v1 keys'::bytea, p_key, 'sha512');
    v_iv   bytea := @extschema@.gen_random_bytes(16);
    v_body bytea;
BEGIN
    v_body := pg_catalog.decode('01', 'hex') || p_key_id || v_iv
        || @extschema@.encrypt_iv(p_plaintext, pg_catalog.substr(v_keys, 1, 32), v_iv, 'aes-cbc/pad:pkcs');
    RETURN v_body || @extschema@.hmac(pg_catalog.uuid_send(p_group_id) || v_body,
                                      pg_catalog.substr(v_keys, 33, 32), 'sha256');
END
$$;

-- Opens the envelope of group p_group_id with whichever key of p_keys
-- (checked) sealed it: PA005 when none did, PA006 when the envelope is malformed,
-- altered or belongs to another group. Returns the plaintext bytes.
CREATE OR REPLACE FUNCTION public._provision_secret_open(
    p_group_id uuid, p_envelope bytea, p_keys bytea[])
RETURNS bytea
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_len     integer := pg_catalog.octet_length(p_envelope);
    v_key_id  bytea;
    v_key     bytea;
    v_id      bytea;
    v_ring    text[] := '{}';
    v_keys    bytea;
BEGIN
    IF v_len < 73 OR (v_len - 57) % 16 <> 0 OR pg_catalog.get_byte(p_envelope, 0) <> 1 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PA006',
            MESSAGE = pg_catalog.format(
                'the provision secret of OTA group %s is malformed or of an unknown format', p_group_id);
    END IF;
    v_key_id := pg_catalog.substr(p_envelope, 2, 8);
    FOREACH v_key IN ARRAY p_keys LOOP
        v_id := public._provision_secret_key_id(v_key);
        IF v_id = v_key_id THEN
            v_keys := @extschema@.hmac('pyaccess v1 keys'::bytea, v_key, 'sha512');
            EXIT;
        END IF;
        v_ring := v_ring || pg_catalog.encode(v_id, 'hex');
    END LOOP;
    IF v_keys IS NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PA005',
            MESSAGE = pg_catalog.format(
                'the provision secret of OTA group %s was encrypted under key id %s, not under the given key ids %s',
                p_group_id, pg_catalog.encode(v_key_id, 'hex'), pg_catalog.array_to_string(v_ring, ', ')),
            HINT = 'add the key with that id to previous_keys in the key file';
    END IF;
    IF @extschema@.hmac(pg_catalog.uuid_send(p_group_id) || pg_catalog.substr(p_envelope, 1, v_len - 32),
                        pg_catalog.substr(v_keys, 33, 32), 'sha256')
       <> pg_catalog.substr(p_envelope, v_len - 31, 32) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PA006',
            MESSAGE = pg_catalog.format(
                'the provision secret of OTA group %s failed authentication: it was altered or copied from another group',
                p_group_id);
    END IF;
    RETURN @extschema@.decrypt_iv(pg_catalog.substr(p_envelope, 26, v_len - 57),
                                  pg_catalog.substr(v_keys, 1, 32),
                                  pg_catalog.substr(p_envelope, 10, 16), 'aes-cbc/pad:pkcs');
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
    v_key_id    bytea;
    v_plaintext bytea := pg_catalog.convert_to(p_secret, 'UTF8');
BEGIN
    PERFORM public._provision_secret_check_keys(ARRAY[p_key]);
    v_key_id := public._provision_secret_key_id(p_key);
    IF v_plaintext IS NULL OR pg_catalog.octet_length(v_plaintext) NOT BETWEEN 1 AND 4096 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PA002',
            MESSAGE = pg_catalog.format(
                'the provision secret for OTA group %s must be 1 to 4096 bytes of UTF-8 text', p_group_id);
    END IF;
    UPDATE public.ota_groups
       SET provision_secret_ciphertext = public._provision_secret_seal(p_group_id, v_plaintext, p_key, v_key_id)
     WHERE id = p_group_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PA003',
            MESSAGE = pg_catalog.format('no OTA group with id %s', p_group_id);
    END IF;
END
$$;

-- Returns the provision secret of OTA group group_id, sealed under any key
-- of keys (a key ring: the current key and the previous ones).
-- PA001 bad key, PA003 no group, PA004 no secret, PA005 key not given,
-- PA006 altered or moved ciphertext.
CREATE OR REPLACE FUNCTION public.get_provision_secret(group_id uuid, keys bytea[])
RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p_group_id ALIAS FOR $1;
    p_keys     ALIAS FOR $2;
    v_envelope bytea;
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
    RETURN pg_catalog.convert_from(public._provision_secret_open(p_group_id, v_envelope, p_keys), 'UTF8');
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
-- The plaintext never leaves the server. PA005 for a secret under a key
-- not in keys (the batch is then rolled back as a whole).
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
    v_key_id bytea;
BEGIN
    PERFORM public._provision_secret_check_keys(p_keys);
    IF p_limit IS NULL OR p_limit < 1 THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'batch_size must be at least 1';
    END IF;
    v_key_id := public._provision_secret_key_id(p_keys[1]);
    RETURN QUERY
    WITH todo AS (
        SELECT g.id, g.provision_secret_ciphertext AS envelope
          FROM public.ota_groups AS g
         WHERE g.provision_secret_ciphertext IS NOT NULL
           AND pg_catalog.substr(g.provision_secret_ciphertext, 2, 8) <> v_key_id
           AND (p_after IS NULL OR g.id > p_after)
         ORDER BY g.id
         LIMIT p_limit
           FOR UPDATE
    ), done AS (
        UPDATE public.ota_groups AS g
           SET provision_secret_ciphertext = public._provision_secret_seal(
                   g.id, public._provision_secret_open(g.id, todo.envelope, p_keys), p_keys[1], v_key_id)
          FROM todo
         WHERE g.id = todo.id
        RETURNING g.id AS gid, pg_catalog.encode(pg_catalog.substr(todo.envelope, 2, 8), 'hex') AS kid
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

REVOKE ALL ON FUNCTION public._provision_secret_check_keys(bytea[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION public._provision_secret_key_id(bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION public._provision_secret_seal(uuid, bytea, bytea, bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION public._provision_secret_open(uuid, bytea, bytea[]) FROM PUBLIC;
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
