-- pyaccess pgTAP: the database objects of release 0.2.0, read from the catalog.
--
-- Run against a migrated database, as a superuser:
--     pg_prove -d DB --ext .sql tests/sql/
-- Everything happens in one transaction that is rolled back.
--
-- The functions are checked by iterating over the one list, pyaccess.api (owner, grants,
-- SECURITY DEFINER, search_path), never over a list copied here: a function added to the
-- release is checked as soon as it is declared, and one not declared is caught as drift.

BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;

-- Each function on the list, as the catalog shows it.
CREATE TEMP TABLE api_fn AS
SELECT a.signature, a.grantees, p.oid, n.nspname AS schema_name, p.proname AS function_name,
       ARRAY(SELECT pg_catalog.format_type(t.type, NULL)
               FROM pg_catalog.unnest(p.proargtypes::oid[]) WITH ORDINALITY AS t (type, n)
              ORDER BY t.n)::name[] AS args,
       p.prosecdef, p.proconfig, p.prosqlbody IS NOT NULL AS sql_standard_body
  FROM pyaccess.api AS a
  LEFT JOIN pg_catalog.pg_proc AS p ON p.oid = pg_catalog.to_regprocedure(a.signature)
  LEFT JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace;

-- The SECURITY DEFINER entry points of 0.2.0: each acts on ota_groups or the registry for a
-- caller who has no privilege on them. Everything else runs with the caller's rights.
CREATE TEMP TABLE expected_definers (signature text PRIMARY KEY);
INSERT INTO expected_definers VALUES
    ('public.store_provision_secret(uuid,text,bytea)'),
    ('public.get_provision_secret(uuid,bytea)'),
    ('public.get_provision_secret(uuid,bytea[])'),
    ('public.provision_secret_key_id(bytea)'),
    ('public.provision_secret_key_census()'),
    ('public.rewrap_provision_secrets(bytea[],uuid,integer)'),
    ('pyaccess.seal(uuid,bytea,bytea)'),
    ('pyaccess.register_key(bytea)'),
    ('pyaccess.retire_key(bytea)'),
    ('pyaccess.census()'),
    ('pyaccess.rewrap_todo(bytea,uuid,integer)'),
    ('pyaccess.rewrap(uuid[],bytea[],bytea[],bytea)');

SELECT plan(77 + 8 * (SELECT pg_catalog.count(*)::integer FROM api_fn)
               + (SELECT pg_catalog.count(*)::integer FROM api_fn WHERE prosecdef));

-- ---------------------------------------------------------------------
-- pgcrypto, the table and the ciphertext column
-- ---------------------------------------------------------------------

SELECT has_extension('pgcrypto', 'the pgcrypto extension is installed');

SELECT has_table('public', 'ota_groups', 'table public.ota_groups exists');
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
          AND a.attname ~* 'secret|key'
          AND a.attname <> 'provision_secret_ciphertext' $$,
    'ota_groups has no column besides provision_secret_ciphertext that could hold a secret or a key'
);
SELECT is_empty(
    $$ SELECT t.tgname FROM pg_catalog.pg_trigger AS t
        WHERE t.tgrelid = 'public.ota_groups'::regclass AND NOT t.tgisinternal $$,
    'ota_groups has no trigger (nothing runs as the owner when a secret is written)'
);
SELECT ok(
    (SELECT pg_catalog.col_description('public.ota_groups'::regclass, a.attnum) ~ 'version \(1 or 2\)'
       FROM pg_catalog.pg_attribute AS a
      WHERE a.attrelid = 'public.ota_groups'::regclass AND a.attname = 'provision_secret_ciphertext'),
    'the ciphertext column''s comment documents envelope versions 1 and 2'
);

-- ---------------------------------------------------------------------
-- Roles: present, NOLOGIN, no special powers; the owner is never a superuser
-- ---------------------------------------------------------------------

SELECT has_role(r, 'role ' || r || ' exists')
  FROM pg_catalog.unnest(ARRAY['provision_secret_owner', 'provision_secret_rotator',
                               'provision_secret_writer', 'provision_secret_reader']) AS r;
SELECT is(
    (SELECT ARRAY[rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolreplication]
       FROM pg_catalog.pg_roles WHERE rolname = r),
    ARRAY[false, false, false, false, false, false],
    r || ' is NOLOGIN and neither superuser nor CREATEROLE, CREATEDB, BYPASSRLS or REPLICATION'
)
  FROM pg_catalog.unnest(ARRAY['provision_secret_owner', 'provision_secret_rotator',
                               'provision_secret_writer', 'provision_secret_reader']) AS r;
SELECT isnt_superuser('provision_secret_owner',
                      'provision_secret_owner, which SECURITY DEFINER bodies run as, is not a superuser');
SELECT is_empty(
    $$ SELECT m.member::regrole FROM pg_catalog.pg_auth_members AS m
        WHERE m.roleid = 'provision_secret_owner'::regrole
          AND m.member IN ('provision_secret_reader'::regrole, 'provision_secret_writer'::regrole,
                           'provision_secret_rotator'::regrole) $$,
    'no service role is a member of provision_secret_owner (none acts as the owner)'
);

-- ---------------------------------------------------------------------
-- Schema pyaccess: owned by provision_secret_owner, who alone may create there
-- ---------------------------------------------------------------------

SELECT has_schema('pyaccess', 'schema pyaccess exists');
SELECT schema_owner_is('pyaccess', 'provision_secret_owner', 'schema pyaccess is owned by provision_secret_owner');
SELECT schema_privs_are('pyaccess', r, ARRAY['USAGE'],
                        r || ' may use schema pyaccess but not create in it')
  FROM pg_catalog.unnest(ARRAY['provision_secret_rotator', 'provision_secret_writer', 'provision_secret_reader']) AS r;
SELECT schema_privs_are('pyaccess', 'public', ARRAY[]::name[],
                        'PUBLIC may neither use nor create in schema pyaccess');
SELECT tables_are('pyaccess', ARRAY['api', 'keys'], 'schema pyaccess holds exactly the tables api and keys');
SELECT table_owner_is('pyaccess', 'api', 'provision_secret_owner', 'pyaccess.api is owned by provision_secret_owner');
SELECT table_owner_is('pyaccess', 'keys', 'provision_secret_owner', 'pyaccess.keys is owned by provision_secret_owner');
SELECT is(pyaccess.release(), '0.2.0', 'pyaccess.release() says the installed SQL is 0.2.0');

-- ---------------------------------------------------------------------
-- The key registry pyaccess.keys: key ids (8 bytes, never keys) and their state
-- ---------------------------------------------------------------------

SELECT has_table('pyaccess', 'keys', 'the key registry pyaccess.keys exists');
SELECT columns_are('pyaccess', 'keys', ARRAY['key_id', 'state', 'registered_at', 'registered_by', 'retired_at'],
                   'pyaccess.keys has the columns key_id, state, registered_at, registered_by, retired_at');
SELECT col_is_pk('pyaccess', 'keys', 'key_id', 'pyaccess.keys.key_id is the primary key');
SELECT col_type_is('pyaccess', 'keys', 'key_id', 'bytea', 'pyaccess.keys.key_id is bytea');
SELECT col_not_null('pyaccess', 'keys', 'state', 'pyaccess.keys.state is NOT NULL');
SELECT throws_ok(
    $$ INSERT INTO pyaccess.keys (key_id, state) VALUES (decode(repeat('ab', 32), 'hex'), 'active') $$,
    '23514', NULL,
    'the registry refuses a 32-byte value as key id (a key never lands there by mistake)'
);
SELECT throws_ok(
    $$ INSERT INTO pyaccess.keys (key_id, state) VALUES ('\x0102030405060708', 'revoked') $$,
    '23514', NULL,
    'the registry knows only the states active and retired'
);
SELECT table_privs_are('pyaccess', 'keys', r, ARRAY[]::name[],
                       r || ' has no privilege on pyaccess.keys (only through the registry functions)')
  FROM pg_catalog.unnest(ARRAY['provision_secret_rotator', 'provision_secret_writer', 'provision_secret_reader',
                               'public']) AS r;

-- ---------------------------------------------------------------------
-- The one list pyaccess.api: complete, fingerprinted, holding the contract and the service API
-- ---------------------------------------------------------------------

SELECT has_table('pyaccess', 'api', 'the list of functions pyaccess.api exists');
SELECT set_has(
    $$ SELECT signature FROM pyaccess.api $$,
    $$ VALUES ('public.store_provision_secret(uuid,text,bytea)'),
              ('public.get_provision_secret(uuid,bytea)'),
              ('public.get_provision_secret(uuid,bytea[])'),
              ('public.rewrap_provision_secrets(bytea[],uuid,integer)'),
              ('pyaccess.guard(text)'),
              ('pyaccess.seal(uuid,bytea,bytea)'),
              ('pyaccess.open(uuid,bytea,integer)'),
              ('pyaccess.register_key(bytea)'),
              ('pyaccess.retire_key(bytea)'),
              ('pyaccess.census()'),
              ('pyaccess.rewrap_todo(bytea,uuid,integer)'),
              ('pyaccess.rewrap(uuid[],bytea[],bytea[],bytea)'),
              ('pyaccess.api_drift()'),
              ('pyaccess.escalation_paths()') $$,
    'pyaccess.api lists the contract''s functions and the service API'
);
SELECT is_empty(
    $$ SELECT pg_catalog.format('%I.%I(%s)', n.nspname, p.proname, pg_catalog.oidvectortypes(p.proargtypes))
         FROM pg_catalog.pg_proc AS p JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace
        WHERE (n.nspname = 'pyaccess' OR (n.nspname = 'public' AND p.proname ~ 'provision_secret'))
          AND p.oid NOT IN (SELECT pg_catalog.to_regprocedure(a.signature) FROM pyaccess.api AS a) $$,
    'every function in schema pyaccess, and every provision_secret function in public, is on pyaccess.api'
);
SELECT is_empty(
    $$ SELECT p.proname FROM pg_catalog.pg_proc AS p
        WHERE p.pronamespace = 'public'::regnamespace AND p.proname ~ '^_provision_secret' $$,
    '0.1.0''s private helpers in public are gone (01_remove_0.1.0.sql)'
);
SELECT is_empty(
    $$ SELECT signature FROM pyaccess.api WHERE definition IS NULL OR owner IS NULL OR acl IS NULL $$,
    'every function on pyaccess.api has its fingerprint recorded (definition, owner, grants)'
);
SELECT is_empty($$ SELECT * FROM pyaccess.api_drift() $$,
                'pyaccess.api_drift() is empty on a clean install: every function is as recorded');
SELECT is_empty($$ SELECT * FROM pyaccess.escalation_paths() $$,
                'pyaccess.escalation_paths() is empty on a clean install: no role could run code as the owner');

-- ---------------------------------------------------------------------
-- Every function on the list: it exists, provision_secret_owner owns it, its names are
-- bound at CREATE, and exactly the listed roles may execute it
-- ---------------------------------------------------------------------

SELECT has_function(f.schema_name, f.function_name, f.args, f.signature || ' exists')
  FROM api_fn AS f ORDER BY f.signature;

SELECT function_owner_is(f.schema_name, f.function_name, f.args, 'provision_secret_owner',
                         f.signature || ' is owned by provision_secret_owner')
  FROM api_fn AS f ORDER BY f.signature;

-- A SQL-standard body resolves every name at CREATE; any other body must pin search_path,
-- so that nothing is looked up at run time in a schema that another role controls.
SELECT ok(f.sql_standard_body OR f.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'],
          f.signature || ' binds its names at CREATE (SQL-standard body) or pins search_path')
  FROM api_fn AS f ORDER BY f.signature;

SELECT is(f.proconfig, ARRAY['search_path=pg_catalog, pg_temp'],
          f.signature || ' is SECURITY DEFINER and pins search_path to pg_catalog, pg_temp')
  FROM api_fn AS f WHERE f.prosecdef ORDER BY f.signature;

SELECT function_privs_are(
    f.schema_name, f.function_name, f.args, r.role,
    CASE WHEN r.role = ANY (f.grantees) THEN ARRAY['EXECUTE'] ELSE ARRAY[]::name[] END,
    pg_catalog.format('%s: %s %s EXECUTE', f.signature, r.role,
                      CASE WHEN r.role = ANY (f.grantees) THEN 'has' ELSE 'has no' END)
)
  FROM api_fn AS f
 CROSS JOIN (VALUES (1, 'provision_secret_reader'), (2, 'provision_secret_writer'),
                    (3, 'provision_secret_rotator'), (4, 'public')) AS r (n, role)
 ORDER BY f.signature, r.n;

SELECT is(
    ARRAY(SELECT CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END
            FROM pg_catalog.pg_proc AS p, pg_catalog.aclexplode(p.proacl) AS a
           WHERE p.oid = f.oid AND a.grantee <> p.proowner
           ORDER BY 1),
    ARRAY(SELECT g FROM pg_catalog.unnest(f.grantees) AS g ORDER BY 1),
    f.signature || ': EXECUTE is granted to the listed roles and to nobody else'
)
  FROM api_fn AS f ORDER BY f.signature;

-- ---------------------------------------------------------------------
-- SECURITY DEFINER exactly where a caller acts on what it may not touch itself
-- ---------------------------------------------------------------------

SELECT set_eq(
    $$ SELECT signature FROM api_fn WHERE prosecdef $$,
    $$ SELECT signature FROM expected_definers $$,
    'the SECURITY DEFINER functions are exactly the contract''s entry points, seal, the registry and rotation'
);
SELECT is_definer('pyaccess', 'seal', ARRAY['uuid', 'bytea', 'bytea'],
                  'pyaccess.seal is SECURITY DEFINER (the writer has no privilege on ota_groups)');
SELECT isnt_definer('pyaccess', 'open', ARRAY['uuid', 'bytea', 'integer'],
                    'pyaccess.open is SECURITY INVOKER (the reader''s own SELECT on the ciphertext, and inlined)');
SELECT isnt_definer('pyaccess', 'guard', ARRAY['text'],
                    'pyaccess.guard is SECURITY INVOKER (it changes only the caller''s session)');
SELECT isnt_definer('pyaccess', 'guard_session', ARRAY[]::name[],
                    'pyaccess.guard_session is SECURITY INVOKER (it changes only the caller''s session)');
SELECT isnt_definer('pyaccess', 'log_exposure', ARRAY[]::name[],
                    'pyaccess.log_exposure is SECURITY INVOKER (it reads the caller''s session settings)');
SELECT is_definer('public', 'store_provision_secret', ARRAY['uuid', 'text', 'bytea'],
                  'public.store_provision_secret is SECURITY DEFINER');
SELECT is_definer('public', 'get_provision_secret', ARRAY['uuid', 'bytea'],
                  'public.get_provision_secret(uuid, bytea) is SECURITY DEFINER');
SELECT is_definer('public', 'get_provision_secret', ARRAY['uuid', 'bytea[]'],
                  'public.get_provision_secret(uuid, bytea[]) is SECURITY DEFINER');

-- The expression helpers are SQL functions with SQL-standard bodies and no SET clause:
-- PostgreSQL inlines them into the calling statement.
SELECT is_empty(
    $$ SELECT signature FROM api_fn
        WHERE signature IN ('pyaccess._key_id(bytea)', 'pyaccess._pair(integer,bytea,uuid)',
                            'pyaccess._body(integer,bytea,bytea,bytea,bytea)', 'pyaccess._tag(uuid,bytea,bytea)',
                            'pyaccess._authentic(uuid,bytea,bytea)', 'pyaccess._plaintext(bytea,bytea)',
                            'pyaccess._envelope_version(bytea)', 'pyaccess._pick(bytea,bytea)',
                            'pyaccess._open(uuid,bytea,integer)', 'pyaccess.open(uuid,bytea,integer)')
          AND NOT (sql_standard_body AND proconfig IS NULL AND NOT prosecdef) $$,
    'the envelope helpers, pyaccess._open and pyaccess.open are inlinable (SQL-standard body, no SET, invoker)'
);

-- Every scalar SQL-standard helper (RETURN ...) is inlined where it is called: its name never
-- reaches the plan. One declared STABLE that calls a VOLATILE function (clock_timestamp(), say)
-- is not: PostgreSQL then runs its body as a query of its own, planned anew in every
-- transaction (pyaccess._audit_line was, and a read with its audit record cost twice as much).
CREATE FUNCTION pg_temp.not_inlined() RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    f record;
    line text;
BEGIN
    FOR f IN
        SELECT p.oid::pg_catalog.regprocedure::text AS signature, p.proname,
               COALESCE(pg_catalog.string_agg(pg_catalog.format('x.a%s', t.n), ', ' ORDER BY t.n) FILTER (WHERE t.n IS NOT NULL), '') AS args,
               COALESCE(pg_catalog.string_agg(pg_catalog.format('NULL::%s', pg_catalog.format_type(t.oid, NULL)), ', '
                                              ORDER BY t.n) FILTER (WHERE t.n IS NOT NULL), '1') AS nulls,
               COALESCE(pg_catalog.string_agg(pg_catalog.format('a%s', t.n), ', ' ORDER BY t.n) FILTER (WHERE t.n IS NOT NULL), 'a') AS names
          FROM pg_catalog.pg_proc AS p
          LEFT JOIN LATERAL pg_catalog.unnest(p.proargtypes::oid[]) WITH ORDINALITY AS t(oid, n) ON true
         WHERE p.pronamespace = 'pyaccess'::regnamespace
           AND p.prolang = (SELECT l.oid FROM pg_catalog.pg_language AS l WHERE l.lanname = 'sql')
           AND p.prosqlbody IS NOT NULL AND NOT p.proretset
           AND pg_catalog.pg_get_functiondef(p.oid) !~ 'BEGIN ATOMIC'
         GROUP BY p.oid, p.proname
    LOOP
        FOR line IN EXECUTE pg_catalog.format('EXPLAIN (VERBOSE, COSTS OFF) SELECT pyaccess.%I(%s) FROM (VALUES (%s)) AS x(%s)',
                                              f.proname, f.args, f.nulls, f.names) LOOP
            IF pg_catalog.strpos(line, 'pyaccess.' || f.proname || '(') > 0 THEN
                RETURN NEXT f.signature;
                EXIT;
            END IF;
        END LOOP;
    END LOOP;
END
$$;
SELECT is_empty($$ SELECT * FROM pg_temp.not_inlined() $$,
                'every scalar SQL-standard helper in schema pyaccess is inlined into its caller');

-- ---------------------------------------------------------------------
-- Signatures the Python layer and the DBAs rely on
-- ---------------------------------------------------------------------

SELECT is(pg_catalog.pg_get_function_result('pyaccess.open(uuid,bytea,integer)'::regprocedure),
          'TABLE(version integer, secret bytea)',
          'pyaccess.open returns (version integer, secret bytea)');
SELECT is(pg_catalog.pg_get_function_result('pyaccess.census()'::regprocedure),
          'TABLE(key_id text, version integer, state text, secrets bigint)',
          'pyaccess.census returns (key_id text, version integer, state text, secrets bigint)');
SELECT is(pg_catalog.pg_get_function_result('pyaccess.rewrap_todo(bytea,uuid,integer)'::regprocedure),
          'TABLE(group_id uuid, version integer, key_id bytea)',
          'pyaccess.rewrap_todo returns (group_id uuid, version integer, key_id bytea)');
SELECT is(pg_catalog.pg_get_function_result('pyaccess.rewrap(uuid[],bytea[],bytea[],bytea)'::regprocedure),
          'TABLE(group_id uuid, old_key_id text, old_version integer)',
          'pyaccess.rewrap returns (group_id uuid, old_key_id text, old_version integer)');
SELECT function_returns('public', 'store_provision_secret', ARRAY['uuid', 'text', 'bytea'], 'void',
                        'public.store_provision_secret(uuid, text, bytea) returns void');
SELECT function_returns('public', 'get_provision_secret', ARRAY['uuid', 'bytea'], 'text',
                        'public.get_provision_secret(uuid, bytea) returns text');
SELECT function_returns('public', 'get_provision_secret', ARRAY['uuid', 'bytea[]'], 'text',
                        'public.get_provision_secret(uuid, bytea[]) returns text');
SELECT is(
    pg_catalog.pg_get_function_arguments('public.rewrap_provision_secrets(bytea[],uuid,integer)'::regprocedure),
    'keys bytea[], after_group_id uuid DEFAULT NULL::uuid, batch_size integer DEFAULT 1000',
    'rewrap_provision_secrets keeps 0.1.0''s arguments and defaults'
);

-- ---------------------------------------------------------------------
-- Controls: the drift and escalation checks do report what they exist to find
-- ---------------------------------------------------------------------

CREATE ROLE pgtap_pyaccess_stranger NOLOGIN;

GRANT EXECUTE ON FUNCTION pyaccess._pair(integer, bytea, uuid) TO pgtap_pyaccess_stranger;
SELECT results_eq(
    $$ SELECT signature FROM pyaccess.api_drift() $$,
    $$ VALUES ('pyaccess._pair(integer,bytea,uuid)') $$,
    'control: a grant made by hand on a listed function shows up in pyaccess.api_drift()'
);
REVOKE EXECUTE ON FUNCTION pyaccess._pair(integer, bytea, uuid) FROM pgtap_pyaccess_stranger;

CREATE FUNCTION pyaccess.seal(p_group_id text) RETURNS void LANGUAGE sql RETURN NULL;
SELECT ok(
    (SELECT pg_catalog.bool_or(problem ~ 'planted overload') FROM pyaccess.api_drift()
      WHERE signature = 'pyaccess.seal(text)'),
    'control: a function not on the list in schema pyaccess shows up in pyaccess.api_drift() as a planted overload'
);
DROP FUNCTION pyaccess.seal(text);

GRANT TRIGGER ON public.ota_groups TO pgtap_pyaccess_stranger;
SELECT ok(
    (SELECT pg_catalog.bool_or(problem ~ 'pgtap_pyaccess_stranger holds TRIGGER') FROM pyaccess.escalation_paths()),
    'control: a role holding TRIGGER on ota_groups shows up in pyaccess.escalation_paths()'
);
REVOKE TRIGGER ON public.ota_groups FROM pgtap_pyaccess_stranger;

SELECT ok(
    NOT EXISTS (SELECT FROM pyaccess.api_drift()) AND NOT EXISTS (SELECT FROM pyaccess.escalation_paths()),
    'control: once undone, api_drift() and escalation_paths() are empty again'
);

SELECT * FROM finish();
ROLLBACK;
