"""``results``: query the explanations in the database."""

from __future__ import annotations

import csv
import json
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from sqlalchemy.engine import make_url

from db import queries, render
from db.engine import migrate, session_scope
from db.settings import get_settings

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)
out = Console()
err = Console(stderr=True)
CSV_JSON_COLUMNS = ("metadata", "params", "probabilities", "tokens", "attributions", "timings")


def _url() -> str:
    return get_settings().sqlalchemy_url


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/] {message}", highlight=False)
    return typer.Exit(1)


def _echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, ensure_ascii=False, default=str))


@app.command("migrate")
def migrate_command() -> None:
    """Bring the configured database to the latest schema (safe to run again)."""
    url = _url()
    migrate(url)
    err.print(
        f"database at the latest schema: {make_url(url).render_as_string(hide_password=True)}"
    )


@app.command("list")
def list_command(
    batch: str | None = typer.Option(None, help="Only this batch."),
    label: str | None = typer.Option(None, help="Only this predicted label."),
    min_confidence: float | None = typer.Option(None, help="Only at least this probability."),
    status: str | None = typer.Option(None, help="pending, running, done or failed."),
    method: str = typer.Option("lig", help="Attribution method."),
    order: str = typer.Option("id", help=f"One of: {', '.join(queries.ORDERS)}."),
    limit: int = typer.Option(50, help=f"At most {queries.MAX_LIMIT}."),
    offset: int = typer.Option(0),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List documents with their label, confidence and top tokens."""
    with session_scope(_url()) as session:
        try:
            rows = queries.list_documents(
                session,
                batch=batch,
                label=label,
                min_confidence=min_confidence,
                status=status,
                method=method,
                limit=limit,
                offset=offset,
                order=order,
            )
        except ValueError as error:
            raise _fail(str(error)) from None
    if as_json:
        _echo_json([row.as_json() for row in rows])
    else:
        out.print(render.results_table(rows))


@app.command("show")
def show_command(
    doc: str = typer.Argument(..., help="Document: internal id or your id."),
    batch: str | None = typer.Option(None, help="Batch, when your id is in several."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Show a document's tokens coloured by attribution, with its provenance."""
    with session_scope(_url()) as session:
        try:
            document = queries.find_document(session, doc, batch)
        except LookupError as error:
            raise _fail(str(error)) from None
        records = [
            r
            for r in queries.export_rows(session, batch=document.batch_id)
            if r["document_id"] == document.external_id
        ]
        if as_json:
            _echo_json(records)
            return
        if not document.explanations:
            out.print(
                f"document {document.external_id}: {document.status.value.lower()}"
                + (f" — {document.error}" if document.error else "")
            )
            return
        for explanation in document.explanations:
            out.print(
                render.heatmap(
                    explanation.tokens,
                    explanation.attributions,
                    explanation.label,
                    explanation.probabilities,
                    title=f"{document.external_id} · {explanation.method}",
                )
            )
            model = explanation.model
            out.print(
                render.details_table(
                    {
                        "batch": document.batch_id,
                        "model": f"{model.name} sha256 {model.sha256[:12]}… ({model.path})",
                        "params": json.dumps(explanation.params),
                        "steps": explanation.steps,
                        "convergence delta": f"{explanation.convergence_delta:.3g} "
                        f"(relative {explanation.relative_gap or 0:.2g})",
                        "truncated": explanation.truncated,
                        "device": explanation.device,
                        "worker": explanation.worker,
                        "created": explanation.created_at.isoformat(timespec="seconds"),
                    }
                )
            )


@app.command("top-tokens")
def top_tokens_command(
    label: str = typer.Option(..., help="The predicted label to explain."),
    batch: str | None = typer.Option(None, help="Only this batch (default: everything)."),
    method: str = typer.Option("lig"),
    min_count: int = typer.Option(2, help="Only words in at least this many documents."),
    limit: int = typer.Option(20),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The words that push documents toward LABEL most, across a batch or the database."""
    with session_scope(_url()) as session:
        rows = queries.top_tokens(
            session, label=label, batch=batch, method=method, min_count=min_count, limit=limit
        )
    if as_json:
        _echo_json(rows)
    else:
        out.print(render.top_tokens_table(rows, label))


@app.command("export")
def export_command(
    fmt: str = typer.Option("jsonl", "--format", help="jsonl or csv."),
    batch: str | None = typer.Option(None, help="Only this batch (default: everything)."),
    method: str | None = typer.Option(None, help="Only this method."),
    output: Path | None = typer.Option(None, "-o", "--output", help="File (default: stdout)."),
) -> None:
    """Export one record per explanation (and per failed document)."""
    if fmt not in ("jsonl", "csv"):
        raise _fail(f"unknown format {fmt!r}; use jsonl or csv")
    target = output.open("w", encoding="utf-8", newline="") if output else nullcontext(sys.stdout)
    count = 0
    with session_scope(_url()) as session, target as handle:
        writer = None
        for record in queries.export_rows(session, batch=batch, method=method):
            if fmt == "jsonl":
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            else:
                if writer is None:
                    writer = csv.DictWriter(handle, fieldnames=list(record))
                    writer.writeheader()
                writer.writerow(
                    {
                        k: json.dumps(v, ensure_ascii=False) if k in CSV_JSON_COLUMNS else v
                        for k, v in record.items()
                    }
                )
            count += 1
    if output:
        err.print(f"{count} records written to {output}")


@app.command("batches")
def batches_command(
    limit: int = typer.Option(20), as_json: bool = typer.Option(False, "--json")
) -> None:
    """Recent batches with their document counts."""
    with session_scope(_url()) as session:
        rows = queries.batch_summaries(session, limit)
    if as_json:
        _echo_json(rows)
        return
    out.print(render.batches_table(rows))


def main() -> None:
    app()
