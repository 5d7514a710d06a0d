"""Pieces every command group shares: docker's inspect/list plumbing and multi-argument error handling."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import click

from swarmsecrets.cli.client import CLIError, ConnectError
from swarmsecrets.cli.format import render_list
from swarmsecrets.cli.gotemplate import Row, Template, TemplateError, to_json

T = TypeVar("T")

PRETTY = "pretty"


@contextmanager
def template_errors() -> Iterator[None]:
    """docker reports both parse and execution errors of --format this way."""
    try:
        yield
    except TemplateError as e:
        raise CLIError(f"template parsing error: {e}") from None


def each(refs: Sequence[str], fn: Callable[[str], T]) -> tuple[list[T], list[str]]:
    """Apply fn to every argument like docker's multi-argument commands: keep going past an error
    (collecting its message), but stop at once when the daemon cannot be reached."""
    done: list[T] = []
    failed: list[str] = []
    for ref in refs:
        try:
            done.append(fn(ref))
        except ConnectError:
            raise
        except CLIError as e:
            failed.append(e.message)
    return done, failed


def finish(failed: list[str]) -> None:
    """Print the collected errors after the output; any error means exit status 1."""
    for message in failed:
        click.echo(message, err=True)
    if failed:
        click.get_current_context().exit(1)


def inspect_format(pretty: bool, fmt: str) -> str:
    """``--pretty`` wins over ``-f`` as in docker; ``pretty`` may also be given as the format."""
    spec = PRETTY if pretty else fmt
    if spec.startswith(PRETTY) and spec != PRETTY:
        raise CLIError("cannot supply extra formatting options to the pretty template")
    return spec


def render_inspect(items: Sequence[Any], spec: str) -> str:
    """docker inspect: an indented JSON array (``[]`` when nothing was found), or the template per item."""
    if spec in ("", "json"):
        return to_json(list(items), indent=4) + "\n"
    with template_errors():
        tmpl = Template(spec)
        return "".join(tmpl.execute(item) + "\n" for item in items)


def render_rows(spec: str, rows: Sequence[Any], header: Row | None = None) -> str:
    with template_errors():
        return render_list(spec, rows, header)


def list_format(fmt: str, quiet: bool, default_table: str) -> str:
    """docker's newFormat: no --format means ``table``; ``table`` with -q means IDs only."""
    spec = fmt or "table"
    if spec == "table":
        return "{{.ID}}" if quiet else default_table
    return spec
