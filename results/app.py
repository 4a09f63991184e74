"""The ``results`` Typer app and what its verbs share: the console, the one-line error,
and a read session whose errors become that line."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.text import Text

if TYPE_CHECKING:  # the verbs import the data layer themselves: `--help` stays instant
    from sqlalchemy.orm import Session

# Mirrors of the data layer's whitelists for the help texts (db.queries checks them).
ORDERS = ("id", "confidence", "-confidence", "label", "status")
STATUSES = ("pending", "running", "done", "failed")
MAX_LIMIT = 10_000

HELP = """results: read the explanations in the database (list, show, quality, similar, index,
top-tokens, export, batches, methods, migrate), seal batches and check that nothing
changed (seal, verify), the models over time (models), and browse or share them in a
browser (serve, report)."""

# Plain help: the rich layout shows a "<bool>" value after every flag, which takes none.
app = typer.Typer(help=HELP, no_args_is_help=True, add_completion=False, rich_markup_mode=None)
JSON_FLAG = typer.Option(False, "--json", help="Machine-readable JSON on stdout.")
BATCH = typer.Option(None, "--batch", help="Only this batch (default: every batch).")


def console() -> Console:
    # Made per call: rich decides on colour when a Console is made, from the stdout of
    # that moment (which a test runner swaps).
    return Console()


def fail(message: str) -> typer.Exit:
    first_line = (message.splitlines() or ["failed"])[0]
    Console(stderr=True).print(Text.assemble(("error: ", "red"), first_line), soft_wrap=True)
    return typer.Exit(1)


@contextmanager
def reading() -> Iterator[Session]:
    """A read session whose query errors become one line on stderr and exit status 1."""
    from sqlalchemy.exc import SQLAlchemyError

    from contract.settings import settings_or_exit
    from db.errors import one_line
    from db.session import session_scope

    url = settings_or_exit().sqlalchemy_url
    try:
        with session_scope(url) as session:
            yield session
    except (ValueError, LookupError) as error:
        raise fail(str(error)) from None
    except SQLAlchemyError as error:
        raise fail(one_line(error)) from None
