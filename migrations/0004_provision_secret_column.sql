-- depends: 0003_roles
-- A nullable column with no default: a catalog-only change that never
-- rewrites the table. ALTER TABLE takes ACCESS EXCLUSIVE for an instant;
-- lock_timeout makes it fail fast instead of queueing behind a long
-- transaction (and blocking every reader queued behind it). Retry then.
SET LOCAL lock_timeout = '5s';
ALTER TABLE public.ota_groups ADD COLUMN IF NOT EXISTS provision_secret_ciphertext bytea;
COMMENT ON COLUMN public.ota_groups.provision_secret_ciphertext IS
    'pyaccess envelope v1: version || key id || IV || AES-256-CBC ciphertext || HMAC-SHA256 tag; see sql/provision_secret.sql';
