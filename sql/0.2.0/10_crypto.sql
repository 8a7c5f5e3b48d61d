-- pyaccess 0.2.0, part 10: the envelope's arithmetic, bound to pgcrypto when created.
--
-- Every function here has a SQL-standard body: names are resolved when it is created and
-- stored as references (pg_depend), so nothing is looked up at run time in a schema that
-- another role controls: renaming pgcrypto's schema and planting a look-alike changes nothing.
-- No SET clause and no SECURITY DEFINER, so PostgreSQL inlines them into their callers.
--
-- Envelope (ota_groups.provision_secret_ciphertext), versions 1 and 2 alike:
--
--   byte  1        version: 0x01 (0.1.0) or 0x02
--   bytes 2..9     key id: HMAC-SHA256(master key, 'pyaccess key id'), first 8 bytes
--   bytes 10..25   IV, 16 fresh random bytes per encryption
--   bytes 26..n-32 AES-256-CBC (PKCS#7 padding) of the UTF-8 secret, under the enc key
--   bytes n-31..n  tag: HMAC-SHA256(mac key, group id (16 bytes) || bytes 1..n-32)
--
-- enc key (32 bytes) || mac key (32 bytes) is:
--   v1: HMAC-SHA512(master key, 'pyaccess v1 keys')                          one pair for all groups
--   v2: HMAC-SHA512(master key, 'pyaccess v2 group key' || 0x00 || group id)  a pair per OTA group
-- The labels differ, so no v2 group key equals a v1 pair or a key id. The service computes
-- the v2 pair itself and sends only that: what reaches the server opens one group's secret.
--
-- A key ring on the wire ("keys") is n key ids (8 bytes each) followed by the n matching
-- 64-byte pairs, in the same order: n * 72 bytes.

-- 16 random bytes from pgcrypto (the only volatile helper).
CREATE OR REPLACE FUNCTION pyaccess._random_iv()
RETURNS bytea
LANGUAGE sql VOLATILE PARALLEL SAFE
RETURN @extschema@.gen_random_bytes(16);
SELECT pyaccess._declare('pyaccess._random_iv()', '');

-- The id of a master key.
CREATE OR REPLACE FUNCTION pyaccess._key_id(p_master bytea)
RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN pg_catalog.substr(@extschema@.hmac('pyaccess key id'::bytea, p_master, 'sha256'), 1, 8);
SELECT pyaccess._declare('pyaccess._key_id(bytea)', '');

-- The enc key || mac key of an envelope version, group and master key (see above).
CREATE OR REPLACE FUNCTION pyaccess._pair(p_version integer, p_master bytea, p_group_id uuid)
RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE p_version
           WHEN 1 THEN @extschema@.hmac('pyaccess v1 keys'::bytea, p_master, 'sha512')
           ELSE @extschema@.hmac('pyaccess v2 group key'::bytea || '\x00'::bytea || pg_catalog.uuid_send(p_group_id),
                                 p_master, 'sha512')
       END;
SELECT pyaccess._declare('pyaccess._pair(integer,bytea,uuid)', '');

-- A key ring on the wire for master keys: ids, then the pairs of one version for one group.
CREATE OR REPLACE FUNCTION pyaccess._ring(p_version integer, p_masters bytea[], p_group_id uuid)
RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT pg_catalog.string_agg(pyaccess._key_id(m), ''::bytea ORDER BY n)
           || pg_catalog.string_agg(pyaccess._pair(p_version, m, p_group_id), ''::bytea ORDER BY n)
      FROM pg_catalog.unnest(p_masters) WITH ORDINALITY AS r(m, n);
END;
SELECT pyaccess._declare('pyaccess._ring(integer,bytea[],uuid)', '');

-- Whether a key ring on the wire is well formed: one or more 72-byte entries.
CREATE OR REPLACE FUNCTION pyaccess._ring_ok(p_keys bytea)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN COALESCE(pg_catalog.octet_length(p_keys) >= 72 AND pg_catalog.octet_length(p_keys) % 72 = 0, false);
SELECT pyaccess._declare('pyaccess._ring_ok(bytea)', 'provision_secret_reader');

-- The pair for key id p_key_id in a key ring on the wire, or NULL.
CREATE OR REPLACE FUNCTION pyaccess._pick(p_keys bytea, p_key_id bytea)
RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN pyaccess._ring_ok(p_keys)
                 AND pg_catalog.position(pg_catalog.substr(p_keys, 1, pg_catalog.octet_length(p_keys) / 9), p_key_id) % 8 = 1
            THEN pg_catalog.substr(p_keys,
                                   pg_catalog.octet_length(p_keys) / 9 + 1
                                   + 8 * (pg_catalog.position(pg_catalog.substr(p_keys, 1, pg_catalog.octet_length(p_keys) / 9), p_key_id) - 1),
                                   64)
       END;
SELECT pyaccess._declare('pyaccess._pick(bytea,bytea)', 'provision_secret_reader');

-- The key id of an envelope.
CREATE OR REPLACE FUNCTION pyaccess._envelope_key_id(p_envelope bytea)
RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN pg_catalog.substr(p_envelope, 2, 8);
SELECT pyaccess._declare('pyaccess._envelope_key_id(bytea)', 'provision_secret_reader');

-- The version of a well-formed envelope (1 or 2), else NULL.
CREATE OR REPLACE FUNCTION pyaccess._envelope_version(p_envelope bytea)
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN pg_catalog.octet_length(p_envelope) >= 73
                 AND (pg_catalog.octet_length(p_envelope) - 57) % 16 = 0
                 AND pg_catalog.get_byte(p_envelope, 0) IN (1, 2)
            THEN pg_catalog.get_byte(p_envelope, 0)
       END;
SELECT pyaccess._declare('pyaccess._envelope_version(bytea)', 'provision_secret_reader');

-- version || key id || IV || AES-256-CBC(plaintext): the envelope without its tag.
CREATE OR REPLACE FUNCTION pyaccess._body(p_version integer, p_key_id bytea, p_pair bytea, p_iv bytea, p_plaintext bytea)
RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN pg_catalog.set_byte('\x00'::bytea, 0, p_version) || p_key_id || p_iv
       || @extschema@.encrypt_iv(p_plaintext, pg_catalog.substr(p_pair, 1, 32), p_iv, 'aes-cbc/pad:pkcs');
SELECT pyaccess._declare('pyaccess._body(integer,bytea,bytea,bytea,bytea)', '');

-- The tag of an envelope body for its group: what binds it to the row.
CREATE OR REPLACE FUNCTION pyaccess._tag(p_group_id uuid, p_body bytea, p_pair bytea)
RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN @extschema@.hmac(pg_catalog.uuid_send(p_group_id) || p_body, pg_catalog.substr(p_pair, 33, 32), 'sha256');
SELECT pyaccess._declare('pyaccess._tag(uuid,bytea,bytea)', 'provision_secret_reader');

-- Whether a well-formed envelope carries the right tag for its group.
CREATE OR REPLACE FUNCTION pyaccess._authentic(p_group_id uuid, p_envelope bytea, p_pair bytea)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN pyaccess._tag(p_group_id, pg_catalog.substr(p_envelope, 1, pg_catalog.octet_length(p_envelope) - 32), p_pair)
       = pg_catalog.substr(p_envelope, pg_catalog.octet_length(p_envelope) - 31, 32);
SELECT pyaccess._declare('pyaccess._authentic(uuid,bytea,bytea)', 'provision_secret_reader');

-- The plaintext bytes of an authentic envelope.
CREATE OR REPLACE FUNCTION pyaccess._plaintext(p_envelope bytea, p_pair bytea)
RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN @extschema@.decrypt_iv(pg_catalog.substr(p_envelope, 26, pg_catalog.octet_length(p_envelope) - 57),
                              pg_catalog.substr(p_pair, 1, 32),
                              pg_catalog.substr(p_envelope, 10, 16), 'aes-cbc/pad:pkcs');
SELECT pyaccess._declare('pyaccess._plaintext(bytea,bytea)', 'provision_secret_reader');
