-- depends: 0002_ota_groups
-- The two NOLOGIN group roles. Roles are cluster-wide and several databases
-- may run this migration, even at once: create each only if absent.
-- Needs CREATEROLE. Granting SET on the log parameters needs a superuser:
-- without one it is skipped with a NOTICE and the DBA runs the GRANT.
DO $$
DECLARE
    v_role text;
BEGIN
    FOREACH v_role IN ARRAY ARRAY['provision_secret_writer', 'provision_secret_reader'] LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = v_role) THEN
            BEGIN
                EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', v_role);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;  -- created meanwhile by a migration of another database
            END;
        END IF;
    END LOOP;

    IF pg_catalog.has_parameter_privilege('provision_secret_writer', 'log_parameter_max_length', 'SET')
       AND pg_catalog.has_parameter_privilege('provision_secret_writer', 'log_parameter_max_length_on_error', 'SET')
       AND pg_catalog.has_parameter_privilege('provision_secret_reader', 'log_parameter_max_length', 'SET')
       AND pg_catalog.has_parameter_privilege('provision_secret_reader', 'log_parameter_max_length_on_error', 'SET') THEN
        NULL;  -- granted already (the ACL is cluster-wide): nothing to change, nothing to race on
    ELSIF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
        BEGIN
            GRANT SET ON PARAMETER log_parameter_max_length, log_parameter_max_length_on_error
               TO provision_secret_writer, provision_secret_reader;
        EXCEPTION WHEN internal_error THEN
            -- "tuple concurrently updated": another database's migration granted it at
            -- the same moment. Fine if the grant is there now; otherwise re-raise.
            IF NOT pg_catalog.has_parameter_privilege('provision_secret_reader', 'log_parameter_max_length', 'SET') THEN
                RAISE;
            END IF;
        END;
    ELSE
        RAISE NOTICE 'pyaccess: skipped GRANT SET ON PARAMETER (needs a superuser); a superuser should run: GRANT SET ON PARAMETER log_parameter_max_length, log_parameter_max_length_on_error TO provision_secret_writer, provision_secret_reader';
    END IF;
END
$$;
