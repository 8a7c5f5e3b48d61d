-- pyaccess pgTAP: the database objects the migrations create.
--
-- Run against a migrated database, as a superuser:
--     pg_prove -d DB --ext .sql tests/sql/
-- Everything happens in one transaction that is rolled back.

BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;

SELECT plan(68);

-- ---------------------------------------------------------------------
-- pgcrypto and the table
-- ---------------------------------------------------------------------

SELECT has_extension('pgcrypto', 'the pgcrypto extension is installed');

SELECT has_table('public', 'ota_groups', 'table public.ota_groups exists');
SELECT has_pk('public', 'ota_groups', 'ota_groups has a primary key');
SELECT col_is_pk('public', 'ota_groups', 'id', 'ota_groups.id is the primary key');
SELECT col_type_is('public', 'ota_groups', 'id', 'uuid', 'ota_groups.id is a uuid');
SELECT col_type_is('public', 'ota_groups', 'name', 'text', 'ota_groups.name is text');
SELECT col_not_null('public', 'ota_groups', 'name', 'ota_groups.name is NOT NULL');
SELECT col_is_unique('public', 'ota_groups', ARRAY['name'], 'ota_groups.name is UNIQUE');
SELECT col_type_is('public', 'ota_groups', 'created_at', 'timestamp with time zone',
                   'ota_groups.created_at is a timestamptz');
SELECT col_not_null('public', 'ota_groups', 'created_at', 'ota_groups.created_at is NOT NULL');

SELECT has_column('public', 'ota_groups', 'provision_secret_ciphertext',
                  'ota_groups has the column provision_secret_ciphertext');
SELECT col_type_is('public', 'ota_groups', 'provision_secret_ciphertext', 'bytea',
                   'ota_groups.provision_secret_ciphertext is bytea');
SELECT col_is_null('public', 'ota_groups', 'provision_secret_ciphertext',
                   'ota_groups.provision_secret_ciphertext is nullable (adding it never rewrites the table)');
SELECT col_hasnt_default('public', 'ota_groups', 'provision_secret_ciphertext',
                         'ota_groups.provision_secret_ciphertext has no default (adding it never rewrites the table)');
SELECT is_empty(
    $$ SELECT a.attname
         FROM pg_catalog.pg_attribute AS a
        WHERE a.attrelid = 'public.ota_groups'::regclass
          AND a.attnum > 0 AND NOT a.attisdropped
          AND a.attname ~* 'secret'
          AND a.atttypid <> 'bytea'::regtype $$,
    'ota_groups has no non-bytea column that could hold a plaintext secret'
);

-- ---------------------------------------------------------------------
-- Functions, with their exact argument types
-- ---------------------------------------------------------------------

SELECT has_function('public', 'store_provision_secret', ARRAY['uuid', 'text', 'bytea'],
                    'function store_provision_secret(uuid, text, bytea) exists');
SELECT has_function('public', 'get_provision_secret', ARRAY['uuid', 'bytea'],
                    'function get_provision_secret(uuid, bytea) exists');
SELECT has_function('public', 'get_provision_secret', ARRAY['uuid', 'bytea[]'],
                    'function get_provision_secret(uuid, bytea[]) exists (the key-ring variant)');
SELECT has_function('public', 'provision_secret_key_census', ARRAY[]::name[],
                    'function provision_secret_key_census() exists');
SELECT has_function('public', 'provision_secret_key_id', ARRAY['bytea'],
                    'function provision_secret_key_id(bytea) exists');
SELECT has_function('public', 'rewrap_provision_secrets', ARRAY['bytea[]', 'uuid', 'integer'],
                    'function rewrap_provision_secrets(bytea[], uuid, integer) exists');
SELECT has_function('public', 'provision_secret_session_guard', ARRAY[]::name[],
                    'function provision_secret_session_guard() exists');
SELECT has_function('public', 'provision_secret_log_exposure', ARRAY[]::name[],
                    'function provision_secret_log_exposure() exists');
SELECT has_function('public', '_provision_secret_check_keys', ARRAY['bytea[]'],
                    'private helper _provision_secret_check_keys(bytea[]) exists');
SELECT has_function('public', '_provision_secret_refuse', ARRAY['uuid', 'bytea', 'bytea[]'],
                    'private helper _provision_secret_refuse(uuid, bytea, bytea[]) exists');
SELECT has_function('public', '_provision_secret_key_id', ARRAY['bytea'],
                    'private helper _provision_secret_key_id(bytea) exists');
SELECT has_function('public', '_provision_secret_subkeys', ARRAY['bytea'],
                    'private helper _provision_secret_subkeys(bytea) exists');
SELECT has_function('public', '_provision_secret_body', ARRAY['bytea', 'bytea', 'bytea', 'bytea'],
                    'private helper _provision_secret_body(bytea, bytea, bytea, bytea) exists');
SELECT has_function('public', '_provision_secret_tag', ARRAY['uuid', 'bytea', 'bytea'],
                    'private helper _provision_secret_tag(uuid, bytea, bytea) exists');
SELECT has_function('public', '_provision_secret_well_formed', ARRAY['bytea'],
                    'private helper _provision_secret_well_formed(bytea) exists');
SELECT has_function('public', '_provision_secret_authentic', ARRAY['uuid', 'bytea', 'bytea'],
                    'private helper _provision_secret_authentic(uuid, bytea, bytea) exists');
SELECT has_function('public', '_provision_secret_plaintext', ARRAY['bytea', 'bytea'],
                    'private helper _provision_secret_plaintext(bytea, bytea) exists');

-- A function added without being listed here would also escape the
-- privilege checks of 02_privileges.sql.
SELECT is_empty(
    $$ SELECT p.proname || '(' || pg_catalog.oidvectortypes(p.proargtypes) || ')'
         FROM pg_catalog.pg_proc AS p
        WHERE p.pronamespace = 'public'::regnamespace
          AND p.proname ~ 'provision_secret'
          AND p.proname || '(' || pg_catalog.oidvectortypes(p.proargtypes) || ')' NOT IN (
              'store_provision_secret(uuid, text, bytea)',
              'get_provision_secret(uuid, bytea)',
              'get_provision_secret(uuid, bytea[])',
              'provision_secret_key_census()',
              'provision_secret_key_id(bytea)',
              'rewrap_provision_secrets(bytea[], uuid, integer)',
              'provision_secret_session_guard()',
              'provision_secret_log_exposure()',
              '_provision_secret_check_keys(bytea[])',
              '_provision_secret_refuse(uuid, bytea, bytea[])',
              '_provision_secret_key_id(bytea)',
              '_provision_secret_subkeys(bytea)',
              '_provision_secret_body(bytea, bytea, bytea, bytea)',
              '_provision_secret_tag(uuid, bytea, bytea)',
              '_provision_secret_well_formed(bytea)',
              '_provision_secret_authentic(uuid, bytea, bytea)',
              '_provision_secret_plaintext(bytea, bytea)') $$,
    'public has no provision secret function beyond the seventeen tested here'
);

SELECT function_returns('public', 'store_provision_secret', ARRAY['uuid', 'text', 'bytea'], 'void',
                        'store_provision_secret(uuid, text, bytea) returns void');
SELECT function_returns('public', 'get_provision_secret', ARRAY['uuid', 'bytea'], 'text',
                        'get_provision_secret(uuid, bytea) returns text');
SELECT function_returns('public', 'get_provision_secret', ARRAY['uuid', 'bytea[]'], 'text',
                        'get_provision_secret(uuid, bytea[]) returns text');
SELECT is(
    pg_catalog.pg_get_function_arguments(pg_catalog.to_regprocedure('public.rewrap_provision_secrets(bytea[], uuid, integer)')),
    'keys bytea[], after_group_id uuid DEFAULT NULL::uuid, batch_size integer DEFAULT 1000',
    'rewrap_provision_secrets defaults to starting at the first group, in batches of 1000'
);

-- ---------------------------------------------------------------------
-- SECURITY DEFINER where the caller must not touch the table itself;
-- SECURITY INVOKER where the function acts on the caller's own session
-- ---------------------------------------------------------------------

SELECT is_definer('public', 'store_provision_secret', ARRAY['uuid', 'text', 'bytea'],
                  'store_provision_secret(uuid, text, bytea) is SECURITY DEFINER');
SELECT is_definer('public', 'get_provision_secret', ARRAY['uuid', 'bytea'],
                  'get_provision_secret(uuid, bytea) is SECURITY DEFINER');
SELECT is_definer('public', 'get_provision_secret', ARRAY['uuid', 'bytea[]'],
                  'get_provision_secret(uuid, bytea[]) is SECURITY DEFINER');
SELECT is_definer('public', 'provision_secret_key_census', ARRAY[]::name[],
                  'provision_secret_key_census() is SECURITY DEFINER');
SELECT is_definer('public', 'provision_secret_key_id', ARRAY['bytea'],
                  'provision_secret_key_id(bytea) is SECURITY DEFINER');
SELECT is_definer('public', 'rewrap_provision_secrets', ARRAY['bytea[]', 'uuid', 'integer'],
                  'rewrap_provision_secrets(bytea[], uuid, integer) is SECURITY DEFINER');
SELECT isnt_definer('public', 'provision_secret_session_guard', ARRAY[]::name[],
                    'provision_secret_session_guard() is SECURITY INVOKER (it changes only the caller''s session)');
SELECT isnt_definer('public', 'provision_secret_log_exposure', ARRAY[]::name[],
                    'provision_secret_log_exposure() is SECURITY INVOKER (it reads the caller''s session settings)');

-- ---------------------------------------------------------------------
-- Every function whose names are resolved at run time pins its
-- search_path (pg_temp last, so a caller's temporary objects can never
-- shadow anything); the expression helpers have SQL-standard bodies,
-- resolved once at CREATE, and no SET clause, so they are inlined
-- ---------------------------------------------------------------------

SELECT is(
    p.proconfig,
    ARRAY['search_path=pg_catalog, pg_temp'],
    f.signature || ' pins search_path to pg_catalog, pg_temp'
)
  FROM (VALUES (1, 'public.store_provision_secret(uuid, text, bytea)'),
               (2, 'public.get_provision_secret(uuid, bytea)'),
               (3, 'public.get_provision_secret(uuid, bytea[])'),
               (4, 'public.provision_secret_key_census()'),
               (5, 'public.provision_secret_key_id(bytea)'),
               (6, 'public.rewrap_provision_secrets(bytea[], uuid, integer)'),
               (7, 'public.provision_secret_session_guard()'),
               (8, 'public.provision_secret_log_exposure()'),
               (9, 'public._provision_secret_check_keys(bytea[])'),
               (10, 'public._provision_secret_refuse(uuid, bytea, bytea[])')) AS f (n, signature)
  LEFT JOIN pg_catalog.pg_proc AS p ON p.oid = pg_catalog.to_regprocedure(f.signature)
 ORDER BY f.n;

SELECT ok(
    (SELECT p.prosqlbody IS NOT NULL AND p.proconfig IS NULL AND NOT p.prosecdef
       FROM pg_catalog.pg_proc AS p WHERE p.oid = 'public._provision_secret_key_id(bytea)'::regprocedure),
    '_provision_secret_key_id(bytea) has a SQL-standard body (names bound at CREATE) and no SET clause (inlinable)'
);
SELECT ok(
    (SELECT p.prosqlbody IS NOT NULL AND p.proconfig IS NULL AND NOT p.prosecdef
       FROM pg_catalog.pg_proc AS p WHERE p.oid = 'public._provision_secret_subkeys(bytea)'::regprocedure),
    '_provision_secret_subkeys(bytea) has a SQL-standard body (names bound at CREATE) and no SET clause (inlinable)'
);
SELECT ok(
    (SELECT p.prosqlbody IS NOT NULL AND p.proconfig IS NULL AND NOT p.prosecdef
       FROM pg_catalog.pg_proc AS p WHERE p.oid = 'public._provision_secret_body(bytea, bytea, bytea, bytea)'::regprocedure),
    '_provision_secret_body(bytea, bytea, bytea, bytea) has a SQL-standard body (names bound at CREATE) and no SET clause (inlinable)'
);
SELECT ok(
    (SELECT p.prosqlbody IS NOT NULL AND p.proconfig IS NULL AND NOT p.prosecdef
       FROM pg_catalog.pg_proc AS p WHERE p.oid = 'public._provision_secret_tag(uuid, bytea, bytea)'::regprocedure),
    '_provision_secret_tag(uuid, bytea, bytea) has a SQL-standard body (names bound at CREATE) and no SET clause (inlinable)'
);
SELECT ok(
    (SELECT p.prosqlbody IS NOT NULL AND p.proconfig IS NULL AND NOT p.prosecdef
       FROM pg_catalog.pg_proc AS p WHERE p.oid = 'public._provision_secret_well_formed(bytea)'::regprocedure),
    '_provision_secret_well_formed(bytea) has a SQL-standard body (names bound at CREATE) and no SET clause (inlinable)'
);
SELECT ok(
    (SELECT p.prosqlbody IS NOT NULL AND p.proconfig IS NULL AND NOT p.prosecdef
       FROM pg_catalog.pg_proc AS p WHERE p.oid = 'public._provision_secret_authentic(uuid, bytea, bytea)'::regprocedure),
    '_provision_secret_authentic(uuid, bytea, bytea) has a SQL-standard body (names bound at CREATE) and no SET clause (inlinable)'
);
SELECT ok(
    (SELECT p.prosqlbody IS NOT NULL AND p.proconfig IS NULL AND NOT p.prosecdef
       FROM pg_catalog.pg_proc AS p WHERE p.oid = 'public._provision_secret_plaintext(bytea, bytea)'::regprocedure),
    '_provision_secret_plaintext(bytea, bytea) has a SQL-standard body (names bound at CREATE) and no SET clause (inlinable)'
);

-- ---------------------------------------------------------------------
-- The two group roles: present, NOLOGIN, no special powers
-- ---------------------------------------------------------------------

SELECT has_role('provision_secret_writer', 'role provision_secret_writer exists');
SELECT has_role('provision_secret_reader', 'role provision_secret_reader exists');
SELECT is(
    (SELECT rolcanlogin FROM pg_catalog.pg_roles WHERE rolname = 'provision_secret_writer'),
    false,
    'provision_secret_writer is NOLOGIN'
);
SELECT is(
    (SELECT rolcanlogin FROM pg_catalog.pg_roles WHERE rolname = 'provision_secret_reader'),
    false,
    'provision_secret_reader is NOLOGIN'
);
SELECT is(
    (SELECT ARRAY[rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolreplication]
       FROM pg_catalog.pg_roles WHERE rolname = 'provision_secret_writer'),
    ARRAY[false, false, false, false, false],
    'provision_secret_writer is neither superuser nor CREATEROLE, CREATEDB, BYPASSRLS or REPLICATION'
);
SELECT is(
    (SELECT ARRAY[rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolreplication]
       FROM pg_catalog.pg_roles WHERE rolname = 'provision_secret_reader'),
    ARRAY[false, false, false, false, false],
    'provision_secret_reader is neither superuser nor CREATEROLE, CREATEDB, BYPASSRLS or REPLICATION'
);

SELECT * FROM finish();
ROLLBACK;
