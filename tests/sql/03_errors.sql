-- pyaccess pgTAP: what store/get accept and return, every SQLSTATE they
-- raise, and the envelope's authentication (altered or moved ciphertexts).
--
-- Run against a migrated database, as a superuser:
--     pg_prove -d DB --ext .sql tests/sql/
-- Everything happens in one transaction that is rolled back.
--
-- Keys: K = decode(repeat('ab', 32), 'hex'), K2 = decode(repeat('cd', 32), 'hex').
-- Test group ids sort after every gen_random_uuid() (version-4) id:
--   ...0301 main group        ...0302 receives copied ciphertexts
--   ...0303 never has secret  ...0304 target of the tampering tests
--   ...0305 key rings         ...03ff does not exist
--   ...a7a7 known-answer envelope

BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;

SELECT plan(63);

INSERT INTO public.ota_groups (id, name) VALUES
    ('ffffffff-ffff-ffff-ffff-000000000301', 'pgtap 03_errors main group'),
    ('ffffffff-ffff-ffff-ffff-000000000302', 'pgtap 03_errors copy target'),
    ('ffffffff-ffff-ffff-ffff-000000000303', 'pgtap 03_errors group without secret'),
    ('ffffffff-ffff-ffff-ffff-000000000304', 'pgtap 03_errors tamper target'),
    ('ffffffff-ffff-ffff-ffff-000000000305', 'pgtap 03_errors key ring group');

-- ---------------------------------------------------------------------
-- Round trips
-- ---------------------------------------------------------------------

SELECT lives_ok(
    $$ SELECT public.store_provision_secret('ffffffff-ffff-ffff-ffff-000000000301',
                                            'first secret', decode(repeat('ab', 32), 'hex')) $$,
    'store_provision_secret stores a secret for an existing group'
);
SELECT is(
    public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000301'::uuid, decode(repeat('ab', 32), 'hex')),
    'first secret',
    'get_provision_secret returns the secret that was stored'
);
SELECT ok(
    (SELECT position(pg_catalog.convert_to('first secret', 'UTF8') IN provision_secret_ciphertext) = 0
       FROM public.ota_groups WHERE id = 'ffffffff-ffff-ffff-ffff-000000000301'),
    'the stored ciphertext does not contain the plaintext'
);
SELECT is(
    (SELECT ARRAY[pg_catalog.get_byte(provision_secret_ciphertext, 0)::text,
                  pg_catalog.encode(pg_catalog.substr(provision_secret_ciphertext, 2, 8), 'hex'),
                  pg_catalog.octet_length(provision_secret_ciphertext)::text]
       FROM public.ota_groups WHERE id = 'ffffffff-ffff-ffff-ffff-000000000301'),
    ARRAY['1', 'c20b6c1b1005ba79', '73'],
    'the envelope is version 1, carries the key id of K, and is 1 + 8 + 16 + 16 + 32 bytes for a 12-byte secret'
);

SELECT lives_ok(
    $$ SELECT public.store_provision_secret('ffffffff-ffff-ffff-ffff-000000000301',
                                            'replacement secret', decode(repeat('ab', 32), 'hex')) $$,
    'store_provision_secret replaces an existing secret'
);
SELECT is(
    public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000301'::uuid, decode(repeat('ab', 32), 'hex')),
    'replacement secret',
    'after a replacement get_provision_secret returns the new secret'
);

SELECT lives_ok(
    $$ SELECT public.store_provision_secret('ffffffff-ffff-ffff-ffff-000000000301',
                                            E'Grüße 🔐 秘密 — ünïcødé\ttab\nnewline', decode(repeat('ab', 32), 'hex')) $$,
    'store_provision_secret accepts unicode, tabs and newlines'
);
SELECT is(
    public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000301'::uuid, decode(repeat('ab', 32), 'hex')),
    E'Grüße 🔐 秘密 — ünïcødé\ttab\nnewline',
    'a unicode secret reads back unchanged'
);

-- Fresh IV: the same secret, group and key twice give different ciphertexts.
CREATE TEMP TABLE first_store AS
SELECT provision_secret_ciphertext AS c
  FROM public.ota_groups WHERE id = 'ffffffff-ffff-ffff-ffff-000000000301';
SELECT public.store_provision_secret('ffffffff-ffff-ffff-ffff-000000000301',
                                     E'Grüße 🔐 秘密 — ünïcødé\ttab\nnewline', decode(repeat('ab', 32), 'hex'));
SELECT isnt(
    (SELECT provision_secret_ciphertext FROM public.ota_groups WHERE id = 'ffffffff-ffff-ffff-ffff-000000000301'),
    (SELECT c FROM first_store),
    'storing the same secret again under the same key gives a different ciphertext'
);
SELECT isnt(
    (SELECT pg_catalog.substr(provision_secret_ciphertext, 10, 16)
       FROM public.ota_groups WHERE id = 'ffffffff-ffff-ffff-ffff-000000000301'),
    (SELECT pg_catalog.substr(c, 10, 16) FROM first_store),
    'each encryption uses a fresh IV'
);

-- The length limit counts UTF-8 bytes, not characters.
SELECT lives_ok(
    $$ SELECT public.store_provision_secret('ffffffff-ffff-ffff-ffff-000000000301', 'x',
                                            decode(repeat('ab', 32), 'hex')) $$,
    'a 1-byte secret is accepted'
);
SELECT lives_ok(
    $$ SELECT public.store_provision_secret('ffffffff-ffff-ffff-ffff-000000000301', repeat('x', 4096),
                                            decode(repeat('ab', 32), 'hex')) $$,
    'a 4096-byte ASCII secret is accepted'
);
SELECT is(
    public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000301'::uuid, decode(repeat('ab', 32), 'hex')),
    repeat('x', 4096),
    'a 4096-byte ASCII secret reads back unchanged'
);
SELECT lives_ok(
    $$ SELECT public.store_provision_secret('ffffffff-ffff-ffff-ffff-000000000301', repeat('é', 2048),
                                            decode(repeat('ab', 32), 'hex')) $$,
    'a secret of 2048 two-byte characters (4096 UTF-8 bytes) is accepted'
);
SELECT is(
    public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000301'::uuid, decode(repeat('ab', 32), 'hex')),
    repeat('é', 2048),
    'a 4096-byte multibyte secret reads back unchanged'
);

-- An envelope built outside PostgreSQL (Python hmac + openssl enc, IV
-- 00 01 .. 0f) following the documented version 1 format still decrypts:
-- secrets stored today stay readable by later releases.
INSERT INTO public.ota_groups (id, name, provision_secret_ciphertext) VALUES (
    'ffffffff-ffff-ffff-ffff-00000000a7a7', 'pgtap 03_errors known-answer group',
    '\x01c20b6c1b1005ba79000102030405060708090a0b0c0d0e0f9ccc1d5095127d098b84db11c4140ee820cd68e61071737265b6b26cafc601a9f247cc9ed5659f71f4c855d773a1f60fde3404ee4cb78849d140d34e469a8a48a17d916d5cf9b5d96865e49be3e07c8b'
);
SELECT is(
    public.get_provision_secret('ffffffff-ffff-ffff-ffff-00000000a7a7'::uuid, decode(repeat('ab', 32), 'hex')),
    'known-answer secret: ünïcødé ✓',
    'a version 1 envelope built independently of pgcrypto decrypts to its known plaintext'
);
SELECT is(
    public.provision_secret_key_id(decode(repeat('ab', 32), 'hex')),
    'c20b6c1b1005ba79',
    'the key id of K is the first 8 bytes of HMAC-SHA256(K, ''pyaccess key id'')'
);

-- ---------------------------------------------------------------------
-- PA001: key missing or not exactly 32 bytes
-- ---------------------------------------------------------------------

SELECT throws_ok(
    $$ SELECT public.store_provision_secret('ffffffff-ffff-ffff-ffff-000000000301', 's', NULL) $$,
    'PA001', NULL, 'store_provision_secret refuses a NULL key with PA001'
);
SELECT throws_ok(
    $$ SELECT public.store_provision_secret('ffffffff-ffff-ffff-ffff-000000000301', 's', ''::bytea) $$,
    'PA001', NULL, 'store_provision_secret refuses an empty key with PA001'
);
SELECT throws_ok(
    $$ SELECT public.store_provision_secret('ffffffff-ffff-ffff-ffff-000000000301', 's', decode(repeat('ab', 31), 'hex')) $$,
    'PA001', NULL, 'store_provision_secret refuses a 31-byte key with PA001'
);
SELECT throws_ok(
    $$ SELECT public.store_provision_secret('ffffffff-ffff-ffff-ffff-000000000301', 's', decode(repeat('ab', 33), 'hex')) $$,
    'PA001', NULL, 'store_provision_secret refuses a 33-byte key with PA001'
);
SELECT throws_ok(
    $$ SELECT public.store_provision_secret('ffffffff-ffff-ffff-ffff-000000000301', 's',
                                            convert_to(repeat('ab', 32), 'UTF8')) $$,
    'PA001', NULL, 'store_provision_secret refuses the key''s 64 hex digits passed as bytes with PA001'
);
SELECT throws_ok(
    $$ SELECT public.store_provision_secret('ffffffff-ffff-ffff-ffff-0000000003ff', 's', decode(repeat('ab', 31), 'hex')) $$,
    'PA001', NULL, 'store_provision_secret checks the key before it looks up the group'
);
SELECT throws_ok(
    $$ SELECT public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000301'::uuid, NULL::bytea) $$,
    'PA001', NULL, 'get_provision_secret(uuid, bytea) refuses a NULL key with PA001'
);
SELECT throws_ok(
    $$ SELECT public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000301'::uuid, decode(repeat('ab', 31), 'hex')) $$,
    'PA001', NULL, 'get_provision_secret(uuid, bytea) refuses a 31-byte key with PA001'
);
SELECT throws_ok(
    $$ SELECT public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000301'::uuid,
                                          convert_to(repeat('ab', 32), 'UTF8')) $$,
    'PA001', NULL, 'get_provision_secret(uuid, bytea) refuses the key''s 64 hex digits passed as bytes with PA001'
);
SELECT throws_ok(
    $$ SELECT public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000301'::uuid, NULL::bytea[]) $$,
    'PA001', NULL, 'get_provision_secret(uuid, bytea[]) refuses a NULL key ring with PA001'
);
SELECT throws_ok(
    $$ SELECT public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000301'::uuid, ARRAY[]::bytea[]) $$,
    'PA001', NULL, 'get_provision_secret(uuid, bytea[]) refuses an empty key ring with PA001'
);
SELECT throws_ok(
    $$ SELECT public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000301'::uuid,
                                          ARRAY[decode(repeat('ab', 32), 'hex'), decode(repeat('cd', 31), 'hex')]) $$,
    'PA001', NULL, 'get_provision_secret(uuid, bytea[]) refuses a key ring holding one 31-byte key with PA001'
);
SELECT throws_ok(
    $$ SELECT public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000301'::uuid,
                                          ARRAY[decode(repeat('ab', 32), 'hex'), NULL]) $$,
    'PA001', NULL, 'get_provision_secret(uuid, bytea[]) refuses a key ring holding a NULL with PA001'
);
SELECT throws_ok(
    $$ SELECT public.provision_secret_key_id(decode(repeat('ab', 31), 'hex')) $$,
    'PA001', NULL, 'provision_secret_key_id refuses a 31-byte key with PA001'
);

-- ---------------------------------------------------------------------
-- PA002: secret NULL, empty, or over 4096 bytes of UTF-8
-- ---------------------------------------------------------------------

SELECT throws_ok(
    $$ SELECT public.store_provision_secret('ffffffff-ffff-ffff-ffff-000000000301', NULL, decode(repeat('ab', 32), 'hex')) $$,
    'PA002', NULL, 'store_provision_secret refuses a NULL secret with PA002'
);
SELECT throws_ok(
    $$ SELECT public.store_provision_secret('ffffffff-ffff-ffff-ffff-000000000301', '', decode(repeat('ab', 32), 'hex')) $$,
    'PA002', NULL, 'store_provision_secret refuses an empty secret with PA002'
);
SELECT throws_ok(
    $$ SELECT public.store_provision_secret('ffffffff-ffff-ffff-ffff-000000000301', repeat('x', 4097),
                                            decode(repeat('ab', 32), 'hex')) $$,
    'PA002', NULL, 'store_provision_secret refuses a 4097-byte secret with PA002'
);
SELECT throws_ok(
    $$ SELECT public.store_provision_secret('ffffffff-ffff-ffff-ffff-000000000301', repeat('é', 2048) || 'x',
                                            decode(repeat('ab', 32), 'hex')) $$,
    'PA002', NULL, 'store_provision_secret refuses 2049 characters that are 4097 UTF-8 bytes with PA002'
);
SELECT throws_ok(
    $$ SELECT public.store_provision_secret('ffffffff-ffff-ffff-ffff-000000000301', repeat('€', 1366),
                                            decode(repeat('ab', 32), 'hex')) $$,
    'PA002', NULL, 'store_provision_secret refuses 1366 three-byte characters (4098 UTF-8 bytes) with PA002'
);
SELECT throws_ok(
    $$ SELECT public.store_provision_secret('ffffffff-ffff-ffff-ffff-0000000003ff', '', decode(repeat('ab', 32), 'hex')) $$,
    'PA002', NULL, 'store_provision_secret checks the secret before it looks up the group'
);
SELECT is(
    public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000301'::uuid, decode(repeat('ab', 32), 'hex')),
    repeat('é', 2048),
    'a refused store leaves the previous secret in place'
);

-- ---------------------------------------------------------------------
-- PA003: no OTA group with that id; PA004: the group has no secret
-- ---------------------------------------------------------------------

SELECT throws_ok(
    $$ SELECT public.store_provision_secret('ffffffff-ffff-ffff-ffff-0000000003ff', 's', decode(repeat('ab', 32), 'hex')) $$,
    'PA003', NULL, 'store_provision_secret for an unknown group raises PA003'
);
SELECT throws_ok(
    $$ SELECT public.get_provision_secret('ffffffff-ffff-ffff-ffff-0000000003ff'::uuid, decode(repeat('ab', 32), 'hex')) $$,
    'PA003', NULL, 'get_provision_secret(uuid, bytea) for an unknown group raises PA003'
);
SELECT throws_ok(
    $$ SELECT public.get_provision_secret('ffffffff-ffff-ffff-ffff-0000000003ff'::uuid,
                                          ARRAY[decode(repeat('ab', 32), 'hex')]) $$,
    'PA003', NULL, 'get_provision_secret(uuid, bytea[]) for an unknown group raises PA003'
);
SELECT throws_ok(
    $$ SELECT public.get_provision_secret(NULL::uuid, decode(repeat('ab', 32), 'hex')) $$,
    'PA003', NULL, 'get_provision_secret for a NULL group id raises PA003'
);
SELECT throws_ok(
    $$ SELECT public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000303'::uuid, decode(repeat('ab', 32), 'hex')) $$,
    'PA004', NULL, 'get_provision_secret for a group without a secret raises PA004'
);

-- ---------------------------------------------------------------------
-- PA005: encrypted under a key not given; key rings
-- ---------------------------------------------------------------------

SELECT throws_ok(
    $$ SELECT public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000301'::uuid, decode(repeat('cd', 32), 'hex')) $$,
    'PA005', NULL, 'get_provision_secret with the wrong key raises PA005'
);
SELECT throws_ok(
    $$ SELECT public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000301'::uuid,
                                          ARRAY[decode(repeat('cd', 32), 'hex'), decode(repeat('ef', 32), 'hex')]) $$,
    'PA005', NULL, 'get_provision_secret with a key ring lacking the key raises PA005'
);

SELECT public.store_provision_secret('ffffffff-ffff-ffff-ffff-000000000305', 'under the old key',
                                     decode(repeat('cd', 32), 'hex'));
SELECT is(
    public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000305'::uuid,
                                ARRAY[decode(repeat('ab', 32), 'hex'), decode(repeat('cd', 32), 'hex')]),
    'under the old key',
    'the key ring [current, previous] reads a secret stored under the previous key'
);
SELECT is(
    public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000305'::uuid,
                                ARRAY[decode(repeat('cd', 32), 'hex'), decode(repeat('ab', 32), 'hex')]),
    'under the old key',
    'the key ring finds the key whatever its position'
);
SELECT throws_ok(
    $$ SELECT public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000305'::uuid, decode(repeat('ab', 32), 'hex')) $$,
    'PA005', NULL, 'the current key alone cannot read a secret stored under the previous key (PA005)'
);

-- ---------------------------------------------------------------------
-- PA006: altered or moved ciphertexts are refused, never decrypted
-- ---------------------------------------------------------------------

-- Moved: group 0301's ciphertext copied into group 0302.
UPDATE public.ota_groups
   SET provision_secret_ciphertext = (SELECT provision_secret_ciphertext FROM public.ota_groups
                                       WHERE id = 'ffffffff-ffff-ffff-ffff-000000000301')
 WHERE id = 'ffffffff-ffff-ffff-ffff-000000000302';
SELECT throws_ok(
    $$ SELECT public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000302'::uuid, decode(repeat('ab', 32), 'hex')) $$,
    'PA006', NULL, 'a ciphertext copied to another group is refused with PA006'
);
SELECT is(
    public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000301'::uuid, decode(repeat('ab', 32), 'hex')),
    repeat('é', 2048),
    'the original of the copied ciphertext still reads back in its own group'
);

-- Altered: each case starts again from group 0304's pristine envelope
-- (version 1 || key id || IV || 2 AES blocks || tag = 89 bytes).
SELECT public.store_provision_secret('ffffffff-ffff-ffff-ffff-000000000304', 'tamper target secret',
                                     decode(repeat('ab', 32), 'hex'));
CREATE TEMP TABLE pristine AS
SELECT provision_secret_ciphertext AS c
  FROM public.ota_groups WHERE id = 'ffffffff-ffff-ffff-ffff-000000000304';
SELECT is((SELECT octet_length(c) FROM pristine), 89,
          'the tamper target envelope is 1 + 8 + 16 + 32 + 32 bytes');

CREATE TEMP TABLE tampered (n integer PRIMARY KEY, what text NOT NULL, c bytea NOT NULL);
INSERT INTO tampered (n, what, c)
SELECT v.n, v.what, v.c FROM pristine AS p, LATERAL (VALUES
    (1, 'one bit flipped in the IV',
        pg_catalog.set_byte(p.c, 9, pg_catalog.get_byte(p.c, 9) # 1)),
    (2, 'one bit flipped in the first ciphertext block',
        pg_catalog.set_byte(p.c, 25, pg_catalog.get_byte(p.c, 25) # 128)),
    (3, 'one bit flipped in the last ciphertext block (the padding)',
        pg_catalog.set_byte(p.c, 56, pg_catalog.get_byte(p.c, 56) # 1)),
    (4, 'one bit flipped in the tag',
        pg_catalog.set_byte(p.c, 88, pg_catalog.get_byte(p.c, 88) # 1)),
    (5, 'the version byte changed to 2',
        pg_catalog.set_byte(p.c, 0, 2)),
    (6, 'the last byte truncated',
        pg_catalog.substr(p.c, 1, 88)),
    (7, 'the last ciphertext block cut out (lengths still valid)',
        pg_catalog.substr(p.c, 1, 41) || pg_catalog.substr(p.c, 58)),
    (8, 'the tag cut off',
        pg_catalog.substr(p.c, 1, 57)),
    (9, '16 zero bytes appended',
        p.c || pg_catalog.decode(repeat('00', 16), 'hex')),
    (10, 'nothing in it (0 bytes)',
        ''::bytea)
) AS v (n, what, c);

CREATE TEMP TABLE tamper_results (n integer PRIMARY KEY, sqlstate text NOT NULL);
DO $$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT * FROM tampered ORDER BY n LOOP
        UPDATE public.ota_groups SET provision_secret_ciphertext = t.c
         WHERE id = 'ffffffff-ffff-ffff-ffff-000000000304';
        BEGIN
            PERFORM public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000304'::uuid,
                                                decode(repeat('ab', 32), 'hex'));
            INSERT INTO tamper_results VALUES (t.n, 'no error: decrypted');
        EXCEPTION WHEN OTHERS THEN
            INSERT INTO tamper_results VALUES (t.n, SQLSTATE);
        END;
    END LOOP;
END
$$;
SELECT is(r.sqlstate, 'PA006', 'an envelope with ' || t.what || ' is refused with PA006')
  FROM tampered AS t LEFT JOIN tamper_results AS r USING (n)
 ORDER BY t.n;

-- A flipped bit in the key id names a key no one gave: PA005, still refused.
UPDATE public.ota_groups
   SET provision_secret_ciphertext = (SELECT pg_catalog.set_byte(c, 1, pg_catalog.get_byte(c, 1) # 1) FROM pristine)
 WHERE id = 'ffffffff-ffff-ffff-ffff-000000000304';
SELECT throws_ok(
    $$ SELECT public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000304'::uuid, decode(repeat('ab', 32), 'hex')) $$,
    'PA005', NULL, 'an envelope with one bit flipped in the key id is refused as under an unknown key (PA005)'
);

-- Control: the pristine envelope put back reads again, so the refusals
-- above came from the alterations and not from the copying.
UPDATE public.ota_groups SET provision_secret_ciphertext = (SELECT c FROM pristine)
 WHERE id = 'ffffffff-ffff-ffff-ffff-000000000304';
SELECT is(
    public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000304'::uuid, decode(repeat('ab', 32), 'hex')),
    'tamper target secret',
    'the unaltered envelope put back reads its secret again'
);

SELECT * FROM finish();
ROLLBACK;
