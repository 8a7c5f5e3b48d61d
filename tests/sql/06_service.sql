-- pyaccess pgTAP: the service API, which never sees a master key: pyaccess.guard, then
-- pyaccess.seal(group, secret bytes, id || pair) as a writer and
-- pyaccess.open(group, ids || pairs, version) as a reader, with each SQLSTATE (and
-- pyaccess.refuse_missing_group for the group it found no row for).
--
-- Run against a migrated database, as a superuser:
--     pg_prove -d DB --ext .sql tests/sql/
-- Everything, including the login roles created here, is rolled back.
--
-- Keys and their ids (first 8 bytes of HMAC-SHA256(key, 'pyaccess key id')):
--   K1 = decode(repeat('ab', 32), 'hex')  c20b6c1b1005ba79  registered
--   K2 = decode(repeat('cd', 32), 'hex')  ab9d91cd061dadaf  registered
--   K3 = decode(repeat('ef', 32), 'hex')  0c6050b407bfe365  never used
-- What the service sends ("keys on the wire") is computed here by pg_temp.wire(group, version,
-- key names): n key ids, then their n pairs for that one group, as the Python layer derives them.
-- Groups: ...0601 main, ...0602 another group, ...0603 no secret, ...0604 envelope v1,
--         ...0605 sealed with another group's pair, ...06ff does not exist.

BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;

SELECT plan(51);

-- K1, K2, K3 by name.
CREATE FUNCTION pg_temp.k(p_name text)
RETURNS bytea
LANGUAGE sql IMMUTABLE
RETURN pg_catalog.decode(pg_catalog.repeat(CASE p_name WHEN 'K1' THEN 'ab' WHEN 'K2' THEN 'cd' WHEN 'K3' THEN 'ef' END, 32),
                         'hex');

-- The keys the service would send for one group: computed as the superuser who runs this
-- file (the service computes them in Python; the roles may not call pyaccess._ring).
CREATE FUNCTION pg_temp.wire(p_group_id uuid, p_version integer, VARIADIC p_names text[])
RETURNS bytea
LANGUAGE sql STABLE SECURITY DEFINER
RETURN pyaccess._ring(p_version, ARRAY(SELECT pg_temp.k(n) FROM pg_catalog.unnest(p_names) AS n), p_group_id);

SELECT pyaccess.register_key(pyaccess._key_id(pg_temp.k('K1')));
SELECT pyaccess.register_key(pyaccess._key_id(pg_temp.k('K2')));

INSERT INTO public.ota_groups (id, name) VALUES
    ('ffffffff-ffff-ffff-ffff-000000000601', 'pgtap 06_service main group'),
    ('ffffffff-ffff-ffff-ffff-000000000602', 'pgtap 06_service another group'),
    ('ffffffff-ffff-ffff-ffff-000000000603', 'pgtap 06_service group without secret'),
    ('ffffffff-ffff-ffff-ffff-000000000604', 'pgtap 06_service v1 group'),
    ('ffffffff-ffff-ffff-ffff-000000000605', 'pgtap 06_service group sealed with a foreign pair');

-- ...0604 holds an envelope v1 under K2, as 0.1.0 wrote it.
UPDATE public.ota_groups AS g
   SET provision_secret_ciphertext = v1.body || pyaccess._tag(g.id, v1.body, v1.pair)
  FROM (SELECT p.pair, pyaccess._body(1, pyaccess._key_id(pg_temp.k('K2')), p.pair, gen_random_bytes(16),
                                      pg_catalog.convert_to('written by 0.1.0', 'UTF8')) AS body
          FROM (SELECT pyaccess._pair(1, pg_temp.k('K2'), 'ffffffff-ffff-ffff-ffff-000000000604') AS pair) AS p) AS v1
 WHERE g.id = 'ffffffff-ffff-ffff-ffff-000000000604';

CREATE ROLE pgtap_pyaccess_writer_login LOGIN IN ROLE provision_secret_writer;
CREATE ROLE pgtap_pyaccess_reader_login LOGIN IN ROLE provision_secret_reader;

-- ---------------------------------------------------------------------
-- The writer: guard, then seal
-- ---------------------------------------------------------------------

SET ROLE pgtap_pyaccess_writer_login;

SELECT lives_ok($$ SELECT pyaccess.guard('0.2.0') $$, 'a writer guards its session with pyaccess.guard(''0.2.0'')');
SELECT ok(pyaccess._guarded(), 'after pyaccess.guard the session is guarded');
SELECT is(pg_catalog.current_setting('log_parameter_max_length'), '0',
          'the guard turned off the logging of bound parameters for the writer''s session');
SELECT lives_ok($$ SELECT pyaccess.guard('0.2.0') $$, 'pyaccess.guard on a guarded session is a no-op');

SELECT lives_ok(
    $$ SELECT pyaccess.seal('ffffffff-ffff-ffff-ffff-000000000601', pg_catalog.convert_to('service secret ✓', 'UTF8'),
                            pg_temp.wire('ffffffff-ffff-ffff-ffff-000000000601', 2, 'K1')) $$,
    'a writer seals a secret with the key id and v2 pair of K1 for that group'
);

-- PA001: seal takes exactly one key: 8-byte id || 64-byte pair.
SELECT throws_ok(
    $$ SELECT pyaccess.seal('ffffffff-ffff-ffff-ffff-000000000601', '\x73'::bytea, NULL) $$,
    'PA001', NULL, 'pyaccess.seal refuses NULL keys with PA001'
);
SELECT throws_ok(
    $$ SELECT pyaccess.seal('ffffffff-ffff-ffff-ffff-000000000601', '\x73'::bytea,
                            pg_catalog.substr(pg_temp.wire('ffffffff-ffff-ffff-ffff-000000000601', 2, 'K1'), 1, 71)) $$,
    'PA001', NULL, 'pyaccess.seal refuses 71 bytes of keys with PA001'
);
SELECT throws_ok(
    $$ SELECT pyaccess.seal('ffffffff-ffff-ffff-ffff-000000000601', '\x73'::bytea,
                            pg_temp.wire('ffffffff-ffff-ffff-ffff-000000000601', 2, 'K1', 'K2')) $$,
    'PA001', NULL, 'pyaccess.seal refuses a ring of two keys with PA001 (a seal uses exactly one)'
);
-- PA002: 1 to 4096 bytes.
SELECT throws_ok(
    $$ SELECT pyaccess.seal('ffffffff-ffff-ffff-ffff-000000000601', NULL,
                            pg_temp.wire('ffffffff-ffff-ffff-ffff-000000000601', 2, 'K1')) $$,
    'PA002', NULL, 'pyaccess.seal refuses a NULL secret with PA002'
);
SELECT throws_ok(
    $$ SELECT pyaccess.seal('ffffffff-ffff-ffff-ffff-000000000601', ''::bytea,
                            pg_temp.wire('ffffffff-ffff-ffff-ffff-000000000601', 2, 'K1')) $$,
    'PA002', NULL, 'pyaccess.seal refuses an empty secret with PA002'
);
SELECT throws_ok(
    $$ SELECT pyaccess.seal('ffffffff-ffff-ffff-ffff-000000000601', pg_catalog.convert_to(repeat('x', 4097), 'UTF8'),
                            pg_temp.wire('ffffffff-ffff-ffff-ffff-000000000601', 2, 'K1')) $$,
    'PA002', NULL, 'pyaccess.seal refuses a 4097-byte secret with PA002'
);
-- PA003
SELECT throws_ok(
    $$ SELECT pyaccess.seal('ffffffff-ffff-ffff-ffff-0000000006ff', '\x73'::bytea,
                            pg_temp.wire('ffffffff-ffff-ffff-ffff-0000000006ff', 2, 'K1')) $$,
    'PA003', NULL, 'pyaccess.seal for an unknown group raises PA003'
);

-- The server cannot tell whose pair it is given: a secret sealed for ...0605 with the pair
-- of ...0602 is stored, and (below) never opens with ...0605's own keys.
SELECT lives_ok(
    $$ SELECT pyaccess.seal('ffffffff-ffff-ffff-ffff-000000000605', pg_catalog.convert_to('foreign pair', 'UTF8'),
                            pg_temp.wire('ffffffff-ffff-ffff-ffff-000000000602', 2, 'K1')) $$,
    'a seal with the pair of another group is stored (the server never sees a master key to check it against)'
);

-- PA007: a session that is not guarded (never, or no longer) may not seal.
SELECT set_config('pyaccess.guarded', '', false);
SELECT throws_ok(
    $$ SELECT pyaccess.seal('ffffffff-ffff-ffff-ffff-000000000601', pg_catalog.convert_to('unguarded', 'UTF8'),
                            pg_temp.wire('ffffffff-ffff-ffff-ffff-000000000601', 2, 'K1')) $$,
    'PA007', NULL, 'pyaccess.seal on a session that is not guarded raises PA007'
);
SELECT throws_ok(
    $$ SELECT pyaccess.seal('ffffffff-ffff-ffff-ffff-0000000006ff', NULL, NULL) $$,
    'PA007', NULL, 'PA007 comes before any other check of pyaccess.seal'
);
SELECT pyaccess.guard('0.2.0');

RESET ROLE;

SELECT is(
    (SELECT ARRAY[pg_catalog.get_byte(provision_secret_ciphertext, 0)::text,
                  pg_catalog.encode(pg_catalog.substr(provision_secret_ciphertext, 2, 8), 'hex'),
                  pg_catalog.octet_length(provision_secret_ciphertext)::text]
       FROM public.ota_groups WHERE id = 'ffffffff-ffff-ffff-ffff-000000000601'),
    ARRAY['2', 'c20b6c1b1005ba79', '89'],
    'pyaccess.seal wrote envelope v2 under K1''s id: 1 + 8 + 16 + 32 + 32 bytes for 18 bytes, '
    'not the unguarded attempt'
);

-- ---------------------------------------------------------------------
-- The reader: guard, then open
-- ---------------------------------------------------------------------

SET ROLE pgtap_pyaccess_reader_login;

SELECT lives_ok($$ SELECT pyaccess.guard('0.2.0') $$, 'a reader guards its session with pyaccess.guard(''0.2.0'')');
SELECT results_eq(
    $$ SELECT version, secret
         FROM pyaccess.open('ffffffff-ffff-ffff-ffff-000000000601',
                            pg_temp.wire('ffffffff-ffff-ffff-ffff-000000000601', 2, 'K1'), 2) $$,
    $$ VALUES (2, pg_catalog.convert_to('service secret ✓', 'UTF8')) $$,
    'a reader opens the writer''s secret with K1''s id and pair for that group: version 2 and the UTF-8 bytes'
);
SELECT results_eq(
    $$ SELECT version, secret
         FROM pyaccess.open('ffffffff-ffff-ffff-ffff-000000000601',
                            pg_temp.wire('ffffffff-ffff-ffff-ffff-000000000601', 2, 'K2', 'K1'), 2) $$,
    $$ VALUES (2, pg_catalog.convert_to('service secret ✓', 'UTF8')) $$,
    'pyaccess.open finds the sealing key anywhere in the ring (K2, K1)'
);

-- The v1 hand-off: a v2 call on a v1 envelope says "version 1" and returns no secret; the
-- service asks again with v1 pairs.
SELECT results_eq(
    $$ SELECT version, secret IS NULL
         FROM pyaccess.open('ffffffff-ffff-ffff-ffff-000000000604',
                            pg_temp.wire('ffffffff-ffff-ffff-ffff-000000000604', 2, 'K1', 'K2'), 2) $$,
    $$ VALUES (1, true) $$,
    'pyaccess.open(..., 2) on a v1 envelope returns version 1 and a NULL secret'
);
SELECT results_eq(
    $$ SELECT version, secret
         FROM pyaccess.open('ffffffff-ffff-ffff-ffff-000000000604',
                            pg_temp.wire('ffffffff-ffff-ffff-ffff-000000000604', 1, 'K1', 'K2'), 1) $$,
    $$ VALUES (1, pg_catalog.convert_to('written by 0.1.0', 'UTF8')) $$,
    'pyaccess.open(..., 1) with the v1 pairs then opens the v1 envelope'
);
SELECT results_eq(
    $$ SELECT version, secret IS NULL
         FROM pyaccess.open('ffffffff-ffff-ffff-ffff-000000000601',
                            pg_temp.wire('ffffffff-ffff-ffff-ffff-000000000601', 1, 'K1'), 1) $$,
    $$ VALUES (2, true) $$,
    'pyaccess.open(..., 1) on a v2 envelope returns version 2 and a NULL secret'
);

-- PA001: keys on the wire are one or more 72-byte entries.
SELECT throws_ok(
    $$ SELECT * FROM pyaccess.open('ffffffff-ffff-ffff-ffff-000000000601', NULL, 2) $$,
    'PA001', NULL, 'pyaccess.open refuses NULL keys with PA001'
);
SELECT throws_ok(
    $$ SELECT * FROM pyaccess.open('ffffffff-ffff-ffff-ffff-000000000601', ''::bytea, 2) $$,
    'PA001', NULL, 'pyaccess.open refuses empty keys with PA001'
);
SELECT throws_ok(
    $$ SELECT * FROM pyaccess.open('ffffffff-ffff-ffff-ffff-000000000601',
                                   pg_catalog.substr(pg_temp.wire('ffffffff-ffff-ffff-ffff-000000000601', 2, 'K1'), 1, 71), 2) $$,
    'PA001', NULL, 'pyaccess.open refuses 71 bytes of keys with PA001'
);
SELECT throws_ok(
    $$ SELECT * FROM pyaccess.open('ffffffff-ffff-ffff-ffff-000000000601',
                                   pg_temp.wire('ffffffff-ffff-ffff-ffff-000000000601', 2, 'K1') || '\x00'::bytea, 2) $$,
    'PA001', NULL, 'pyaccess.open refuses 73 bytes of keys with PA001'
);
SELECT throws_ok(
    $$ SELECT * FROM pyaccess.open('ffffffff-ffff-ffff-ffff-000000000604', '\x00'::bytea, 2) $$,
    'PA001', NULL, 'pyaccess.open checks the keys even where the envelope is of another version'
);
-- PA003: pyaccess.open gives no row for an unknown group; pyaccess.refuse_missing_group says why.
SELECT is_empty(
    $$ SELECT * FROM pyaccess.open('ffffffff-ffff-ffff-ffff-0000000006ff',
                                   pg_temp.wire('ffffffff-ffff-ffff-ffff-0000000006ff', 2, 'K1'), 2) $$,
    'pyaccess.open for an unknown group gives no row'
);
SELECT throws_ok(
    $$ SELECT pyaccess.refuse_missing_group('ffffffff-ffff-ffff-ffff-0000000006ff') $$,
    'PA003', NULL, 'pyaccess.refuse_missing_group for an unknown group raises PA003'
);
SELECT is_empty(
    $$ SELECT * FROM pyaccess.open(NULL, pg_temp.wire('ffffffff-ffff-ffff-ffff-000000000601', 2, 'K1'), 2) $$,
    'pyaccess.open for a NULL group id gives no row'
);
SELECT throws_ok(
    $$ SELECT pyaccess.refuse_missing_group(NULL) $$,
    'PA003', NULL, 'pyaccess.refuse_missing_group for a NULL group id raises PA003'
);
SELECT lives_ok(
    $$ SELECT pyaccess.refuse_missing_group('ffffffff-ffff-ffff-ffff-000000000601') $$,
    'pyaccess.refuse_missing_group returns for a group that exists (created since pyaccess.open looked)'
);
SELECT throws_ok(
    $$ SELECT * FROM pyaccess.open('ffffffff-ffff-ffff-ffff-000000000603',
                                   pg_temp.wire('ffffffff-ffff-ffff-ffff-000000000603', 2, 'K1'), 2) $$,
    'PA004', NULL, 'pyaccess.open for a group without a secret raises PA004'
);
SELECT throws_ok(
    $$ SELECT * FROM pyaccess.open('ffffffff-ffff-ffff-ffff-000000000601',
                                   pg_temp.wire('ffffffff-ffff-ffff-ffff-000000000601', 2, 'K2', 'K3'), 2) $$,
    'PA005', NULL, 'pyaccess.open with a ring lacking the sealing key raises PA005'
);
SELECT throws_ok(
    $$ SELECT * FROM pyaccess.open('ffffffff-ffff-ffff-ffff-000000000604',
                                   pg_temp.wire('ffffffff-ffff-ffff-ffff-000000000604', 1, 'K1'), 1) $$,
    'PA005', NULL, 'pyaccess.open(..., 1) on a v1 envelope under a key not given raises PA005'
);
-- PA006: a pair for another group, a pair of the other version, a secret sealed with a foreign pair
SELECT throws_ok(
    $$ SELECT * FROM pyaccess.open('ffffffff-ffff-ffff-ffff-000000000601',
                                   pg_temp.wire('ffffffff-ffff-ffff-ffff-000000000602', 2, 'K1'), 2) $$,
    'PA006', NULL, 'K1''s pair for another group does not open this group''s secret: PA006'
);
SELECT throws_ok(
    $$ SELECT * FROM pyaccess.open('ffffffff-ffff-ffff-ffff-000000000601',
                                   pg_temp.wire('ffffffff-ffff-ffff-ffff-000000000601', 1, 'K1'), 2) $$,
    'PA006', NULL, 'K1''s v1 pair passed as a v2 pair does not open a v2 envelope: PA006'
);
SELECT throws_ok(
    $$ SELECT * FROM pyaccess.open('ffffffff-ffff-ffff-ffff-000000000605',
                                   pg_temp.wire('ffffffff-ffff-ffff-ffff-000000000605', 2, 'K1'), 2) $$,
    'PA006', NULL, 'a secret sealed with another group''s pair never opens with this group''s keys: PA006'
);

-- PA007: un-guarded, or guarded before a configuration reload.
SELECT set_config('pyaccess.guarded', '', false);
SELECT ok(NOT pyaccess._guarded(), 'with the guard marker cleared the session is not guarded');
SELECT throws_ok(
    $$ SELECT * FROM pyaccess.open('ffffffff-ffff-ffff-ffff-000000000601',
                                   pg_temp.wire('ffffffff-ffff-ffff-ffff-000000000601', 2, 'K1'), 2) $$,
    'PA007', NULL, 'pyaccess.open on a session that is not guarded raises PA007'
);
SELECT throws_ok(
    $$ SELECT * FROM pyaccess.open('ffffffff-ffff-ffff-ffff-000000000601', NULL, 2) $$,
    'PA007', NULL, 'PA007 comes before any other check of pyaccess.open'
);
SELECT throws_ok(
    $$ SELECT pyaccess.refuse_missing_group('ffffffff-ffff-ffff-ffff-0000000006ff') $$,
    'PA007', NULL, 'PA007 comes before PA003 in pyaccess.refuse_missing_group'
);
SELECT set_config('pyaccess.guarded', '2000-01-01 00:00:00+00', false);
SELECT throws_ok(
    $$ SELECT * FROM pyaccess.open('ffffffff-ffff-ffff-ffff-000000000601',
                                   pg_temp.wire('ffffffff-ffff-ffff-ffff-000000000601', 2, 'K1'), 2) $$,
    'PA007', NULL, 'a guard recorded before the last configuration reload no longer counts: PA007'
);
SELECT pyaccess.guard('0.2.0');
SELECT is(
    (SELECT pg_catalog.convert_from(secret, 'UTF8')
       FROM pyaccess.open('ffffffff-ffff-ffff-ffff-000000000601',
                          pg_temp.wire('ffffffff-ffff-ffff-ffff-000000000601', 2, 'K1'), 2)),
    'service secret ✓',
    'guarded again, the reader opens the secret again'
);

RESET ROLE;

-- ---------------------------------------------------------------------
-- Moved and altered envelopes, opened by the reader
-- ---------------------------------------------------------------------

UPDATE public.ota_groups
   SET provision_secret_ciphertext = (SELECT provision_secret_ciphertext FROM public.ota_groups
                                       WHERE id = 'ffffffff-ffff-ffff-ffff-000000000601')
 WHERE id = 'ffffffff-ffff-ffff-ffff-000000000602';
UPDATE public.ota_groups
   SET provision_secret_ciphertext = pg_catalog.set_byte(provision_secret_ciphertext, 30,
                                                         pg_catalog.get_byte(provision_secret_ciphertext, 30) # 128)
 WHERE id = 'ffffffff-ffff-ffff-ffff-000000000601';

SET ROLE pgtap_pyaccess_reader_login;
SELECT throws_ok(
    $$ SELECT * FROM pyaccess.open('ffffffff-ffff-ffff-ffff-000000000602',
                                   pg_temp.wire('ffffffff-ffff-ffff-ffff-000000000602', 2, 'K1'), 2) $$,
    'PA006', NULL, 'a v2 envelope copied to another group is refused by pyaccess.open with PA006'
);
SELECT throws_ok(
    $$ SELECT * FROM pyaccess.open('ffffffff-ffff-ffff-ffff-000000000601',
                                   pg_temp.wire('ffffffff-ffff-ffff-ffff-000000000601', 2, 'K1'), 2) $$,
    'PA006', NULL, 'a v2 envelope with one ciphertext bit flipped is refused by pyaccess.open with PA006'
);
RESET ROLE;

UPDATE public.ota_groups
   SET provision_secret_ciphertext = pg_catalog.substr(provision_secret_ciphertext, 1, 88)
 WHERE id = 'ffffffff-ffff-ffff-ffff-000000000602';
SET ROLE pgtap_pyaccess_reader_login;
SELECT throws_ok(
    $$ SELECT * FROM pyaccess.open('ffffffff-ffff-ffff-ffff-000000000602',
                                   pg_temp.wire('ffffffff-ffff-ffff-ffff-000000000602', 2, 'K1'), 2) $$,
    'PA006', NULL, 'a v2 envelope with its last byte cut off is refused by pyaccess.open with PA006'
);
SELECT throws_ok(
    $$ SELECT * FROM pyaccess.open('ffffffff-ffff-ffff-ffff-000000000602',
                                   pg_temp.wire('ffffffff-ffff-ffff-ffff-000000000602', 1, 'K1'), 1) $$,
    'PA006', NULL, 'a malformed envelope is refused by pyaccess.open(..., 1) too, never handed off to another version'
);
RESET ROLE;

-- ---------------------------------------------------------------------
-- PA009: a library newer than the installed SQL
-- ---------------------------------------------------------------------

SET ROLE pgtap_pyaccess_reader_login;
SELECT throws_ok($$ SELECT pyaccess.guard('9.9.9') $$, 'PA009', NULL,
                 'pyaccess.guard(''9.9.9'') raises PA009 (run pyaccess migrate)');
SELECT throws_ok($$ SELECT pyaccess.guard('0.2.1') $$, 'PA009', NULL,
                 'pyaccess.guard(''0.2.1'') raises PA009: a patch release newer than the SQL');
SELECT lives_ok($$ SELECT pyaccess.guard('0.1.0') $$,
                'pyaccess.guard(''0.1.0'') is accepted: the SQL serves older libraries');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
