"""``producer``: submit documents for explanation and follow batches."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.text import Text

from db.engine import session_scope
from db.models import Status
from db.settings import METHODS, Settings, get_settings
from db.store import touch, unfinished
from producer.progress import WaitTimeout, counts, wait
from producer.readers import InputError
from producer.submit import broker_app, enqueue, submit

EXIT_REJECTED = 3  # some input lines were rejected; the accepted ones were submitted
EXIT_FAILED = 4  # with --wait: some documents ended FAILED

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)
err = Console(stderr=True)


@app.command("submit")
def submit_command(
    path: Path = typer.Argument(..., help="JSONL, CSV (a 'text' column) or plain text file."),
    model: str | None = typer.Option(
        None, help="Checkpoint directory or model name [EXPLAINQ_MODEL]."
    ),
    method: str = typer.Option("lig", help="Attribution methods, comma-separated."),
    n_steps: str | None = typer.Option(
        None, help="Integration steps, or 'auto' for adaptive [EXPLAINQ_N_STEPS]."
    ),
    chunk_size: int | None = typer.Option(None, help="Documents per task [EXPLAINQ_CHUNK_SIZE]."),
    fmt: str | None = typer.Option(
        None, "--format", help="jsonl, csv or text (default: by suffix)."
    ),
    wait_: bool = typer.Option(False, "--wait", help="Show progress until the batch is finished."),
    timeout: float | None = typer.Option(
        None, help="With --wait: give up after this many seconds."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary instead of the id."),
) -> None:
    """Validate PATH, register its documents and enqueue them. Prints the batch id.

    Exit status: 0 all accepted, 1 nothing submitted, 3 some lines rejected, 4 (with
    --wait) some documents failed.
    """
    settings = get_settings()
    methods = [m.strip() for m in method.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS)) or ([] if methods else ["(none)"])
    if unknown:
        err.print(f"error: unknown method {', '.join(unknown)}; known: {', '.join(METHODS)}")
        raise typer.Exit(1)
    try:
        params = {"n_steps": Settings(n_steps=n_steps or settings.n_steps).n_steps}
    except ValidationError:
        err.print(f"[red]error:[/] --n-steps must be 1 to 1024 or 'auto', not {n_steps!r}")
        raise typer.Exit(1) from None
    try:
        result = submit(
            path,
            settings,
            model=model,
            methods=methods,
            params=params,
            chunk_size=chunk_size,
            fmt=fmt,
        )
    except InputError as error:
        err.print(f"[red]error:[/] {error}")
        raise typer.Exit(1) from None
    for rejection in result.rejected:
        # Text, not markup: ids and reasons come from the user's file.
        err.print(Text.assemble(("rejected ", "yellow"), rejection.describe(path)))
    err.print(
        f"batch {result.batch_id}: {result.accepted} documents accepted, "
        f"{len(result.rejected)} rejected, {result.chunks} tasks enqueued"
    )
    final = {}
    if wait_ and result.accepted:
        try:
            final = wait(settings.sqlalchemy_url, result.batch_id, timeout=timeout)
        except WaitTimeout as error:
            err.print(
                f"[red]timeout:[/] {error}; follow it with `producer status {result.batch_id}`"
            )
            raise typer.Exit(1) from None
    if as_json:
        summary = {
            "batch_id": result.batch_id,
            "accepted": result.accepted,
            "rejected": [r.__dict__ for r in result.rejected],
            "tasks": result.chunks,
            **({"status": {s.value.lower(): n for s, n in final.items()}} if final else {}),
        }
        typer.echo(json.dumps(summary))
    else:
        typer.echo(result.batch_id)
    if final.get(Status.FAILED):
        raise typer.Exit(EXIT_FAILED)
    if result.rejected:
        raise typer.Exit(EXIT_REJECTED)


@app.command("status")
def status_command(
    batch: str = typer.Argument(..., help="Batch id printed by submit."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Print how many documents of BATCH are done, failed and pending."""
    current = counts(get_settings().sqlalchemy_url, batch)
    if not sum(current.values()):
        err.print(f"[red]error:[/] no documents for batch {batch}")
        raise typer.Exit(1)
    pending = current[Status.PENDING] + current[Status.RUNNING]
    view = {
        "done": current[Status.DONE],
        "failed": current[Status.FAILED],
        "pending": pending,
        "running": current[Status.RUNNING],
        "total": sum(current.values()),
    }
    typer.echo(
        json.dumps({"batch_id": batch, **view})
        if as_json
        else f"{batch}: done {view['done']}  failed {view['failed']}  pending {pending}  "
        f"(running {view['running']}) of {view['total']}"
    )


@app.command("wait")
def wait_command(
    batch: str = typer.Argument(...), timeout: float | None = typer.Option(None)
) -> None:
    """Show progress until every document of BATCH is done or failed."""
    try:
        final = wait(get_settings().sqlalchemy_url, batch, timeout=timeout)
    except WaitTimeout as error:
        err.print(f"[red]timeout:[/] {error}")
        raise typer.Exit(1) from None
    if final[Status.FAILED]:
        raise typer.Exit(EXIT_FAILED)


@app.command("resume")
def resume_command(
    batch: str | None = typer.Argument(None, help="Batch id (default: every unfinished batch)."),
    stale_after: float | None = typer.Option(
        None, help="Only documents unchanged this many seconds [EXPLAINQ_STALE_AFTER]."
    ),
) -> None:
    """Enqueue again the documents left PENDING or RUNNING too long (the DB is the truth)."""
    settings = get_settings()
    age = settings.stale_after if stale_after is None else stale_after
    with session_scope(settings.sqlalchemy_url) as session:
        rows = unfinished(session, batch, age)
        touch(session, [doc_id for _, doc_id, _ in rows])
    by_batch: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for batch_id, doc_id, length in rows:
        by_batch[batch_id].append((doc_id, length))
    broker = broker_app(settings)
    for batch_id, lengths in by_batch.items():
        tasks = enqueue(broker, batch_id, lengths, settings.chunk_size)
        err.print(f"batch {batch_id}: {len(lengths)} documents re-enqueued in {tasks} tasks")
    if not rows:
        err.print("nothing to resume")


def main() -> None:
    app()
