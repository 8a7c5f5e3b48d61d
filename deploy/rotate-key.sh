#!/usr/bin/env bash
# Rotate the provision-secret master key: the README's runbook ("Rotating a key"), one step per call.
# tests/test_vault_agent.py runs exactly these steps against a real OpenBao server and agent.
#
#   deploy/rotate-key.sh 1          new key: generate it, register its id in the database
#   deploy/rotate-key.sh 2          Vault: the new key becomes `key`, the old ones `previous_keys`
#                                   ... wait until every pod's key file holds the new key id (README)
#   deploy/rotate-key.sh 3          re-encrypt every secret under the new key
#   deploy/rotate-key.sh 4          census: only the new key id may remain in use
#   deploy/rotate-key.sh 5          Vault: drop `previous_keys`
#                                   ... wait until every pod's key file holds the new key only
#   deploy/rotate-key.sh 6 KEY_ID…  retire the old key ids in the database
#
# Environment:
#   VAULT_ADDR, VAULT_TOKEN (or a prior `vault login`)
#   VAULT_NAMESPACE     the ADR's namespace, ns_dev/ns_wcm_infra/ac_access_control (else Vault answers 403)
#   VAULT_CLI           vault (default) or bao: same commands
#   KV_MOUNT, KV_SECRET default kv-dev and provisioning_secret_enc_key (a KV v2 mount)
#   PYACCESS_DSN        steps 1, 3, 4, 6: a role that is a member of provision_secret_rotator
#   PYACCESS_KEY_FILE   steps 3, 4: a key file the agent rendered after step 2 (run them in a pod, or a Job
#                       with the service's annotations)
#   ROTATION_DIR        where the new key waits between steps 1 and 2 (default ./pyaccess-rotation, mode 0700)
#
# Keys never appear on a command line or in a shell variable: they go from file to pipe to `kv patch -`.
set -euo pipefail

VAULT_CLI=${VAULT_CLI:-vault}
KV_MOUNT=${KV_MOUNT:-kv-dev}
KV_SECRET=${KV_SECRET:-provisioning_secret_enc_key}
ROTATION_DIR=${ROTATION_DIR:-./pyaccess-rotation}
NEW_KEY="$ROTATION_DIR/new-key.json"
CURRENT="$ROTATION_DIR/vault-secret.json"

die() { echo "rotate-key: $*" >&2; exit 1; }

need_namespace() {
    [ -n "${VAULT_NAMESPACE:-}" ] || die "set VAULT_NAMESPACE (the ADR's: ns_dev/ns_wcm_infra/ac_access_control)"
}

# The secret as Vault holds it now, into a private file; prints its KV v2 version (for check-and-set).
read_secret() {
    "$VAULT_CLI" kv get -format=json -mount="$KV_MOUNT" "$KV_SECRET" >"$CURRENT"
    python3 -c 'import json, sys; print(json.load(sys.stdin)["data"]["metadata"]["version"])' <"$CURRENT"
}

step_1() {
    umask 077
    mkdir -p "$ROTATION_DIR"
    chmod 700 "$ROTATION_DIR"
    pyaccess keygen --output "$NEW_KEY"
    # Registered before any pod can write with it: the database refuses writes under unknown key ids.
    pyaccess key register --key-file "$NEW_KEY"
}

step_2() {
    need_namespace
    [ -f "$NEW_KEY" ] || die "$NEW_KEY is missing: run step 1 first"
    local version
    version=$(read_secret)
    # The new key becomes `key`; the old `key` and every old `previous_keys` stay readable. The old
    # values are copied as Vault holds them (an ADR key stays its whole openssl output), and a
    # previous_keys that a 0.1.0 runbook stored as a string is turned back into a list.
    python3 - "$NEW_KEY" "$CURRENT" <<'PY' | "$VAULT_CLI" kv patch -mount="$KV_MOUNT" -cas="$version" "$KV_SECRET" -
import json
import sys

with open(sys.argv[1]) as new_file, open(sys.argv[2]) as current_file:
    new_key = json.load(new_file)["key"]
    data = json.load(current_file)["data"]["data"]
previous = data.get("previous_keys") or []
if isinstance(previous, str):
    text = previous.strip()
    previous = json.loads(text, strict=False) if text.startswith("[") else [text]
ring = [data["key"], *previous]
json.dump({"key": new_key, "previous_keys": [k for i, k in enumerate(ring) if k not in ring[:i]]}, sys.stdout)
PY
    # -cas: if anyone changed the secret since read_secret, Vault refuses and nothing is lost.
    rm -f "$NEW_KEY" "$CURRENT"
}

step_3() {
    pyaccess rotate
}

step_4() {
    pyaccess census
}

step_5() {
    need_namespace
    local version
    version=$(read_secret)
    rm -f "$CURRENT"
    echo '{"previous_keys": []}' | "$VAULT_CLI" kv patch -mount="$KV_MOUNT" -cas="$version" "$KV_SECRET" -
}

step_6() {
    [ "$#" -gt 0 ] || die "give the old key ids to retire (pyaccess census lists them)"
    local key_id
    for key_id in "$@"; do
        pyaccess key retire "$key_id"
    done
}

[ "$#" -ge 1 ] || die "usage: $0 STEP [KEY_ID...]   (steps 1 to 6; see the README, Rotating a key)"
step=$1
shift
case "$step" in
    1 | 2 | 3 | 4 | 5 | 6) "step_$step" "$@" ;;
    *) die "unknown step $step: steps are 1 to 6" ;;
esac
