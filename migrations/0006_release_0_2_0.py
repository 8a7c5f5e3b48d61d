"""Release 0.2.0: installs sql/0.2.0/ over the SQL of 0.1.0.

How pyaccess reaches databases that an earlier release migrated (README, "Upgrading pyaccess"):
each release adds one folder ``sql/X.Y.Z/`` and one migration that installs it. A released
folder and its migration never change again; yoyo applies each migration once, so every
release's SQL reaches every database, through ``pyaccess migrate`` and plain ``yoyo apply``
alike. A release's folder asserts ownership, SECURITY DEFINER, search_path and grants anew
(90_privileges.sql) and removes what the release drops by name (01_remove_0.1.0.sql).

Rolling back restores 0.1.0's functions while 0.1.0 can still read every stored secret (no
envelope v2 yet); otherwise it refuses and says why.
"""

from pathlib import Path

from yoyo import step

__depends__ = {"0005_provision_secret_functions"}

SQL = Path(__file__).resolve().parent.parent / "sql"
RELEASE = SQL / "0.2.0"
PREVIOUS = SQL / "0.1.0" / "provision_secret.sql"
PREVIOUS_COLUMN_COMMENT = (
    "pyaccess envelope v1: version || key id || IV || AES-256-CBC ciphertext || HMAC-SHA256 tag;"
    " see sql/provision_secret.sql"
)


def _execute_sql_file(cursor, path):
    """Runs a SQL file with @extschema@ replaced by the schema that holds pgcrypto."""
    cursor.execute(
        "SELECT pg_catalog.quote_ident(n.nspname) FROM pg_catalog.pg_extension AS e"
        " JOIN pg_catalog.pg_namespace AS n ON n.oid = e.extnamespace WHERE e.extname = 'pgcrypto'"
    )
    (schema,) = cursor.fetchone()
    cursor.execute(path.read_text(encoding="utf-8").replace("@extschema@", schema))


def preflight(conn):
    """Raises, changing nothing, where install would refuse: ``pyaccess migrate`` calls it before
    applying any migration, so an unsafe database is not left half-migrated at 0.1.0's SQL."""
    cursor = conn.cursor()
    cursor.execute("SELECT pg_catalog.to_regclass('public.ota_groups') IS NOT NULL")
    (table_exists,) = cursor.fetchone()
    if table_exists:  # else pyaccess creates the table itself, owned by the migrating role
        # 00_schema.sql calls nothing of pgcrypto's; the caller rolls it back.
        cursor.execute((RELEASE / "00_schema.sql").read_text(encoding="utf-8"))


def install(conn):
    cursor = conn.cursor()
    cursor.execute("SET LOCAL lock_timeout = '5s'")
    for path in sorted(RELEASE.glob("*.sql")):
        _execute_sql_file(cursor, path)


def uninstall(conn):
    cursor = conn.cursor()
    # SHARE mode: no store can seal a v2 envelope between the count and the DROPs.
    cursor.execute("SET LOCAL lock_timeout = '5s'")
    cursor.execute("LOCK TABLE public.ota_groups IN SHARE MODE")
    cursor.execute(
        "SELECT pg_catalog.count(*) FROM public.ota_groups"
        " WHERE pg_catalog.get_byte(provision_secret_ciphertext, 0) <> 1"
    )
    (unreadable,) = cursor.fetchone()
    if unreadable:
        raise RuntimeError(
            f"pyaccess: refusing to roll back 0.2.0: {unreadable} provision secret(s) are sealed as envelope v2,"
            " which 0.1.0 cannot read; keep 0.2.0 (its library reads v1 and v2), or restore a backup taken before"
        )
    cursor.execute("SELECT pg_catalog.string_agg(signature, ', ') FROM pyaccess.api")
    (functions,) = cursor.fetchone()
    cursor.execute(f"DROP FUNCTION {functions}")
    cursor.execute("DROP SCHEMA pyaccess CASCADE")
    cursor.execute(
        "REVOKE SELECT (id, provision_secret_ciphertext), UPDATE (provision_secret_ciphertext)"
        " ON public.ota_groups FROM provision_secret_owner, provision_secret_reader"
    )
    cursor.execute("SELECT pg_catalog.quote_literal(%s::text)", (PREVIOUS_COLUMN_COMMENT,))
    (comment,) = cursor.fetchone()
    cursor.execute(f"COMMENT ON COLUMN public.ota_groups.provision_secret_ciphertext IS {comment}")
    _execute_sql_file(cursor, PREVIOUS)


steps = [step(install, uninstall)]
