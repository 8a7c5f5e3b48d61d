"""The key file as a real Vault agent renders it: OpenBao 2.7.2 server and agent, real PostgreSQL.

The server holds the ADR's secret (namespace ns_dev/ns_wcm_infra/ac_access_control,
KV v2 at kv-dev, ``key`` = a whole ``openssl enc -aes-256-cbc -k secret -P -md sha1``
output). Each test's agent renders it with the README's annotations, or with the
injector's default templates, re-rendering every second (tests/fix_vault.py).
"""

from __future__ import annotations

import functools
import json
import operator
import os
import re
import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

import pyaccess
from pyaccess.doctor import run_checks
from pyaccess.keyfile import load_key_ring
from pyaccess.rotation import register_key
from tests.fix_vault import (
    ANNOTATIONS,
    INJECTOR_JSON_TEMPLATE,
    INJECTOR_MAP_TEMPLATE,
    KV1_NAMESPACE,
    KV1_PATH,
    KV2_PATH,
    NAMESPACE,
    SECRET,
    Agent,
    Template,
    Vault,
    adr_key_output,
    documented_templates,
    file_mode,
    key_hexes,
    openssl_key_hex,
)

Conn = psycopg.Connection[tuple[object, ...]]
StartAgent = Callable[..., Agent]


# --------------------------------------------------------------------------- the README's annotations


def test_readme__annotations_are_complete_and_name_the_adr_layout() -> None:
    kv2 = ANNOTATIONS["vault-agent-annotations"]
    assert kv2["vault.hashicorp.com/namespace"] == NAMESPACE
    assert kv2[f"vault.hashicorp.com/agent-inject-secret-{SECRET}"] == KV2_PATH
    assert kv2[f"vault.hashicorp.com/agent-inject-perms-{SECRET}"] == "0400"
    assert kv2["vault.hashicorp.com/agent-inject"] == "true"
    assert re.fullmatch(r"\d+[sm]", kv2["vault.hashicorp.com/template-static-secret-render-interval"])
    # the file lands where pyaccess looks by default: /vault/secrets/<secret name>
    assert f"/vault/secrets/{SECRET}" == pyaccess.DEFAULT_KEY_FILE
    kv1 = ANNOTATIONS["vault-agent-annotations-kv1"]
    assert kv1[f"vault.hashicorp.com/agent-inject-secret-{SECRET}"] == KV1_PATH
    for name in ANNOTATIONS:
        (template,) = documented_templates(name)
        assert template.name == SECRET


# --------------------------------------------------------------------------- every rendering works


def _injector_default(template: str, path: str) -> list[Template]:
    # The injector sets no perms unless annotated: the agent's default mode.
    return [Template(SECRET, template % path, perms=None)]


# name -> (templates, namespace of the agent, KV v1?)
RENDERINGS: dict[str, tuple[list[Template], str, bool]] = {
    "documented-kv2": (documented_templates("vault-agent-annotations"), NAMESPACE, False),
    "documented-kv1": (documented_templates("vault-agent-annotations-kv1"), KV1_NAMESPACE, True),
    "injector-map-default-kv2": (_injector_default(INJECTOR_MAP_TEMPLATE, KV2_PATH), NAMESPACE, False),
    "injector-json-default-kv2": (_injector_default(INJECTOR_JSON_TEMPLATE, KV2_PATH), NAMESPACE, False),
    "injector-map-default-kv1": (_injector_default(INJECTOR_MAP_TEMPLATE, KV1_PATH), KV1_NAMESPACE, True),
    "injector-json-default-kv1": (_injector_default(INJECTOR_JSON_TEMPLATE, KV1_PATH), KV1_NAMESPACE, True),
}


@pytest.mark.parametrize(("templates", "namespace", "kv1"), RENDERINGS.values(), ids=RENDERINGS.keys())
def test_rendering__adr_key_then_a_second_key__store_and_get_work(  # noqa: PLR0917 - parameters and fixtures
    templates: list[Template], namespace: str, kv1: bool, vault: Vault, vault_agent: StartAgent, conn: Conn
) -> None:
    agent = vault_agent(templates, namespace=namespace)
    path = agent.file(SECRET)
    expected_mode = 0o400 if templates[0].perms == "0400" else 0o644
    assert file_mode(path) == expected_mode
    assert key_hexes(load_key_ring(path)) == [vault.adr_key]

    group = _new_group(conn)
    pyaccess.store_provision_secret(conn, group, "first secret", key_file=path)
    assert pyaccess.get_provision_secret(conn, group, key_file=path) == "first secret"

    # A second key, the ADR key kept for reading as Vault holds it: its whole openssl output.
    second = os.urandom(32).hex()
    vault.put({"key": second, "previous_keys": [vault.adr_output], "ttl": "1s"}, kv1=kv1)
    agent.wait_for(SECRET, lambda text: second in text, "the second key rendered")
    assert key_hexes(load_key_ring(path)) == [second, vault.adr_key]
    assert pyaccess.get_provision_secret(conn, group, key_file=path) == "first secret"
    _register_current_key(conn, path)
    pyaccess.store_provision_secret(conn, group, "second secret", key_file=path)
    assert pyaccess.get_provision_secret(conn, group, key_file=path) == "second secret"


def _register_current_key(conn: Conn, path: Path) -> None:
    """As the runbook does before a new key may seal (the first key registers itself by its first store)."""
    register_key(conn, key_file=path)
    conn.commit()


def _new_group(conn: Conn) -> uuid.UUID:
    row = conn.execute("INSERT INTO ota_groups (name) VALUES (%s) RETURNING id", (f"g-{uuid.uuid4()}",)).fetchone()
    conn.commit()
    assert row is not None
    return uuid.UUID(str(row[0]))


# --------------------------------------------------------------------------- the hazards of issue 14
#
# Each hazard is rendered by every template at once: the documented one, the injector's map and json
# defaults, and a template naming the fields, which renders null for a field that is absent.

EXPLICIT_FIELDS_TEMPLATE = (
    '{{ with secret "%s" }}{"key": {{ .Data.data.key | toJSON }}, '
    '"previous_keys": {{ .Data.data.previous_keys | toJSON }}}{{ end }}'
)
KV2_TEMPLATES = [
    Template("documented", documented_templates("vault-agent-annotations")[0].contents),
    Template("injector-map", INJECTOR_MAP_TEMPLATE % KV2_PATH),
    Template("injector-json", INJECTOR_JSON_TEMPLATE % KV2_PATH),
    Template("explicit-fields", EXPLICIT_FIELDS_TEMPLATE % KV2_PATH),
]


def _render_all(vault: Vault, vault_agent: StartAgent, write: Callable[[], None]) -> Agent:
    """Start an agent on every KV v2 template, apply ``write`` in Vault, wait for every file to change."""
    agent = vault_agent(KV2_TEMPLATES)
    _rewrite(agent, write)
    return agent


def _rewrite(agent: Agent, write: Callable[[], object]) -> None:
    before = {t.name: agent.file(t.name).read_text() for t in KV2_TEMPLATES}
    write()
    for t in KV2_TEMPLATES:
        agent.wait_for(t.name, functools.partial(operator.ne, before[t.name]), "re-rendered after the write")


def test_hazard__previous_keys_stored_as_a_string_holding_a_json_list__understood(
    vault: Vault, vault_agent: StartAgent
) -> None:
    # 0.1.0's runbook: vault kv patch ... previous_keys='["<old key>"]' stores that text as a string
    # (here through stdin, which stores the same value), and <old key> was the ADR's whole openssl output.
    old = os.urandom(32).hex()
    agent = _render_all(vault, vault_agent, lambda: vault.patch({"previous_keys": f'["{old}", "{vault.adr_output}"]'}))
    for t in KV2_TEMPLATES:
        assert '"[' in agent.file(t.name).read_text() or "previous_keys:[" in agent.file(t.name).read_text()
        assert key_hexes(load_key_ring(agent.file(t.name))) == [vault.adr_key, old], t.name


def test_hazard__previous_keys_stored_as_a_string_of_one_key__understood(vault: Vault, vault_agent: StartAgent) -> None:
    old = os.urandom(32).hex()
    agent = _render_all(vault, vault_agent, lambda: vault.patch({"previous_keys": old}))
    for t in KV2_TEMPLATES:
        assert key_hexes(load_key_ring(agent.file(t.name))) == [vault.adr_key, old], t.name


def test_hazard__previous_keys_stored_as_an_unclear_string__refused_with_the_fix(
    vault: Vault, vault_agent: StartAgent
) -> None:
    old1, old2 = os.urandom(32).hex(), os.urandom(32).hex()
    agent = _render_all(vault, vault_agent, lambda: vault.patch({"previous_keys": f"{old1}, {old2}"}))
    for t in KV2_TEMPLATES:
        with pytest.raises(pyaccess.KeyFileError) as info:
            load_key_ring(agent.file(t.name))
        message = str(info.value)
        assert "bao kv patch" in message
        assert "JSON list" in message
        for key in (old1, old2, vault.adr_key):
            assert key not in message.lower()


def test_hazard__previous_keys_null__read_as_none(vault: Vault, vault_agent: StartAgent) -> None:
    old = os.urandom(32).hex()
    agent = _render_all(vault, vault_agent, lambda: vault.patch({"previous_keys": [old]}))
    _rewrite(agent, lambda: vault.put({"key": vault.adr_output, "previous_keys": None}))
    assert '"previous_keys":null' in agent.file("documented").read_text()
    assert "previous_keys:<nil>" in agent.file("injector-map").read_text()
    for t in KV2_TEMPLATES:
        assert key_hexes(load_key_ring(agent.file(t.name))) == [vault.adr_key], t.name

    # -remove-data: the field is gone, and a template that names it renders null.
    _rewrite(agent, lambda: vault.patch({"previous_keys": [old]}))
    _rewrite(agent, lambda: vault.server.bao("kv", "patch", "-mount=kv-dev", "-remove-data=previous_keys", SECRET))
    assert '"previous_keys": null' in agent.file("explicit-fields").read_text()
    for t in KV2_TEMPLATES:
        assert key_hexes(load_key_ring(agent.file(t.name))) == [vault.adr_key], t.name


def test_hazard__previous_keys_empty__read_as_none(vault: Vault, vault_agent: StartAgent) -> None:
    agent = _render_all(vault, vault_agent, lambda: vault.patch({"previous_keys": []}))
    assert "previous_keys:[]" in agent.file("injector-map").read_text()
    for t in KV2_TEMPLATES:
        assert key_hexes(load_key_ring(agent.file(t.name))) == [vault.adr_key], t.name


def test_hazard__injector_json_default__kv2_data_wrapped_with_metadata(vault: Vault, vault_agent: StartAgent) -> None:
    agent = _render_all(vault, vault_agent, lambda: vault.patch({"previous_keys": [vault.adr_output]}))
    rendered = json.loads(agent.file("injector-json").read_text())
    assert set(rendered) == {"data", "metadata"}
    assert rendered["metadata"]["version"] == vault.version()
    assert key_hexes(load_key_ring(agent.file("injector-json"))) == [vault.adr_key]  # the same key twice: once


def test_hazard__kv1_map_with_previous_keys__every_key_read(vault: Vault, vault_agent: StartAgent) -> None:
    agent = vault_agent([Template("map", INJECTOR_MAP_TEMPLATE % KV1_PATH)], namespace=KV1_NAMESPACE)
    new, old = os.urandom(32).hex(), os.urandom(32).hex()
    older = adr_key_output()  # an ADR key among the previous ones: an openssl output, newlines and all
    vault.put({"key": new, "previous_keys": [vault.adr_output, old, older], "ttl": "1s"}, kv1=True)
    agent.wait_for("map", lambda text: new in text, "re-rendered")
    rendered = agent.file("map").read_text()
    assert re.search(r"^previous_keys: \[salt=", rendered, re.M)  # Go's fmt: no quotes, raw newlines
    assert key_hexes(load_key_ring(agent.file("map"))) == [new, vault.adr_key, old, openssl_key_hex(older)]


# --------------------------------------------------------------------------- hot reload and file modes


def test_running_client__picks_up_each_re_rendered_file__without_restart(
    vault: Vault, vault_agent: StartAgent, conn: Conn
) -> None:
    agent = vault_agent(documented_templates("vault-agent-annotations"))
    path = agent.file(SECRET)
    client = pyaccess.ProvisionSecrets(key_file=path)
    group = _new_group(conn)
    client.store(group, "kept", conn=conn)
    conn.commit()
    pickups: list[float] = []
    previous = [vault.adr_output]
    for round_ in range(3):
        new = os.urandom(32).hex()
        written = time.monotonic()
        vault.patch({"key": new, "previous_keys": previous})
        while load_key_ring(path).current.material.hex() != new:  # what the client's next call sees
            assert client.get(group, conn=conn) == ("kept" if round_ == 0 else f"round {round_ - 1}")
            assert time.monotonic() - written < 15, "the agent did not re-render within 15 s"
            time.sleep(0.02)
        pickups.append(time.monotonic() - written)
        _register_current_key(conn, path)
        client.store(group, f"round {round_}", conn=conn)
        conn.commit()
        assert client.get(group, conn=conn) == f"round {round_}"
        previous = [new, *previous]
    print(f"\npatch-to-pickup at a 1 s render interval: {', '.join(f'{p:.2f}' for p in pickups)} s")
    assert statistics.median(pickups) < 5


def _key_file_check(db: str, path: Path) -> tuple[str, str]:
    check = next(c for c in run_checks(db, key_file=path) if c.name == "key file")
    return check.status, check.detail


def test_agent_default_mode_0644__doctor_warns__perms_0400__ok(vault: Vault, vault_agent: StartAgent, db: str) -> None:
    agent = vault_agent(
        [
            Template("default-mode", INJECTOR_MAP_TEMPLATE % KV2_PATH, perms=None),
            *documented_templates("vault-agent-annotations"),
        ]
    )
    assert file_mode(agent.file("default-mode")) == 0o644
    status, detail = _key_file_check(db, agent.file("default-mode"))
    assert status == "warning"
    assert "world-readable" in detail
    assert file_mode(agent.file(SECRET)) == 0o400
    status, detail = _key_file_check(db, agent.file(SECRET))
    assert status == "ok", detail
    # Re-rendering keeps the mode.
    vault.patch({"previous_keys": []})
    agent.wait_for(SECRET, lambda text: "previous_keys" in text, "re-rendered")
    assert file_mode(agent.file(SECRET)) == 0o400
