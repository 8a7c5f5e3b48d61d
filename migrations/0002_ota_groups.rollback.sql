-- Drops ota_groups only if this migration created it and it holds no rows.
DO $$
BEGIN
    IF pg_catalog.to_regclass('public.ota_groups') IS NULL THEN
        RETURN;
    END IF;
    IF pg_catalog.obj_description('public.ota_groups'::regclass, 'pg_class')
           IS DISTINCT FROM 'OTA groups (device groups in IoTA); created by pyaccess' THEN
        RAISE NOTICE 'pyaccess: ota_groups was not created by pyaccess; it is kept';
    ELSIF EXISTS (SELECT FROM public.ota_groups) THEN
        RAISE NOTICE 'pyaccess: ota_groups holds rows; it is kept';
    ELSE
        DROP TABLE public.ota_groups;
    END IF;
END
$$;
