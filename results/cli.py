"""results: read the explanations in the database (list, show, quality, similar, index,
top-tokens, export, batches, methods, migrate), seal batches and check that nothing
changed (seal, verify), the models over time (models), and browse or share them (serve,
report)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.text import Text

from contract.methods import METHODS, describe_params, split_methods
from results.app import BATCH, JSON_FLAG, MAX_LIMIT, ORDERS, STATUSES, app, console, fail, reading
from results.audit_cli import export_audit  # registers seal, verify, models too
from results.output import echo_json
from results.serve_cli import serve_command  # noqa: F401  (registers serve and report)


@app.command("migrate")
def migrate_command() -> None:
    """Bring the configured database to the latest schema (safe to run again)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from contract.settings import settings_or_exit
    from db.session import migrate

    url = settings_or_exit().sqlalchemy_url
    shown = make_url(url).render_as_string(hide_password=True)
    try:
        migrate(url)
    except SQLAlchemyError as error:
        raise fail(f"cannot migrate {shown}: {str(error).splitlines()[0]}") from None
    console().print(Text(f"database at the latest schema: {shown}"), soft_wrap=True)


@app.command("list")
def list_command(
    batch: str | None = BATCH,
    label: str | None = typer.Option(None, help="Only this predicted label."),
    min_confidence: float | None = typer.Option(None, help="Only at least this probability."),
    max_confidence: float | None = typer.Option(None, help="Only at most this probability."),
    status: str | None = typer.Option(None, help=f"One of: {', '.join(STATUSES)}."),
    method: str | None = typer.Option(
        None, help="Attribution method (default: the batch's lig, or its first method)."
    ),
    where: list[str] = typer.Option(
        [], help="Only documents whose metadata FIELD=VALUE (repeatable), e.g. gold=negative."
    ),
    errors: str | None = typer.Option(
        None, help="Only documents predicted otherwise than metadata FIELD (e.g. gold)."
    ),
    order: str = typer.Option("id", help=f"One of: {', '.join(ORDERS)}."),
    limit: int = typer.Option(50, help=f"At most {MAX_LIMIT}."),
    after: str | None = typer.Option(
        None, help="The next page: the cursor printed under the last one."
    ),
    offset: int = typer.Option(0, help="Skip this many first (slow on deep pages: --after)."),
    as_json: bool = JSON_FLAG,
) -> None:
    """List documents with their label, confidence and top tokens, a page at a time.

    When there are more, the command for the next page is printed on stderr (with
    --json too), with a cursor: every page costs the same, however deep."""
    from db.listing import list_page
    from results import render

    filters = {}
    for pair in where:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise fail(f"--where {pair!r}: expected FIELD=VALUE")
        filters[key.strip()] = value
    with reading() as session:
        rows, cursor = list_page(
            session, batch=batch, label=label, min_confidence=min_confidence,
            max_confidence=max_confidence, status=status, method=method, where=filters,
            errors=errors, order=order, limit=limit, after=after, offset=offset,
        )  # fmt: skip
    if as_json:
        echo_json([row.as_json() for row in rows])
    else:
        console().print(render.results_table(rows))
    if cursor:
        Console(stderr=True).print(Text(f"next page: --after {cursor}"), soft_wrap=True)


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
    from db import export, quality, queries
    from results import render_methods, views

    wanted = split_methods(method)
    with reading() as session:
        document = queries.find_document(session, doc, batch)
        records = views.only(export.document_records(session, document), wanted)
        agreement = quality.document_agreement(session, document.id)
        internal_id = document.id
    shown = {record["method"] for record in records}
    agreement = {pair: rho for pair, rho in agreement.items() if set(pair) <= shown}
    if as_json:
        echo_json([views.for_json(record, agreement, words) for record in records])
        return
    render_methods.print_document(console(), internal_id, records, agreement, words=words)


@app.command("top-tokens")
def top_tokens_command(
    label: str = typer.Option(..., help="The predicted label to explain."),
    batch: str | None = BATCH,
    method: str = typer.Option("lig", help="Attribution method."),
    model: str | None = typer.Option(None, help="Only this model (its directory's name)."),
    min_count: int = typer.Option(2, help="Only words in at least this many documents."),
    limit: int = typer.Option(20, help="How many words."),
    as_json: bool = JSON_FLAG,
) -> None:
    """The words that push documents toward LABEL most, over a batch or everything.

    Read from aggregates that the workers keep as they write: instant at any size."""
    from db import queries
    from results import render

    with reading() as session:
        rows = queries.top_tokens(session, label=label, batch=batch, method=method,
                                  min_count=min_count, limit=limit, model=model)  # fmt: skip
    if as_json:
        echo_json(rows)
    else:
        console().print(render.top_tokens_table(rows, label))


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
    from db import quality, queries
    from results import render_methods

    with reading() as session:
        queries.require_batch(session, batch)
        methods = quality.method_quality(session, batch=batch, model=model)
        pairs = quality.pair_agreement(session, batch=batch, model=model)
    if as_json:
        echo_json({"methods": methods, "agreement": pairs})
    else:
        console().print(render_methods.quality_summary(methods, pairs))


@app.command("similar")
def similar_command(
    doc: str = typer.Argument(..., help="The document: your id, or the internal id (doc)."),
    batch: str | None = typer.Option(None, help="The batch, when your id is in several."),
    model: str | None = typer.Option(None, help="The model's directory name, when several did."),
    within: str | None = typer.Option(None, help="Only neighbours from this batch."),
    limit: int = typer.Option(10, help=f"How many, at most {MAX_LIMIT}."),
    as_json: bool = JSON_FLAG,
) -> None:
    """The documents the model considers most like DOC, with their labels.

    Cosine similarity of the pooled vectors stored per document and model: every vector
    while the model has at most 10,000, else those of the nearest lists of its vector
    index (built on first use; `results index` rebuilds it)."""
    from db import queries, similar
    from results import render_methods

    with reading() as session:
        queries.require_batch(session, within)
        document = queries.find_document(session, doc, batch)
        result = similar.nearest(
            session, document, limit=min(limit, MAX_LIMIT), model=model, batch=within
        )
    if as_json:
        echo_json(result)
        return
    console().print(render_methods.similar_table(result))
    if result.get("index") == "ivf":
        note = f"vector index: the {result['probed']} nearest lists read, and unindexed vectors"
        Console(stderr=True).print(Text(note, style="dim"), soft_wrap=True)


@app.command("index")
def index_command(
    model: str | None = typer.Option(None, help="Only this model (its directory's name)."),
    lists: int | None = typer.Option(
        None, min=1, help="Lists (k-means centroids); default about the square root of the vectors."
    ),
    as_json: bool = JSON_FLAG,
) -> None:
    """(Re)build the vector index that `results similar` searches, per model.

    k-means centroids of the model's vectors, each vector filed under its nearest one, in
    the database; a query reads only the vectors of the lists nearest it. A model with at
    most 10,000 vectors is searched exactly and gets none. `similar` builds the index on
    first use and files new vectors itself; this does it ahead of time, or again."""
    from db import vector_fetch, vector_index

    with reading() as session:
        done = vector_index.build_models(session, model=model, lists=lists)
        pgvector = vector_fetch.pgvector_available(session)
    if as_json:
        echo_json({"models": done, "pgvector_available": pgvector})
        return
    out = console()
    for row in done:
        if row["lists"]:
            line = (
                f"{row['model']} (model {row['model_id']}): {row['vectors']:,} vectors in "
                f"{row['lists']:,} lists, {row['changed']:,} moved, {row['seconds']:.1f} s"
            )
        else:
            line = f"{row['model']} (model {row['model_id']}): {row['vectors']:,} vectors, exact"
        out.print(Text(line), soft_wrap=True)
    if not done:
        out.print(Text("no vectors yet"))


@app.command("methods")
def methods_command(as_json: bool = JSON_FLAG) -> None:
    """The attribution methods and the parameters a batch can ask for.

    For producer submit --method and --param key=value."""
    from results import render

    listing = {
        "methods": list(METHODS),
        "params": describe_params(),
    }
    if as_json:
        echo_json(listing)
        return
    out = console()
    out.print(Text(f"methods: {', '.join(METHODS)}"), soft_wrap=True)
    out.print(render.details_table({f"--param {k}=": v for k, v in listing["params"].items()}))


@app.command("export")
def export_command(
    fmt: str = typer.Option("jsonl", "--format", help="jsonl or csv."),
    batch: str | None = BATCH,
    method: str | None = typer.Option(None, help="Only this method."),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="File (default: stdout); with --audit, a directory."
    ),
    audit: bool = typer.Option(
        False,
        "--audit",
        help="An audit bundle of a sealed --batch in -o DIR: rows.jsonl, "
        "seal.txt and verify.py (standard library only).",
    ),
) -> None:
    """Export one record per explanation, and one per failed document.

    JSONL is byte-exact; CSV cells that a spreadsheet would run as a formula (starting
    with =, +, -, @, tab or carriage return) are prefixed with a quote (OWASP).

    With --audit: the sealed batch's rows with their digests, its seal line, and a
    verify.py that checks them against the seal line (docs/AUDIT.md)."""
    from db import export
    from results.output import write_csv, write_jsonl

    if audit:
        export_audit(batch, output, fmt, method)
        return
    if fmt not in ("jsonl", "csv"):
        raise fail(f"unknown format {fmt!r}; use jsonl or csv")
    try:
        handle = output.open("w", encoding="utf-8", newline="") if output else sys.stdout
    except OSError as error:
        raise fail(f"cannot write {output}: {error.strerror or error}") from None
    try:
        with reading() as session:
            records = export.export_rows(session, batch=batch, method=method)
            count = write_csv(records, handle) if fmt == "csv" else write_jsonl(records, handle)
    except BaseException:
        if output:  # a partial export must not pass for a complete one
            handle.close()
            output.unlink(missing_ok=True)
        raise
    if output:
        handle.close()
        Console(stderr=True).print(Text(f"{count} records written to {output}"), soft_wrap=True)


@app.command("batches")
def batches_command(
    limit: int = typer.Option(20, help="How many, most recent first."), as_json: bool = JSON_FLAG
) -> None:
    """Recent batches with their documents counted per status, and rejected lines."""
    from db import queries
    from results import render

    with reading() as session:
        rows = queries.batch_summaries(session, limit)
    if as_json:
        echo_json(rows)
    else:
        console().print(render.batches_table(rows))


def main() -> None:
    try:
        app()
    except BrokenPipeError:  # `results export | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
