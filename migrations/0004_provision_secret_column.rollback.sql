-- Refuses while any secret is stored: dropping the column would destroy them.
-- The table is locked before counting, so that no store can commit between
-- the count and the DROP.
SET LOCAL lock_timeout = '5s';
LOCK TABLE public.ota_groups IN ACCESS EXCLUSIVE MODE;
DO $$
DECLARE
    v_stored bigint;
BEGIN
    SELECT pg_catalog.count(*) INTO v_stored
      FROM public.ota_groups WHERE provision_secret_ciphertext IS NOT NULL;
    IF v_stored > 0 THEN
        RAISE EXCEPTION 'pyaccess: refusing to roll back: % provision secret(s) are stored in ota_groups', v_stored
            USING HINT = 'set provision_secret_ciphertext to NULL yourself if you really mean to destroy them';
    END IF;
END
$$;
ALTER TABLE public.ota_groups DROP COLUMN IF EXISTS provision_secret_ciphertext;
