"""The auditor's verbs: seal a batch, check that nothing changed since, the models over
time, and the audit bundle of ``results export --audit`` (docs/AUDIT.md)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.text import Text

from results.app import BATCH, JSON_FLAG, app, console, fail, reading
from results.output import echo_json


def export_audit(batch: str | None, output: Path | None, fmt: str, method: str | None) -> None:
    from db.audit import audit_rows
    from db.bundle import write_bundle
    from db.queries import require_batch
    from db.seals import find_seal

    if not batch or not output:
        raise fail("--audit needs --batch BATCH and -o DIR")
    if method or fmt != "jsonl":
        raise fail("--audit exports every row of the batch as JSON lines: no --method or --format")
    if output.exists() and not output.is_dir():
        raise fail(f"--audit writes a directory: {output} is a file")
    try:
        with reading() as session:
            require_batch(session, batch)
            seal = find_seal(session, batch)
            if seal is None:
                raise fail(f"batch {batch} is not sealed: `results seal {batch}` first")
            count = write_bundle(output, audit_rows(session, batch), seal.line)
    except OSError as error:
        raise fail(f"cannot write {output}: {error.strerror or error}") from None
    Console(stderr=True).print(
        Text(f"{count} rows, seal.txt and verify.py written to {output}; check them with "
             f"`python3 {output / 'verify.py'}`"),
        soft_wrap=True,
    )  # fmt: skip


@app.command("seal")
def seal_command(
    batch: str = typer.Argument(..., help="A finished batch."), as_json: bool = JSON_FLAG
) -> None:
    """Seal a finished BATCH and print its seal line: keep it outside the database.

    The seal is the Merkle root of the batch's rows' digests, their count and the time;
    sealing again prints the same line, or fails when the rows no longer give it.
    `producer wait` and `submit --wait` seal a batch when it finishes."""
    from dataclasses import asdict

    from db.seals import seal_batch

    with reading() as session:
        seal = seal_batch(session, batch)
    if as_json:
        echo_json({**asdict(seal), "line": seal.line})
    else:
        typer.echo(seal.line)


@app.command("verify")
def verify_command(
    doc: str | None = typer.Argument(
        None, help="Replay a document's explanations: your id, or the internal id."
    ),
    integrity: bool = typer.Option(
        False, "--integrity", help="Recompute every row's digest and every seal's root."
    ),
    batch: str | None = BATCH,
    seal: str | None = typer.Option(
        None,
        "--seal",
        help="A seal line kept outside the database, checked too "
        '("explainq-seal v1 batch=... rows=... root=... at=...").',
    ),
    sample: int | None = typer.Option(
        None, "--sample", min=1, help="Replay N rows of --batch drawn at random (default 10)."
    ),
    every: bool = typer.Option(False, "--all", help="Replay every row of --batch."),
    method: str | None = typer.Option(None, "--method", help="Only this method's rows."),
    local: bool = typer.Option(
        False, "--local", help="Replay here (needs torch), not on the workers."
    ),
    allow_other_weights: bool = typer.Option(
        False,
        "--allow-other-weights",
        help="Replay with weights other than the rows name, and report how far they move.",
    ),
    timeout: float = typer.Option(
        600, "--timeout", min=1, help="Seconds to wait for the workers, per task."
    ),
    as_json: bool = JSON_FLAG,
) -> None:
    """Replay explanations, or check that nothing changed.

    `verify DOC` or `verify --batch B [--sample N | --all]` recomputes each chosen row
    with the model (its weights hashed again first), method, parameters and settings it
    records, on the workers (or --local), and judges it within the method's tolerance
    (docs/AUDIT.md). With --integrity, every row's content against its digest and every
    sealed batch against its seal (rows changed, added or removed).

    Exit status 0 when everything matches, 1 when a row fails or something changed."""
    if not integrity:
        from results.replay_cli import replay_command

        if seal is not None:
            raise fail("--seal goes with --integrity")
        replay_command(doc=doc, batch=batch, sample=sample, every=every, method=method,
                       local=local, allow_other_weights=allow_other_weights, as_json=as_json,
                       timeout=timeout)  # fmt: skip
        return
    if doc is not None or sample is not None or every or method or local or allow_other_weights:
        raise fail("--integrity checks stored rows: no DOC, --sample, --all, --method, --local "
                   "or --allow-other-weights")  # fmt: skip
    from db.audit import verify_integrity

    with reading() as session:
        report = verify_integrity(session, batch=batch, line=seal)
    if as_json:
        echo_json(report.as_json())
    else:
        for problem in report.problems:
            typer.echo(problem.message)
        sealed = len(report.sealed_batches)
        summary = (
            f"{report.rows} rows checked, {sealed} sealed batch{'' if sealed == 1 else 'es'}: "
        )
        summary += "intact" if report.intact else f"{len(report.problems)} problems"
        Console(stderr=True).print(Text(summary), soft_wrap=True)
    if not report.intact:
        raise typer.Exit(1)


@app.command("models")
def models_command(as_json: bool = JSON_FLAG) -> None:
    """Every model that explained something, each version of a name's weights apart:
    weights hash, labels, first and last use, explanations made."""
    from db.model_usage import model_usage
    from results import render

    with reading() as session:
        rows = model_usage(session)
    if as_json:
        echo_json(rows)
    else:
        console().print(render.models_table(rows))
