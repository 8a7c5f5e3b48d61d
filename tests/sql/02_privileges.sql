-- pyaccess pgTAP: who may do what, checked in the catalog and then by calling as service
-- login roles that are members of provision_secret_writer, provision_secret_reader,
-- provision_secret_rotator, and of none of them (as the DBA makes service roles members).
--
-- Run against a migrated database, as a superuser:
--     pg_prove -d DB --ext .sql tests/sql/
-- Everything, including the login roles created here, is rolled back.
--
-- Keys: K1 = decode(repeat('ab', 32), 'hex') (current), K2 = decode(repeat('cd', 32), 'hex')
-- (previous). Groups: ...0201 the writer's group, ...0202 under K2, for the rotator.

BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;

SELECT plan(
    67
    + 4 * (SELECT pg_catalog.count(*)::integer FROM pg_catalog.pg_attribute
            WHERE attrelid = 'public.ota_groups'::regclass AND attnum > 0 AND NOT attisdropped)
    + (SELECT pg_catalog.count(*)::integer FROM pyaccess.api)
);

-- K1, K2 by name.
CREATE FUNCTION pg_temp.k(p_name text)
RETURNS bytea
LANGUAGE sql IMMUTABLE
RETURN pg_catalog.decode(pg_catalog.repeat(CASE p_name WHEN 'K1' THEN 'ab' WHEN 'K2' THEN 'cd' END, 32), 'hex');

-- The keys the service would send for one group (ids, then v2 pairs); computed as the
-- superuser running this file, as the service computes them in Python.
CREATE FUNCTION pg_temp.wire(p_group_id uuid, VARIADIC p_names text[])
RETURNS bytea
LANGUAGE sql STABLE SECURITY DEFINER
RETURN pyaccess._ring(2, ARRAY(SELECT pg_temp.k(n) FROM pg_catalog.unnest(p_names) AS n), p_group_id);

-- The id of K1 or K2.
CREATE FUNCTION pg_temp.id(p_name text)
RETURNS bytea
LANGUAGE sql STABLE SECURITY DEFINER
RETURN pyaccess._key_id(pg_temp.k(p_name));

SELECT pyaccess.register_key(pg_temp.id('K1'));
SELECT pyaccess.register_key(pg_temp.id('K2'));
INSERT INTO public.ota_groups (id, name) VALUES
    ('ffffffff-ffff-ffff-ffff-000000000201', 'pgtap 02_privileges writer''s group'),
    ('ffffffff-ffff-ffff-ffff-000000000202', 'pgtap 02_privileges group under K2');
SELECT public.store_provision_secret('ffffffff-ffff-ffff-ffff-000000000202', 'under K2', pg_temp.k('K2'));

CREATE ROLE pgtap_pyaccess_writer_login LOGIN IN ROLE provision_secret_writer;
CREATE ROLE pgtap_pyaccess_reader_login LOGIN IN ROLE provision_secret_reader;
CREATE ROLE pgtap_pyaccess_rotator_login LOGIN IN ROLE provision_secret_rotator;
CREATE ROLE pgtap_pyaccess_nobody_login LOGIN;

-- ---------------------------------------------------------------------
-- In the catalog: ota_groups gives the reader (id, ciphertext) and nobody else anything;
-- the roles may turn off parameter logging for their own sessions
-- ---------------------------------------------------------------------

SELECT column_privs_are(
    'public', 'ota_groups', a.attname, r.role,
    CASE WHEN r.role = 'provision_secret_reader' AND a.attname IN ('id', 'provision_secret_ciphertext')
         THEN ARRAY['SELECT'] ELSE ARRAY[]::name[] END,
    pg_catalog.format('%s has %s on ota_groups.%s', r.role,
                      CASE WHEN r.role = 'provision_secret_reader' AND a.attname IN ('id', 'provision_secret_ciphertext')
                           THEN 'SELECT only' ELSE 'no privilege' END, a.attname)
)
  FROM pg_catalog.pg_attribute AS a
 CROSS JOIN (VALUES (1, 'provision_secret_reader'), (2, 'provision_secret_writer'),
                    (3, 'provision_secret_rotator'), (4, 'public')) AS r (n, role)
 WHERE a.attrelid = 'public.ota_groups'::regclass AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attnum, r.n;

SELECT table_privs_are('public', 'ota_groups', r, ARRAY[]::name[],
                       r || ' has no table-wide privilege on ota_groups')
  FROM pg_catalog.unnest(ARRAY['provision_secret_reader', 'provision_secret_writer', 'provision_secret_rotator',
                               'public']) AS r;

SELECT ok(pg_catalog.has_parameter_privilege(r, p, 'SET'), r || ' may SET ' || p || ' (pyaccess.guard turns it off)')
  FROM pg_catalog.unnest(ARRAY['provision_secret_reader', 'provision_secret_writer', 'provision_secret_rotator']) AS r,
       pg_catalog.unnest(ARRAY['log_parameter_max_length', 'log_parameter_max_length_on_error']) AS p;

-- ---------------------------------------------------------------------
-- As a member of provision_secret_writer: seals and stores, never reads
-- ---------------------------------------------------------------------

SET ROLE pgtap_pyaccess_writer_login;

SELECT lives_ok($$ SELECT pyaccess.guard('0.2.0') $$, 'a writer may call pyaccess.guard');
SELECT lives_ok(
    $$ SELECT pyaccess.seal('ffffffff-ffff-ffff-ffff-000000000201', pg_catalog.convert_to('sealed by the writer', 'UTF8'),
                            pg_temp.wire('ffffffff-ffff-ffff-ffff-000000000201', 'K1')) $$,
    'a writer may seal a secret (pyaccess.seal)'
);
SELECT lives_ok(
    $$ SELECT public.store_provision_secret('ffffffff-ffff-ffff-ffff-000000000201', 'stored by the writer', pg_temp.k('K1')) $$,
    'a writer may store a secret (store_provision_secret)'
);
SELECT lives_ok($$ SELECT * FROM pyaccess.census() $$, 'a writer may take the census (key ids and counts only)');
SELECT is(public.provision_secret_key_id(pg_temp.k('K1')), 'c20b6c1b1005ba79', 'a writer may compute a key id');

SELECT throws_ok(
    $$ SELECT * FROM pyaccess.open('ffffffff-ffff-ffff-ffff-000000000201',
                                   pg_temp.wire('ffffffff-ffff-ffff-ffff-000000000201', 'K1'), 2) $$,
    '42501', NULL, 'a writer may not open a secret (pyaccess.open)'
);
SELECT throws_ok(
    $$ SELECT public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000201'::uuid, pg_temp.k('K1')) $$,
    '42501', NULL, 'a writer may not read a secret with get_provision_secret(uuid, bytea)'
);
SELECT throws_ok(
    $$ SELECT public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000201'::uuid, ARRAY[pg_temp.k('K1')]) $$,
    '42501', NULL, 'a writer may not read a secret with get_provision_secret(uuid, bytea[])'
);
SELECT throws_ok(
    $$ SELECT pyaccess._plaintext('\x00'::bytea, '\x00'::bytea) $$,
    '42501', NULL, 'a writer may not call the reader''s helper pyaccess._plaintext'
);
SELECT throws_ok($$ SELECT provision_secret_ciphertext FROM public.ota_groups $$, '42501', NULL,
                 'a writer may not SELECT the ciphertext');
SELECT throws_ok($$ SELECT id FROM public.ota_groups $$, '42501', NULL,
                 'a writer may not SELECT from ota_groups at all');
SELECT throws_ok($$ UPDATE public.ota_groups SET provision_secret_ciphertext = NULL $$, '42501', NULL,
                 'a writer may not UPDATE the ciphertext directly (only through seal or store)');
SELECT throws_ok(
    $$ SELECT pyaccess._admit_key('\x0102030405060708'::bytea, 'ffffffff-ffff-ffff-ffff-000000000201') $$,
    '42501', NULL, 'a writer may not call pyaccess._admit_key (which registers a key id)'
);
SELECT throws_ok($$ SELECT pyaccess._pair(2, pg_temp.k('K1'), 'ffffffff-ffff-ffff-ffff-000000000201') $$, '42501', NULL,
                 'a writer may not call the private helper pyaccess._pair');
SELECT throws_ok($$ SELECT pyaccess.register_key('\x0102030405060708') $$, '42501', NULL,
                 'a writer may not register a key id');
SELECT throws_ok($$ SELECT pyaccess.retire_key(pg_temp.id('K2')) $$, '42501', NULL,
                 'a writer may not retire a key id (and so make stores fail)');
SELECT throws_ok($$ SELECT * FROM pyaccess.rewrap_todo('\x0102030405060708', NULL, 10) $$, '42501', NULL,
                 'a writer may not list what rotation would re-seal');
SELECT throws_ok($$ SELECT * FROM pyaccess.rewrap(ARRAY[]::uuid[], ARRAY[]::bytea[], ARRAY[]::bytea[], '\x0102030405060708') $$,
                 '42501', NULL, 'a writer may not re-seal secrets (pyaccess.rewrap)');
SELECT throws_ok($$ SELECT * FROM public.rewrap_provision_secrets(ARRAY[pg_temp.k('K1')]) $$, '42501', NULL,
                 'a writer may not re-encrypt secrets in bulk any more (rewrap_provision_secrets is the rotator''s)');
SELECT throws_ok($$ SELECT * FROM pyaccess.keys $$, '42501', NULL, 'a writer may not read pyaccess.keys');
SELECT throws_ok($$ INSERT INTO pyaccess.keys (key_id, state) VALUES ('\x0102030405060708', 'active') $$, '42501', NULL,
                 'a writer may not write pyaccess.keys directly');
SELECT throws_ok($$ CREATE FUNCTION pyaccess.seal(p_group_id text) RETURNS void LANGUAGE sql RETURN NULL $$,
                 '42501', NULL, 'a writer may not create a function in schema pyaccess (no planted overload)');

RESET ROLE;

-- ---------------------------------------------------------------------
-- As a member of provision_secret_reader: opens and reads, never writes
-- ---------------------------------------------------------------------

SET ROLE pgtap_pyaccess_reader_login;

SELECT lives_ok($$ SELECT pyaccess.guard('0.2.0') $$, 'a reader may call pyaccess.guard');
SELECT is(
    (SELECT pg_catalog.convert_from(secret, 'UTF8')
       FROM pyaccess.open('ffffffff-ffff-ffff-ffff-000000000201',
                          pg_temp.wire('ffffffff-ffff-ffff-ffff-000000000201', 'K1'), 2)),
    'stored by the writer',
    'a reader may open the writer''s secret (pyaccess.open)'
);
SELECT is(
    public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000201'::uuid, pg_temp.k('K1')),
    'stored by the writer',
    'a reader may read the writer''s secret with get_provision_secret(uuid, bytea)'
);
SELECT is(
    public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000201'::uuid, ARRAY[pg_temp.k('K1')]),
    'stored by the writer',
    'a reader may read the writer''s secret with get_provision_secret(uuid, bytea[])'
);
SELECT lives_ok($$ SELECT id, provision_secret_ciphertext FROM public.ota_groups $$,
                'a reader may SELECT (id, provision_secret_ciphertext): the ciphertext is all it gets');
SELECT throws_ok($$ SELECT name FROM public.ota_groups $$, '42501', NULL,
                 'a reader may not SELECT any other column of ota_groups');
SELECT throws_ok($$ UPDATE public.ota_groups SET provision_secret_ciphertext = NULL $$, '42501', NULL,
                 'a reader may not UPDATE the ciphertext');
SELECT throws_ok($$ DELETE FROM public.ota_groups $$, '42501', NULL, 'a reader may not DELETE from ota_groups');
SELECT throws_ok(
    $$ SELECT pyaccess.seal('ffffffff-ffff-ffff-ffff-000000000201', pg_catalog.convert_to('overwritten by the reader', 'UTF8'),
                            pg_temp.wire('ffffffff-ffff-ffff-ffff-000000000201', 'K1')) $$,
    '42501', NULL, 'a reader may not seal a secret (pyaccess.seal)'
);
SELECT throws_ok(
    $$ SELECT public.store_provision_secret('ffffffff-ffff-ffff-ffff-000000000201', 'overwritten by the reader',
                                            pg_temp.k('K1')) $$,
    '42501', NULL, 'a reader may not store a secret (store_provision_secret)'
);
SELECT throws_ok($$ SELECT pyaccess.register_key('\x0102030405060708') $$, '42501', NULL,
                 'a reader may not register a key id');
SELECT throws_ok($$ SELECT pyaccess.retire_key(pg_temp.id('K2')) $$, '42501', NULL,
                 'a reader may not retire a key id');
SELECT throws_ok($$ SELECT * FROM pyaccess.rewrap(ARRAY[]::uuid[], ARRAY[]::bytea[], ARRAY[]::bytea[], '\x0102030405060708') $$,
                 '42501', NULL, 'a reader may not re-seal secrets (pyaccess.rewrap)');
SELECT throws_ok($$ SELECT * FROM public.rewrap_provision_secrets(ARRAY[pg_temp.k('K1')]) $$, '42501', NULL,
                 'a reader may not re-encrypt secrets (rewrap_provision_secrets)');
SELECT throws_ok($$ SELECT * FROM pyaccess.keys $$, '42501', NULL, 'a reader may not read pyaccess.keys');
SELECT throws_ok($$ CREATE FUNCTION pyaccess.open(p_group_id text) RETURNS void LANGUAGE sql RETURN NULL $$,
                 '42501', NULL, 'a reader may not create a function in schema pyaccess');

RESET ROLE;

-- ---------------------------------------------------------------------
-- As a member of provision_secret_rotator: the registry and rotation, never a secret
-- ---------------------------------------------------------------------

SET ROLE pgtap_pyaccess_rotator_login;

SELECT lives_ok($$ SELECT pyaccess.guard('0.2.0') $$, 'a rotator may call pyaccess.guard');
SELECT is(pyaccess.register_key('\x0102030405060708'), 'registered', 'a rotator may register a key id');
SELECT lives_ok($$ SELECT pyaccess.retire_key('\x0102030405060708') $$, 'a rotator may retire a key id');
SELECT results_eq(
    $$ SELECT group_id, version, key_id FROM pyaccess.rewrap_todo(pg_temp.id('K1'),
                                                                  'ffffffff-ffff-ffff-ffff-000000000200', 10) $$,
    $$ VALUES ('ffffffff-ffff-ffff-ffff-000000000202'::uuid, 2, '\xab9d91cd061dadaf'::bytea) $$,
    'a rotator may list what rotation to K1 would re-seal (ids and versions, no ciphertext)'
);
SELECT lives_ok(
    $$ SELECT * FROM pyaccess.rewrap(
           ARRAY['ffffffff-ffff-ffff-ffff-000000000202'::uuid],
           ARRAY['\x02'::bytea || pg_temp.wire('ffffffff-ffff-ffff-ffff-000000000202', 'K2')],
           ARRAY[pg_catalog.substr(pg_temp.wire('ffffffff-ffff-ffff-ffff-000000000202', 'K1'), 9)],
           pg_temp.id('K1')) $$,
    'a rotator may re-seal secrets with per-row pairs (pyaccess.rewrap)'
);
SELECT lives_ok($$ SELECT * FROM public.rewrap_provision_secrets(ARRAY[pg_temp.k('K1'), pg_temp.k('K2')],
                                                                 'ffffffff-ffff-ffff-ffff-000000000200', 10) $$,
                'a rotator may re-encrypt with master keys (rewrap_provision_secrets)');
SELECT lives_ok($$ SELECT * FROM pyaccess.census() $$, 'a rotator may take the census');
SELECT throws_ok(
    $$ SELECT * FROM pyaccess.open('ffffffff-ffff-ffff-ffff-000000000201',
                                   pg_temp.wire('ffffffff-ffff-ffff-ffff-000000000201', 'K1'), 2) $$,
    '42501', NULL, 'a rotator may not open a secret (pyaccess.open)'
);
SELECT throws_ok(
    $$ SELECT public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000201'::uuid, pg_temp.k('K1')) $$,
    '42501', NULL, 'a rotator may not read a secret (get_provision_secret)'
);
SELECT throws_ok(
    $$ SELECT pyaccess.seal('ffffffff-ffff-ffff-ffff-000000000201', pg_catalog.convert_to('by the rotator', 'UTF8'),
                            pg_temp.wire('ffffffff-ffff-ffff-ffff-000000000201', 'K1')) $$,
    '42501', NULL, 'a rotator may not seal a secret of its choosing (pyaccess.seal)'
);
SELECT throws_ok(
    $$ SELECT public.store_provision_secret('ffffffff-ffff-ffff-ffff-000000000201', 'by the rotator', pg_temp.k('K1')) $$,
    '42501', NULL, 'a rotator may not store a secret of its choosing (store_provision_secret)'
);
SELECT throws_ok($$ SELECT provision_secret_ciphertext FROM public.ota_groups $$, '42501', NULL,
                 'a rotator may not SELECT the ciphertext');
SELECT throws_ok($$ UPDATE pyaccess.keys SET state = 'retired' $$, '42501', NULL,
                 'a rotator may not write pyaccess.keys directly (only through register_key and retire_key)');
SELECT throws_ok($$ CREATE FUNCTION pyaccess.rewrap(p_group_id text) RETURNS void LANGUAGE sql RETURN NULL $$,
                 '42501', NULL, 'a rotator may not create a function in schema pyaccess');

RESET ROLE;

SELECT is(
    public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000202'::uuid, pg_temp.k('K1')),
    'under K2',
    'the rotator''s re-seal moved the secret under K1, unchanged'
);

-- ---------------------------------------------------------------------
-- As a login role in none of the groups: PUBLIC may call no function on the list
-- ---------------------------------------------------------------------

-- A call of each listed function with NULL arguments (read from pyaccess.api before the role
-- changes: PUBLIC may not even read that list).
CREATE TEMP TABLE api_call AS
SELECT a.signature,
       pg_catalog.format('SELECT %I.%I(%s)', n.nspname, p.proname,
                         (SELECT pg_catalog.string_agg('NULL::' || pg_catalog.format_type(t, NULL), ', ')
                            FROM pg_catalog.unnest(p.proargtypes::oid[]) AS t)) AS call
  FROM pyaccess.api AS a
  JOIN pg_catalog.pg_proc AS p ON p.oid = pg_catalog.to_regprocedure(a.signature)
  JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace;
GRANT SELECT ON api_call TO PUBLIC;

SET ROLE pgtap_pyaccess_nobody_login;

SELECT throws_ok(c.call, '42501', NULL, 'a role in no pyaccess group may not call ' || c.signature)
  FROM api_call AS c ORDER BY c.signature;

SELECT throws_ok($$ SELECT provision_secret_ciphertext FROM public.ota_groups $$, '42501', NULL,
                 'a role in no pyaccess group may not SELECT the ciphertext');
SELECT throws_ok($$ CREATE FUNCTION pyaccess.guard(p_release integer) RETURNS void LANGUAGE sql RETURN NULL $$,
                 '42501', NULL, 'a role in no pyaccess group may not create a function in schema pyaccess');

RESET ROLE;

-- The refused calls changed nothing.
SELECT is(
    public.get_provision_secret('ffffffff-ffff-ffff-ffff-000000000201'::uuid, pg_temp.k('K1')),
    'stored by the writer',
    'after every refused call the secret is still the one the writer stored'
);
SELECT is(
    (SELECT pg_catalog.array_agg(state ORDER BY key_id) FROM pyaccess.keys
      WHERE key_id IN (pg_temp.id('K1'), pg_temp.id('K2'))),
    ARRAY['active', 'active'],
    'after every refused call K1 and K2 are still active'
);

SELECT * FROM finish();
ROLLBACK;
