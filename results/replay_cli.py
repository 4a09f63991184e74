"""``results verify DOC | --batch B``: replay stored explanations and say, per row,
whether the model still gives them (docs/AUDIT.md).

Runs in this process with ``--local`` (which imports the workers' engine, and torch,
only then), or as ``VERIFY_TASK`` on the workers that hold the model, by name: the
verdicts come back through the result backend. Neither imports torch or Celery before
the command runs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import typer
from rich.console import Console
from rich.text import Text

from results.app import fail, reading
from results.output import echo_json

ROWS_PER_TASK = 8  # rows a verify task replays: the progress bar's step, the workers' share


def replay_command(
    *,
    doc: str | None,
    batch: str | None,
    sample: int | None,
    every: bool,
    method: str | None,
    local: bool,
    allow_other_weights: bool,
    as_json: bool,
    timeout: float,
) -> None:
    from contract.settings import settings_or_exit
    from db.replay_rows import READ_CHUNK, choose_rows, row_models, stored_rows

    if doc is None and batch is None:
        raise fail("verify needs a document, --batch B, or --integrity")
    if every and sample is not None:
        raise fail("--sample N and --all exclude each other")
    if doc is None and not every and sample is None:
        sample = 10
    settings = settings_or_exit()
    if local:
        _engine_or_exit()  # before anything is read: a missing torch says so at once
    with reading() as session:
        ids = choose_rows(session, doc=doc, batch=batch, sample=sample, method=method)
        models = {} if local else row_models(session, ids)
    with _progress(len(ids)) as advance:
        if local:  # a chunk of rows read, replayed and let go at a time: memory stays flat
            verdicts = []
            for start in range(0, len(ids), READ_CHUNK):
                with reading() as session:  # no transaction held open while replaying
                    rows = stored_rows(session, ids[start : start + READ_CHUNK])
                verdicts += _replay_here(rows, settings, allow_other_weights, advance)
        else:
            verdicts = _replay_on_workers(models, settings, allow_other_weights, timeout, advance)
    report(verdicts, as_json)


def _engine_or_exit() -> None:
    try:
        import workers.engine  # noqa: F401  (torch, transformers, captum)
    except ImportError as error:
        raise fail(f"--local needs the workers' extra (pip install 'explainq[workers]'): "
                   f"{error}") from None  # fmt: skip


def _replay_here(
    rows: list[dict[str, Any]], settings: Any, allow: bool, advance: Callable[[int], None]
) -> list[dict[str, Any]]:
    from workers.replay import WeightsChanged, local_loader, replay

    try:
        verdicts = replay(rows, settings, local_loader(), allow_other_weights=allow,
                          progress=advance)  # fmt: skip
    except (WeightsChanged, FileNotFoundError) as error:
        raise fail(str(error)) from None
    return [verdict.as_json() for verdict in verdicts]


def _replay_on_workers(
    models: dict[int, str],
    settings: Any,
    allow: bool,
    timeout: float,
    advance: Callable[[int], None],
) -> list[dict[str, Any]]:
    """One verify task per ROWS_PER_TASK rows of one model, sent by name to the queue of
    the workers that hold that model (``queue_for_model``, as the producer routes its
    chunks). After a refusal, a failure or a timeout, the tasks not yet answered are
    revoked. Verdicts come back in row order."""
    from celery import Celery

    from contract.tasks import VERIFY_TASK, celery_config, queue_for_model

    app = Celery("explainq-results")
    app.conf.update(celery_config(settings))
    by_queue: dict[str, list[int]] = {}
    for row_id, model in sorted(models.items()):
        by_queue.setdefault(queue_for_model(model, settings.queue), []).append(row_id)
    step = ROWS_PER_TASK
    parts = [(queue, ids[i : i + step]) for queue, ids in by_queue.items()
             for i in range(0, len(ids), step)]  # fmt: skip
    sent: list[Any] = []
    try:
        # part i is waited for until (i + 1) x timeout after sending at the latest: a
        # worker drops it unrun after that, as after this process is interrupted
        for index, (queue, part) in enumerate(parts):
            sent.append(app.send_task(VERIFY_TASK, args=[part, allow], queue=queue,
                                      expires=timeout * (index + 1)))  # fmt: skip
        verdicts: list[dict[str, Any]] = []
        for done, ((queue, part), result) in enumerate(zip(parts, sent, strict=True)):
            try:
                verdicts += _answer(result, part, queue, timeout)
            except typer.Exit:
                _revoke(app, sent[done:])
                raise
            advance(len(part))
    except (OSError, ConnectionError) as error:
        raise fail(f"cannot reach the broker at {settings.broker_url}: {error}") from None
    return sorted(verdicts, key=lambda verdict: verdict["row_id"])


def _answer(result: Any, part: list[int], queue: str, timeout: float) -> list[dict[str, Any]]:
    """The verdicts of one task; typer.Exit with one line for a timeout, a refusal, or
    an exception the worker raised (which ``get`` would re-raise with its traceback)."""
    from celery.exceptions import TimeoutError as CeleryTimeout
    from sqlalchemy.exc import SQLAlchemyError

    from db.errors import one_line

    try:
        answer = result.get(timeout=timeout)
    except CeleryTimeout:
        raise fail(
            f"no worker on queue {queue!r} replayed rows {part[0]}.. within "
            f"{timeout:g} s (is one running? --local replays here)"
        ) from None
    except Exception as error:  # raised in the worker, rebuilt here
        why = one_line(error) if isinstance(error, SQLAlchemyError) else str(error).strip()
        raise fail(f"a worker failed to replay rows {part[0]}..: {type(error).__name__}: "
                   f"{(why.splitlines() or ['?'])[0]}") from None  # fmt: skip
    finally:
        result.forget()
    if answer["refused"]:
        raise fail(f"a worker refused: {answer['refused']}")
    return answer["verdicts"]


def _revoke(app: Any, results: list[Any]) -> None:
    """Best effort: the tasks still queued are dropped by the workers, not run."""
    with suppress(Exception):  # the one-line error already says what went wrong
        app.control.revoke([result.id for result in results])
        for result in results:
            result.forget()


@contextmanager
def _progress(total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr, only when stderr is a terminal."""
    from rich.progress import Progress

    bar = Progress(console=Console(stderr=True), transient=True,
                   disable=not sys.stderr.isatty())  # fmt: skip
    with bar:
        task = bar.add_task("replaying", total=total)
        yield lambda done: bar.advance(task, done)


def summary(verdicts: list[dict[str, Any]]) -> dict[str, Any]:
    failed = sum(1 for v in verdicts if not v["ok"])
    return {
        "checked": len(verdicts),
        "reproduced": len(verdicts) - failed,
        "failed": failed,
        "other_weights": any(v["other_weights"] for v in verdicts),
    }


def report(verdicts: list[dict[str, Any]], as_json: bool) -> None:
    """One line per row (or JSON), the summary on stderr; exit 1 if any row failed."""
    totals = summary(verdicts)
    if as_json:
        echo_json({"summary": totals, "rows": verdicts})
    else:
        for verdict in verdicts:
            typer.echo(row_line(verdict))
    line = f"{totals['checked']} rows checked: {totals['reproduced']} reproduced, " + (
        f"{totals['failed']} failed"
    )
    if totals["other_weights"]:
        line += " (replayed with other weights than the rows were made with)"
    Console(stderr=True).print(Text(line), soft_wrap=True)
    if totals["failed"]:
        raise typer.Exit(1)


def _g(value: float | None, spec: str = ".2g") -> str:
    return "-" if value is None else format(value, spec)


def row_line(v: dict[str, Any]) -> str:
    where = f"row {v['row_id']} (document {v['document']}, {v['method']})"
    same = "same" if v["label_reproduced"] else f"stored {v['label']}"
    figures = (
        f"label {v['replayed_label']} ({same}), probabilities ±{_g(v['probability_diff'])}, "
        f"scores max |diff| {_g(v['max_abs_diff'])} (relative {_g(v['max_rel_diff'])}), "
        f"cosine {_g(v['cosine'], '.6f')}"
    )
    if v["stored_gap"] is not None or v["replayed_gap"] is not None:
        figures += f", completeness gap {_g(v['stored_gap'])} -> {_g(v['replayed_gap'])}"
    status = "reproduced" if v["ok"] else "FAILED: " + "; ".join(v["problems"])
    return f"{where}: {status} [{v['tolerance']} tolerance; {figures}]"
