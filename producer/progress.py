"""Waiting for a batch to finish, with a progress bar on a terminal."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from db.batches import status_counts
from db.models import Status
from db.session import session_scope


class WaitTimeout(Exception):
    pass


class UnknownBatch(LookupError):
    pass


def counts(url: str, batch_id: str) -> dict[Status, int]:
    """Documents of the batch per status; ``UnknownBatch`` if it has none."""
    with session_scope(url) as session:
        current = status_counts(session, batch_id)
    if not sum(current.values()):
        raise UnknownBatch(f"no documents for batch {batch_id}")
    return current


def wait(
    url: str,
    batch_id: str,
    *,
    console: Console | None = None,
    poll: float = 0.5,
    timeout: float | None = None,
) -> dict[Status, int]:
    """Polls the database (the source of truth) until every document is terminal;
    ``timeout`` 0 looks once."""
    console = console or Console(stderr=True)
    deadline = None if timeout is None else time.monotonic() + timeout
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "[green]done {task.fields[done]}[/] [red]failed {task.fields[failed]}[/]"
            " pending {task.fields[pending]}"
        ),
        TimeElapsedColumn(),
    )
    total = sum(counts(url, batch_id).values())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("explaining", total=total, done=0, failed=0, pending=total)
        while True:
            current = counts(url, batch_id)
            finished = current[Status.DONE] + current[Status.FAILED]
            progress.update(
                task,
                completed=finished,
                done=current[Status.DONE],
                failed=current[Status.FAILED],
                pending=total - finished,
            )
            if finished >= total:
                return current
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"batch {batch_id}: {total - finished} documents unfinished")
            time.sleep(poll)
