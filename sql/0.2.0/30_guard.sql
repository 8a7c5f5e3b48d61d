-- pyaccess 0.2.0, part 30: keeping bound parameters (keys, secrets) out of the server log.
--
-- What writes a call's bound values to the server log, in PostgreSQL 15 and the extensions
-- found in production (each one reproduced by tests/test_log_paths.py):
--
--   path                  switch the guard pins                what logs the values
--   statement logging     log_parameter_max_length = 0         log_statement = all | mod ("DETAIL: parameters:")
--   duration logging      log_parameter_max_length = 0         log_min_duration_statement >= 0
--   duration sampling     log_parameter_max_length = 0         log_min_duration_sample >= 0, log_statement_sample_rate > 0
--   transaction sampling  log_parameter_max_length = 0         log_transaction_sample_rate > 0
--   parameters on error   log_parameter_max_length_on_error=0  <> 0: the portal's parameters in the CONTEXT of every
--                                                              message raised during the call, errors and LOG lines
--                                                              (audit records included), not only errors
--   parse tree dump       debug_print_parse = off              literal values of the statement
--   rewritten tree dump   debug_print_rewritten = off          literal values of the statement
--   plan dump             debug_print_plan = off               custom plans hold bound values and the values of
--                                                              PL/pgSQL variables as Consts (a list of signed bytes)
--   auto_explain          auto_explain.log_min_duration = -1   log_verbose: Output lines; any mode: conditions with
--                                                              constants; log_nested_statements: PL/pgSQL variables
--   pgaudit               pgaudit.log_parameter = off          session (pgaudit.log) and object (pgaudit.role) auditing
--
-- pyaccess.guard_session() pins every switch of a loaded setting at session level, whatever
-- its current value: a value SET for the session outranks postgresql.conf, ALTER SYSTEM,
-- ALTER DATABASE/ROLE SET and the client's options, so a configuration reload cannot turn a
-- path back on for a guarded session. It raises PA007, naming each setting, when a path logs
-- values now and the caller may not SET its switch (the migration grants SET on the
-- superuser-only switches to the pyaccess roles when a superuser runs it). A switch it may
-- not pin while its path is off leaves a guarded session exposed to a reload until the next
-- guard; pyaccess._guarded() notices the reload at no extra round trip (pg_conf_load_time()),
-- and doctor reports such a switch as a warning.
--
-- What no guard can do: a value written into the statement text (psql, a simple-protocol
-- literal) is logged with the statement; only bound parameters are protected. And a call's
-- values are logged when its statement starts, before any function of it can refuse: a
-- client that cannot vouch for its session (after DISCARD ALL, RESET ALL, a reload) sends
-- pyaccess.guard(...) in the same pipeline in front of the call, never the call alone.

-- =====================================================================
-- The switches: one list, read by the guard, by log_exposure and by the GRANT below
-- =====================================================================

-- Each setting the guard pins, the value that keeps bound values out of the log, and whether
-- a role needs GRANT SET ON PARAMETER to set it (PGC_SUSET) or any role may (PGC_USERSET).
CREATE OR REPLACE FUNCTION pyaccess._log_switches()
RETURNS TABLE (setting text, safe_value text, needs_grant boolean)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT s.setting, s.safe_value, s.needs_grant
      FROM (VALUES ('log_parameter_max_length', '0', true),
                   ('log_parameter_max_length_on_error', '0', false),
                   ('debug_print_parse', 'off', false),
                   ('debug_print_rewritten', 'off', false),
                   ('debug_print_plan', 'off', false),
                   ('auto_explain.log_min_duration', '-1', true),
                   ('pgaudit.log_parameter', 'off', true)) AS s (setting, safe_value, needs_grant);
END;
SELECT pyaccess._declare('pyaccess._log_switches()', 'provision_secret_reader,provision_secret_writer,provision_secret_rotator');

-- =====================================================================
-- Exposure, per path
-- =====================================================================

-- For the calling session, each path that could write bound values to the server log and
-- is present (an extension's path only when the extension is loaded): its switch and the
-- value the guard pins it to, whether the path logs values now, whether this role may pin
-- the switch, and the settings seen. SECURITY INVOKER: the caller's session and privileges.
CREATE OR REPLACE FUNCTION pyaccess.log_exposure()
RETURNS TABLE (path text, setting text, safe_value text, logs_values boolean, can_pin boolean, detail text)
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT p.path, p.setting, w.safe_value, COALESCE(p.logs_values, false),
           NOT w.needs_grant OR pg_catalog.has_parameter_privilege(p.setting, 'SET'),
           p.detail
      FROM (SELECT pg_catalog.current_setting('log_parameter_max_length') AS max_length,
                   pg_catalog.current_setting('log_parameter_max_length_on_error') AS max_length_on_error,
                   pg_catalog.current_setting('log_statement') AS log_statement,
                   pg_catalog.current_setting('log_min_duration_statement') AS min_duration,
                   pg_catalog.current_setting('log_min_duration_sample') AS min_duration_sample,
                   pg_catalog.current_setting('log_statement_sample_rate') AS sample_rate,
                   pg_catalog.current_setting('log_transaction_sample_rate') AS xact_sample_rate,
                   pg_catalog.current_setting('debug_print_parse') AS print_parse,
                   pg_catalog.current_setting('debug_print_rewritten') AS print_rewritten,
                   pg_catalog.current_setting('debug_print_plan') AS print_plan,
                   pg_catalog.current_setting('auto_explain.log_min_duration', true) AS explain_min_duration,
                   pg_catalog.current_setting('auto_explain.sample_rate', true) AS explain_sample_rate,
                   pg_catalog.current_setting('auto_explain.log_verbose', true) AS explain_verbose,
                   pg_catalog.current_setting('auto_explain.log_nested_statements', true) AS explain_nested,
                   pg_catalog.current_setting('pgaudit.log_parameter', true) AS audit_parameter,
                   pg_catalog.current_setting('pgaudit.log', true) AS audit_log,
                   pg_catalog.current_setting('pgaudit.role', true) AS audit_role) AS v,
           LATERAL (VALUES
               (1, 'statement logging', 'log_parameter_max_length', true,
                v.max_length <> '0' AND v.log_statement IN ('all', 'mod'),
                pg_catalog.format('log_statement = %s, log_parameter_max_length = %s', v.log_statement, v.max_length)),
               (2, 'duration logging', 'log_parameter_max_length', true,
                v.max_length <> '0' AND v.min_duration <> '-1',
                pg_catalog.format('log_min_duration_statement = %s, log_parameter_max_length = %s',
                                  v.min_duration, v.max_length)),
               (3, 'duration sampling', 'log_parameter_max_length', true,
                v.max_length <> '0' AND v.min_duration_sample <> '-1' AND v.sample_rate::float8 > 0,
                pg_catalog.format('log_min_duration_sample = %s, log_statement_sample_rate = %s, '
                                  'log_parameter_max_length = %s', v.min_duration_sample, v.sample_rate, v.max_length)),
               (4, 'transaction sampling', 'log_parameter_max_length', true,
                v.max_length <> '0' AND v.xact_sample_rate::float8 > 0,
                pg_catalog.format('log_transaction_sample_rate = %s, log_parameter_max_length = %s',
                                  v.xact_sample_rate, v.max_length)),
               (5, 'parameters on error', 'log_parameter_max_length_on_error', true,
                v.max_length_on_error <> '0',
                pg_catalog.format('log_parameter_max_length_on_error = %s', v.max_length_on_error)),
               (6, 'parse tree dump', 'debug_print_parse', true, v.print_parse = 'on',
                pg_catalog.format('debug_print_parse = %s', v.print_parse)),
               (7, 'rewritten tree dump', 'debug_print_rewritten', true, v.print_rewritten = 'on',
                pg_catalog.format('debug_print_rewritten = %s', v.print_rewritten)),
               (8, 'plan dump', 'debug_print_plan', true, v.print_plan = 'on',
                pg_catalog.format('debug_print_plan = %s', v.print_plan)),
               (9, 'auto_explain', 'auto_explain.log_min_duration', v.explain_min_duration IS NOT NULL,
                v.explain_min_duration <> '-1' AND v.explain_sample_rate::float8 > 0,
                pg_catalog.format('auto_explain.log_min_duration = %s, sample_rate = %s, log_verbose = %s, '
                                  'log_nested_statements = %s', v.explain_min_duration, v.explain_sample_rate,
                                  v.explain_verbose, v.explain_nested)),
               (10, 'pgaudit', 'pgaudit.log_parameter', v.audit_parameter IS NOT NULL,
                v.audit_parameter = 'on' AND (v.audit_log NOT IN ('', 'none') OR v.audit_role <> ''),
                pg_catalog.format('pgaudit.log_parameter = %s, pgaudit.log = %s, pgaudit.role = %s',
                                  v.audit_parameter, v.audit_log, NULLIF(v.audit_role, '')))
           ) AS p (n, path, setting, present, logs_values, detail)
      JOIN pyaccess._log_switches() AS w ON w.setting = p.setting
     WHERE p.present
     ORDER BY p.n;
END;
SELECT pyaccess._declare('pyaccess.log_exposure()', 'provision_secret_reader,provision_secret_writer,provision_secret_rotator');

-- =====================================================================
-- The guard
-- =====================================================================

-- What a guarded session records: when the configuration was last loaded (an epoch, so that
-- a TimeZone change does not alter it). A reload, DISCARD ALL or RESET ALL makes it differ.
CREATE OR REPLACE FUNCTION pyaccess._guard_token()
RETURNS text
LANGUAGE sql STABLE PARALLEL RESTRICTED
RETURN pg_catalog.extract('epoch', pg_catalog.pg_conf_load_time())::text;
SELECT pyaccess._declare('pyaccess._guard_token()', 'provision_secret_reader,provision_secret_writer,provision_secret_rotator');

-- Pins every switch this role may set, whatever its value now; raises PA007 naming each
-- path that logs values now and whose switch this role may not set; then marks the session
-- guarded as of the configuration it has now. Runs inside the caller's transaction: if that
-- rolls back, the pins and the mark go with it, together.
CREATE OR REPLACE FUNCTION pyaccess.guard_session()
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_refused text;
    v_settings text;
BEGIN
    PERFORM pg_catalog.set_config(e.setting, e.safe_value, false)
       FROM (SELECT DISTINCT x.setting, x.safe_value FROM pyaccess.log_exposure() AS x WHERE x.can_pin) AS e;
    SELECT pg_catalog.string_agg(pg_catalog.format('%s (%s: %s)', x.setting, x.path, x.detail), ', ' ORDER BY x.setting),
           pg_catalog.string_agg(DISTINCT x.setting, ', ')
      INTO v_refused, v_settings
      FROM pyaccess.log_exposure() AS x
     WHERE x.logs_values AND NOT x.can_pin;
    IF v_refused IS NOT NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PA007',
            MESSAGE = 'the server would write bound parameters (keys, secrets) to its log, and this role may not '
                      'turn that off: ' || v_refused,
            HINT = pg_catalog.format('a superuser runs pyaccess migrate, or: GRANT SET ON PARAMETER %s TO '
                                     'provision_secret_reader, provision_secret_writer, provision_secret_rotator; '
                                     'or turns these off for this role', v_settings);
    END IF;
    PERFORM pg_catalog.set_config('pyaccess.guarded', pyaccess._guard_token(), false);
END
$$;
SELECT pyaccess._declare('pyaccess.guard_session()', 'provision_secret_reader,provision_secret_writer,provision_secret_rotator');

-- Whether this session is guarded and no configuration reload, DISCARD ALL or RESET ALL
-- came since. Inlined into each call (SQL-standard body, no SET clause): no extra round trip.
-- The mark is the configuration's load time as an epoch, which no TimeZone or DateStyle changes.
CREATE OR REPLACE FUNCTION pyaccess._guarded()
RETURNS boolean
LANGUAGE sql STABLE PARALLEL RESTRICTED
RETURN COALESCE(pg_catalog.current_setting('pyaccess.guarded', true) = pyaccess._guard_token(), false);
SELECT pyaccess._declare('pyaccess._guarded()', 'provision_secret_reader,provision_secret_writer,provision_secret_rotator');

-- Raises PA007 for a call on a session that is not (or no longer) guarded.
CREATE OR REPLACE FUNCTION pyaccess._refuse_unguarded()
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION USING
        ERRCODE = 'PA007',
        MESSAGE = 'this session is not guarded against logging bound parameters '
                  '(never guarded, or reset by DISCARD ALL / RESET ALL, or the configuration was reloaded)',
        HINT = 'send pyaccess.guard(...) in the same pipeline in front of the call; the pyaccess library does this';
END
$$;
SELECT pyaccess._declare('pyaccess._refuse_unguarded()', 'provision_secret_reader,provision_secret_writer,provision_secret_rotator');

-- =====================================================================
-- 0.1.0's entry points (kept until a later contract step: pods of 0.1.0 call them)
-- =====================================================================

-- The paths that log bound values now, as 0.1.0 reported them: one text per path.
CREATE OR REPLACE FUNCTION public.provision_secret_log_exposure()
RETURNS text[]
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT COALESCE(pg_catalog.array_agg(x.path || ' (' || x.detail || ')'), '{}')
      FROM pyaccess.log_exposure() AS x
     WHERE x.logs_values;
END;
SELECT pyaccess._declare('public.provision_secret_log_exposure()', 'provision_secret_reader,provision_secret_writer');

CREATE OR REPLACE FUNCTION public.provision_secret_session_guard()
RETURNS void
LANGUAGE sql VOLATILE
BEGIN ATOMIC
    SELECT pyaccess.guard_session();
END;
SELECT pyaccess._declare('public.provision_secret_session_guard()', 'provision_secret_reader,provision_secret_writer');

-- =====================================================================
-- GRANT SET on the switches
--
-- The superuser-only switches need it. The others are granted too, so that
-- has_parameter_privilege(), which sees only explicit grants, tells a DBA the truth about
-- every switch. The grant is cluster-wide and needs a superuser; PostgreSQL 15 accepts it
-- for an extension's setting before the extension is loaded, so a later
-- shared_preload_libraries of auto_explain or pgaudit finds the roles ready. Without a
-- superuser: a NOTICE with the exact statement, for the DBA.
-- =====================================================================

DO $$
DECLARE
    v_grant text := pg_catalog.format(
        'GRANT SET ON PARAMETER %s TO provision_secret_reader, provision_secret_writer, provision_secret_rotator',
        (SELECT pg_catalog.string_agg(s.setting, ', ' ORDER BY s.setting) FROM pyaccess._log_switches() AS s));
BEGIN
    IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
        BEGIN
            EXECUTE v_grant;
        EXCEPTION WHEN internal_error THEN
            NULL;  -- "tuple concurrently updated": another database's migration granted it at the same moment
        END;
    ELSE
        RAISE NOTICE 'pyaccess: skipped % (needs a superuser); a superuser should run it', v_grant;
    END IF;
END
$$;
