"""The `pyaccess` command line. It only calls the Python API.

Errors are one line on stderr and exit status 1; usage errors exit 2.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
import psycopg

import pyaccess
from pyaccess.errors import InvalidSecretError, PyAccessError, from_psycopg
from pyaccess.keyfile import write_new_key_file
from pyaccess.migrate import apply_migrations

F = TypeVar("F", bound=Callable[..., Any])


class _Group(click.Group):
    """Turns every failure into one line on stderr: never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
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


def dsn_option(func: F) -> F:
    return click.option(
        "--dsn",
        envvar="PYACCESS_DSN",
        default="",
        show_envvar=True,
        help="libpq connection string or URI; else the PG* variables.",
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
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidSecretError("standard input is not UTF-8 text") from None
    if text.endswith("\r\n"):
        return text[:-2]
    return text.removesuffix("\n")


@main.command()
@click.argument("group_id")
@dsn_option
@key_file_option
def store(group_id: str, dsn: str, key_file: str | None) -> None:
    """Store the secret read from standard input (one trailing newline dropped) for GROUP_ID."""
    secret = _read_secret()
    with psycopg.connect(dsn) as conn:
        pyaccess.store_provision_secret(conn, group_id, secret, key_file=key_file)
    click.echo(f"stored the provision secret of OTA group {group_id}", err=True)


@main.command()
@click.argument("group_id")
@dsn_option
@key_file_option
def get(group_id: str, dsn: str, key_file: str | None) -> None:
    """Print the provision secret of GROUP_ID and a newline."""
    with psycopg.connect(dsn) as conn:
        secret = pyaccess.get_provision_secret(conn, group_id, key_file=key_file)
    click.echo(secret)


@main.command()
def demo() -> None:
    """Run the whole job once on a throwaway PostgreSQL (or PYACCESS_DSN)."""
    from pyaccess.demo import run_demo  # noqa: PLC0415 - keeps start-up light

    run_demo(click.echo)


if __name__ == "__main__":
    main()
