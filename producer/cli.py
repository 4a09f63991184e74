"""producer: submit documents for explanation and follow batches."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.text import Text

from db.engine import session_scope
from db.models import Status
from db.params import TUNABLE, check_caps, parse_params
from db.settings import (
    METHODS,
    Settings,
    methods_problem,
    settings_or_exit,
    stride_problems,
)
from db.store import hand_over
from producer.progress import UnknownBatch, WaitTimeout, counts, wait
from producer.readers import InputError
from producer.submit import NotSent, broker_app, resend, submit

EXIT_REJECTED = 3  # some input lines were rejected; the accepted ones were submitted
EXIT_FAILED = 4  # with --wait: some documents ended FAILED
EXIT_UNFINISHED = 5  # registered, but not sent, or (with --wait) not finished in time

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)
err = Console(stderr=True)


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
        [], help=f"A method parameter as key=value, repeatable: {', '.join(TUNABLE)}."
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
    settings = settings_or_exit()
    chosen = method or [settings.method]
    methods = list(dict.fromkeys(m.strip() for text in chosen for m in text.split(",")))
    methods = [m for m in methods if m]
    if problem := methods_problem(methods):
        err.print(f"error: {problem}")
        raise typer.Exit(1)
    try:
        params = batch_params(settings, n_steps, param, window_stride, chunk_size)
    except ValueError as error:
        err.print(Text.assemble(("error: ", "red"), str(error)))
        raise typer.Exit(1) from None
    unsent: NotSent | None = None
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
    except NotSent as error:
        result, unsent = error.submission, error
    for rejection in result.rejected:
        # Text, not markup: ids and reasons come from the user's file.
        # soft_wrap: one line per rejection, whatever the width (CI logs are not terminals)
        err.print(Text.assemble(("rejected ", "yellow"), rejection.describe(path)), soft_wrap=True)
    if unsent:
        err.print(Text.assemble(("error: ", "red"), str(unsent)), soft_wrap=True)
        err.print(
            f"the sweeper sends them after EXPLAINQ_STALE_AFTER; or, once the broker is back, "
            f"`producer resume {result.batch_id} --stale-after 0`",
            soft_wrap=True,
        )
    else:
        err.print(
            f"batch {result.batch_id}: {result.accepted} documents accepted, "
            f"{len(result.rejected)} rejected, {result.chunks} tasks enqueued"
        )
    final, timed_out = {}, False
    if wait_ and result.accepted and not unsent:
        try:
            final = wait(settings.sqlalchemy_url, result.batch_id, timeout=timeout)
        except WaitTimeout as error:
            err.print(
                f"[red]timeout:[/] {error}; follow it with `producer status {result.batch_id}`"
            )
            timed_out = True
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
    if unsent or timed_out:
        raise typer.Exit(EXIT_UNFINISHED)
    if final.get(Status.FAILED):
        raise typer.Exit(EXIT_FAILED)
    if result.rejected:
        raise typer.Exit(EXIT_REJECTED)


def batch_params(
    settings: Settings,
    n_steps: str | None,
    pairs: list[str],
    window_stride: int | None,
    chunk_size: int | None,
) -> dict[str, Any]:
    """The batch's parameters: the settings' n_steps, then --param, then --n-steps; a
    ValueError names the bad value, or the EXPLAINQ_MAX_* setting it is over."""
    params: dict[str, Any] = {"n_steps": settings.n_steps, **parse_params(pairs, settings)}
    if n_steps is not None:
        try:
            params["n_steps"] = TUNABLE["n_steps"][0](n_steps)
        except ValueError:
            raise ValueError(f"--n-steps must be 1 or more, or 'auto'; not {n_steps!r}") from None
    adaptive_only = sorted({"tolerance", "max_steps"} & set(params))
    if adaptive_only and str(params["n_steps"]) != "auto":
        raise ValueError(
            f"--param {', '.join(adaptive_only)} applies to adaptive steps only "
            f"(--n-steps auto), not to n_steps={params['n_steps']}"
        )
    if window_stride is not None:
        params["window_stride"] = window_stride
    check_caps({**params, **({"chunk_size": chunk_size} if chunk_size else {})}, settings)
    if problems := stride_problems(settings, window_stride):
        raise ValueError(problems[0])
    return params


@app.command("status")
def status_command(
    batch: str = typer.Argument(..., help="Batch id printed by submit."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Print how many documents of BATCH are done, failed and pending."""
    try:
        current = counts(settings_or_exit().sqlalchemy_url, batch)
    except UnknownBatch as error:
        err.print(f"[red]error:[/] {error}")
        raise typer.Exit(1) from None
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
    """Show progress until every document of BATCH is done or failed.

    Exit status: 0 all done; 1 no such batch; 4 some documents failed; 5 not finished
    within --timeout.
    """
    try:
        final = wait(settings_or_exit().sqlalchemy_url, batch, timeout=timeout)
    except UnknownBatch as error:
        err.print(f"[red]error:[/] {error}")
        raise typer.Exit(1) from None
    except WaitTimeout as error:
        err.print(f"[red]timeout:[/] {error}")
        raise typer.Exit(EXIT_UNFINISHED) from None
    if final[Status.FAILED]:
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
    settings = settings_or_exit()
    age = settings.stale_after if stale_after is None else stale_after
    broker = broker_app(settings)
    try:  # before anything changes in the database
        with broker.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1)
    except Exception as error:
        problem = f"broker unreachable, nothing re-sent: {error}"
        err.print(Text.assemble(("error: ", "red"), problem), soft_wrap=True)
        raise typer.Exit(EXIT_UNFINISHED) from None
    with session_scope(settings.sqlalchemy_url) as session:
        resends = hand_over(session, batch, age, settings.chunk_size)
    try:
        resend(broker, resends)
    except Exception as error:  # the broker went away meanwhile: the next sweep sends them
        problem = (
            f"sending failed: {error}; run this again once the broker is back, or the "
            "sweeper re-sends them after EXPLAINQ_STALE_AFTER"
        )
        err.print(Text.assemble(("error: ", "red"), problem), soft_wrap=True)
        raise typer.Exit(EXIT_UNFINISHED) from None
    by_batch: Counter[str] = Counter()
    tasks: Counter[str] = Counter()
    for chunk in resends:
        by_batch[chunk.batch_id] += len(chunk.document_ids)
        tasks[chunk.batch_id] += 1
    for batch_id, documents in by_batch.items():
        err.print(f"batch {batch_id}: {documents} documents re-enqueued in {tasks[batch_id]} tasks")
    if not resends:
        err.print("nothing to resume")


def main() -> None:
    app()
