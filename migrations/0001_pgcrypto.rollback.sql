-- pgcrypto is kept: other objects in this database may use it.
DO $$ BEGIN RAISE NOTICE 'pyaccess: pgcrypto is kept (other objects may use it)'; END $$;
