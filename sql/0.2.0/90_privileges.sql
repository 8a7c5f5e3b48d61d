-- pyaccess 0.2.0, part 90: privileges asserted, not assumed.
--
-- For every function on the list (pyaccess.api): provision_secret_owner owns it; nobody but
-- the listed roles holds EXECUTE, whatever default privileges or earlier grants exist (what
-- aclexplode() shows is revoked); then each function's fingerprint is recorded, so that
-- pyaccess doctor can name any function altered by hand since.

-- The facts doctor compares, computed under a fixed search_path so that they do not depend
-- on the caller's.
CREATE OR REPLACE FUNCTION pyaccess._fingerprint(p_function regprocedure)
RETURNS TABLE (definition text, security_definer boolean, config text[], owner text, acl text[])
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT pg_catalog.md5(pg_catalog.pg_get_functiondef(p.oid)), p.prosecdef, p.proconfig, p.proowner::regrole::text,
           ARRAY(SELECT pg_catalog.format('%s=%s', CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END,
                                          a.privilege_type)
                   FROM pg_catalog.aclexplode(COALESCE(p.proacl, pg_catalog.acldefault('f', p.proowner))) AS a
                  WHERE a.grantee <> p.proowner
                  ORDER BY 1)
      FROM pg_catalog.pg_proc AS p
     WHERE p.oid = p_function;
END;
SELECT pyaccess._declare('pyaccess._fingerprint(regprocedure)', 'provision_secret_reader,provision_secret_writer,provision_secret_rotator');

-- Asserts owner and grants of every listed function, then records the fingerprints.
CREATE OR REPLACE FUNCTION pyaccess._assert_api()
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_api     record;
    v_grantee oid;
    v_role    text;
BEGIN
    FOR v_api IN SELECT a.signature::regprocedure AS fn, a.grantees FROM pyaccess.api AS a LOOP
        EXECUTE pg_catalog.format('ALTER FUNCTION %s OWNER TO provision_secret_owner', v_api.fn);
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', v_api.fn);
        FOR v_grantee IN
            SELECT DISTINCT a.grantee FROM pg_catalog.pg_proc AS p, pg_catalog.aclexplode(p.proacl) AS a
             WHERE p.oid = v_api.fn AND a.grantee NOT IN (0, p.proowner)
        LOOP
            EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM %s CASCADE', v_api.fn, v_grantee::regrole);
        END LOOP;
        FOREACH v_role IN ARRAY COALESCE(v_api.grantees, '{}') LOOP
            EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %I', v_api.fn, v_role);
        END LOOP;
    END LOOP;
    UPDATE pyaccess.api AS a
       SET definition = f.definition, owner = f.owner, acl = f.acl
      FROM pyaccess.api AS b, pyaccess._fingerprint(b.signature::regprocedure) AS f
     WHERE a.signature = b.signature;
    IF EXISTS (SELECT FROM pyaccess.api AS a, pg_catalog.unnest(a.acl) AS entry
                WHERE pg_catalog.split_part(entry, '=', 1) <> ALL (COALESCE(a.grantees, '{}'))) THEN
        RAISE EXCEPTION 'pyaccess: a grant could not be revoked: %', (
            SELECT pg_catalog.string_agg(a.signature || ' ' || entry, ', ')
              FROM pyaccess.api AS a, pg_catalog.unnest(a.acl) AS entry
             WHERE pg_catalog.split_part(entry, '=', 1) <> ALL (COALESCE(a.grantees, '{}')))
            USING HINT = 'a grant made by another grantor: revoke it as that grantor, then migrate again';
    END IF;
END
$$;
SELECT pyaccess._declare('pyaccess._assert_api()', '');

-- Every way the installed functions differ from the list: a function missing, altered
-- (definition: body, arguments, SECURITY DEFINER, SET clauses), owned or granted otherwise,
-- or a function that is not on the list where pyaccess's names live (a planted overload).
CREATE OR REPLACE FUNCTION pyaccess.api_drift()
RETURNS TABLE (signature text, problem text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT a.signature, 'missing'
      FROM pyaccess.api AS a
     WHERE pg_catalog.to_regprocedure(a.signature) IS NULL
    UNION ALL
    SELECT a.signature, pg_catalog.concat_ws(', ',
               CASE WHEN f.definition IS DISTINCT FROM a.definition THEN 'definition differs (body, arguments, '
                        'SECURITY DEFINER or SET clauses)' END,
               CASE WHEN f.owner IS DISTINCT FROM a.owner THEN pg_catalog.format('owner is %s, not %s', f.owner, a.owner) END,
               CASE WHEN f.acl IS DISTINCT FROM a.acl THEN pg_catalog.format('grants are %s, not %s', f.acl, a.acl) END)
      FROM pyaccess.api AS a, pyaccess._fingerprint(pg_catalog.to_regprocedure(a.signature)) AS f
     WHERE (f.definition, f.owner, f.acl) IS DISTINCT FROM (a.definition, a.owner, a.acl)
    UNION ALL
    SELECT p.oid::pg_catalog.regprocedure::text,
           pg_catalog.format('not part of pyaccess %s (owned by %s): a planted overload?', pyaccess.release(),
                             p.proowner::regrole)
      FROM pg_catalog.pg_proc AS p JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace
     WHERE (n.nspname = 'pyaccess'
            OR (n.nspname = 'public' AND (p.proname LIKE '%provision\_secret%' OR p.proname LIKE 'provision\_secret%')))
       AND NOT EXISTS (SELECT FROM pyaccess.api AS a WHERE pg_catalog.to_regprocedure(a.signature) = p.oid)
     ORDER BY 1;
END;
SELECT pyaccess._declare('pyaccess.api_drift()', 'provision_secret_reader,provision_secret_writer,provision_secret_rotator');

SELECT pyaccess._assert_api();
