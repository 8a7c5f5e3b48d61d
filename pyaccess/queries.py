"""Every statement pyaccess sends, named in one place.

The logic lives in SQL (``sql/provision_secret.sql``); these are the calls.
Keys are bound as binary ``bytea`` parameters (``%b``) on a server-side
binding cursor: they never appear in query text. Every name is
schema-qualified, casts included: a type looked up through the session's
search_path could be an attacker's domain whose CHECK sees the key.
"""

from typing import Final, LiteralString

STORE: Final[LiteralString] = (
    "SELECT public.store_provision_secret(%s::pg_catalog.uuid, %s::pg_catalog.text, %b::pg_catalog.bytea)"
)
GET: Final[LiteralString] = "SELECT public.get_provision_secret(%s::pg_catalog.uuid, %b::pg_catalog.bytea[])"
SESSION_GUARD: Final[LiteralString] = "SELECT public.provision_secret_session_guard()"
KEY_CENSUS: Final[LiteralString] = "SELECT key_id, secrets FROM public.provision_secret_key_census()"
KEY_IDS: Final[LiteralString] = (
    "SELECT public.provision_secret_key_id(k)"
    " FROM pg_catalog.unnest(%b::pg_catalog.bytea[]) WITH ORDINALITY AS r(k, n) ORDER BY n"
)
REWRAP: Final[LiteralString] = (
    "SELECT group_id, old_key_id"
    " FROM public.rewrap_provision_secrets(%b::pg_catalog.bytea[], %s::pg_catalog.uuid, %s::pg_catalog.int4)"
)
LOG_EXPOSURE: Final[LiteralString] = "SELECT public.provision_secret_log_exposure()"

# Used by `pyaccess demo` only: an OTA group is the management API's to create.
DEMO_CREATE_GROUP: Final[LiteralString] = "INSERT INTO public.ota_groups (name) VALUES (%s) RETURNING id"
DEMO_AT_REST: Final[LiteralString] = (
    "SELECT pg_catalog.encode(provision_secret_ciphertext, 'hex'),"
    " pg_catalog.encode(pg_catalog.substr(provision_secret_ciphertext, 2, 8), 'hex')"
    " FROM public.ota_groups WHERE id = %s::pg_catalog.uuid"
)
DEMO_DELETE_GROUP: Final[LiteralString] = "DELETE FROM public.ota_groups WHERE id = %s::pg_catalog.uuid"

# `pyaccess doctor`: read-only checks, run as the service's own role.
DOCTOR_PGCRYPTO: Final[LiteralString] = (
    "SELECT e.extversion, n.nspname FROM pg_catalog.pg_extension AS e"
    " JOIN pg_catalog.pg_namespace AS n ON n.oid = e.extnamespace WHERE e.extname = 'pgcrypto'"
)
DOCTOR_FUNCTIONS: Final[LiteralString] = (
    "SELECT f, pg_catalog.to_regprocedure(f) IS NOT NULL FROM pg_catalog.unnest(ARRAY["
    "'public.store_provision_secret(uuid,text,bytea)', 'public.get_provision_secret(uuid,bytea)',"
    " 'public.get_provision_secret(uuid,bytea[])', 'public.provision_secret_session_guard()',"
    " 'public.provision_secret_key_census()', 'public.rewrap_provision_secrets(bytea[],uuid,integer)']) AS f"
)
DOCTOR_CAN_READ_MIGRATIONS: Final[LiteralString] = (
    "SELECT CASE WHEN pg_catalog.to_regclass('public._yoyo_migration') IS NULL THEN 'absent'"
    " WHEN pg_catalog.has_table_privilege('public._yoyo_migration', 'SELECT') THEN 'readable'"
    " ELSE 'denied' END"
)
DOCTOR_APPLIED: Final[LiteralString] = "SELECT migration_id FROM public._yoyo_migration"
DOCTOR_ROLE: Final[LiteralString] = (
    "SELECT current_user, r.rolsuper,"
    " pg_catalog.pg_has_role('provision_secret_reader', 'USAGE'),"
    " pg_catalog.pg_has_role('provision_secret_writer', 'USAGE'),"
    " pg_catalog.has_column_privilege('public.ota_groups', 'provision_secret_ciphertext', 'SELECT')"
    " FROM pg_catalog.pg_roles AS r WHERE r.rolname = current_user"
)
