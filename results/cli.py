"""results: read the explanations in the database (list, show, quality, similar,
top-tokens, export, methods)."""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

import typer
from rich.console import Console
from rich.text import Text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from db import quality, queries, render, render_methods, similar, views
from db.engine import migrate, session_scope
from db.params import TUNABLE
from db.settings import METHODS, settings_or_exit

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)
JSON_FLAG = typer.Option(False, "--json", help="Machine-readable JSON on stdout.")
BATCH = typer.Option(None, "--batch", help="Only this batch (default: every batch).")


def _out() -> Console:
    # Made per call: rich decides on colour when a Console is made, from the stdout of
    # that moment (which a test runner swaps).
    return Console()


def _fail(message: str) -> typer.Exit:
    first_line = (message.splitlines() or ["failed"])[0]
    Console(stderr=True).print(Text.assemble(("error: ", "red"), first_line), soft_wrap=True)
    return typer.Exit(1)


@contextmanager
def _session() -> Iterator[Session]:
    """A read session whose query errors become one line on stderr and exit status 1."""
    url = settings_or_exit().sqlalchemy_url
    try:
        with session_scope(url) as session:
            yield session
    except (ValueError, LookupError) as error:
        raise _fail(str(error)) from None
    except SQLAlchemyError as error:
        hint = " (is the database migrated? `results migrate`)"
        raise _fail(f"database: {str(error).splitlines()[0]}{hint}") from None


# Valid raw in JSON strings, but str.splitlines() and many JSONL readers break lines on
# them: escaped, one record stays one line. (Control characters json escapes itself.)
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def _echo_json(value: Any, stream: TextIO | None = None) -> None:
    print(json.dumps(value, ensure_ascii=False).translate(_LINE_BREAKS), file=stream or sys.stdout)


@app.command("migrate")
def migrate_command() -> None:
    """Bring the configured database to the latest schema (safe to run again)."""
    url = settings_or_exit().sqlalchemy_url
    shown = make_url(url).render_as_string(hide_password=True)
    try:
        migrate(url)
    except SQLAlchemyError as error:
        raise _fail(f"cannot migrate {shown}: {str(error).splitlines()[0]}") from None
    _out().print(Text(f"database at the latest schema: {shown}"), soft_wrap=True)


@app.command("list")
def list_command(
    batch: str | None = BATCH,
    label: str | None = typer.Option(None, help="Only this predicted label."),
    min_confidence: float | None = typer.Option(None, help="Only at least this probability."),
    status: str | None = typer.Option(None, help=f"One of: {', '.join(queries.STATUSES)}."),
    method: str | None = typer.Option(
        None, help="Attribution method (default: lig where a document has it, else its first)."
    ),
    order: str = typer.Option("id", help=f"One of: {', '.join(queries.ORDERS)}."),
    limit: int = typer.Option(50, help=f"At most {queries.MAX_LIMIT}."),
    offset: int = typer.Option(0, help="Skip this many first."),
    as_json: bool = JSON_FLAG,
) -> None:
    """List documents with their label, confidence and top tokens."""
    with _session() as session:
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
    if as_json:
        _echo_json([row.as_json() for row in rows])
    else:
        _out().print(render.results_table(rows))


@app.command("show")
def show_command(
    doc: str = typer.Argument(..., help="The document: your id, or the internal id (doc)."),
    batch: str | None = typer.Option(None, help="The batch, when your id is in several."),
    method: list[str] = typer.Option(
        [], help="Only these methods (repeatable or comma-separated; default: all)."
    ),
    words: bool = typer.Option(
        False, "--words", help="Side by side per word (wordpieces merged, scores summed)."
    ),
    as_json: bool = JSON_FLAG,
) -> None:
    """Show a document's words coloured by attribution, with the provenance.

    Several methods are shown side by side, with their faithfulness and how far they
    agree."""
    wanted = [m.strip() for text in method for m in text.split(",") if m.strip()]
    with _session() as session:
        document = queries.find_document(session, doc, batch)
        records = views.only(queries.document_records(session, document), wanted)
        agreement = quality.document_agreement(session, document.id)
        internal_id = document.id
    shown = {record["method"] for record in records}
    agreement = {pair: rho for pair, rho in agreement.items() if set(pair) <= shown}
    if as_json:
        _echo_json([views.for_json(record, agreement, words) for record in records])
        return
    out = _out()
    heading = f"document {internal_id} · your id {records[0]['document_id']}"
    if records[0]["tokens"] is None:
        record = records[0]
        error = f": {record['error']}" if record["error"] else ""
        out.print(Text(f"{heading} · {record['status']}{error}"), soft_wrap=True)
        return
    for group in views.by_model(records):
        first = group[0]
        title = f"{heading} · {', '.join(r['method'] for r in group)}"
        out.print(
            render.heatmap(
                first["tokens"], first["attributions"], first["label"],
                first["probabilities"], title=f"{title} (shading: {first['method']})",
            )
        )  # fmt: skip
        if len(group) > 1:
            columns = {r["method"]: r["attributions"] for r in group}
            out.print(render_methods.side_by_side(first["tokens"], columns, words=words))
        if len(group) > 1 or first["quality"]:
            out.print(render_methods.methods_table(group))
        if agreement:
            out.print(render_methods.agreement_table(agreement))
        out.print(render.details_table(views.provenance(first, several=len(group) > 1)))


@app.command("top-tokens")
def top_tokens_command(
    label: str = typer.Option(..., help="The predicted label to explain."),
    batch: str | None = BATCH,
    method: str = typer.Option("lig", help="Attribution method."),
    min_count: int = typer.Option(2, help="Only words in at least this many documents."),
    limit: int = typer.Option(20, help="How many words."),
    as_json: bool = JSON_FLAG,
) -> None:
    """The words that push documents toward LABEL most, over a batch or everything."""
    with _session() as session:
        rows = queries.top_tokens(
            session, label=label, batch=batch, method=method, min_count=min_count, limit=limit
        )
    if as_json:
        _echo_json(rows)
    else:
        _out().print(render.top_tokens_table(rows, label))


@app.command("quality")
def quality_command(
    batch: str | None = BATCH,
    model: str | None = typer.Option(
        None, help="Only this model: its directory's name, e.g. minilm-sentiment."
    ),
    as_json: bool = JSON_FLAG,
) -> None:
    """How faithful each method is, and how far methods agree, over a batch or everything.

    Per method: documents, mean and std of comprehensiveness, sufficiency and their
    random-ranking baselines, and the share of documents where it beats random."""
    with _session() as session:
        methods = quality.method_quality(session, batch=batch, model=model)
        pairs = quality.pair_agreement(session, batch=batch, model=model)
    if as_json:
        _echo_json({"methods": methods, "agreement": pairs})
    else:
        _out().print(render_methods.quality_summary(methods, pairs))


@app.command("similar")
def similar_command(
    doc: str = typer.Argument(..., help="The document: your id, or the internal id (doc)."),
    batch: str | None = typer.Option(None, help="The batch, when your id is in several."),
    model: str | None = typer.Option(None, help="The model's directory name, when several did."),
    within: str | None = typer.Option(None, help="Only neighbours from this batch."),
    limit: int = typer.Option(10, help=f"How many, at most {queries.MAX_LIMIT}."),
    as_json: bool = JSON_FLAG,
) -> None:
    """The documents the model considers most like DOC, with their labels.

    Cosine similarity of the pooled vectors stored per document and model."""
    with _session() as session:
        document = queries.find_document(session, doc, batch)
        result = similar.nearest(
            session, document, limit=min(limit, queries.MAX_LIMIT), model=model, batch=within
        )
    if as_json:
        _echo_json(result)
    else:
        _out().print(render_methods.similar_table(result))


@app.command("methods")
def methods_command(as_json: bool = JSON_FLAG) -> None:
    """The attribution methods and the parameters a batch can ask for.

    For producer submit --method and --param key=value."""
    listing = {
        "methods": list(METHODS),
        "params": {name: meaning for name, (_, meaning) in TUNABLE.items()},
    }
    if as_json:
        _echo_json(listing)
        return
    out = _out()
    out.print(Text(f"methods: {', '.join(METHODS)}"), soft_wrap=True)
    out.print(render.details_table({f"--param {k}=": v for k, v in listing["params"].items()}))


@app.command("export")
def export_command(
    fmt: str = typer.Option("jsonl", "--format", help="jsonl or csv."),
    batch: str | None = BATCH,
    method: str | None = typer.Option(None, help="Only this method."),
    output: Path | None = typer.Option(None, "-o", "--output", help="File (default: stdout)."),
) -> None:
    """Export one record per explanation, and one per failed document."""
    if fmt not in ("jsonl", "csv"):
        raise _fail(f"unknown format {fmt!r}; use jsonl or csv")
    handle = output.open("w", encoding="utf-8", newline="") if output else sys.stdout
    try:
        with _session() as session:
            records = queries.export_rows(session, batch=batch, method=method)
            count = _write_csv(records, handle) if fmt == "csv" else _write_jsonl(records, handle)
    except BaseException:
        if output:  # a partial export must not pass for a complete one
            handle.close()
            output.unlink(missing_ok=True)
        raise
    if output:
        handle.close()
        Console(stderr=True).print(Text(f"{count} records written to {output}"), soft_wrap=True)


def _write_jsonl(records: Iterator[dict[str, Any]], handle: TextIO) -> int:
    count = 0
    for record in records:
        _echo_json(record, handle)
        count += 1
    return count


def _write_csv(records: Iterator[dict[str, Any]], handle: TextIO) -> int:
    """CSV with the JSONL keys; lists and objects JSON-encoded in their cells."""
    writer = csv.DictWriter(handle, fieldnames=queries.EXPORT_FIELDS)
    writer.writeheader()
    count = 0
    for record in records:
        count += 1
        writer.writerow(
            {
                key: json.dumps(value, ensure_ascii=False)
                if isinstance(value, list | dict)
                else value
                for key, value in record.items()
            }
        )
    return count


@app.command("batches")
def batches_command(
    limit: int = typer.Option(20, help="How many, most recent first."), as_json: bool = JSON_FLAG
) -> None:
    """Recent batches with their documents counted per status, and rejected lines."""
    with _session() as session:
        rows = queries.batch_summaries(session, limit)
    if as_json:
        _echo_json(rows)
    else:
        _out().print(render.batches_table(rows))


def main() -> None:
    try:
        app()
    except BrokenPipeError:  # `results export | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
