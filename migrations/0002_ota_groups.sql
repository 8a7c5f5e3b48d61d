-- depends: 0001_pgcrypto
-- Creates ota_groups on an empty database. Production already has the table:
-- then nothing here touches it. The comment marks a table this migration
-- created, so that its rollback never drops a table it did not create.
DO $$
BEGIN
    IF pg_catalog.to_regclass('public.ota_groups') IS NULL THEN
        CREATE TABLE public.ota_groups (
            id         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
            name       text        NOT NULL UNIQUE,
            created_at timestamptz NOT NULL DEFAULT now()
        );
        COMMENT ON TABLE public.ota_groups IS 'OTA groups (device groups in IoTA); created by pyaccess';
    END IF;
END
$$;
