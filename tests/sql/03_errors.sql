-- pyaccess pgTAP: the contract's functions, which take master keys: what
-- public.store_provision_secret and public.get_provision_secret accept and return, the
-- envelopes they write (v2) and read (v1 and v2), and every SQLSTATE they raise.
--
-- Run against a migrated database, as a superuser:
--     pg_prove -d DB --ext .sql tests/sql/
-- Everything happens in one transaction that is rolled back.
--
-- Keys and their ids (first 8 bytes of HMAC-SHA256(key, 'pyaccess key id')):
--   K1 = decode(repeat('ab', 32), 'hex')  c20b6c1b1005ba79  registered, the current key
--   K2 = decode(repeat('cd', 32), 'hex')  ab9d91cd061dadaf  registered, the previous key
--   K3 = decode(repeat('ef', 32), 'hex')  0c6050b407bfe365  never registered
-- Test group ids sort after every gen_random_uuid() (version-4) id:
--   ...0301 main group        ...0302 receives copied ciphertexts
--   ...0303 never has secret  ...0304 target of the tampering tests
--   ...0305 key rings         ...0306 a v1 envelope built with the 0.1.0 formula
--   ...0307 the registry      ...03ff does not exist
--   ...a7a7 / ...a7a8  known-answer envelopes v1 / v2 built outside PostgreSQL

BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;

SELECT plan(90);

SELECT pyaccess.register_key(pyaccess._key_id(decode(repeat('ab', 32), 'hex')));
SELECT pyaccess.register_key(pyaccess._key_id(decode(repeat('cd', 32), 'hex')));

INSERT INTO public.ota_groups (id, name) VALUES
    ('ffffffff-ffff-ffff-ffff-000000000301', 'pgtap 03_errors main group'),
    ('ffffffff-ffff-ffff-ffff-000000000302', 'pgtap 03_errors copy target'),
    ('ffffffff-ffff-ffff-ffff-000000000303', 'pgtap 03_errors group without secret'),
    ('ffffffff-ffff-ffff-ffff-000000000304', 'pgtap 03_errors tamper target'),
    ('ffffffff-ffff-ffff-ffff-000000000305', 'pgtap 03_errors key ring group'),
    ('ffffffff-ffff-ffff-ffff-000000000306', 'pgtap 03_errors v1 group'),
    ('ffffffff-ffff-ffff-ffff-000000000307', 'pgtap 03_errors registry group');

-- ---------------------------------------------------------------------
-- Round trips: stores write envelope v2
-- ---------------------------------------------------------------------

SELECT lives_ok(
    $$ SELECT public.store_provision_secret('ffffffff-ffff-ffff-ffff-000000000301',
                                            'first secret', decode(repeat('ab', 32), 'hex')) $$,
    'store_provision_secret stores a secret for an existing group'
);
SELECT is(
    public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000301'::uuid, decode(repeat('ab', 32), 'hex')),
    'first secret',
    'get_provision_secret(uuid, bytea) returns the secret that was stored'
);
SELECT is(
    public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000301'::uuid, ARRAY[decode(repeat('ab', 32), 'hex')]),
    'first secret',
    'get_provision_secret(uuid, bytea[]) returns the secret that was stored'
);
SELECT is(
    (SELECT ARRAY[pg_catalog.get_byte(provision_secret_ciphertext, 0)::text,
                  pg_catalog.encode(pg_catalog.substr(provision_secret_ciphertext, 2, 8), 'hex'),
                  pg_catalog.octet_length(provision_secret_ciphertext)::text]
       FROM public.ota_groups WHERE id = 'ffffffff-ffff-ffff-ffff-000000000301'),
    ARRAY['2', 'c20b6c1b1005ba79', '73'],
    'a store writes envelope v2 (first byte 2) with the key id of K1, 1 + 8 + 16 + 16 + 32 = 73 bytes for 12 bytes'
);
SELECT ok(
    (SELECT position(pg_catalog.convert_to('first secret', 'UTF8') IN provision_secret_ciphertext) = 0
       FROM public.ota_groups WHERE id = 'ffffffff-ffff-ffff-ffff-000000000301'),
    'the stored ciphertext does not contain the plaintext'
);
-- Recomputed here from K1, the group id and the stored IV.
SELECT is(
    (SELECT pg_catalog.substr(provision_secret_ciphertext, 1, 41)
       FROM public.ota_groups WHERE id = 'ffffffff-ffff-ffff-ffff-000000000301'),
    (SELECT pyaccess._body(2, pyaccess._key_id(decode(repeat('ab', 32), 'hex')),
                           pyaccess._pair(2, decode(repeat('ab', 32), 'hex'), id),
                           pg_catalog.substr(provision_secret_ciphertext, 10, 16),
                           pg_catalog.convert_to('first secret', 'UTF8'))
       FROM public.ota_groups WHERE id = 'ffffffff-ffff-ffff-ffff-000000000301'),
    'the v2 ciphertext is AES-256-CBC under this group''s own pair, HMAC-SHA512(K1, v2 label || 0x00 || group id)'
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
SELECT provision_secret_ciphertext AS c FROM public.ota_groups WHERE id = 'ffffffff-ffff-ffff-ffff-000000000301';
SELECT public.store_provision_secret('ffffffff-ffff-ffff-ffff-000000000301',
                                     E'Grüße 🔐 秘密 — ünïcødé\ttab\nnewline', decode(repeat('ab', 32), 'hex'));
SELECT isnt(
    (SELECT pg_catalog.substr(provision_secret_ciphertext, 10, 16)
       FROM public.ota_groups WHERE id = 'ffffffff-ffff-ffff-ffff-000000000301'),
    (SELECT pg_catalog.substr(c, 10, 16) FROM first_store),
    'storing the same secret again under the same key uses a fresh IV'
);
SELECT isnt(
    (SELECT provision_secret_ciphertext FROM public.ota_groups WHERE id = 'ffffffff-ffff-ffff-ffff-000000000301'),
    (SELECT c FROM first_store),
    'storing the same secret again under the same key gives a different ciphertext'
);

-- The length limit counts UTF-8 bytes, not characters.
SELECT lives_ok(
    $$ SELECT public.store_provision_secret('ffffffff-ffff-ffff-ffff-000000000301', 'x', decode(repeat('ab', 32), 'hex')) $$,
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

-- ---------------------------------------------------------------------
-- Known answers: envelopes built outside PostgreSQL (Python hmac + AES-CBC, IV 00 01 .. 0f)
-- following the documented formats still decrypt, so that stored secrets stay readable.
-- ---------------------------------------------------------------------

INSERT INTO public.ota_groups (id, name, provision_secret_ciphertext) VALUES (
    'ffffffff-ffff-ffff-ffff-00000000a7a7', 'pgtap 03_errors known-answer v1 group',
    '\x01c20b6c1b1005ba79000102030405060708090a0b0c0d0e0f9ccc1d5095127d098b84db11c4140ee820cd68e61071737265b6b26cafc601a9f247cc9ed5659f71f4c855d773a1f60fde3404ee4cb78849d140d34e469a8a48a17d916d5cf9b5d96865e49be3e07c8b'
), (
    'ffffffff-ffff-ffff-ffff-00000000a7a8', 'pgtap 03_errors known-answer v2 group',
    '\x02c20b6c1b1005ba79000102030405060708090a0b0c0d0e0feb5d0b15c776764b90bdc041c9fe0b405c30d7727debff4d8b6457f905ab590313e04b2dd3bb7be6aac72fa05e946f32b7b87a063893d5428c643f6c79525bf5f49c2f536b478569c25d4caed75ccbbe'
);
SELECT is(
    public.get_provision_secret('ffffffff-ffff-ffff-ffff-00000000a7a7'::uuid, decode(repeat('ab', 32), 'hex')),
    'known-answer secret: ünïcødé ✓',
    'a v1 envelope (0.1.0) built independently of pgcrypto decrypts to its known plaintext'
);
SELECT is(
    public.get_provision_secret('ffffffff-ffff-ffff-ffff-00000000a7a8'::uuid, decode(repeat('ab', 32), 'hex')),
    'known-answer v2: ünïcødé ✓',
    'a v2 envelope built independently of pgcrypto decrypts to its known plaintext'
);
SELECT is(
    public.get_provision_secret('ffffffff-ffff-ffff-ffff-00000000a7a8'::uuid,
                                ARRAY[decode(repeat('cd', 32), 'hex'), decode(repeat('ab', 32), 'hex')]),
    'known-answer v2: ünïcødé ✓',
    'the key ring [K2, K1] reads the known-answer v2 envelope sealed under K1'
);
SELECT is(
    public.provision_secret_key_id(decode(repeat('ab', 32), 'hex')),
    'c20b6c1b1005ba79',
    'the key id of K1 is the first 8 bytes of HMAC-SHA256(K1, ''pyaccess key id'')'
);

-- ---------------------------------------------------------------------
-- Envelope v1 of 0.1.0, built with its formula (pyaccess._pair(1, key, group) is
-- HMAC-SHA512(key, 'pyaccess v1 keys'), one pair for every group): still read
-- ---------------------------------------------------------------------

UPDATE public.ota_groups AS g
   SET provision_secret_ciphertext = v1.body || pyaccess._tag(g.id, v1.body, v1.pair)
  FROM (SELECT pyaccess._pair(1, decode(repeat('cd', 32), 'hex'), 'ffffffff-ffff-ffff-ffff-000000000306') AS pair) AS p,
       LATERAL (SELECT p.pair,
                       pyaccess._body(1, pyaccess._key_id(decode(repeat('cd', 32), 'hex')), p.pair,
                                      gen_random_bytes(16), pg_catalog.convert_to('a v1 secret', 'UTF8')) AS body) AS v1
 WHERE g.id = 'ffffffff-ffff-ffff-ffff-000000000306';
SELECT is(
    (SELECT pg_catalog.get_byte(provision_secret_ciphertext, 0) FROM public.ota_groups
      WHERE id = 'ffffffff-ffff-ffff-ffff-000000000306'),
    1,
    'the crafted envelope is version 1'
);
SELECT is(
    public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000306'::uuid, decode(repeat('cd', 32), 'hex')),
    'a v1 secret',
    'get_provision_secret(uuid, bytea) reads a v1 envelope'
);
SELECT is(
    public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000306'::uuid,
                                ARRAY[decode(repeat('ab', 32), 'hex'), decode(repeat('cd', 32), 'hex')]),
    'a v1 secret',
    'get_provision_secret(uuid, bytea[]) reads a v1 envelope under the ring''s previous key'
);
SELECT throws_ok(
    $$ SELECT public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000306'::uuid, decode(repeat('ab', 32), 'hex')) $$,
    'PA005', NULL, 'a v1 envelope under K2 read with K1 alone raises PA005'
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
    $$ SELECT public.get_provision_secret('ffffffff-ffff-ffff-ffff-0000000003ff'::uuid, decode(repeat('ab', 31), 'hex')) $$,
    'PA001', NULL, 'get_provision_secret checks the key before it looks up the group'
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
    $$ SELECT public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000301'::uuid,
                                          ARRAY[[decode(repeat('ab', 32), 'hex')], [decode(repeat('cd', 32), 'hex')]]) $$,
    'PA001', NULL, 'get_provision_secret(uuid, bytea[]) refuses a 2-D key ring with PA001'
);
SELECT throws_ok(
    $$ SELECT public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000301'::uuid,
                                          pg_catalog.array_fill(decode(repeat('ab', 32), 'hex'), ARRAY[1], ARRAY[0])) $$,
    'PA001', NULL, 'get_provision_secret(uuid, bytea[]) refuses a key ring that does not start at index 1 with PA001'
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
-- A NULL group id: no group has it (PA003), whatever key comes with it (as in 0.1.0).
SELECT throws_ok(
    $$ SELECT public.get_provision_secret(NULL::uuid, decode(repeat('ab', 32), 'hex')) $$,
    'PA003', NULL, 'get_provision_secret for a NULL group id raises PA003 (no such group; the key is fine)'
);
SELECT throws_ok(
    $$ SELECT public.store_provision_secret(NULL::uuid, 's', decode(repeat('ab', 32), 'hex')) $$,
    'PA003', NULL, 'store_provision_secret for a NULL group id raises PA003 (no such group; the key is fine)'
);
SELECT throws_ok(
    $$ SELECT public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000303'::uuid, decode(repeat('ab', 32), 'hex')) $$,
    'PA004', NULL, 'get_provision_secret(uuid, bytea) for a group without a secret raises PA004'
);
SELECT throws_ok(
    $$ SELECT public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000303'::uuid,
                                          ARRAY[decode(repeat('ab', 32), 'hex')]) $$,
    'PA004', NULL, 'get_provision_secret(uuid, bytea[]) for a group without a secret raises PA004'
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
    'the key ring [current, previous] reads a v2 secret stored under the previous key'
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
-- PA006: moved ciphertexts are refused, never returned as another group's secret
-- ---------------------------------------------------------------------

UPDATE public.ota_groups
   SET provision_secret_ciphertext = (SELECT provision_secret_ciphertext FROM public.ota_groups
                                       WHERE id = 'ffffffff-ffff-ffff-ffff-000000000301')
 WHERE id = 'ffffffff-ffff-ffff-ffff-000000000302';
SELECT throws_ok(
    $$ SELECT public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000302'::uuid, decode(repeat('ab', 32), 'hex')) $$,
    'PA006', NULL, 'a v2 ciphertext copied to another group is refused with PA006'
);
SELECT is(
    public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000301'::uuid, decode(repeat('ab', 32), 'hex')),
    repeat('é', 2048),
    'the original of the copied ciphertext still reads back in its own group'
);

UPDATE public.ota_groups
   SET provision_secret_ciphertext = (SELECT provision_secret_ciphertext FROM public.ota_groups
                                       WHERE id = 'ffffffff-ffff-ffff-ffff-000000000306')
 WHERE id = 'ffffffff-ffff-ffff-ffff-000000000302';
SELECT throws_ok(
    $$ SELECT public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000302'::uuid, decode(repeat('cd', 32), 'hex')) $$,
    'PA006', NULL, 'a v1 ciphertext copied to another group is refused with PA006 (its tag covers the group id)'
);

-- ---------------------------------------------------------------------
-- PA006: altered or truncated ciphertexts are refused, never decrypted to garbage.
-- Each case is written into group 0304 in place of its pristine envelope
-- (version 2 || key id || IV || 2 AES blocks || tag = 89 bytes), then read.
-- ---------------------------------------------------------------------

SELECT public.store_provision_secret('ffffffff-ffff-ffff-ffff-000000000304', 'tamper target secret',
                                     decode(repeat('ab', 32), 'hex'));
CREATE TEMP TABLE pristine AS
SELECT provision_secret_ciphertext AS c FROM public.ota_groups WHERE id = 'ffffffff-ffff-ffff-ffff-000000000304';
SELECT is((SELECT pg_catalog.octet_length(c) FROM pristine), 89,
          'the tamper target envelope is 1 + 8 + 16 + 32 + 32 bytes');

-- Stores p_envelope as group p_group_id's secret, then reads it with p_key.
CREATE FUNCTION pg_temp.read_as_stored(p_group_id uuid, p_envelope bytea, p_key bytea)
RETURNS text
LANGUAGE plpgsql
AS $$
BEGIN
    UPDATE public.ota_groups SET provision_secret_ciphertext = p_envelope WHERE id = p_group_id;
    RETURN public.get_provision_secret(p_group_id, p_key);
END
$$;

CREATE TEMP TABLE tampered (n integer PRIMARY KEY, what text NOT NULL, c bytea NOT NULL);
INSERT INTO tampered (n, what, c)
SELECT t.n, t.what, t.c FROM pristine AS p, LATERAL (VALUES
    (1, 'its version byte changed to 3 (unknown version)', pg_catalog.set_byte(p.c, 0, 3)),
    (2, 'its version byte changed to 1 (claims envelope v1)', pg_catalog.set_byte(p.c, 0, 1)),
    (3, 'one bit flipped in the IV', pg_catalog.set_byte(p.c, 9, pg_catalog.get_byte(p.c, 9) # 1)),
    (4, 'one bit flipped in the first ciphertext byte', pg_catalog.set_byte(p.c, 25, pg_catalog.get_byte(p.c, 25) # 1)),
    (5, 'one bit flipped in the last ciphertext byte', pg_catalog.set_byte(p.c, 56, pg_catalog.get_byte(p.c, 56) # 1)),
    (6, 'one bit flipped in the first tag byte', pg_catalog.set_byte(p.c, 57, pg_catalog.get_byte(p.c, 57) # 1)),
    (7, 'one bit flipped in the last tag byte', pg_catalog.set_byte(p.c, 88, pg_catalog.get_byte(p.c, 88) # 1)),
    (8, 'its last byte cut off', pg_catalog.substr(p.c, 1, 88)),
    (9, 'its last 16 bytes cut off (still a well-formed length)', pg_catalog.substr(p.c, 1, 73)),
    (10, 'its last ciphertext block removed', pg_catalog.substr(p.c, 1, 41) || pg_catalog.substr(p.c, 58, 32)),
    (11, '16 zero bytes appended', p.c || pg_catalog.decode(pg_catalog.repeat('00', 16), 'hex')),
    (12, 'nothing left but its header', pg_catalog.substr(p.c, 1, 25)),
    (13, 'zero bytes', ''::bytea)
) AS t (n, what, c);

SELECT throws_ok(
    pg_catalog.format('SELECT pg_temp.read_as_stored(%L, %L::bytea, %L::bytea)',
                      'ffffffff-ffff-ffff-ffff-000000000304', t.c, pg_catalog.decode(pg_catalog.repeat('ab', 32), 'hex')),
    'PA006', NULL,
    'an envelope with ' || t.what || ' is refused with PA006'
)
  FROM tampered AS t ORDER BY t.n;

SELECT throws_ok(
    pg_catalog.format('SELECT pg_temp.read_as_stored(%L, %L::bytea, %L::bytea)',
                      'ffffffff-ffff-ffff-ffff-000000000304',
                      (SELECT pg_catalog.set_byte(c, 1, pg_catalog.get_byte(c, 1) # 1) FROM pristine),
                      pg_catalog.decode(pg_catalog.repeat('ab', 32), 'hex')),
    'PA005', NULL,
    'an envelope with one bit flipped in the key id is refused as under a key not given (PA005)'
);

-- Control: the pristine envelope put back reads again, so the refusals above came
-- from the alterations and not from the copying.
SELECT is(
    pg_temp.read_as_stored('ffffffff-ffff-ffff-ffff-000000000304', (SELECT c FROM pristine),
                           decode(repeat('ab', 32), 'hex')),
    'tamper target secret',
    'control: the unaltered envelope put back reads its secret again'
);

-- ---------------------------------------------------------------------
-- PA008: a store under a key id that is not active, while the registry is not empty
-- ---------------------------------------------------------------------

SELECT public.store_provision_secret('ffffffff-ffff-ffff-ffff-000000000307', 'before the refusals',
                                     decode(repeat('ab', 32), 'hex'));
SELECT throws_ok(
    $$ SELECT public.store_provision_secret('ffffffff-ffff-ffff-ffff-000000000307', 'under K3',
                                            decode(repeat('ef', 32), 'hex')) $$,
    'PA008', NULL, 'a store under a key id that was never registered raises PA008'
);
SELECT is_empty(
    $$ SELECT FROM pyaccess.keys WHERE key_id = pyaccess._key_id(decode(repeat('ef', 32), 'hex')) $$,
    'the refused store did not register its key id'
);
SELECT pyaccess.retire_key(pyaccess._key_id(decode(repeat('cd', 32), 'hex')));
SELECT throws_ok(
    $$ SELECT public.store_provision_secret('ffffffff-ffff-ffff-ffff-000000000307', 'under retired K2',
                                            decode(repeat('cd', 32), 'hex')) $$,
    'PA008', NULL, 'a store under a retired key id raises PA008'
);
SELECT is(
    public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000307'::uuid, decode(repeat('ab', 32), 'hex')),
    'before the refusals',
    'the refused stores wrote nothing: the group still holds its earlier secret'
);
SELECT is(
    public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000305'::uuid, decode(repeat('cd', 32), 'hex')),
    'under the old key',
    'a secret under a retired key still reads'
);
SELECT throws_ok(
    $$ SELECT public.store_provision_secret('ffffffff-ffff-ffff-ffff-0000000003ff', 's', decode(repeat('ef', 32), 'hex')) $$,
    'PA008', NULL, 'PA008 comes before the group lookup (PA003): nothing is looked up under a refused key'
);

-- ---------------------------------------------------------------------
-- PA009: the library needs a newer release of the SQL than the database has
-- ---------------------------------------------------------------------

SELECT throws_ok(
    $$ SELECT pyaccess.guard('9.9.9') $$,
    'PA009', NULL, 'pyaccess.guard(''9.9.9'') raises PA009: run pyaccess migrate'
);
SELECT throws_ok(
    $$ SELECT pyaccess.guard('0.10.0') $$,
    'PA009', NULL, 'pyaccess.guard compares release numbers as numbers (0.10.0 is newer than 0.2.0): PA009'
);
SELECT lives_ok(
    $$ SELECT pyaccess.guard('0.2.0') $$,
    'pyaccess.guard(''0.2.0'') accepts the installed release'
);
SELECT lives_ok(
    $$ SELECT pyaccess.guard('0.1.9') $$,
    'pyaccess.guard accepts a library older than the installed SQL'
);

SELECT * FROM finish();
ROLLBACK;
