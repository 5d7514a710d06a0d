"""``swarmsecrets``: the docker-like command line for the local swarmsecretsd."""

from __future__ import annotations

import importlib
import os
import sys

import click

from swarmsecrets import __version__
from swarmsecrets.cli.client import DEFAULT_HOST, Client

# Each command group's module, imported when the command line names it: `secret ls` does not pay
# for `swarm`'s certificates (the cryptography package) or `service`'s parsers.
COMMANDS = {name: f"swarmsecrets.cli.{name}" for name in ("info", "node", "secret", "service", "swarm")}


class LazyGroup(click.Group):
    """A group whose subcommands (``COMMANDS``) are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMANDS.get(cmd_name)
        if module is None:
            return None
        command: click.Command = getattr(importlib.import_module(module), cmd_name)
        return command


@click.group(cls=LazyGroup)
@click.option("-H", "--host", envvar="SWARMSECRETS_HOST", default=DEFAULT_HOST, show_default=True,
              help="Daemon socket to connect to (env SWARMSECRETS_HOST).")
@click.version_option(__version__, "--version", prog_name="swarmsecrets",
                      message="%(prog)s version %(version)s")
@click.pass_context
def cli(ctx: click.Context, host: str) -> None:
    """Docker Swarm-style secrets for fleets of Linux VMs."""
    client = Client(host)
    ctx.obj = client
    ctx.call_on_close(client.close)


def _plural(n: int) -> str:
    return "argument" if n == 1 else "arguments"


def arity_error(e: click.UsageError) -> str | None:
    """docker's text for a command given too few or too many arguments (its cobra Args checks), on
    one line with its pointer to the help; None for any other usage error."""
    ctx = e.ctx
    missing = isinstance(e, click.MissingParameter) and isinstance(e.param, click.Argument)
    if ctx is None or not (missing or e.message.startswith("Got unexpected extra argument")):
        return None
    params = [p for p in ctx.command.params if isinstance(p, click.Argument)]
    low = sum(max(p.nargs, 1) for p in params if p.required)
    high = None if any(p.nargs == -1 for p in params) else sum(p.nargs for p in params)
    name = ctx.command_path
    if high == 0:
        first = f'"{name}" accepts no arguments.'
    elif high is None:
        first = f'"{name}" requires at least {low} {_plural(low)}.'
    elif low == high:
        first = f'"{name}" requires exactly {low} {_plural(low)}.'
    else:
        first = f'"{name}" requires at least {low} and at most {high} {_plural(high)}.'
    return f"{first} See '{name} --help'."


def run(args: list[str]) -> int:
    """Run one command; every failure is a message on stderr and an exit status, never a traceback."""
    try:
        rv = cli.main(args=args, prog_name="swarmsecrets", standalone_mode=False)
    except click.UsageError as e:
        text = arity_error(e)
        if text is None:
            e.show()
        else:
            click.echo(text, err=True)
        return e.exit_code
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except click.Abort as e:
        return 130 if isinstance(e.__cause__, KeyboardInterrupt) else 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`swarmsecrets secret ls | head`): stop quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as e:  # the last line of defence against a traceback
        click.echo(f"error: {type(e).__name__}: {e}", err=True)
        return 1
    return rv if isinstance(rv, int) else 0


def main() -> None:
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
