"""Installs the functions of release 0.1.0 (sql/0.1.0/provision_secret.sql, frozen).

The SQL file is the single source; this step puts it in the database with
@extschema@ replaced by the schema that holds pgcrypto (``public`` on a
laptop, often ``extensions`` on managed services).
"""

from pathlib import Path

from yoyo import step

__depends__ = {"0004_provision_secret_column"}

SQL_FILE = Path(__file__).resolve().parent.parent / "sql" / "0.1.0" / "provision_secret.sql"

# Dropped in this order on rollback: callers before the helpers they use.
FUNCTIONS = (
    "public.provision_secret_log_exposure()",
    "public.store_provision_secret(uuid, text, bytea)",
    "public.get_provision_secret(uuid, bytea[])",
    "public.get_provision_secret(uuid, bytea)",
    "public.provision_secret_key_census()",
    "public.provision_secret_key_id(bytea)",
    "public.rewrap_provision_secrets(bytea[], uuid, integer)",
    "public.provision_secret_session_guard()",
    "public._provision_secret_refuse(uuid, bytea, bytea[])",
    "public._provision_secret_check_keys(bytea[])",
    "public._provision_secret_plaintext(bytea, bytea)",
    "public._provision_secret_authentic(uuid, bytea, bytea)",
    "public._provision_secret_well_formed(bytea)",
    "public._provision_secret_tag(uuid, bytea, bytea)",
    "public._provision_secret_body(bytea, bytea, bytea, bytea)",
    "public._provision_secret_subkeys(bytea)",
    "public._provision_secret_key_id(bytea)",
)


def install(conn):
    cursor = conn.cursor()
    cursor.execute(
        "SELECT pg_catalog.quote_ident(n.nspname) FROM pg_catalog.pg_extension AS e"
        " JOIN pg_catalog.pg_namespace AS n ON n.oid = e.extnamespace"
        " WHERE e.extname = 'pgcrypto'"
    )
    (schema,) = cursor.fetchone()
    cursor.execute(SQL_FILE.read_text(encoding="utf-8").replace("@extschema@", schema))


def uninstall(conn):
    # Refuse here too, not only in 0004: yoyo rolls each step back in its own
    # transaction, and a service left without its functions is an outage.
    cursor = conn.cursor()
    # SHARE mode: no store can commit between the count and the DROPs.
    cursor.execute("SET LOCAL lock_timeout = '5s'")
    cursor.execute("LOCK TABLE public.ota_groups IN SHARE MODE")
    cursor.execute("SELECT pg_catalog.count(*) FROM public.ota_groups WHERE provision_secret_ciphertext IS NOT NULL")
    (stored,) = cursor.fetchone()
    if stored:
        raise RuntimeError(f"pyaccess: refusing to roll back: {stored} provision secret(s) are stored in ota_groups")
    for signature in FUNCTIONS:
        cursor.execute(f"DROP FUNCTION IF EXISTS {signature}")


steps = [step(install, uninstall)]
