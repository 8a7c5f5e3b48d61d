-- pyaccess pgTAP: key ids, the key census and re-encryption under a new key.
--
-- Run against a migrated database, as a superuser:
--     pg_prove -d DB --ext .sql tests/sql/
-- Everything happens in one transaction that is rolled back. Secrets that
-- already exist in the database are neither read nor changed: the census
-- is filtered on the test keys' ids, and every rewrap starts after
-- ...0400, beyond every gen_random_uuid() (version-4) id.
--
-- Keys and their ids (first 8 bytes of HMAC-SHA256(key, 'pyaccess key id')):
--   K1 = decode(repeat('ab', 32), 'hex')  c20b6c1b1005ba79  the new key
--   K2 = decode(repeat('cd', 32), 'hex')  ab9d91cd061dadaf  the previous key
--   K3 = decode(repeat('ef', 32), 'hex')  0c6050b407bfe365  an older key
-- Groups: 0401, 0402, 0406 under K2; 0403 under K3; 0404 under K1; 0405 none.

BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;

SELECT plan(25);

INSERT INTO public.ota_groups (id, name) VALUES
    ('ffffffff-ffff-ffff-ffff-000000000401', 'pgtap 04 group 1 (K2)'),
    ('ffffffff-ffff-ffff-ffff-000000000402', 'pgtap 04 group 2 (K2)'),
    ('ffffffff-ffff-ffff-ffff-000000000403', 'pgtap 04 group 3 (K3)'),
    ('ffffffff-ffff-ffff-ffff-000000000404', 'pgtap 04 group 4 (K1)'),
    ('ffffffff-ffff-ffff-ffff-000000000405', 'pgtap 04 group 5 (no secret)'),
    ('ffffffff-ffff-ffff-ffff-000000000406', 'pgtap 04 group 6 (K2)');

SELECT public.store_provision_secret(g.id, g.secret, g.key)
  FROM (VALUES ('ffffffff-ffff-ffff-ffff-000000000401'::uuid, 'secret 1', decode(repeat('cd', 32), 'hex')),
               ('ffffffff-ffff-ffff-ffff-000000000402'::uuid, 'secret 2', decode(repeat('cd', 32), 'hex')),
               ('ffffffff-ffff-ffff-ffff-000000000403'::uuid, 'secret 3', decode(repeat('ef', 32), 'hex')),
               ('ffffffff-ffff-ffff-ffff-000000000404'::uuid, 'secret 4', decode(repeat('ab', 32), 'hex')),
               ('ffffffff-ffff-ffff-ffff-000000000406'::uuid, 'secret 6', decode(repeat('cd', 32), 'hex'))
       ) AS g (id, secret, key);

CREATE TEMP TABLE before_rewrap AS
SELECT id, provision_secret_ciphertext AS c
  FROM public.ota_groups WHERE id > 'ffffffff-ffff-ffff-ffff-000000000400';

-- ---------------------------------------------------------------------
-- Key ids
-- ---------------------------------------------------------------------

SELECT is(
    ARRAY[public.provision_secret_key_id(decode(repeat('ab', 32), 'hex')),
          public.provision_secret_key_id(decode(repeat('cd', 32), 'hex')),
          public.provision_secret_key_id(decode(repeat('ef', 32), 'hex'))],
    ARRAY['c20b6c1b1005ba79', 'ab9d91cd061dadaf', '0c6050b407bfe365'],
    'provision_secret_key_id gives the first 8 bytes of HMAC-SHA256(key, ''pyaccess key id'') in hex'
);
SELECT is(
    (SELECT pg_catalog.encode(pg_catalog.substr(provision_secret_ciphertext, 2, 8), 'hex')
       FROM public.ota_groups WHERE id = 'ffffffff-ffff-ffff-ffff-000000000403'),
    public.provision_secret_key_id(decode(repeat('ef', 32), 'hex')),
    'the key id stored in an envelope is provision_secret_key_id of the key that sealed it'
);

-- ---------------------------------------------------------------------
-- The census
-- ---------------------------------------------------------------------

SELECT results_eq(
    $$ SELECT key_id, secrets FROM public.provision_secret_key_census()
        WHERE key_id IN ('c20b6c1b1005ba79', 'ab9d91cd061dadaf', '0c6050b407bfe365') $$,
    $$ VALUES ('ab9d91cd061dadaf', 3::bigint),
              ('0c6050b407bfe365', 1::bigint),
              ('c20b6c1b1005ba79', 1::bigint) $$,
    'the census counts the secrets under each key id, most used first, then by id'
);
SELECT is(
    (SELECT key_id FROM public.provision_secret_key_census()
      WHERE key_id = public.provision_secret_key_id(decode(repeat('cd', 32), 'hex'))),
    'ab9d91cd061dadaf',
    'provision_secret_key_id of a key in use matches its census row'
);
SELECT is_empty(
    $$ SELECT * FROM public.provision_secret_key_census() WHERE key_id IS NULL OR secrets < 1 $$,
    'the census has no row for groups without a secret'
);

-- ---------------------------------------------------------------------
-- rewrap_provision_secrets: refusals change nothing
-- ---------------------------------------------------------------------

SELECT throws_ok(
    $$ SELECT * FROM public.rewrap_provision_secrets(
           ARRAY[decode(repeat('ab', 32), 'hex'), decode(repeat('cd', 32), 'hex')],
           'ffffffff-ffff-ffff-ffff-000000000400', 1000) $$,
    'PA005', NULL,
    'rewrap refuses with PA005 when a secret is under a key missing from the ring'
);
SELECT throws_ok(
    $$ SELECT * FROM public.rewrap_provision_secrets(
           ARRAY[decode(repeat('ab', 32), 'hex'), decode(repeat('cd', 31), 'hex')],
           'ffffffff-ffff-ffff-ffff-000000000400', 1000) $$,
    'PA001', NULL,
    'rewrap refuses a key ring holding a 31-byte key with PA001'
);
SELECT throws_ok(
    $$ SELECT * FROM public.rewrap_provision_secrets(ARRAY[]::bytea[], 'ffffffff-ffff-ffff-ffff-000000000400', 1000) $$,
    'PA001', NULL,
    'rewrap refuses an empty key ring with PA001'
);
SELECT throws_ok(
    $$ SELECT * FROM public.rewrap_provision_secrets(NULL::bytea[], 'ffffffff-ffff-ffff-ffff-000000000400', 1000) $$,
    'PA001', NULL,
    'rewrap refuses a NULL key ring with PA001'
);
SELECT is_empty(
    $$ SELECT b.id FROM before_rewrap AS b JOIN public.ota_groups AS g USING (id)
        WHERE g.provision_secret_ciphertext IS DISTINCT FROM b.c $$,
    'a refused rewrap changes no ciphertext (the batch is rolled back as a whole)'
);

-- ---------------------------------------------------------------------
-- rewrap_provision_secrets: batches, resumption, completion
-- ---------------------------------------------------------------------

SELECT results_eq(
    $$ SELECT group_id, old_key_id FROM public.rewrap_provision_secrets(
           ARRAY[decode(repeat('ab', 32), 'hex'), decode(repeat('cd', 32), 'hex'), decode(repeat('ef', 32), 'hex')],
           'ffffffff-ffff-ffff-ffff-000000000400', 2) $$,
    $$ VALUES ('ffffffff-ffff-ffff-ffff-000000000401'::uuid, 'ab9d91cd061dadaf'),
              ('ffffffff-ffff-ffff-ffff-000000000402'::uuid, 'ab9d91cd061dadaf') $$,
    'a first batch of 2 re-encrypts the first two groups in id order and names their old key'
);
SELECT results_eq(
    $$ SELECT group_id, old_key_id FROM public.rewrap_provision_secrets(
           ARRAY[decode(repeat('ab', 32), 'hex'), decode(repeat('cd', 32), 'hex'), decode(repeat('ef', 32), 'hex')],
           'ffffffff-ffff-ffff-ffff-000000000402', 2) $$,
    $$ VALUES ('ffffffff-ffff-ffff-ffff-000000000403'::uuid, '0c6050b407bfe365'),
              ('ffffffff-ffff-ffff-ffff-000000000406'::uuid, 'ab9d91cd061dadaf') $$,
    'the next batch resumes after the last group and skips the group already under the new key'
);
SELECT is_empty(
    $$ SELECT * FROM public.rewrap_provision_secrets(
           ARRAY[decode(repeat('ab', 32), 'hex'), decode(repeat('cd', 32), 'hex'), decode(repeat('ef', 32), 'hex')],
           'ffffffff-ffff-ffff-ffff-000000000406', 2) $$,
    'a batch after the last group re-encrypts nothing'
);
SELECT is_empty(
    $$ SELECT * FROM public.rewrap_provision_secrets(
           ARRAY[decode(repeat('ab', 32), 'hex'), decode(repeat('cd', 32), 'hex'), decode(repeat('ef', 32), 'hex')],
           'ffffffff-ffff-ffff-ffff-000000000400', 1000) $$,
    'a second full rewrap re-encrypts nothing: every secret is under the new key'
);
SELECT is_empty(
    $$ SELECT * FROM public.rewrap_provision_secrets(
           ARRAY[decode(repeat('ab', 32), 'hex')], 'ffffffff-ffff-ffff-ffff-000000000400', 1000) $$,
    'once done, a rewrap with the new key alone succeeds and re-encrypts nothing'
);

SELECT results_eq(
    $$ SELECT key_id, secrets FROM public.provision_secret_key_census()
        WHERE key_id IN ('c20b6c1b1005ba79', 'ab9d91cd061dadaf', '0c6050b407bfe365') $$,
    $$ VALUES ('c20b6c1b1005ba79', 5::bigint) $$,
    'after the rewrap the census shows every secret under the new key only'
);
SELECT is(
    (SELECT provision_secret_ciphertext FROM public.ota_groups WHERE id = 'ffffffff-ffff-ffff-ffff-000000000404'),
    (SELECT c FROM before_rewrap WHERE id = 'ffffffff-ffff-ffff-ffff-000000000404'),
    'the rewrap left the secret already under the new key untouched'
);
SELECT is_empty(
    $$ SELECT b.id FROM before_rewrap AS b JOIN public.ota_groups AS g USING (id)
        WHERE b.id <> 'ffffffff-ffff-ffff-ffff-000000000404'
          AND g.provision_secret_ciphertext IS NOT DISTINCT FROM b.c
          AND b.c IS NOT NULL $$,
    'the rewrap replaced the ciphertext of every secret that was under an old key'
);
SELECT is(
    (SELECT provision_secret_ciphertext FROM public.ota_groups WHERE id = 'ffffffff-ffff-ffff-ffff-000000000405'),
    NULL,
    'the rewrap gave no secret to the group that had none'
);
SELECT results_eq(
    $$ SELECT id, public.get_provision_secret(id, decode(repeat('ab', 32), 'hex'))
         FROM public.ota_groups
        WHERE id > 'ffffffff-ffff-ffff-ffff-000000000400' AND provision_secret_ciphertext IS NOT NULL
        ORDER BY id $$,
    $$ VALUES ('ffffffff-ffff-ffff-ffff-000000000401'::uuid, 'secret 1'),
              ('ffffffff-ffff-ffff-ffff-000000000402'::uuid, 'secret 2'),
              ('ffffffff-ffff-ffff-ffff-000000000403'::uuid, 'secret 3'),
              ('ffffffff-ffff-ffff-ffff-000000000404'::uuid, 'secret 4'),
              ('ffffffff-ffff-ffff-ffff-000000000406'::uuid, 'secret 6') $$,
    'after the rewrap every secret reads back unchanged with the new key alone'
);
SELECT throws_ok(
    $$ SELECT public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000401'::uuid, decode(repeat('cd', 32), 'hex')) $$,
    'PA005', NULL,
    'after the rewrap the previous key no longer reads a re-encrypted secret'
);

-- A rewrapped secret is still bound to its own group.
UPDATE public.ota_groups
   SET provision_secret_ciphertext = (SELECT provision_secret_ciphertext FROM public.ota_groups
                                       WHERE id = 'ffffffff-ffff-ffff-ffff-000000000401')
 WHERE id = 'ffffffff-ffff-ffff-ffff-000000000402';
SELECT throws_ok(
    $$ SELECT public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000402'::uuid, decode(repeat('ab', 32), 'hex')) $$,
    'PA006', NULL,
    'a rewrapped ciphertext copied to another group is refused with PA006'
);

SELECT throws_ok(
    $$ SELECT * FROM public.rewrap_provision_secrets(
           ARRAY[decode(repeat('cd', 32), 'hex'), decode(repeat('ab', 32), 'hex')],
           'ffffffff-ffff-ffff-ffff-000000000401', 1000) $$,
    'PA006', NULL,
    'rewrap refuses with PA006 to re-encrypt a moved ciphertext (and so to launder it into its new group)'
);

-- Rotating back: K2 becomes the new key again and K1 the previous one.
SELECT is(
    (SELECT pg_catalog.count(*) FROM public.rewrap_provision_secrets(
         ARRAY[decode(repeat('cd', 32), 'hex'), decode(repeat('ab', 32), 'hex')],
         'ffffffff-ffff-ffff-ffff-000000000402', 1000)),
    3::bigint,
    'a rewrap to another key re-encrypts each remaining secret once (0403, 0404, 0406)'
);
SELECT is(
    public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000406'::uuid, decode(repeat('cd', 32), 'hex')),
    'secret 6',
    'a secret rotated twice still reads back with the key it now sits under'
);

SELECT * FROM finish();
ROLLBACK;
