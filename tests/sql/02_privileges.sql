-- pyaccess pgTAP: who may call what, checked in the catalog and then by
-- calling each function as login roles that are members of the writer
-- role, of the reader role, and of neither.
--
-- Run against a migrated database, as a superuser:
--     pg_prove -d DB --ext .sql tests/sql/
-- Everything, including the login roles created here, is rolled back.

BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;

SELECT plan(85);

-- ---------------------------------------------------------------------
-- EXECUTE in the catalog: each role exactly its functions, PUBLIC nothing,
-- the private helpers no one but their owner
-- ---------------------------------------------------------------------

SELECT function_privs_are(
    'public', f.name, f.args, r.role,
    CASE WHEN (r.role = 'provision_secret_writer' AND f.writer)
           OR (r.role = 'provision_secret_reader' AND f.reader)
         THEN ARRAY['EXECUTE']::name[]
         ELSE ARRAY[]::name[]
    END
)
  FROM (VALUES
        --  n  function                          arguments                                       writer reader
        ( 1, 'store_provision_secret',         ARRAY['uuid', 'text', 'bytea'],                  true,  false),
        ( 2, 'rewrap_provision_secrets',       ARRAY['bytea[]', 'uuid', 'integer'],             true,  false),
        ( 3, 'get_provision_secret',           ARRAY['uuid', 'bytea'],                          false, true),
        ( 4, 'get_provision_secret',           ARRAY['uuid', 'bytea[]'],                        false, true),
        ( 5, 'provision_secret_key_census',    ARRAY[]::text[],                                 true,  true),
        ( 6, 'provision_secret_key_id',        ARRAY['bytea'],                                  true,  true),
        ( 7, 'provision_secret_session_guard', ARRAY[]::text[],                                 true,  true),
        ( 8, 'provision_secret_log_exposure',  ARRAY[]::text[],                                 true,  true),
        ( 9, '_provision_secret_check_keys',   ARRAY['bytea[]'],                                false, false),
        (10, '_provision_secret_refuse',       ARRAY['uuid', 'bytea', 'bytea[]'],               false, false),
        (11, '_provision_secret_key_id',       ARRAY['bytea'],                                  false, false),
        (12, '_provision_secret_subkeys',      ARRAY['bytea'],                                  false, false),
        (13, '_provision_secret_body',         ARRAY['bytea', 'bytea', 'bytea', 'bytea'],       false, false),
        (14, '_provision_secret_tag',          ARRAY['uuid', 'bytea', 'bytea'],                 false, false),
        (15, '_provision_secret_well_formed',  ARRAY['bytea'],                                  false, false),
        (16, '_provision_secret_authentic',    ARRAY['uuid', 'bytea', 'bytea'],                 false, false),
        (17, '_provision_secret_plaintext',    ARRAY['bytea', 'bytea'],                         false, false)
       ) AS f (n, name, args, writer, reader)
 CROSS JOIN (VALUES (1, 'provision_secret_writer'),
                    (2, 'provision_secret_reader'),
                    (3, 'public')) AS r (n, role)
 ORDER BY f.n, r.n;

-- The encrypted column: no privilege at all for the roles or for PUBLIC
-- (has_column_privilege also counts table-level grants).
SELECT column_privs_are('public', 'ota_groups', 'provision_secret_ciphertext', 'provision_secret_writer',
                        ARRAY[]::name[],
                        'provision_secret_writer has no privilege on ota_groups.provision_secret_ciphertext');
SELECT column_privs_are('public', 'ota_groups', 'provision_secret_ciphertext', 'provision_secret_reader',
                        ARRAY[]::name[],
                        'provision_secret_reader has no privilege on ota_groups.provision_secret_ciphertext');
SELECT column_privs_are('public', 'ota_groups', 'provision_secret_ciphertext', 'public',
                        ARRAY[]::name[],
                        'PUBLIC has no privilege on ota_groups.provision_secret_ciphertext');

-- The session guard turns off parameter logging for the service's session:
-- the roles need SET on those two parameters (granted by a superuser migration).
SELECT ok(pg_catalog.has_parameter_privilege('provision_secret_writer', 'log_parameter_max_length', 'SET'),
          'provision_secret_writer may SET log_parameter_max_length');
SELECT ok(pg_catalog.has_parameter_privilege('provision_secret_writer', 'log_parameter_max_length_on_error', 'SET'),
          'provision_secret_writer may SET log_parameter_max_length_on_error');
SELECT ok(pg_catalog.has_parameter_privilege('provision_secret_reader', 'log_parameter_max_length', 'SET'),
          'provision_secret_reader may SET log_parameter_max_length');
SELECT ok(pg_catalog.has_parameter_privilege('provision_secret_reader', 'log_parameter_max_length_on_error', 'SET'),
          'provision_secret_reader may SET log_parameter_max_length_on_error');

-- ---------------------------------------------------------------------
-- The same, by calling the functions as service login roles
-- ---------------------------------------------------------------------

CREATE ROLE pgtap_pyaccess_writer_login LOGIN IN ROLE provision_secret_writer;
CREATE ROLE pgtap_pyaccess_reader_login LOGIN IN ROLE provision_secret_reader;
CREATE ROLE pgtap_pyaccess_nobody_login LOGIN;

-- Test group ids sort after every gen_random_uuid() (version-4) id.
INSERT INTO public.ota_groups (id, name)
VALUES ('ffffffff-ffff-ffff-ffff-000000000201', 'pgtap 02_privileges group');

-- As a member of provision_secret_writer ------------------------------
SET ROLE pgtap_pyaccess_writer_login;

SELECT lives_ok(
    $$ SELECT public.store_provision_secret('ffffffff-ffff-ffff-ffff-000000000201',
                                            'stored by the writer', decode(repeat('ab', 32), 'hex')) $$,
    'a member of provision_secret_writer can store a provision secret'
);
SELECT throws_ok(
    $$ SELECT public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000201'::uuid,
                                          decode(repeat('ab', 32), 'hex')) $$,
    '42501', NULL,
    'a member of provision_secret_writer cannot read a secret with get_provision_secret(uuid, bytea)'
);
SELECT throws_ok(
    $$ SELECT public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000201'::uuid,
                                          ARRAY[decode(repeat('ab', 32), 'hex')]) $$,
    '42501', NULL,
    'a member of provision_secret_writer cannot read a secret with get_provision_secret(uuid, bytea[])'
);
SELECT lives_ok(
    $$ SELECT public.rewrap_provision_secrets(ARRAY[decode(repeat('ab', 32), 'hex')],
                                              'ffffffff-ffff-ffff-ffff-000000000200', 10) $$,
    'a member of provision_secret_writer can re-encrypt secrets under a new key'
);
SELECT lives_ok(
    $$ SELECT * FROM public.provision_secret_key_census() $$,
    'a member of provision_secret_writer can take the key census'
);
SELECT is(
    public.provision_secret_key_id(decode(repeat('ab', 32), 'hex')),
    'c20b6c1b1005ba79',
    'a member of provision_secret_writer can compute a key id'
);
SELECT throws_ok(
    $$ SELECT provision_secret_ciphertext FROM public.ota_groups $$,
    '42501', NULL,
    'a member of provision_secret_writer cannot SELECT the encrypted column'
);
SELECT throws_ok(
    $$ UPDATE public.ota_groups SET provision_secret_ciphertext = NULL $$,
    '42501', NULL,
    'a member of provision_secret_writer cannot UPDATE the encrypted column directly'
);
SELECT throws_ok(
    $$ SELECT public._provision_secret_tag('ffffffff-ffff-ffff-ffff-000000000201', '\x00'::bytea,
                                           decode(repeat('ab', 64), 'hex')) $$,
    '42501', NULL,
    'a member of provision_secret_writer cannot call the private helper _provision_secret_tag'
);

RESET ROLE;

-- As a member of provision_secret_reader ------------------------------
SET ROLE pgtap_pyaccess_reader_login;

SELECT is(
    public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000201'::uuid, decode(repeat('ab', 32), 'hex')),
    'stored by the writer',
    'a member of provision_secret_reader reads the writer''s secret with get_provision_secret(uuid, bytea)'
);
SELECT is(
    public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000201'::uuid, ARRAY[decode(repeat('ab', 32), 'hex')]),
    'stored by the writer',
    'a member of provision_secret_reader reads the writer''s secret with get_provision_secret(uuid, bytea[])'
);
SELECT throws_ok(
    $$ SELECT public.store_provision_secret('ffffffff-ffff-ffff-ffff-000000000201',
                                            'overwritten by the reader', decode(repeat('ab', 32), 'hex')) $$,
    '42501', NULL,
    'a member of provision_secret_reader cannot store a provision secret'
);
SELECT throws_ok(
    $$ SELECT public.rewrap_provision_secrets(ARRAY[decode(repeat('ab', 32), 'hex')],
                                              'ffffffff-ffff-ffff-ffff-000000000200', 10) $$,
    '42501', NULL,
    'a member of provision_secret_reader cannot re-encrypt secrets'
);
SELECT lives_ok(
    $$ SELECT * FROM public.provision_secret_key_census() $$,
    'a member of provision_secret_reader can take the key census'
);
SELECT is(
    public.provision_secret_key_id(decode(repeat('ab', 32), 'hex')),
    'c20b6c1b1005ba79',
    'a member of provision_secret_reader can compute a key id'
);
SELECT throws_ok(
    $$ SELECT provision_secret_ciphertext FROM public.ota_groups $$,
    '42501', NULL,
    'a member of provision_secret_reader cannot SELECT the encrypted column'
);
SELECT throws_ok(
    $$ SELECT public._provision_secret_plaintext('\x00'::bytea, decode(repeat('ab', 64), 'hex')) $$,
    '42501', NULL,
    'a member of provision_secret_reader cannot call the private helper _provision_secret_plaintext'
);

RESET ROLE;

-- As a login role in neither group ------------------------------------
SET ROLE pgtap_pyaccess_nobody_login;

SELECT throws_ok(
    $$ SELECT public.store_provision_secret('ffffffff-ffff-ffff-ffff-000000000201',
                                            'overwritten by nobody', decode(repeat('ab', 32), 'hex')) $$,
    '42501', NULL,
    'a role in neither group cannot store a provision secret'
);
SELECT throws_ok(
    $$ SELECT public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000201'::uuid,
                                          decode(repeat('ab', 32), 'hex')) $$,
    '42501', NULL,
    'a role in neither group cannot read a secret with get_provision_secret(uuid, bytea)'
);
SELECT throws_ok(
    $$ SELECT public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000201'::uuid,
                                          ARRAY[decode(repeat('ab', 32), 'hex')]) $$,
    '42501', NULL,
    'a role in neither group cannot read a secret with get_provision_secret(uuid, bytea[])'
);
SELECT throws_ok(
    $$ SELECT public.rewrap_provision_secrets(ARRAY[decode(repeat('ab', 32), 'hex')],
                                              'ffffffff-ffff-ffff-ffff-000000000200', 10) $$,
    '42501', NULL,
    'a role in neither group cannot re-encrypt secrets'
);
SELECT throws_ok(
    $$ SELECT * FROM public.provision_secret_key_census() $$,
    '42501', NULL,
    'a role in neither group cannot take the key census'
);
SELECT throws_ok(
    $$ SELECT public.provision_secret_key_id(decode(repeat('ab', 32), 'hex')) $$,
    '42501', NULL,
    'a role in neither group cannot compute a key id'
);
SELECT throws_ok(
    $$ SELECT public.provision_secret_session_guard() $$,
    '42501', NULL,
    'a role in neither group cannot call provision_secret_session_guard'
);
SELECT throws_ok(
    $$ SELECT public.provision_secret_log_exposure() $$,
    '42501', NULL,
    'a role in neither group cannot call provision_secret_log_exposure'
);
SELECT throws_ok(
    $$ SELECT provision_secret_ciphertext FROM public.ota_groups $$,
    '42501', NULL,
    'a role in neither group cannot SELECT the encrypted column'
);

RESET ROLE;

-- The reader's failed store and the others' refusals changed nothing.
SELECT is(
    public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000201'::uuid, decode(repeat('ab', 32), 'hex')),
    'stored by the writer',
    'after every refused call the secret is still the one the writer stored'
);

SELECT * FROM finish();
ROLLBACK;
