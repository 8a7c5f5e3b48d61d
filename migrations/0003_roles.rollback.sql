-- The roles are kept: they are cluster-wide, other databases may use them,
-- and dropping them would silently revoke the DBA's memberships.
DO $$ BEGIN RAISE NOTICE 'pyaccess: roles provision_secret_writer and provision_secret_reader are kept (cluster-wide)'; END $$;
