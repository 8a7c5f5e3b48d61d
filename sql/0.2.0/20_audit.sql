-- pyaccess 0.2.0, part 20: an audit record of every access, in the server log.
--
-- The server log works on a hot standby (where most reads happen) and costs no WAL. Each
-- record is one line, a fixed prefix and a JSON object, so a log pipeline can keep exactly
-- these lines:
--
--   pyaccess-audit {"event":"read","outcome":"ok","group_id":"...","key_id":"...","role":"...",
--                   "application_name":"...","client_addr":"...","pid":123,"at":"..."}
--
-- Never a key, never a secret. Writes, refusals, registry changes and rotation batches are
-- always recorded: they are rare and precious. Successful reads may be many; they are
-- recorded where pyaccess.audit_reads = on (ALTER ROLE ... SET / ALTER DATABASE ... SET).

-- One audit record: the line written to the server log. VOLATILE as clock_timestamp() is:
-- declared STABLE, PostgreSQL would not inline it, and would plan its body anew in every
-- transaction (measured: a read with its audit record cost twice a read without).
CREATE OR REPLACE FUNCTION pyaccess._audit_line(p_event text, p_outcome text, p_group_id uuid, p_key_id bytea,
                                                p_detail text DEFAULT NULL)
RETURNS text
LANGUAGE sql VOLATILE
RETURN 'pyaccess-audit ' || pg_catalog.json_build_object(
           'event', p_event,
           'outcome', p_outcome,
           'group_id', p_group_id,
           'key_id', pg_catalog.encode(p_key_id, 'hex'),
           'detail', p_detail,
           'role', session_user,
           'application_name', pg_catalog.current_setting('application_name'),
           'client_addr', pg_catalog.inet_client_addr(),
           'pid', pg_catalog.pg_backend_pid(),
           'at', pg_catalog.clock_timestamp())::text;
SELECT pyaccess._declare('pyaccess._audit_line(text,text,uuid,bytea,text)', 'provision_secret_reader');

-- Writes one audit record to the server log (RAISE LOG: not sent to the client). The hot
-- paths (a store, an audited read) raise pyaccess._audit_line themselves: a call less.
CREATE OR REPLACE FUNCTION pyaccess._audit(p_event text, p_outcome text, p_group_id uuid, p_key_id bytea,
                                           p_detail text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE LOG USING MESSAGE = pyaccess._audit_line(p_event, p_outcome, p_group_id, p_key_id, p_detail);
END
$$;
SELECT pyaccess._declare('pyaccess._audit(text,text,uuid,bytea,text)', 'provision_secret_reader');

-- Records a successful read; returns true (a condition that never fails).
CREATE OR REPLACE FUNCTION pyaccess._audited_read(p_group_id uuid, p_key_id bytea)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE LOG USING MESSAGE = pyaccess._audit_line('read', 'ok', p_group_id, p_key_id);
    RETURN true;
END
$$;
SELECT pyaccess._declare('pyaccess._audited_read(uuid,bytea)', 'provision_secret_reader');

-- True, after recording a successful read where pyaccess.audit_reads = on. Inlined: each
-- parameter appears once, and the plpgsql branch runs only where reads are audited.
CREATE OR REPLACE FUNCTION pyaccess._read_recorded(p_group_id uuid, p_key_id bytea)
RETURNS boolean
LANGUAGE sql STABLE
RETURN pg_catalog.current_setting('pyaccess.audit_reads', true) IS DISTINCT FROM 'on'
       OR pyaccess._audited_read(p_group_id, p_key_id);
SELECT pyaccess._declare('pyaccess._read_recorded(uuid,bytea)', 'provision_secret_reader');
