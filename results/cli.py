"""results: read the explanations in the database (list, show, quality, similar, index,
top-tokens, export, batches, methods, migrate), seal batches and check that nothing
changed (seal, verify), and the models over time (models)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.text import Text

from contract.methods import METHODS, describe_params, split_methods
from results.output import echo_json

if TYPE_CHECKING:  # the verbs import the data layer themselves: `--help` stays instant
    from sqlalchemy.orm import Session

# Mirrors of the data layer's whitelists for the help texts (db.queries checks them).
ORDERS = ("id", "confidence", "-confidence", "label", "status")
STATUSES = ("pending", "running", "done", "failed")
MAX_LIMIT = 10_000

# Plain help: the rich layout shows a "<bool>" value after every flag, which takes none.
app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False, rich_markup_mode=None)
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
    from sqlalchemy.exc import SQLAlchemyError

    from contract.settings import settings_or_exit
    from db.errors import one_line
    from db.session import session_scope

    url = settings_or_exit().sqlalchemy_url
    try:
        with session_scope(url) as session:
            yield session
    except (ValueError, LookupError) as error:
        raise _fail(str(error)) from None
    except SQLAlchemyError as error:
        raise _fail(one_line(error)) from None


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
        raise _fail(f"cannot migrate {shown}: {str(error).splitlines()[0]}") from None
    _out().print(Text(f"database at the latest schema: {shown}"), soft_wrap=True)


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
            raise _fail(f"--where {pair!r}: expected FIELD=VALUE")
        filters[key.strip()] = value
    with _session() as session:
        rows, cursor = list_page(
            session, batch=batch, label=label, min_confidence=min_confidence,
            max_confidence=max_confidence, status=status, method=method, where=filters,
            errors=errors, order=order, limit=limit, after=after, offset=offset,
        )  # fmt: skip
    if as_json:
        echo_json([row.as_json() for row in rows])
    else:
        _out().print(render.results_table(rows))
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
    with _session() as session:
        document = queries.find_document(session, doc, batch)
        records = views.only(export.document_records(session, document), wanted)
        agreement = quality.document_agreement(session, document.id)
        internal_id = document.id
    shown = {record["method"] for record in records}
    agreement = {pair: rho for pair, rho in agreement.items() if set(pair) <= shown}
    if as_json:
        echo_json([views.for_json(record, agreement, words) for record in records])
        return
    render_methods.print_document(_out(), internal_id, records, agreement, words=words)


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

    with _session() as session:
        rows = queries.top_tokens(session, label=label, batch=batch, method=method,
                                  min_count=min_count, limit=limit, model=model)  # fmt: skip
    if as_json:
        echo_json(rows)
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
    from db import quality, queries
    from results import render_methods

    with _session() as session:
        queries.require_batch(session, batch)
        methods = quality.method_quality(session, batch=batch, model=model)
        pairs = quality.pair_agreement(session, batch=batch, model=model)
    if as_json:
        echo_json({"methods": methods, "agreement": pairs})
    else:
        _out().print(render_methods.quality_summary(methods, pairs))


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

    with _session() as session:
        queries.require_batch(session, within)
        document = queries.find_document(session, doc, batch)
        result = similar.nearest(
            session, document, limit=min(limit, MAX_LIMIT), model=model, batch=within
        )
    if as_json:
        echo_json(result)
        return
    _out().print(render_methods.similar_table(result))
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
    from db import vector_index

    with _session() as session:
        done = vector_index.build_models(session, model=model, lists=lists)
        pgvector = vector_index.pgvector_available(session)
    if as_json:
        echo_json({"models": done, "pgvector_available": pgvector})
        return
    out = _out()
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
    out = _out()
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
        _export_audit(batch, output, fmt, method)
        return
    if fmt not in ("jsonl", "csv"):
        raise _fail(f"unknown format {fmt!r}; use jsonl or csv")
    try:
        handle = output.open("w", encoding="utf-8", newline="") if output else sys.stdout
    except OSError as error:
        raise _fail(f"cannot write {output}: {error.strerror or error}") from None
    try:
        with _session() as session:
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


def _export_audit(batch: str | None, output: Path | None, fmt: str, method: str | None) -> None:
    from db.audit import audit_rows, find_seal
    from db.bundle import write_bundle
    from db.queries import require_batch

    if not batch or not output:
        raise _fail("--audit needs --batch BATCH and -o DIR")
    if method or fmt != "jsonl":
        raise _fail("--audit exports every row of the batch as JSON lines: no --method or --format")
    if output.exists() and not output.is_dir():
        raise _fail(f"--audit writes a directory: {output} is a file")
    try:
        with _session() as session:
            require_batch(session, batch)
            seal = find_seal(session, batch)
            if seal is None:
                raise _fail(f"batch {batch} is not sealed: `results seal {batch}` first")
            count = write_bundle(output, audit_rows(session, batch), seal.line)
    except OSError as error:
        raise _fail(f"cannot write {output}: {error.strerror or error}") from None
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

    from db.audit import seal_batch

    with _session() as session:
        seal = seal_batch(session, batch)
    if as_json:
        echo_json({**asdict(seal), "line": seal.line})
    else:
        typer.echo(seal.line)


@app.command("verify")
def verify_command(
    doc: str | None = typer.Argument(None, help="Replay a document (not built yet)."),
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
    as_json: bool = JSON_FLAG,
) -> None:
    """Check that nothing changed: with --integrity, every row's content against its
    digest, every sealed batch against its seal (rows changed, added or removed).

    Exit status 0 when everything matches, 1 with one line per problem."""
    from db.audit import verify_integrity

    if doc is not None or not integrity:
        raise _fail("replay (`results verify DOC`) is not built yet; `results verify "
                    "--integrity [--batch B]` checks the stored rows")  # fmt: skip
    with _session() as session:
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
    from db.audit import model_usage
    from results import render

    with _session() as session:
        rows = model_usage(session)
    if as_json:
        echo_json(rows)
    else:
        _out().print(render.models_table(rows))


@app.command("batches")
def batches_command(
    limit: int = typer.Option(20, help="How many, most recent first."), as_json: bool = JSON_FLAG
) -> None:
    """Recent batches with their documents counted per status, and rejected lines."""
    from db import queries
    from results import render

    with _session() as session:
        rows = queries.batch_summaries(session, limit)
    if as_json:
        echo_json(rows)
    else:
        _out().print(render.batches_table(rows))


def main() -> None:
    try:
        app()
    except BrokenPipeError:  # `results export | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
