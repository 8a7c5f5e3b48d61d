-- pyaccess pgTAP: the key registry (pyaccess.keys) and the census.
--
-- Run against a migrated database, as a superuser:
--     pg_prove -d DB --ext .sql tests/sql/
-- Everything happens in one transaction that is rolled back. The file starts from an empty
-- registry, as a new installation does (the DELETE below is rolled back with the rest).
--
-- Keys and their ids (first 8 bytes of HMAC-SHA256(key, 'pyaccess key id')):
--   K1 = decode(repeat('ab', 32), 'hex')  c20b6c1b1005ba79
--   K2 = decode(repeat('cd', 32), 'hex')  ab9d91cd061dadaf
--   K3 = decode(repeat('ef', 32), 'hex')  0c6050b407bfe365
--   K4 = decode(repeat('01', 32), 'hex')  b1042bf4fbcf57dd  in use, never registered
-- Groups: ...0501 K1, ...0502 K2 (v2), ...0503 K2 (v1), ...0504 K4, ...0505 service path.

BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;

SELECT plan(33);

DELETE FROM pyaccess.keys;

INSERT INTO public.ota_groups (id, name) VALUES
    ('ffffffff-ffff-ffff-ffff-000000000501', 'pgtap 05_registry group 1'),
    ('ffffffff-ffff-ffff-ffff-000000000502', 'pgtap 05_registry group 2'),
    ('ffffffff-ffff-ffff-ffff-000000000503', 'pgtap 05_registry group 3 (v1)'),
    ('ffffffff-ffff-ffff-ffff-000000000504', 'pgtap 05_registry group 4 (unregistered key)'),
    ('ffffffff-ffff-ffff-ffff-000000000505', 'pgtap 05_registry group 5 (service path)');

SELECT pyaccess.guard('0.2.0');

-- ---------------------------------------------------------------------
-- The first store of a new installation registers its key id
-- ---------------------------------------------------------------------

SELECT is_empty($$ SELECT * FROM pyaccess.census() WHERE state <> 'unregistered' $$,
                'with an empty registry the census shows no registered key id');
SELECT lives_ok(
    $$ SELECT public.store_provision_secret('ffffffff-ffff-ffff-ffff-000000000501', 'first secret',
                                            decode(repeat('ab', 32), 'hex')) $$,
    'the first store on an empty registry succeeds'
);
SELECT results_eq(
    $$ SELECT pg_catalog.encode(key_id, 'hex'), state, registered_by = session_user, retired_at IS NULL
         FROM pyaccess.keys $$,
    $$ VALUES ('c20b6c1b1005ba79', 'active', true, true) $$,
    'the first store registered its key id as active, recording who registered it'
);
SELECT throws_ok(
    $$ SELECT public.store_provision_secret('ffffffff-ffff-ffff-ffff-000000000502', 'under K2',
                                            decode(repeat('cd', 32), 'hex')) $$,
    'PA008', NULL,
    'once the registry holds a key, a store under an unregistered key id raises PA008'
);
SELECT is(
    (SELECT provision_secret_ciphertext FROM public.ota_groups WHERE id = 'ffffffff-ffff-ffff-ffff-000000000502'),
    NULL,
    'the refused store wrote nothing'
);
SELECT is_empty(
    $$ SELECT FROM pyaccess.keys WHERE key_id = pyaccess._key_id(decode(repeat('cd', 32), 'hex')) $$,
    'the refused store did not register its key id'
);
SELECT throws_ok(
    $$ SELECT pyaccess.seal('ffffffff-ffff-ffff-ffff-000000000502', pg_catalog.convert_to('under K2', 'UTF8'),
                            pyaccess._ring(2, ARRAY[decode(repeat('cd', 32), 'hex')],
                                           'ffffffff-ffff-ffff-ffff-000000000502')) $$,
    'PA008', NULL,
    'the service path pyaccess.seal refuses an unregistered key id with PA008 too'
);

-- ---------------------------------------------------------------------
-- pyaccess.register_key
-- ---------------------------------------------------------------------

SELECT is(pyaccess.register_key(pyaccess._key_id(decode(repeat('cd', 32), 'hex'))), 'registered',
          'register_key registers a new key id and says so');
SELECT is(pyaccess.register_key(pyaccess._key_id(decode(repeat('cd', 32), 'hex'))), 'already active',
          'register_key on an active key id changes nothing and says so');
SELECT lives_ok(
    $$ SELECT public.store_provision_secret('ffffffff-ffff-ffff-ffff-000000000502', 'under K2',
                                            decode(repeat('cd', 32), 'hex')) $$,
    'a store under a newly registered key id succeeds'
);
SELECT throws_ok($$ SELECT pyaccess.register_key(NULL) $$, 'PA001', NULL,
                 'register_key refuses a NULL key id with PA001');
SELECT throws_ok($$ SELECT pyaccess.register_key('\x01020304050607'::bytea) $$, 'PA001', NULL,
                 'register_key refuses a 7-byte key id with PA001');
SELECT throws_ok($$ SELECT pyaccess.register_key(decode(repeat('ab', 32), 'hex')) $$, 'PA001', NULL,
                 'register_key refuses a 32-byte key passed instead of its id with PA001 (a key never lands in the registry)');

-- ---------------------------------------------------------------------
-- pyaccess.retire_key: a retired key still opens, never seals; the last active key stays
-- ---------------------------------------------------------------------

SELECT lives_ok($$ SELECT pyaccess.retire_key(pyaccess._key_id(decode(repeat('ab', 32), 'hex'))) $$,
                'retire_key retires K1 while K2 is active');
SELECT results_eq(
    $$ SELECT state, retired_at IS NOT NULL FROM pyaccess.keys
        WHERE key_id = pyaccess._key_id(decode(repeat('ab', 32), 'hex')) $$,
    $$ VALUES ('retired', true) $$,
    'K1 is retired, with the time it was retired'
);
SELECT throws_ok(
    $$ SELECT public.store_provision_secret('ffffffff-ffff-ffff-ffff-000000000501', 'under retired K1',
                                            decode(repeat('ab', 32), 'hex')) $$,
    'PA008', NULL, 'a store under a retired key id raises PA008'
);
SELECT throws_ok(
    $$ SELECT pyaccess.seal('ffffffff-ffff-ffff-ffff-000000000501', pg_catalog.convert_to('under retired K1', 'UTF8'),
                            pyaccess._ring(2, ARRAY[decode(repeat('ab', 32), 'hex')],
                                           'ffffffff-ffff-ffff-ffff-000000000501')) $$,
    'PA008', NULL, 'pyaccess.seal under a retired key id raises PA008'
);
SELECT is(
    public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000501'::uuid, decode(repeat('ab', 32), 'hex')),
    'first secret',
    'a secret under a retired key id still reads with get_provision_secret, unchanged by the refused stores'
);
SELECT is(
    (SELECT pg_catalog.convert_from(secret, 'UTF8')
       FROM pyaccess.open('ffffffff-ffff-ffff-ffff-000000000501',
                          pyaccess._ring(2, ARRAY[decode(repeat('ab', 32), 'hex')], 'ffffffff-ffff-ffff-ffff-000000000501'),
                          2)),
    'first secret',
    'a secret under a retired key id still opens with pyaccess.open'
);
SELECT throws_ok(
    $$ SELECT pyaccess.retire_key(pyaccess._key_id(decode(repeat('cd', 32), 'hex'))) $$,
    'PA008', NULL, 'retire_key refuses to retire the last active key (every store would fail) with PA008'
);
SELECT is(
    (SELECT state FROM pyaccess.keys WHERE key_id = pyaccess._key_id(decode(repeat('cd', 32), 'hex'))),
    'active',
    'the refused retirement left K2 active'
);
SELECT throws_ok(
    $$ SELECT pyaccess.retire_key(pyaccess._key_id(decode(repeat('ef', 32), 'hex'))) $$,
    'PA008', NULL, 'retire_key refuses a key id that is not registered with PA008'
);
SELECT is(pyaccess.register_key(pyaccess._key_id(decode(repeat('ab', 32), 'hex'))), 'reactivated',
          'register_key brings a retired key id back and says so');
SELECT results_eq(
    $$ SELECT state, retired_at IS NULL FROM pyaccess.keys
        WHERE key_id = pyaccess._key_id(decode(repeat('ab', 32), 'hex')) $$,
    $$ VALUES ('active', true) $$,
    'a reactivated key id is active again, without a retirement time'
);
SELECT lives_ok(
    $$ SELECT public.store_provision_secret('ffffffff-ffff-ffff-ffff-000000000501', 'first secret',
                                            decode(repeat('ab', 32), 'hex')) $$,
    'a store under a reactivated key id succeeds'
);

-- ---------------------------------------------------------------------
-- The census: every key id registered or in use, by envelope version, state and count
-- ---------------------------------------------------------------------

-- ...0503: envelope v1 under K2 (0.1.0's formula); ...0504: v2 under K4, which nobody registered
-- (a secret written before the registry existed, or by hand).
UPDATE public.ota_groups AS g
   SET provision_secret_ciphertext = e.body || pyaccess._tag(g.id, e.body, e.pair)
  FROM (SELECT x.id, x.pair,
               pyaccess._body(x.version, pyaccess._key_id(x.master), x.pair, gen_random_bytes(16),
                              pg_catalog.convert_to('crafted', 'UTF8')) AS body
          FROM (SELECT v.id, v.version, v.master, pyaccess._pair(v.version, v.master, v.id) AS pair
                  FROM (VALUES ('ffffffff-ffff-ffff-ffff-000000000503'::uuid, 1, decode(repeat('cd', 32), 'hex')),
                               ('ffffffff-ffff-ffff-ffff-000000000504'::uuid, 2, decode(repeat('01', 32), 'hex')))
                       AS v (id, version, master)) AS x) AS e
 WHERE g.id = e.id;
SELECT pyaccess.register_key(pyaccess._key_id(decode(repeat('ef', 32), 'hex')));
SELECT pyaccess.retire_key(pyaccess._key_id(decode(repeat('ab', 32), 'hex')));

SELECT results_eq(
    $$ SELECT key_id, version, state, secrets FROM pyaccess.census()
        WHERE key_id IN ('c20b6c1b1005ba79', 'ab9d91cd061dadaf', '0c6050b407bfe365', 'b1042bf4fbcf57dd') $$,
    $$ VALUES ('ab9d91cd061dadaf', 1, 'active', 1::bigint),
              ('ab9d91cd061dadaf', 2, 'active', 1::bigint),
              ('b1042bf4fbcf57dd', 2, 'unregistered', 1::bigint),
              ('c20b6c1b1005ba79', 2, 'retired', 1::bigint),
              ('0c6050b407bfe365', NULL, 'active', 0::bigint) $$,
    'the census: one row per key id and envelope version, with its state (active, retired, unregistered) '
    'and secret count, most used first; a registered key without secrets shows 0'
);
SELECT results_eq(
    $$ SELECT key_id, secrets FROM public.provision_secret_key_census()
        WHERE key_id IN ('c20b6c1b1005ba79', 'ab9d91cd061dadaf', '0c6050b407bfe365', 'b1042bf4fbcf57dd') $$,
    $$ VALUES ('ab9d91cd061dadaf', 2::bigint),
              ('b1042bf4fbcf57dd', 1::bigint),
              ('c20b6c1b1005ba79', 1::bigint) $$,
    '0.1.0''s census still counts secrets per key id, whatever the envelope version'
);
SELECT is_empty(
    $$ SELECT * FROM pyaccess.census() WHERE key_id !~ '^[0-9a-f]{16}$' $$,
    'the census shows key ids only: 16 hex digits, never a key'
);
SELECT is(
    public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000504'::uuid, decode(repeat('01', 32), 'hex')),
    'crafted',
    'a secret under an unregistered key id still reads (the registry governs stores, not reads)'
);
SELECT throws_ok(
    $$ SELECT public.store_provision_secret('ffffffff-ffff-ffff-ffff-000000000504', 'again',
                                            decode(repeat('01', 32), 'hex')) $$,
    'PA008', NULL, 'a key id in use but never registered may not seal again (PA008)'
);

-- ---------------------------------------------------------------------
-- The service path registers the first key too
-- ---------------------------------------------------------------------

DELETE FROM pyaccess.keys;
SELECT lives_ok(
    $$ SELECT pyaccess.seal('ffffffff-ffff-ffff-ffff-000000000505', pg_catalog.convert_to('sealed first', 'UTF8'),
                            pyaccess._ring(2, ARRAY[decode(repeat('ef', 32), 'hex')],
                                           'ffffffff-ffff-ffff-ffff-000000000505')) $$,
    'the first pyaccess.seal on an empty registry succeeds'
);
SELECT results_eq(
    $$ SELECT pg_catalog.encode(key_id, 'hex'), state FROM pyaccess.keys $$,
    $$ VALUES ('0c6050b407bfe365', 'active') $$,
    'the first pyaccess.seal registered its key id as active'
);
SELECT throws_ok(
    $$ SELECT pyaccess.retire_key(pyaccess._key_id(decode(repeat('ef', 32), 'hex'))) $$,
    'PA008', NULL, 'the only key of a new installation cannot be retired (PA008)'
);

SELECT * FROM finish();
ROLLBACK;
