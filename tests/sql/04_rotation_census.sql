-- pyaccess pgTAP: rotation. pyaccess.rewrap_todo lists what is not v2 under the target key;
-- pyaccess.rewrap re-seals it with per-row pairs (the rotating process derives them; here
-- pyaccess._pair does); public.rewrap_provision_secrets is 0.1.0's entry point, with master keys.
--
-- Run against a migrated database, as a superuser:
--     pg_prove -d DB --ext .sql tests/sql/
-- Everything, including the login role created here, is rolled back. Secrets that already
-- exist in the database are neither read nor changed: every listing and batch starts after
-- ...0400, beyond every gen_random_uuid() (version-4) id, and the census is filtered on the
-- test keys' ids.
--
-- Keys and their ids (first 8 bytes of HMAC-SHA256(key, 'pyaccess key id')):
--   K1 = decode(repeat('ab', 32), 'hex')  c20b6c1b1005ba79  the new key
--   K2 = decode(repeat('cd', 32), 'hex')  ab9d91cd061dadaf  the previous key
--   K3 = decode(repeat('ef', 32), 'hex')  0c6050b407bfe365  an older key, retired below
-- Groups: 0401, 0402 v2 under K2; 0403 v2 under K3; 0404 v2 under K1; 0405 none;
--         0406 v1 under K2; 0407 v1 under K1 (0.1.0's envelopes, built with its formula).

BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;

SELECT plan(39);

-- K1, K2, K3 by name, and by id.
CREATE FUNCTION pg_temp.k(p_name text)
RETURNS bytea
LANGUAGE sql IMMUTABLE
RETURN pg_catalog.decode(pg_catalog.repeat(CASE p_name WHEN 'K1' THEN 'ab' WHEN 'K2' THEN 'cd' WHEN 'K3' THEN 'ef' END, 32),
                         'hex');
CREATE FUNCTION pg_temp.id(p_name text)
RETURNS bytea
LANGUAGE sql STABLE SECURITY DEFINER
RETURN pyaccess._key_id(pg_temp.k(p_name));

-- What the rotating process derives for one row, from its version and key id (listed by
-- rewrap_todo): its envelope's version byte || key id || pair (v1 pair or v2 group pair) ...
CREATE FUNCTION pg_temp.old_entry(p_group_id uuid, p_version integer, p_key_id bytea)
RETURNS bytea
LANGUAGE sql STABLE SECURITY DEFINER
RETURN pg_catalog.set_byte('\x00'::bytea, 0, p_version) || p_key_id
       || pyaccess._pair(p_version, (SELECT pg_temp.k(n) FROM pg_catalog.unnest(ARRAY['K1', 'K2', 'K3']) AS n
                                      WHERE pg_temp.id(n) = p_key_id), p_group_id);
-- ... and its v2 pair under the target key.
CREATE FUNCTION pg_temp.new_pair(p_group_id uuid, p_name text)
RETURNS bytea
LANGUAGE sql STABLE SECURITY DEFINER
RETURN pyaccess._pair(2, pg_temp.k(p_name), p_group_id);

-- The batch the rotating process works on: rows listed by rewrap_todo.
CREATE TEMP TABLE batch (group_id uuid PRIMARY KEY, version integer, key_id bytea);
GRANT SELECT ON batch TO PUBLIC;

-- pyaccess.rewrap of the whole batch to the key named p_target, as the caller.
CREATE FUNCTION pg_temp.rewrap_batch(p_target text)
RETURNS TABLE (group_id uuid, old_key_id text, old_version integer)
LANGUAGE sql
AS $$
    SELECT * FROM pyaccess.rewrap(
        ARRAY(SELECT b.group_id FROM batch AS b ORDER BY b.group_id),
        ARRAY(SELECT pg_temp.old_entry(b.group_id, b.version, b.key_id) FROM batch AS b ORDER BY b.group_id),
        ARRAY(SELECT pg_temp.new_pair(b.group_id, p_target) FROM batch AS b ORDER BY b.group_id),
        pg_temp.id(p_target))
$$;

SELECT pyaccess.register_key(pg_temp.id(n)) FROM pg_catalog.unnest(ARRAY['K1', 'K2', 'K3']) AS n;

INSERT INTO public.ota_groups (id, name) VALUES
    ('ffffffff-ffff-ffff-ffff-000000000401', 'pgtap 04 group 1 (K2)'),
    ('ffffffff-ffff-ffff-ffff-000000000402', 'pgtap 04 group 2 (K2)'),
    ('ffffffff-ffff-ffff-ffff-000000000403', 'pgtap 04 group 3 (K3)'),
    ('ffffffff-ffff-ffff-ffff-000000000404', 'pgtap 04 group 4 (K1)'),
    ('ffffffff-ffff-ffff-ffff-000000000405', 'pgtap 04 group 5 (no secret)'),
    ('ffffffff-ffff-ffff-ffff-000000000406', 'pgtap 04 group 6 (v1, K2)'),
    ('ffffffff-ffff-ffff-ffff-000000000407', 'pgtap 04 group 7 (v1, K1)');

SELECT public.store_provision_secret(g.id, g.secret, pg_temp.k(g.key))
  FROM (VALUES ('ffffffff-ffff-ffff-ffff-000000000401'::uuid, 'secret 1', 'K2'),
               ('ffffffff-ffff-ffff-ffff-000000000402'::uuid, 'secret 2', 'K2'),
               ('ffffffff-ffff-ffff-ffff-000000000403'::uuid, 'secret 3', 'K3'),
               ('ffffffff-ffff-ffff-ffff-000000000404'::uuid, 'secret 4', 'K1')) AS g (id, secret, key);

UPDATE public.ota_groups AS g
   SET provision_secret_ciphertext = e.body || pyaccess._tag(g.id, e.body, e.pair)
  FROM (SELECT x.id, x.pair,
               pyaccess._body(1, pg_temp.id(x.key), x.pair, gen_random_bytes(16),
                              pg_catalog.convert_to(x.secret, 'UTF8')) AS body
          FROM (SELECT v.id, v.key, v.secret, pyaccess._pair(1, pg_temp.k(v.key), v.id) AS pair
                  FROM (VALUES ('ffffffff-ffff-ffff-ffff-000000000406'::uuid, 'K2', 'secret 6 (v1)'),
                               ('ffffffff-ffff-ffff-ffff-000000000407'::uuid, 'K1', 'secret 7 (v1)'))
                       AS v (id, key, secret)) AS x) AS e
 WHERE g.id = e.id;

CREATE TEMP TABLE before_rotation AS
SELECT id, provision_secret_ciphertext AS c FROM public.ota_groups WHERE id > 'ffffffff-ffff-ffff-ffff-000000000400';
GRANT SELECT ON before_rotation TO PUBLIC;

CREATE ROLE pgtap_pyaccess_rotator_login LOGIN IN ROLE provision_secret_rotator;

-- ---------------------------------------------------------------------
-- Key ids and the census before the rotation
-- ---------------------------------------------------------------------

SELECT is(
    ARRAY[public.provision_secret_key_id(pg_temp.k('K1')), public.provision_secret_key_id(pg_temp.k('K2')),
          public.provision_secret_key_id(pg_temp.k('K3'))],
    ARRAY['c20b6c1b1005ba79', 'ab9d91cd061dadaf', '0c6050b407bfe365'],
    'provision_secret_key_id gives the first 8 bytes of HMAC-SHA256(key, ''pyaccess key id'') in hex'
);
SELECT results_eq(
    $$ SELECT key_id, version, state, secrets FROM pyaccess.census()
        WHERE key_id IN ('c20b6c1b1005ba79', 'ab9d91cd061dadaf', '0c6050b407bfe365') $$,
    $$ VALUES ('ab9d91cd061dadaf', 2, 'active', 2::bigint),
              ('0c6050b407bfe365', 2, 'active', 1::bigint),
              ('ab9d91cd061dadaf', 1, 'active', 1::bigint),
              ('c20b6c1b1005ba79', 1, 'active', 1::bigint),
              ('c20b6c1b1005ba79', 2, 'active', 1::bigint) $$,
    'before the rotation the census counts secrets per key id and envelope version, most used first'
);

-- ---------------------------------------------------------------------
-- pyaccess.rewrap_todo: every secret that is not v2 under the target key, in id order
-- ---------------------------------------------------------------------

SET ROLE pgtap_pyaccess_rotator_login;
SELECT pyaccess.guard('0.2.0');

SELECT results_eq(
    $$ SELECT group_id, version, pg_catalog.encode(key_id, 'hex')
         FROM pyaccess.rewrap_todo(pg_temp.id('K1'), 'ffffffff-ffff-ffff-ffff-000000000400', 100) $$,
    $$ VALUES ('ffffffff-ffff-ffff-ffff-000000000401'::uuid, 2, 'ab9d91cd061dadaf'),
              ('ffffffff-ffff-ffff-ffff-000000000402'::uuid, 2, 'ab9d91cd061dadaf'),
              ('ffffffff-ffff-ffff-ffff-000000000403'::uuid, 2, '0c6050b407bfe365'),
              ('ffffffff-ffff-ffff-ffff-000000000406'::uuid, 1, 'ab9d91cd061dadaf'),
              ('ffffffff-ffff-ffff-ffff-000000000407'::uuid, 1, 'c20b6c1b1005ba79') $$,
    'rewrap_todo lists every secret not v2 under K1 (a v1 envelope under K1 too), never a group without one'
);
SELECT results_eq(
    $$ SELECT group_id FROM pyaccess.rewrap_todo(pg_temp.id('K1'), 'ffffffff-ffff-ffff-ffff-000000000400', 2) $$,
    $$ VALUES ('ffffffff-ffff-ffff-ffff-000000000401'::uuid), ('ffffffff-ffff-ffff-ffff-000000000402'::uuid) $$,
    'rewrap_todo returns at most p_limit rows'
);
SELECT results_eq(
    $$ SELECT group_id FROM pyaccess.rewrap_todo(pg_temp.id('K1'), 'ffffffff-ffff-ffff-ffff-000000000403', 100) $$,
    $$ VALUES ('ffffffff-ffff-ffff-ffff-000000000406'::uuid), ('ffffffff-ffff-ffff-ffff-000000000407'::uuid) $$,
    'rewrap_todo resumes after p_after'
);

RESET ROLE;

-- ---------------------------------------------------------------------
-- pyaccess.rewrap: refusals change nothing
-- ---------------------------------------------------------------------

INSERT INTO batch SELECT * FROM pyaccess.rewrap_todo(pg_temp.id('K1'), 'ffffffff-ffff-ffff-ffff-000000000400', 2);
SELECT pyaccess.retire_key(pg_temp.id('K3'));

SET ROLE pgtap_pyaccess_rotator_login;

SELECT throws_ok($$ SELECT * FROM pg_temp.rewrap_batch('K3') $$, 'PA008', NULL,
                 'pyaccess.rewrap refuses a retired target key with PA008');
SELECT throws_ok(
    $$ SELECT * FROM pyaccess.rewrap(ARRAY(SELECT group_id FROM batch ORDER BY group_id),
                                     ARRAY(SELECT pg_temp.old_entry(group_id, version, key_id) FROM batch ORDER BY group_id),
                                     ARRAY(SELECT pg_temp.new_pair(group_id, 'K1') FROM batch ORDER BY group_id),
                                     '\x0102030405060708') $$,
    'PA008', NULL, 'pyaccess.rewrap refuses a target key id that is not registered with PA008'
);
SELECT throws_ok(
    $$ SELECT * FROM pyaccess.rewrap(ARRAY(SELECT group_id FROM batch ORDER BY group_id),
                                     ARRAY(SELECT pg_catalog.substr(pg_temp.old_entry(group_id, version, key_id), 1, 72)
                                             FROM batch ORDER BY group_id),
                                     ARRAY(SELECT pg_temp.new_pair(group_id, 'K1') FROM batch ORDER BY group_id),
                                     pg_temp.id('K1')) $$,
    'PA001', NULL, 'pyaccess.rewrap refuses an old entry that is not 73 bytes with PA001'
);
SELECT throws_ok(
    $$ SELECT * FROM pyaccess.rewrap(ARRAY(SELECT group_id FROM batch ORDER BY group_id),
                                     ARRAY(SELECT pg_temp.old_entry(group_id, version, key_id) FROM batch ORDER BY group_id),
                                     ARRAY[pg_temp.new_pair('ffffffff-ffff-ffff-ffff-000000000401', 'K1')],
                                     pg_temp.id('K1')) $$,
    'PA001', NULL, 'pyaccess.rewrap refuses arrays of different lengths with PA001'
);
SELECT throws_ok(
    $$ SELECT * FROM pyaccess.rewrap(ARRAY(SELECT group_id FROM batch ORDER BY group_id),
                                     ARRAY(SELECT pg_temp.old_entry(group_id, version, key_id) FROM batch ORDER BY group_id),
                                     ARRAY(SELECT pg_temp.new_pair(group_id, 'K1') FROM batch ORDER BY group_id),
                                     pg_catalog.substr(pg_temp.id('K1'), 1, 7)) $$,
    'PA001', NULL, 'pyaccess.rewrap refuses a 7-byte target key id with PA001'
);
SELECT set_config('pyaccess.guarded', '', false);
SELECT throws_ok($$ SELECT * FROM pg_temp.rewrap_batch('K1') $$, 'PA007', NULL,
                 'pyaccess.rewrap on a session that is not guarded raises PA007');
SELECT pyaccess.guard('0.2.0');

RESET ROLE;
SELECT is_empty(
    $$ SELECT b.id FROM before_rotation AS b JOIN public.ota_groups AS g USING (id)
        WHERE g.provision_secret_ciphertext IS DISTINCT FROM b.c $$,
    'the refused rewraps changed no ciphertext'
);
SET ROLE pgtap_pyaccess_rotator_login;

-- ---------------------------------------------------------------------
-- pyaccess.rewrap: batches re-seal as v2 under the target; rows changed since are left alone
-- ---------------------------------------------------------------------

SELECT results_eq(
    $$ SELECT * FROM pg_temp.rewrap_batch('K1') $$,
    $$ VALUES ('ffffffff-ffff-ffff-ffff-000000000401'::uuid, 'ab9d91cd061dadaf', 2),
              ('ffffffff-ffff-ffff-ffff-000000000402'::uuid, 'ab9d91cd061dadaf', 2) $$,
    'a first batch re-seals 0401 and 0402 under K1 and names their old key id and version'
);

RESET ROLE;

DELETE FROM batch;
INSERT INTO batch SELECT * FROM pyaccess.rewrap_todo(pg_temp.id('K1'), 'ffffffff-ffff-ffff-ffff-000000000402', 100);
-- Between the listing and the re-seal, writers store new secrets in 0403 (now under K1)
-- and 0406 (now v2 under K2): the pairs the rotator derived for them no longer fit.
SELECT public.store_provision_secret('ffffffff-ffff-ffff-ffff-000000000403', 'stored meanwhile 3', pg_temp.k('K1'));
SELECT public.store_provision_secret('ffffffff-ffff-ffff-ffff-000000000406', 'stored meanwhile 6', pg_temp.k('K2'));

SET ROLE pgtap_pyaccess_rotator_login;
SELECT results_eq(
    $$ SELECT * FROM pg_temp.rewrap_batch('K1') $$,
    $$ VALUES ('ffffffff-ffff-ffff-ffff-000000000407'::uuid, 'c20b6c1b1005ba79', 1) $$,
    'the next batch re-seals the v1 envelope under K1 as v2, and skips the two rows stored since the listing'
);
RESET ROLE;

SELECT is(
    public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000403'::uuid, pg_temp.k('K1')),
    'stored meanwhile 3',
    'a row whose key id changed since the listing keeps the newer secret (not overwritten by a stale re-seal)'
);
SELECT is(
    public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000406'::uuid, pg_temp.k('K2')),
    'stored meanwhile 6',
    'a row whose envelope version changed since the listing keeps the newer secret'
);
SELECT results_eq(
    $$ SELECT group_id, version, pg_catalog.encode(key_id, 'hex')
         FROM pyaccess.rewrap_todo(pg_temp.id('K1'), 'ffffffff-ffff-ffff-ffff-000000000400', 100) $$,
    $$ VALUES ('ffffffff-ffff-ffff-ffff-000000000406'::uuid, 2, 'ab9d91cd061dadaf') $$,
    'rewrap_todo now lists only the row stored under K2 meanwhile'
);

-- ---------------------------------------------------------------------
-- public.rewrap_provision_secrets (0.1.0's entry point, master keys): finishes the job
-- ---------------------------------------------------------------------

SET ROLE pgtap_pyaccess_rotator_login;

SELECT throws_ok(
    $$ SELECT * FROM public.rewrap_provision_secrets(ARRAY[pg_temp.k('K1')], 'ffffffff-ffff-ffff-ffff-000000000400', 1000) $$,
    'PA005', NULL, 'rewrap_provision_secrets refuses with PA005 when a secret is under a key missing from the ring'
);
SELECT throws_ok(
    $$ SELECT * FROM public.rewrap_provision_secrets(ARRAY[pg_temp.k('K3'), pg_temp.k('K1'), pg_temp.k('K2')],
                                                     'ffffffff-ffff-ffff-ffff-000000000400', 1000) $$,
    'PA008', NULL, 'rewrap_provision_secrets refuses a retired first key (the target) with PA008'
);
SELECT throws_ok(
    $$ SELECT * FROM public.rewrap_provision_secrets(ARRAY[pg_temp.k('K1'), pg_catalog.substr(pg_temp.k('K2'), 1, 31)],
                                                     'ffffffff-ffff-ffff-ffff-000000000400', 1000) $$,
    'PA001', NULL, 'rewrap_provision_secrets refuses a key ring holding a 31-byte key with PA001'
);
SELECT throws_ok(
    $$ SELECT * FROM public.rewrap_provision_secrets(ARRAY[]::bytea[], 'ffffffff-ffff-ffff-ffff-000000000400', 1000) $$,
    'PA001', NULL, 'rewrap_provision_secrets refuses an empty key ring with PA001'
);
SELECT throws_ok(
    $$ SELECT * FROM public.rewrap_provision_secrets(ARRAY[pg_temp.k('K1'), pg_temp.k('K2')],
                                                     'ffffffff-ffff-ffff-ffff-000000000400', 0) $$,
    '22023', NULL, 'rewrap_provision_secrets refuses a batch size of 0 with 22023'
);
SELECT results_eq(
    $$ SELECT * FROM public.rewrap_provision_secrets(ARRAY[pg_temp.k('K1'), pg_temp.k('K2')],
                                                     'ffffffff-ffff-ffff-ffff-000000000400', 1000) $$,
    $$ VALUES ('ffffffff-ffff-ffff-ffff-000000000406'::uuid, 'ab9d91cd061dadaf') $$,
    'rewrap_provision_secrets re-seals the last row under K1 and names its old key id'
);
SELECT is_empty(
    $$ SELECT * FROM pyaccess.rewrap_todo(pg_temp.id('K1'), 'ffffffff-ffff-ffff-ffff-000000000400', 100) $$,
    'nothing is left to re-seal: every secret is v2 under K1'
);
SELECT is_empty(
    $$ SELECT * FROM public.rewrap_provision_secrets(ARRAY[pg_temp.k('K1')], 'ffffffff-ffff-ffff-ffff-000000000400', 1000) $$,
    'once done, a rewrap with K1 alone succeeds and re-seals nothing'
);

RESET ROLE;

-- ---------------------------------------------------------------------
-- After the rotation: the census, the envelopes, the secrets
-- ---------------------------------------------------------------------

SELECT results_eq(
    $$ SELECT key_id, version, state, secrets FROM pyaccess.census()
        WHERE key_id IN ('c20b6c1b1005ba79', 'ab9d91cd061dadaf', '0c6050b407bfe365') $$,
    $$ VALUES ('c20b6c1b1005ba79', 2, 'active', 6::bigint),
              ('0c6050b407bfe365', NULL, 'retired', 0::bigint),
              ('ab9d91cd061dadaf', NULL, 'active', 0::bigint) $$,
    'after the rotation the census shows every secret as v2 under K1; K2 and K3 protect nothing'
);
SELECT results_eq(
    $$ SELECT key_id, secrets FROM public.provision_secret_key_census()
        WHERE key_id IN ('c20b6c1b1005ba79', 'ab9d91cd061dadaf', '0c6050b407bfe365') $$,
    $$ VALUES ('c20b6c1b1005ba79', 6::bigint) $$,
    '0.1.0''s census agrees'
);
SELECT is(
    (SELECT provision_secret_ciphertext FROM public.ota_groups WHERE id = 'ffffffff-ffff-ffff-ffff-000000000404'),
    (SELECT c FROM before_rotation WHERE id = 'ffffffff-ffff-ffff-ffff-000000000404'),
    'the rotation left the secret already v2 under K1 untouched'
);
SELECT is(
    (SELECT provision_secret_ciphertext FROM public.ota_groups WHERE id = 'ffffffff-ffff-ffff-ffff-000000000405'),
    NULL,
    'the rotation gave no secret to the group that had none'
);
SELECT results_eq(
    $$ SELECT id, public.get_provision_secret(id, pg_temp.k('K1'))
         FROM public.ota_groups
        WHERE id > 'ffffffff-ffff-ffff-ffff-000000000400' AND provision_secret_ciphertext IS NOT NULL
        ORDER BY id $$,
    $$ VALUES ('ffffffff-ffff-ffff-ffff-000000000401'::uuid, 'secret 1'),
              ('ffffffff-ffff-ffff-ffff-000000000402'::uuid, 'secret 2'),
              ('ffffffff-ffff-ffff-ffff-000000000403'::uuid, 'stored meanwhile 3'),
              ('ffffffff-ffff-ffff-ffff-000000000404'::uuid, 'secret 4'),
              ('ffffffff-ffff-ffff-ffff-000000000406'::uuid, 'stored meanwhile 6'),
              ('ffffffff-ffff-ffff-ffff-000000000407'::uuid, 'secret 7 (v1)') $$,
    'after the rotation every secret reads back unchanged with K1 alone'
);
SELECT throws_ok(
    $$ SELECT public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000401'::uuid, pg_temp.k('K2')) $$,
    'PA005', NULL, 'after the rotation the previous key no longer reads a re-sealed secret'
);
SELECT is_empty(
    $$ SELECT b.id FROM before_rotation AS b JOIN public.ota_groups AS g USING (id)
        WHERE b.id <> 'ffffffff-ffff-ffff-ffff-000000000404' AND b.c IS NOT NULL
          AND (g.provision_secret_ciphertext = b.c
               OR pg_catalog.substr(g.provision_secret_ciphertext, 10, 16) = pg_catalog.substr(b.c, 10, 16)) $$,
    'every re-sealed secret has a new ciphertext with a fresh IV'
);

-- ---------------------------------------------------------------------
-- A moved ciphertext is never laundered into its new group by a rotation
-- ---------------------------------------------------------------------

UPDATE public.ota_groups
   SET provision_secret_ciphertext = (SELECT provision_secret_ciphertext FROM public.ota_groups
                                       WHERE id = 'ffffffff-ffff-ffff-ffff-000000000401')
 WHERE id = 'ffffffff-ffff-ffff-ffff-000000000402';
CREATE TEMP TABLE before_rotating_back AS
SELECT id, provision_secret_ciphertext AS c FROM public.ota_groups WHERE id > 'ffffffff-ffff-ffff-ffff-000000000400';
GRANT SELECT ON before_rotating_back TO PUBLIC;
DELETE FROM batch;
INSERT INTO batch SELECT * FROM pyaccess.rewrap_todo(pg_temp.id('K2'), 'ffffffff-ffff-ffff-ffff-000000000400', 100);

SET ROLE pgtap_pyaccess_rotator_login;
SELECT throws_ok($$ SELECT * FROM pg_temp.rewrap_batch('K2') $$, 'PA006', NULL,
                 'pyaccess.rewrap refuses with PA006 to re-seal a ciphertext copied from another group');
SELECT throws_ok(
    $$ SELECT * FROM public.rewrap_provision_secrets(ARRAY[pg_temp.k('K2'), pg_temp.k('K1')],
                                                     'ffffffff-ffff-ffff-ffff-000000000400', 1000) $$,
    'PA006', NULL, 'rewrap_provision_secrets refuses with PA006 to re-seal a ciphertext copied from another group'
);
RESET ROLE;
SELECT is_empty(
    $$ SELECT b.id FROM before_rotating_back AS b JOIN public.ota_groups AS g USING (id)
        WHERE g.provision_secret_ciphertext IS DISTINCT FROM b.c $$,
    'a batch holding a moved ciphertext is rolled back as a whole: no row of it was re-sealed'
);

-- Rotating back to K2 once the moved copy is gone, in batches of two.
UPDATE public.ota_groups SET provision_secret_ciphertext = NULL WHERE id = 'ffffffff-ffff-ffff-ffff-000000000402';
SET ROLE pgtap_pyaccess_rotator_login;
SELECT results_eq(
    $$ SELECT group_id FROM public.rewrap_provision_secrets(ARRAY[pg_temp.k('K2'), pg_temp.k('K1')],
                                                             'ffffffff-ffff-ffff-ffff-000000000400', 2) $$,
    $$ VALUES ('ffffffff-ffff-ffff-ffff-000000000401'::uuid), ('ffffffff-ffff-ffff-ffff-000000000403'::uuid) $$,
    'rotating back to K2: a first batch of 2 re-seals the first two secrets in id order'
);
SELECT results_eq(
    $$ SELECT group_id FROM public.rewrap_provision_secrets(ARRAY[pg_temp.k('K2'), pg_temp.k('K1')],
                                                             'ffffffff-ffff-ffff-ffff-000000000403', 2) $$,
    $$ VALUES ('ffffffff-ffff-ffff-ffff-000000000404'::uuid), ('ffffffff-ffff-ffff-ffff-000000000406'::uuid) $$,
    'the next batch resumes after the last group of the previous one'
);
SELECT results_eq(
    $$ SELECT group_id FROM public.rewrap_provision_secrets(ARRAY[pg_temp.k('K2'), pg_temp.k('K1')],
                                                             'ffffffff-ffff-ffff-ffff-000000000406', 2) $$,
    $$ VALUES ('ffffffff-ffff-ffff-ffff-000000000407'::uuid) $$,
    'the last batch re-seals what remains'
);
RESET ROLE;
SELECT is(
    public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000407'::uuid, pg_temp.k('K2')),
    'secret 7 (v1)',
    'a secret rotated twice (v1 under K1, v2 under K1, v2 under K2) still reads back with K2'
);

SELECT * FROM finish();
ROLLBACK;
