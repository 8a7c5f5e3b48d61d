"""Every statement pyaccess sends, named in one place.

The logic lives in SQL (``sql/<release>/``); these are the calls. Keys and secrets are
bound as binary ``bytea`` parameters (:mod:`pyaccess.redacted`) on a server-side binding
cursor: they never appear in query text. Every name is schema-qualified, casts included:
a type looked up through the session's search_path could be an attacker's domain.
"""

from typing import Final, LiteralString

#: The release whose SQL this library needs; older databases raise MigrationRequiredError.
SQL_RELEASE: Final = "0.2.0"

GUARD: Final[LiteralString] = "SELECT pyaccess.guard('0.2.0')"
SEAL: Final[LiteralString] = "SELECT pyaccess.seal(%s::pg_catalog.uuid, %b::pg_catalog.bytea, %b::pg_catalog.bytea)"
OPEN: Final[LiteralString] = (
    "SELECT version, secret FROM pyaccess.open(%s::pg_catalog.uuid, %b::pg_catalog.bytea, %s::pg_catalog.int4)"
)
REFUSE_MISSING_GROUP: Final[LiteralString] = "SELECT pyaccess.refuse_missing_group(%s::pg_catalog.uuid)"
CENSUS: Final[LiteralString] = "SELECT key_id, version, state, secrets FROM pyaccess.census()"
REGISTER_KEY: Final[LiteralString] = "SELECT pyaccess.register_key(%b::pg_catalog.bytea)"
RETIRE_KEY: Final[LiteralString] = "SELECT pyaccess.retire_key(%b::pg_catalog.bytea)"
REWRAP_TODO: Final[LiteralString] = (
    "SELECT group_id, version, key_id"
    " FROM pyaccess.rewrap_todo(%b::pg_catalog.bytea, %s::pg_catalog.uuid, %s::pg_catalog.int4)"
)
REWRAP: Final[LiteralString] = (
    "SELECT group_id, old_key_id, old_version FROM pyaccess.rewrap("
    "%b::pg_catalog.uuid[], %b::pg_catalog.bytea[], %b::pg_catalog.bytea[], %b::pg_catalog.bytea)"
)
LOG_EXPOSURE: Final[LiteralString] = (
    "SELECT path, setting, safe_value, logs_values, can_pin, detail FROM pyaccess.log_exposure()"
)

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
DOCTOR_HAS_RELEASE: Final[LiteralString] = "SELECT pg_catalog.to_regprocedure('pyaccess.release()') IS NOT NULL"
DOCTOR_RELEASE: Final[LiteralString] = "SELECT pyaccess.release()"
DOCTOR_API_DRIFT: Final[LiteralString] = "SELECT signature, problem FROM pyaccess.api_drift()"
DOCTOR_ESCALATION: Final[LiteralString] = "SELECT problem, fix FROM pyaccess.escalation_paths()"
DOCTOR_CREATE_IN_SCHEMAS: Final[LiteralString] = (
    "SELECT n.nspname, CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::pg_catalog.regrole::pg_catalog.text END"
    " FROM pg_catalog.pg_namespace AS n, pg_catalog.aclexplode(n.nspacl) AS a"
    " WHERE a.privilege_type = 'CREATE' AND pyaccess._service_role(a.grantee)"
    " AND (n.nspname IN ('public', 'pyaccess')"
    "      OR n.oid = (SELECT e.extnamespace FROM pg_catalog.pg_extension AS e WHERE e.extname = 'pgcrypto'))"
    " ORDER BY 1, 2"
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
    " pg_catalog.pg_has_role('provision_secret_rotator', 'USAGE'),"
    " pg_catalog.has_column_privilege('public.ota_groups', 'provision_secret_ciphertext', 'SELECT')"
    " FROM pg_catalog.pg_roles AS r WHERE r.rolname = current_user"
)
