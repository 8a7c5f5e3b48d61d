"""The `pyaccess` command line. It only calls the Python API.

Errors are one line on stderr and exit status 1; usage errors exit 2.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click
import psycopg
from psycopg.conninfo import conninfo_to_dict

import pyaccess
from pyaccess.errors import InvalidSecretError, PyAccessError, from_psycopg
from pyaccess.keyfile import utf8_or_none, write_new_key_file
from pyaccess.migrate import apply_migrations
from pyaccess.provision import store_with_ring
from pyaccess.redacted import Plaintext

F = TypeVar("F", bound=Callable[..., Any])


class _Group(click.Group):
    """Turns every failure into one line on stderr: never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            if "unexpected extra argument" in exc.message:
                # click would quote them: a secret typed into argv by mistake.
                message = "unexpected extra argument(s), not shown; secrets are read from standard input only"
                raise click.UsageError(message, exc.ctx) from None
            raise
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except PyAccessError as exc:
            _fail(str(exc))
        except psycopg.Error as exc:
            _fail(str(from_psycopg(exc)))
        except KeyboardInterrupt:
            _fail("interrupted", status=130)
        except Exception as exc:  # noqa: BLE001 - the one place that ends the program
            _fail(f"{type(exc).__name__}: {exc}")


def _fail(message: str, status: int = 1) -> None:
    click.echo(f"pyaccess: error: {message}", err=True)
    sys.exit(status)


def _connect(dsn: str) -> psycopg.Connection[Any]:
    return psycopg.connect(dsn)


def _warn_if_password(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """A password in --dsn shows in the process list (/proc/<pid>/cmdline) to every local user."""
    source = ctx.get_parameter_source(param.name or "dsn")
    if value and source is click.core.ParameterSource.COMMANDLINE and conninfo_to_dict(value).get("password"):
        click.echo(
            "pyaccess: warning: --dsn holds a password, which other local users can read in the process list;"
            " use PGPASSFILE (~/.pgpass) or PGPASSWORD instead",
            err=True,
        )
    return value


def dsn_option(func: F) -> F:
    return click.option(
        "--dsn",
        envvar="PYACCESS_DSN",
        default="",
        show_envvar=True,
        callback=_warn_if_password,
        help="libpq connection string or URI (no password: use PGPASSFILE); else the PG* variables.",
    )(func)


def key_file_option(func: F) -> F:
    return click.option(
        "--key-file",
        envvar="PYACCESS_KEY_FILE",
        type=click.Path(dir_okay=False),
        default=None,
        show_envvar=True,
        help=f"Key file rendered by the Vault agent [default: {pyaccess.DEFAULT_KEY_FILE}].",
    )(func)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(pyaccess.__version__, prog_name="pyaccess")
def main() -> None:
    """Provision secrets encrypted at rest in PostgreSQL."""


@main.command()
@dsn_option
def migrate(dsn: str) -> None:
    """Apply pending migrations (yoyo, under its lock); a no-op when current."""
    applied = apply_migrations(dsn)
    if applied:
        click.echo(f"applied {len(applied)} migration(s): {', '.join(applied)}")
    else:
        click.echo("database is current: nothing to apply")


@main.command()
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="File to create (mode 0600).")
def keygen(output: str) -> None:
    """Write a new random 256-bit key file; never overwrites, never prints the key."""
    path = write_new_key_file(output)
    click.echo(f"wrote a new 256-bit key to {path} (mode 0600)")


def _read_secret() -> str:
    if sys.stdin is not None and sys.stdin.isatty():
        return str(click.prompt("Provision secret", hide_input=True, err=True))
    raw = sys.stdin.buffer.read(64 * 1024) if sys.stdin is not None else b""
    text = utf8_or_none(raw)
    del raw  # not UTF-8: the error below must not find the bytes in this frame
    if text is None:
        raise InvalidSecretError("standard input is not UTF-8 text")
    if text.endswith("\r\n"):
        return text[:-2]
    return text.removesuffix("\n")


@main.command()
@click.argument("group_id")
@dsn_option
@key_file_option
def store(group_id: str, dsn: str, key_file: str | None) -> None:
    """Store the secret read from standard input (one trailing newline dropped) for GROUP_ID."""
    # Wrapped at once: no frame of this command holds the secret when a later step fails.
    plaintext = Plaintext.wrap(_read_secret())
    with _connect(dsn) as conn:
        store_with_ring(conn, group_id, plaintext, pyaccess.load_key_ring(key_file))
    click.echo(f"stored the provision secret of OTA group {group_id}", err=True)


@main.command()
@click.argument("group_id")
@dsn_option
@key_file_option
def get(group_id: str, dsn: str, key_file: str | None) -> None:
    """Print the provision secret of GROUP_ID and a newline."""
    with _connect(dsn) as conn:
        secret = pyaccess.get_provision_secret(conn, group_id, key_file=key_file)
    click.echo(secret)


@main.command()
@dsn_option
@key_file_option
def census(dsn: str, key_file: str | None) -> None:
    """List the key ids registered or in use: version, state, secrets, and whether the key file holds them."""
    from pyaccess.rotation import key_census  # noqa: PLC0415

    with _connect(dsn) as conn:
        entries = key_census(conn, key_file=key_file)
    if not entries:
        click.echo("no key registered and no provision secrets stored")
    for e in entries:
        version = f"v{e.version}" if e.version else "--"
        click.echo(f"{e.key_id}  {version}  {e.state:<12} {e.secrets:>10} secret(s)  {e.in_key_file} in key file")
    unknown = [entry for entry in entries if not entry.readable]
    if unknown:
        _fail(f"{sum(e.secrets for e in unknown)} secret(s) are under key ids the key file does not hold")


@main.group()
def key() -> None:
    """Manage the key registry (as a member of provision_secret_rotator): which key ids may seal."""


@key.command("register")
@dsn_option
@key_file_option
def key_register(dsn: str, key_file: str | None) -> None:
    """Make the key file's current key id active: do this before Vault is patched with a new key."""
    from pyaccess.rotation import register_key  # noqa: PLC0415

    with _connect(dsn) as conn:
        outcome = register_key(conn, key_file=key_file)
    click.echo(f"key id {pyaccess.load_key_ring(key_file).current.key_id}: {outcome}")


@key.command("retire")
@click.argument("key_id")
@dsn_option
def key_retire(key_id: str, dsn: str) -> None:
    """Retire KEY_ID: what it sealed still opens, nothing new is sealed under it."""
    from pyaccess.rotation import retire_key  # noqa: PLC0415

    with _connect(dsn) as conn:
        retire_key(conn, key_id)
    click.echo(f"key id {key_id}: retired")


@main.command()
@dsn_option
@key_file_option
@click.option("--batch-size", default=1000, show_default=True, type=click.IntRange(min=1), help="Rows per transaction.")
@click.option("--dry-run", is_flag=True, help="Report what would be re-encrypted; change nothing.")
def rotate(dsn: str, key_file: str | None, batch_size: int, dry_run: bool) -> None:
    """Re-encrypt under the current key every secret stored under a previous key.

    Batched, online, resumable after a kill, idempotent.
    """
    from pyaccess.rotation import rotate as run_rotation  # noqa: PLC0415

    bar: Any = None
    started = time.monotonic()

    def on_start(total: int) -> None:
        nonlocal bar
        if total and not dry_run and sys.stderr.isatty():
            bar = click.progressbar(
                length=total,
                label="re-encrypting",
                show_pos=True,
                item_show_func=lambda rate: None if rate is None else f"{rate:,.0f} rows/s",
                file=sys.stderr,
            )
            bar.__enter__()

    def on_batch(done: int) -> None:
        if bar is not None:
            bar.update(done, (bar.pos + done) / max(time.monotonic() - started, 1e-9))

    with _connect(dsn) as conn:
        try:
            report = run_rotation(
                conn, key_file=key_file, batch_size=batch_size, dry_run=dry_run, on_start=on_start, on_batch=on_batch
            )
        finally:
            if bar is not None:
                bar.__exit__(None, None, None)
    verb = "would re-encrypt" if dry_run else "re-encrypted"
    if not report.reencrypted:
        click.echo(f"nothing to re-encrypt: every secret is under the current key {report.current_key_id}")
        return
    if report.registered:
        click.echo(f"registered the current key id {report.current_key_id} as active")
    detail = ", ".join(f"{n} from {kid}" for kid, n in sorted(report.by_old_key_id.items()))
    timing = "" if dry_run else f" in {report.seconds:.2f}s ({report.rate:.0f}/s, {report.batches} batch(es))"
    click.echo(f"{verb} {report.reencrypted} secret(s) under key {report.current_key_id}: {detail}{timing}")


@main.command()
@dsn_option
@key_file_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, for machines.")
def doctor(dsn: str, key_file: str | None, as_json: bool) -> None:
    """Check the setup as this service's role: exit 0 when nothing would leak or fail."""
    import json  # noqa: PLC0415

    from pyaccess.doctor import run_checks  # noqa: PLC0415

    failed = False
    for check in run_checks(dsn, key_file=key_file):  # printed as they finish
        failed = failed or check.status == "FAIL"
        if as_json:
            click.echo(json.dumps(check.as_dict()))
        else:
            click.echo(f"{check.status:<8} {check.name:<11} {check.detail}")
    if failed:
        sys.exit(1)


@main.command()
def demo() -> None:
    """Run the whole job once on a throwaway PostgreSQL (or PYACCESS_DSN)."""
    from pyaccess.demo import run_demo  # noqa: PLC0415 - keeps start-up light

    run_demo(click.echo)


if __name__ == "__main__":
    main()
