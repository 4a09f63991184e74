"""producer: submit documents for explanation and follow batches."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.text import Text

from contract.methods import METHODS, describe_params, methods_problem, split_methods

if TYPE_CHECKING:
    from contract.settings import Settings

EXIT_REJECTED = 3  # some input lines were rejected; the accepted ones were submitted
EXIT_FAILED = 4  # with --wait: some documents ended FAILED
EXIT_UNFINISHED = 5  # registered, but not sent, or (with --wait) not finished in time

# Plain help: the rich layout shows a "<bool>" value after every flag, which takes none.
app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False, rich_markup_mode=None)
err = Console(stderr=True)


def _error(message: str, code: int = 1) -> typer.Exit:
    # Text, not markup: messages carry the user's paths, ids and values.
    err.print(Text.assemble(("error: ", "red"), message), soft_wrap=True)
    return typer.Exit(code)


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


@contextmanager
def _database() -> Iterator[None]:
    """Database errors as one line on stderr and exit status 1, never a traceback."""
    from sqlalchemy.exc import SQLAlchemyError

    from db.errors import one_line

    try:
        yield
    except SQLAlchemyError as error:
        raise _error(one_line(error)) from None


def _settings() -> Settings:
    from contract.settings import settings_or_exit

    return settings_or_exit()


@app.command("submit")
def submit_command(
    path: Path = typer.Argument(..., help="JSONL, CSV (a 'text' column) or plain text file."),
    model: str | None = typer.Option(
        None, help="Checkpoint directory or model name [EXPLAINQ_MODEL]."
    ),
    method: list[str] | None = typer.Option(
        None,
        help=f"Attribution methods, comma-separated or repeated: {', '.join(METHODS)} "
        "[EXPLAINQ_METHOD, default lig].",
    ),
    n_steps: str | None = typer.Option(
        None, help="Integration steps, or 'auto' for adaptive [EXPLAINQ_N_STEPS]."
    ),
    param: list[str] = typer.Option(
        [], help=f"A method parameter as key=value, repeatable: {', '.join(describe_params())}."
    ),
    window_stride: int | None = typer.Option(
        None, min=1, help="Tokens between windows of a long text [EXPLAINQ_WINDOW_STRIDE]."
    ),
    chunk_size: int | None = typer.Option(
        None, min=1, help="Documents per task [EXPLAINQ_CHUNK_SIZE]."
    ),
    fmt: str | None = typer.Option(
        None, "--format", help="jsonl, csv or text (default: by suffix)."
    ),
    wait_: bool = typer.Option(False, "--wait", help="Show progress until the batch is finished."),
    timeout: float | None = typer.Option(
        None, min=0, help="With --wait: give up after this many seconds (0: look once)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary instead of the id."),
) -> None:
    """Validate PATH, register its documents and enqueue them. Prints the batch id.

    Exit status: 0 all accepted; 1 nothing submitted; 3 some lines rejected (the others
    were submitted); 4 with --wait, some documents failed; 5 the batch is registered but
    its tasks could not be sent, or with --wait it did not finish within --timeout.
    """
    from producer.params import batch_params
    from producer.readers import InputError
    from producer.submit import (
        NothingAccepted,
        NotSent,
        check_model,
        no_consumer_note,
        submit,
        weights_note,
    )

    settings = _settings()
    methods = split_methods(method or [settings.method])
    if problem := methods_problem(methods):
        raise _error(problem)
    try:
        params = batch_params(settings, methods, n_steps, param, window_stride, chunk_size)
        check_model(model or settings.model, settings)
    except (ValueError, FileNotFoundError) as error:
        raise _error(str(error)) from None
    with _database():
        if note := weights_note(model or settings.model, settings):
            err.print(Text(note), soft_wrap=True)
    unsent: NotSent | None = None
    try:
        with _database():
            result = submit(path, settings, model=model, methods=methods, params=params,
                            chunk_size=chunk_size, fmt=fmt, announce=_note,
                            on_rejected=partial(_print_rejection, path=path))  # fmt: skip
    except InputError as error:
        raise _error(str(error)) from None
    except NothingAccepted as error:  # its lines were printed as they were read
        raise _error(str(error)) from None
    except NotSent as error:
        result, unsent = error.submission, error
    if unsent:
        err.print(Text.assemble(("error: ", "red"), str(unsent)), soft_wrap=True)
        err.print(
            f"the sweeper sends them after EXPLAINQ_STALE_AFTER; or, once the broker is back, "
            f"`producer resume {result.batch_id} --stale-after 0`",
            soft_wrap=True,
        )
    else:
        err.print(
            f"batch {result.batch_id}: {plural(result.accepted, 'document')} accepted, "
            f"{len(result.rejected)} rejected, {plural(result.chunks, 'task')} enqueued",
            soft_wrap=True,
        )
        if note := no_consumer_note(settings, model or settings.model):
            err.print(Text(note), soft_wrap=True)
    final: dict[str, int] = {}
    timed_out = False
    seal: str | None = None
    if wait_ and not unsent:
        final, timed_out, seal = _follow(settings, result.batch_id, timeout)
        if seal:
            err.print(Text(seal), soft_wrap=True)
    if as_json:
        summary = {
            "batch_id": result.batch_id,
            "accepted": result.accepted,
            "rejected": [r.__dict__ for r in result.rejected],
            "tasks": result.chunks,
            **({"cost_note": result.cost_note} if result.cost_note else {}),
            **({"status": final} if final else {}),
            **({"seal": seal} if seal else {}),
        }
        typer.echo(json.dumps(summary))
    else:
        typer.echo(result.batch_id)
    if unsent or timed_out:
        raise typer.Exit(EXIT_UNFINISHED)
    if final.get("failed"):
        raise typer.Exit(EXIT_FAILED)
    if result.rejected:
        raise typer.Exit(EXIT_REJECTED)


def _note(line: str) -> None:
    err.print(Text(line), soft_wrap=True)


def _print_rejection(rejection: Any, path: Path) -> None:
    # soft_wrap: one line per rejection, whatever the width (CI logs are not terminals)
    err.print(Text.assemble(("rejected ", "yellow"), rejection.describe(path)), soft_wrap=True)


def _follow(
    settings: Settings, batch_id: str, timeout: float | None
) -> tuple[dict[str, int], bool, str | None]:
    """Waits with a progress bar; prints why documents failed, grouped; seals the
    finished batch. Returns the final counts by status name, whether it timed out, and
    the seal line."""
    from db.batches import failure_reasons
    from db.models import Status
    from db.seals import SealRefused, seal_batch
    from db.session import session_scope
    from producer.progress import WaitTimeout, wait

    try:
        with _database():
            final = wait(settings.sqlalchemy_url, batch_id, timeout=timeout)
    except WaitTimeout as error:
        err.print(f"[red]timeout:[/] {error}; follow it with `producer status {batch_id}`")
        return {}, True, None
    try:  # finished: sealed, as `results seal` would (the same seal again if it was)
        with _database(), session_scope(settings.sqlalchemy_url) as session:
            seal = seal_batch(session, batch_id).line
    except SealRefused as error:  # sealed before, and its rows changed since
        raise _error(str(error)) from None
    if final_failed := final[Status.FAILED]:
        with _database(), session_scope(settings.sqlalchemy_url) as session:
            reasons = failure_reasons(session, batch_id)
        err.print(f"{plural(final_failed, 'document')} failed:", soft_wrap=True)
        for reason, count in reasons:
            err.print(Text(f"  {count}: {reason}"), soft_wrap=True)
        err.print(f"details: `results list --batch {batch_id} --status failed`", soft_wrap=True)
    return {status.value.lower(): count for status, count in final.items()}, False, seal


@app.command("status")
def status_command(
    batch: str = typer.Argument(..., help="Batch id printed by submit."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Print how many documents of BATCH are done, failed and pending."""
    from db.models import Status
    from producer.progress import UnknownBatch, counts

    try:
        with _database():
            current = counts(_settings().sqlalchemy_url, batch)
    except UnknownBatch as error:
        raise _error(str(error)) from None
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
    batch: str = typer.Argument(..., help="Batch id printed by submit."),
    timeout: float | None = typer.Option(
        None, min=0, help="Give up after this many seconds (0: look once)."
    ),
) -> None:
    """Show progress until every document of BATCH is done or failed, then seal it and
    print its seal line on stdout (keep it outside the database: docs/AUDIT.md).

    Exit status: 0 all done; 1 no such batch, or sealed before with other rows; 4 some
    documents failed; 5 not finished within --timeout.
    """
    from producer.progress import UnknownBatch

    try:
        final, timed_out, seal = _follow(_settings(), batch, timeout)
    except UnknownBatch as error:
        raise _error(str(error)) from None
    if seal:
        typer.echo(seal)
    if timed_out:
        raise typer.Exit(EXIT_UNFINISHED)
    if final["failed"]:
        raise typer.Exit(EXIT_FAILED)


@app.command("resume")
def resume_command(
    batch: str | None = typer.Argument(None, help="Batch id (default: every unfinished batch)."),
    stale_after: float | None = typer.Option(
        None, help="Only documents unchanged this many seconds [EXPLAINQ_STALE_AFTER]."
    ),
) -> None:
    """Enqueue again the documents left PENDING or RUNNING too long (the DB is the truth).

    Exit status: 0 sent, or nothing to send; 5 the broker could not be reached.
    """
    from contract.cost import batch_cost
    from db.batches import batch_routes
    from db.ownership import hand_over
    from db.session import session_scope
    from producer.submit import Route, broker_app, resend

    settings = _settings()
    age = settings.stale_after if stale_after is None else stale_after
    broker = broker_app(settings)
    try:  # before anything changes in the database
        with broker.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1)
    except Exception as error:
        raise _error(f"broker unreachable, nothing re-sent: {error}", EXIT_UNFINISHED) from None
    with _database(), session_scope(settings.sqlalchemy_url) as session:
        pricing = partial(batch_cost, settings=settings)
        resends = hand_over(session, batch, age, settings.chunk_size, pricing)
        found = batch_routes(session, {chunk.batch_id for chunk in resends})
    routes = {b: Route(model, methods, settings.queue) for b, (model, methods) in found.items()}
    try:
        resend(broker, resends, routes)
    except Exception as error:  # the broker went away meanwhile: the next sweep sends them
        raise _error(
            f"sending failed: {error}; run this again once the broker is back, or the "
            "sweeper re-sends them after EXPLAINQ_STALE_AFTER",
            EXIT_UNFINISHED,
        ) from None
    by_batch: Counter[str] = Counter()
    tasks: Counter[str] = Counter()
    for chunk in resends:
        by_batch[chunk.batch_id] += len(chunk.document_ids)
        tasks[chunk.batch_id] += 1
    for batch_id, documents in by_batch.items():
        err.print(
            f"batch {batch_id}: {plural(documents, 'document')} re-enqueued in "
            f"{plural(tasks[batch_id], 'task')}"
        )
    if not resends:
        err.print("nothing to resume")


def main() -> None:
    app()
