-- pyaccess 0.2.0, part 00: roles, the pyaccess schema, the one list of functions, and the refusal of
-- databases where another role could run code as the functions' owner (also run alone, and rolled
-- back, by pyaccess migrate before it applies anything: migrations/0006_release_0_2_0.py, preflight).
--
-- Installed by migrations/0006_release_0_2_0.py with the other files of this folder, in file-name
-- order, after @extschema@ is replaced by the schema that holds pgcrypto. Every statement is
-- idempotent: a released folder is applied once by its migration and never changes afterwards.

-- =====================================================================
-- Roles (cluster-wide: created if absent, even by two databases at once)
--
-- provision_secret_owner   NOLOGIN, never superuser: owns every pyaccess function, so a
--                          SECURITY DEFINER body runs with its few rights and no more.
-- provision_secret_rotator NOLOGIN: re-encrypts and manages the key registry.
-- =====================================================================

DO $$
DECLARE
    v_role text;
BEGIN
    FOREACH v_role IN ARRAY ARRAY['provision_secret_owner', 'provision_secret_rotator',
                                  'provision_secret_writer', 'provision_secret_reader'] LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = v_role) THEN
            BEGIN
                EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', v_role);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;  -- created meanwhile by a migration of another database
            END;
        END IF;
    END LOOP;
    IF (SELECT rolsuper OR rolbypassrls FROM pg_catalog.pg_roles WHERE rolname = 'provision_secret_owner') THEN
        RAISE EXCEPTION 'pyaccess: refusing to install: role provision_secret_owner is a superuser or bypasses RLS'
            USING HINT = 'ALTER ROLE provision_secret_owner NOSUPERUSER NOBYPASSRLS';
    END IF;
    -- A migrating role that is not a superuser acts through membership: it creates objects
    -- that provision_secret_owner then owns.
    -- It also needs provision_secret_owner to hold CREATE on public, where the contract's
    -- functions live: ALTER FUNCTION ... OWNER TO requires it of a non-superuser.
    IF NOT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
        IF NOT pg_catalog.pg_has_role(current_user, 'provision_secret_owner', 'USAGE') THEN
            EXECUTE pg_catalog.format('GRANT provision_secret_owner TO %I', current_user);
        END IF;
        IF NOT pg_catalog.has_schema_privilege('provision_secret_owner', 'public', 'CREATE') THEN
            GRANT CREATE ON SCHEMA public TO provision_secret_owner;
        END IF;
    END IF;
END
$$;

CREATE SCHEMA IF NOT EXISTS pyaccess AUTHORIZATION provision_secret_owner;
ALTER SCHEMA pyaccess OWNER TO provision_secret_owner;
REVOKE ALL ON SCHEMA pyaccess FROM PUBLIC;
COMMENT ON SCHEMA pyaccess IS 'pyaccess: functions, key registry; only provision_secret_owner creates here';


-- =====================================================================
-- The one list of functions: each CREATE FUNCTION in this folder is followed by a
-- pyaccess._declare(signature, grantees). 90_privileges.sql asserts owner and grants from
-- it; the rollback drops what it lists; doctor compares every function with it.
-- =====================================================================

CREATE TABLE IF NOT EXISTS pyaccess.api (
    signature   text    PRIMARY KEY,   -- schema.name(identity arguments)
    grantees    text[]  NOT NULL,      -- roles given EXECUTE; nobody else holds it
    release     text    NOT NULL,      -- the release whose SQL defined it
    definition  text,                  -- md5 of pg_get_functiondef() once installed
    owner       text,
    acl         text[]
);
ALTER TABLE pyaccess.api OWNER TO provision_secret_owner;
COMMENT ON TABLE pyaccess.api IS 'pyaccess: every function of the installed release, as installed';
TRUNCATE pyaccess.api;

-- The release whose SQL is installed.
CREATE OR REPLACE FUNCTION pyaccess.release()
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN '0.2.0';

-- Puts a function on the list, with the roles that may execute it ('' for none). Signatures
-- are spelled schema.name(types) whatever the caller's search_path.
CREATE OR REPLACE FUNCTION pyaccess._declare(p_signature text, p_grantees text)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    INSERT INTO pyaccess.api (signature, grantees, release)
    VALUES (p_signature::pg_catalog.regprocedure::text,
            COALESCE(pg_catalog.string_to_array(NULLIF(p_grantees, ''), ','), '{}'),
            pyaccess.release())
    ON CONFLICT (signature) DO UPDATE SET grantees = excluded.grantees, release = excluded.release;
END;


SELECT pyaccess._declare('pyaccess.release()', 'provision_secret_reader,provision_secret_writer,provision_secret_rotator');
SELECT pyaccess._declare('pyaccess._declare(text,text)', '');

-- =====================================================================
-- Refuse setups in which another role could make code run as the owner
--
-- A trusted role is a superuser or a member of provision_secret_owner: it holds the owner's
-- rights already. Anyone else who owns ota_groups (a trigger, a rule, a policy), holds TRIGGER
-- on it, owns a trigger function on it, or owns or may create in pgcrypto's schema, could
-- run code with the owner's rights.
-- =====================================================================

-- Whether a role already holds provision_secret_owner's rights (pg_database_owner: the database's owner).
CREATE OR REPLACE FUNCTION pyaccess._trusted(p_role oid)
RETURNS boolean
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT COALESCE(r.rolsuper, false) OR pg_catalog.pg_has_role(r.oid, 'provision_secret_owner'::pg_catalog.name, 'MEMBER')
      FROM (SELECT CASE WHEN pg_catalog.pg_get_userbyid(p_role) = 'pg_database_owner'
                        THEN (SELECT d.datdba FROM pg_catalog.pg_database AS d
                               WHERE d.datname = pg_catalog.current_database())
                        ELSE p_role END AS oid) AS who
      LEFT JOIN pg_catalog.pg_roles AS r ON r.oid = who.oid;
END;

-- Whether a role is PUBLIC (0) or one of the service roles (not trusted): who must never create
-- objects where pyaccess's functions live.
CREATE OR REPLACE FUNCTION pyaccess._service_role(p_role oid)
RETURNS boolean
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT p_role = 0
           OR (NOT pyaccess._trusted(p_role)
               AND (pg_catalog.pg_has_role(p_role, 'provision_secret_reader'::pg_catalog.name, 'MEMBER')
                    OR pg_catalog.pg_has_role(p_role, 'provision_secret_writer'::pg_catalog.name, 'MEMBER')
                    OR pg_catalog.pg_has_role(p_role, 'provision_secret_rotator'::pg_catalog.name, 'MEMBER')));
END;

-- Each way another role could run code as the owner: empty when none.
CREATE OR REPLACE FUNCTION pyaccess.escalation_paths()
RETURNS TABLE (problem text, fix text)
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT pg_catalog.format('public.ota_groups is owned by %s, who could add a trigger, rule or policy '
                             'that runs as provision_secret_owner', c.relowner::regrole),
           'ALTER TABLE public.ota_groups OWNER TO provision_secret_owner (or to a superuser)'
      FROM pg_catalog.pg_class AS c
     WHERE c.oid = 'public.ota_groups'::regclass AND NOT pyaccess._trusted(c.relowner)
    UNION ALL
    SELECT pg_catalog.format('%s holds TRIGGER on public.ota_groups',
                             CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END),
           pg_catalog.format('REVOKE TRIGGER ON public.ota_groups FROM %s',
                             CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END)
      FROM pg_catalog.pg_class AS c, pg_catalog.aclexplode(c.relacl) AS a
     WHERE c.oid = 'public.ota_groups'::regclass AND a.privilege_type = 'TRIGGER'
       AND (a.grantee = 0 OR NOT pyaccess._trusted(a.grantee))
    UNION ALL
    SELECT pg_catalog.format('trigger %s on public.ota_groups runs %s, owned by %s, who could change it',
                             t.tgname, t.tgfoid::regproc, p.proowner::regrole),
           pg_catalog.format('ALTER FUNCTION %s OWNER TO provision_secret_owner, or drop the trigger',
                             t.tgfoid::regprocedure)
      FROM pg_catalog.pg_trigger AS t JOIN pg_catalog.pg_proc AS p ON p.oid = t.tgfoid
     WHERE t.tgrelid = 'public.ota_groups'::regclass AND NOT t.tgisinternal AND NOT pyaccess._trusted(p.proowner)
    UNION ALL
    SELECT pg_catalog.format('pgcrypto''s schema %I is owned by %s', n.nspname, n.nspowner::regrole),
           pg_catalog.format('ALTER SCHEMA %I OWNER TO a superuser or to provision_secret_owner', n.nspname)
      FROM pg_catalog.pg_extension AS e JOIN pg_catalog.pg_namespace AS n ON n.oid = e.extnamespace
     WHERE e.extname = 'pgcrypto' AND NOT pyaccess._trusted(n.nspowner)
    UNION ALL
    SELECT pg_catalog.format('%s may create objects in pgcrypto''s schema %I',
                             CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END, n.nspname),
           pg_catalog.format('REVOKE CREATE ON SCHEMA %I FROM %s', n.nspname,
                             CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END)
      FROM pg_catalog.pg_extension AS e
      JOIN pg_catalog.pg_namespace AS n ON n.oid = e.extnamespace,
           pg_catalog.aclexplode(n.nspacl) AS a
     WHERE e.extname = 'pgcrypto' AND a.privilege_type = 'CREATE' AND pyaccess._service_role(a.grantee);
END;

SELECT pyaccess._declare('pyaccess._trusted(oid)', 'provision_secret_reader,provision_secret_writer,provision_secret_rotator');
SELECT pyaccess._declare('pyaccess._service_role(oid)', 'provision_secret_reader,provision_secret_writer,provision_secret_rotator');
SELECT pyaccess._declare('pyaccess.escalation_paths()', 'provision_secret_reader,provision_secret_writer,provision_secret_rotator');

DO $$
DECLARE
    v_problems text;
BEGIN
    SELECT pg_catalog.string_agg(problem || ' -> fix: ' || fix, '; ') INTO v_problems FROM pyaccess.escalation_paths();
    IF v_problems IS NOT NULL THEN
        RAISE EXCEPTION 'pyaccess: refusing to install: another role could run code as the functions'' owner: %',
            v_problems
            USING HINT = 'apply the fixes named, then run pyaccess migrate again';
    END IF;
END
$$;

