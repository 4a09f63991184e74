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
from contextlib import contextmanager
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
    from db.replay_rows import choose_rows, stored_rows

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
        rows = stored_rows(session, ids) if local else []
    with _progress(len(ids)) as advance:
        if local:
            verdicts = _replay_here(rows, settings, allow_other_weights, advance)
        else:
            verdicts = _replay_on_workers(ids, settings, allow_other_weights, timeout, advance)
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
    ids: list[int], settings: Any, allow: bool, timeout: float, advance: Callable[[int], None]
) -> list[dict[str, Any]]:
    """One verify task per ROWS_PER_TASK rows, sent by name to the workers' queue."""
    from celery import Celery
    from celery.exceptions import TimeoutError as CeleryTimeout

    from contract.tasks import VERIFY_TASK, celery_config

    app = Celery("explainq-results")
    app.conf.update(celery_config(settings))
    queue = settings.queue  # the queue of the workers that hold the model
    parts = [ids[i : i + ROWS_PER_TASK] for i in range(0, len(ids), ROWS_PER_TASK)]
    try:
        sent = [app.send_task(VERIFY_TASK, args=[part, allow], queue=queue) for part in parts]
        verdicts: list[dict[str, Any]] = []
        for part, result in zip(parts, sent, strict=True):
            try:
                answer = result.get(timeout=timeout)
            except CeleryTimeout:
                raise fail(
                    f"no worker on queue {queue!r} replayed rows {part[0]}.. within "
                    f"{timeout:g} s (is one running? --local replays here)"
                ) from None
            finally:
                result.forget()
            if answer["refused"]:
                raise fail(f"a worker refused: {answer['refused']}")
            verdicts += answer["verdicts"]
            advance(len(part))
    except (OSError, ConnectionError) as error:
        raise fail(f"cannot reach the broker at {settings.broker_url}: {error}") from None
    return verdicts


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
