-- pyaccess 0.2.0, part 05: the key registry, and the table privileges the functions rely on.

-- =====================================================================
-- The key registry: which key ids may seal (active) and which may only open (retired)
-- =====================================================================

CREATE TABLE IF NOT EXISTS pyaccess.keys (
    key_id        bytea       PRIMARY KEY CHECK (pg_catalog.octet_length(key_id) = 8),
    state         text        NOT NULL CHECK (state IN ('active', 'retired')),
    registered_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    registered_by text        NOT NULL DEFAULT session_user,
    retired_at    timestamptz
);
ALTER TABLE pyaccess.keys OWNER TO provision_secret_owner;
COMMENT ON TABLE pyaccess.keys IS 'pyaccess key registry: key ids (never keys) and whether stores may use them';

-- Upgrading from 0.1.0: the key ids already in use stay usable.
INSERT INTO pyaccess.keys (key_id, state)
SELECT DISTINCT pg_catalog.substr(g.provision_secret_ciphertext, 2, 8), 'active'
  FROM public.ota_groups AS g
 WHERE g.provision_secret_ciphertext IS NOT NULL AND pg_catalog.octet_length(g.provision_secret_ciphertext) >= 9
ON CONFLICT (key_id) DO NOTHING;

-- =====================================================================
-- Table privileges: the owner reads and writes the one column; a reader may read it
-- (it is ciphertext); nobody else gets anything from pyaccess.
-- =====================================================================

DO $$
BEGIN
    IF (SELECT relowner FROM pg_catalog.pg_class WHERE oid = 'public.ota_groups'::regclass)
       <> 'provision_secret_owner'::regrole THEN
        GRANT SELECT (id, provision_secret_ciphertext), UPDATE (provision_secret_ciphertext)
           ON public.ota_groups TO provision_secret_owner;
    END IF;
END
$$;
GRANT SELECT (id, provision_secret_ciphertext) ON public.ota_groups TO provision_secret_reader;
GRANT USAGE ON SCHEMA pyaccess TO provision_secret_reader, provision_secret_writer, provision_secret_rotator;
GRANT SELECT ON pyaccess.api TO provision_secret_reader, provision_secret_writer, provision_secret_rotator;
COMMENT ON COLUMN public.ota_groups.provision_secret_ciphertext IS
    'pyaccess envelope: version (1 or 2) || key id || IV || AES-256-CBC ciphertext || HMAC-SHA256 tag; see sql/';
