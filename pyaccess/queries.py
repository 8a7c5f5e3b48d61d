"""Every statement pyaccess sends, named in one place.

The logic lives in SQL (``sql/provision_secret.sql``); these are the calls.
Keys are bound as binary ``bytea`` parameters (``%b``) on a server-side
binding cursor: they never appear in query text.
"""

from typing import Final, LiteralString

STORE: Final[LiteralString] = "SELECT public.store_provision_secret(%s::uuid, %s::text, %b::bytea)"
GET: Final[LiteralString] = "SELECT public.get_provision_secret(%s::uuid, %b::bytea[])"
SESSION_GUARD: Final[LiteralString] = "SELECT public.provision_secret_session_guard()"
KEY_CENSUS: Final[LiteralString] = "SELECT key_id, secrets FROM public.provision_secret_key_census()"
KEY_IDS: Final[LiteralString] = (
    "SELECT public.provision_secret_key_id(k) FROM pg_catalog.unnest(%b::bytea[]) WITH ORDINALITY AS r(k, n) ORDER BY n"
)
REWRAP: Final[LiteralString] = (
    "SELECT group_id, old_key_id FROM public.rewrap_provision_secrets(%b::bytea[], %s::uuid, %s::integer)"
)
LOG_EXPOSURE: Final[LiteralString] = "SELECT public.provision_secret_log_exposure()"

# Used by `pyaccess demo` only: an OTA group is the management API's to create.
DEMO_CREATE_GROUP: Final[LiteralString] = "INSERT INTO public.ota_groups (name) VALUES (%s) RETURNING id"
DEMO_AT_REST: Final[LiteralString] = (
    "SELECT pg_catalog.encode(provision_secret_ciphertext, 'hex'),"
    " pg_catalog.encode(pg_catalog.substr(provision_secret_ciphertext, 2, 8), 'hex')"
    " FROM public.ota_groups WHERE id = %s::uuid"
)
DEMO_DELETE_GROUP: Final[LiteralString] = "DELETE FROM public.ota_groups WHERE id = %s::uuid"
