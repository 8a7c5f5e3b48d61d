-- pyaccess 0.2.0, part 30: keeping bound parameters (keys, secrets) out of the server log.
--
-- pyaccess.guard_session() turns off, for the calling session, every setting that would
-- write a call's bound values to the server log, where the caller may; it raises PA007
-- naming each setting it could not turn off. It records pg_conf_load_time() in
-- pyaccess.guarded, so that pyaccess._guarded() notices, at no extra round trip, a
-- configuration reload or a DISCARD ALL / RESET ALL since.

-- The settings that would make the server write this session's bound parameters to its
-- log. Empty when none would. SECURITY INVOKER: it reads the calling session's settings.
CREATE OR REPLACE FUNCTION pyaccess.log_exposure()
RETURNS text[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_reasons text[] := '{}';
BEGIN
    IF pg_catalog.current_setting('log_parameter_max_length')::integer <> 0 THEN
        IF pg_catalog.current_setting('log_statement') = 'all' THEN
            v_reasons := v_reasons || 'log_statement = all'::text;
        END IF;
        IF pg_catalog.current_setting('log_min_duration_statement')::integer >= 0 THEN
            v_reasons := v_reasons || 'log_min_duration_statement >= 0'::text;
        END IF;
        IF pg_catalog.current_setting('log_min_duration_sample')::integer >= 0
           AND pg_catalog.current_setting('log_statement_sample_rate')::float8 > 0 THEN
            v_reasons := v_reasons || 'log_min_duration_sample >= 0'::text;
        END IF;
        IF pg_catalog.current_setting('log_transaction_sample_rate')::float8 > 0 THEN
            v_reasons := v_reasons || 'log_transaction_sample_rate > 0'::text;
        END IF;
        IF pg_catalog.cardinality(v_reasons) > 0 THEN
            v_reasons := v_reasons || 'log_parameter_max_length <> 0'::text;
        END IF;
    END IF;
    IF pg_catalog.current_setting('log_parameter_max_length_on_error')::integer <> 0 THEN
        v_reasons := v_reasons || 'log_parameter_max_length_on_error <> 0'::text;
    END IF;
    IF pg_catalog.current_setting('pgaudit.log_parameter', true) = 'on'
       AND COALESCE(pg_catalog.current_setting('pgaudit.log', true), 'none') <> 'none' THEN
        v_reasons := v_reasons || 'pgaudit.log_parameter = on'::text;
    END IF;
    RETURN v_reasons;
END
$$;
SELECT pyaccess._declare('pyaccess.log_exposure()', 'provision_secret_reader,provision_secret_writer,provision_secret_rotator');

-- Turns off parameter logging for this session where the caller may, records the guard,
-- then raises PA007 if the server would still log parameters.
CREATE OR REPLACE FUNCTION pyaccess.guard_session()
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_setting text;
    v_reasons text[];
BEGIN
    FOREACH v_setting IN ARRAY ARRAY['log_parameter_max_length', 'log_parameter_max_length_on_error'] LOOP
        IF pg_catalog.has_parameter_privilege(v_setting, 'SET') THEN
            PERFORM pg_catalog.set_config(v_setting, '0', false);
        END IF;
    END LOOP;
    v_reasons := pyaccess.log_exposure();
    IF pg_catalog.cardinality(v_reasons) > 0 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PA007',
            MESSAGE = 'the server would write bound parameters (keys, secrets) to its log: '
                      || pg_catalog.array_to_string(v_reasons, ', '),
            HINT = 'a superuser runs pyaccess migrate (it grants SET on these parameters to the pyaccess roles), '
                   'or turns them off for this role';
    END IF;
    PERFORM pg_catalog.set_config('pyaccess.guarded', pg_catalog.pg_conf_load_time()::text, false);
END
$$;
SELECT pyaccess._declare('pyaccess.guard_session()', 'provision_secret_reader,provision_secret_writer,provision_secret_rotator');

-- Whether this session is guarded and no configuration reload, DISCARD ALL or RESET ALL came since.
CREATE OR REPLACE FUNCTION pyaccess._guarded()
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
RETURN COALESCE(pg_catalog.current_setting('pyaccess.guarded', true) = pg_catalog.pg_conf_load_time()::text, false);
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
        HINT = 'call pyaccess.guard(...) first; the pyaccess library does this by itself';
END
$$;
SELECT pyaccess._declare('pyaccess._refuse_unguarded()', 'provision_secret_reader,provision_secret_writer,provision_secret_rotator');

-- pyaccess._refuse_unguarded() where a bytea is expected (a CASE branch of pyaccess.open).
CREATE OR REPLACE FUNCTION pyaccess._refuse_unguarded_read()
RETURNS bytea
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT NULL::bytea WHERE pyaccess._refuse_unguarded();
END;
SELECT pyaccess._declare('pyaccess._refuse_unguarded_read()', 'provision_secret_reader');

-- 0.1.0's entry points (kept until a later contract step: pods of 0.1.0 call them).
CREATE OR REPLACE FUNCTION public.provision_secret_log_exposure()
RETURNS text[]
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT pyaccess.log_exposure();
END;
SELECT pyaccess._declare('public.provision_secret_log_exposure()', 'provision_secret_reader,provision_secret_writer');

CREATE OR REPLACE FUNCTION public.provision_secret_session_guard()
RETURNS void
LANGUAGE sql VOLATILE
BEGIN ATOMIC
    SELECT pyaccess.guard_session();
END;
SELECT pyaccess._declare('public.provision_secret_session_guard()', 'provision_secret_reader,provision_secret_writer');

-- GRANT SET on the logging parameters the guard turns off: needs a superuser (the grant is
-- cluster-wide and inherited through role membership). Without one: a NOTICE, and the DBA runs it.
DO $$
DECLARE
    v_parameters text := 'log_parameter_max_length, log_parameter_max_length_on_error';
    v_grant text := pg_catalog.format('GRANT SET ON PARAMETER %s TO provision_secret_writer, provision_secret_reader, '
                                      'provision_secret_rotator', v_parameters);
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
