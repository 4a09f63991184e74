"""The read side at corpus scale (issue 16): fill a database with synthetic explained
documents through the workers' own store functions, then time the reads the results CLI
and the web app make.

    .venv/bin/python bench/readside.py fill --url URL --documents N [--methods lig,saliency]
        [--batches 10] [--tokens 24] [--dim 384] [--seed 0] [--chunk 1000] [--fresh]
    .venv/bin/python bench/readside.py time --url URL [--repeat 7] [--json]
        [--only list,show] [--explain "list p1 id,export"] [--depth 1000]

URL is ``sqlite:////tmp/x.db`` or ``postgresql+psycopg://127.0.0.1:5432/DBNAME`` (the
database is created on the server's ``postgres`` database when it does not exist;
``--fresh`` drops it, or deletes the SQLite file, first).

**fill** migrates the database (``db.session.migrate``), registers a model
(``db.writes.register_model``) and writes the documents the way the producer and the
workers do: each batch registered as PENDING in one transaction
(``db.batches.create_batch``), then chunks of ``--chunk`` documents stored and marked DONE
in one transaction each (``db.writes.save_chunk``: explanations per method, a pooled
vector, agreements per pair of methods, and the aggregates). Texts are short sentences
from a Zipf-distributed synthetic vocabulary of about 20,000 words, tokenised BERT-like
([CLS], [SEP], ``##`` pieces, punctuation) with character offsets and word indices that
fit the text; attributions follow a per-word polarity toward the predicted label, so top
tokens mean something; vectors cluster around 50 centres, so neighbours do. On PostgreSQL
the fill ends with VACUUM ANALYZE (what autovacuum would have done by the time anyone
reads a corpus this size, and the planner's statistics: the shared server here runs with
autovacuum off; ``--no-vacuum`` skips it).

**time** runs each read in this process, each call in its own session and transaction
(``db.session.session_scope``), as a web request would, the per-batch reads on the
middle batch (by creation; ``list p1 id, last batch`` on the newest), ``show`` and
``similar`` on a different random document of it each call: once untimed ("first": cold
caches, the vector index built), then ``--repeat`` times, and prints the median and p95
in ms (p95 is the nearest rank: with 7 repeats, the slowest), the SQL statements per call
and the rows it returned; then the export of that batch (time to the first record,
rows/s, peak RSS) and the bytes per document and per explanation row the tables take
(measured first, before ``similar`` may build its index and rewrite every vector row).
``--explain NAME`` prints the query plan of each SELECT that read sends (EXPLAIN ANALYZE
on PostgreSQL, EXPLAIN QUERY PLAN on SQLite).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import event, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from bench.memory import PeakRSS
from contract.methods import SPECS, split_methods
from db.batches import NewDocument, create_batch
from db.models import Batch, Document, Explanation
from db.records import AgreementRecord, ChunkRecords, ExplanationRecord, RepresentationRecord
from db.session import get_engine, migrate, session_scope
from db.writes import register_model, save_chunk

console = Console(width=160)
app = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[0])

LABELS = ["negative", "positive"]
SOURCES = ["reviews", "forum", "support", "news"]
MODEL_NAME = "readside-synthetic"
VOCABULARY = 20_000
WHOLE_WORDS = 6_000  # the most frequent words are one token; rarer ones are cut in pieces
CENTRES = 50
LAYERS = 6  # attention's extra: one [CLS] row per layer, as MiniLM's
EXECUTION = {"max_tokens": 512, "window_stride": None, "quality": True}
LIG_DENSITY = {"center": 0.39, "width": 0.15, "uniform": 0.3}  # what lig rows record


# --- the synthetic corpus ---------------------------------------------------------------

ONSETS = ("", "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v",
          "w", "z", "br", "ch", "cl", "cr", "dr", "fl", "fr", "gl", "gr", "pl", "pr", "sc",
          "sh", "sl", "sp", "st", "str", "th", "tr", "wh")  # fmt: skip
NUCLEI = ("a", "e", "i", "o", "u", "ai", "ea", "ee", "io", "oo", "ou", "y")
# Roots that random syllables can spell and a demo or a screenshot should not show.
UNWANTED = ("shit", "fuck", "cunt", "dick", "cock", "piss", "slut", "whor", "nig", "fag",
            "rape", "twat", "tit", "bitch", "crap", "damn", "ass", "porn", "sex", "kill",
            "nazi")  # fmt: skip
CODAS = ("", "", "", "n", "r", "s", "t", "l", "m", "nd", "ng", "nt", "rd", "st", "ck", "ll")


@dataclass
class Vocabulary:
    words: list[str]  # by frequency rank
    pieces: list[list[tuple[str, int, int]]]  # per word: (token, start, end) in the word
    polarity: np.ndarray  # per word: how far it pushes toward "positive" (signed)
    probability: np.ndarray  # Zipf-Mandelbrot over the ranks

    @property
    def tokens_per_word(self) -> float:
        lengths = np.asarray([len(p) for p in self.pieces], dtype=np.float64)
        return float(lengths @ self.probability)


def vocabulary(rng: np.random.Generator, size: int = VOCABULARY) -> Vocabulary:
    """``size`` distinct pronounceable words, shorter ones more frequent (Zipf's law of
    abbreviation), with a Zipf-Mandelbrot frequency and a polarity: most words neutral,
    about one in twelve strongly for or against."""
    found: dict[str, None] = {}
    while len(found) < size:
        syllables = rng.choice([1, 2, 3, 4], p=[0.3, 0.42, 0.22, 0.06])
        word = "".join(
            ONSETS[rng.integers(len(ONSETS))] + NUCLEI[rng.integers(len(NUCLEI))]
            + CODAS[rng.integers(len(CODAS))]
            for _ in range(syllables)
        )  # fmt: skip
        if len(word) >= 2 and not any(root in word for root in UNWANTED):
            found.setdefault(word, None)
    words = sorted(found, key=lambda w: len(w) + rng.normal(0, 2.5))
    pieces = []
    for rank, word in enumerate(words):
        if rank < WHOLE_WORDS or len(word) <= 4:
            pieces.append([(word, 0, len(word))])
            continue
        cut = int(rng.integers(3, 6))
        parts = [(word[:cut], 0, cut)]
        while cut < len(word):
            end = min(len(word), cut + int(rng.integers(2, 5)))
            parts.append(("##" + word[cut:end], cut, end))
            cut = end
        pieces.append(parts)
    polarity = rng.normal(0.0, 0.08, size)
    strong = rng.random(size) < 0.08
    polarity[strong] = rng.choice([-1.0, 1.0], strong.sum()) * rng.uniform(0.4, 1.4, strong.sum())
    polarity[:150] *= 0.2  # the commonest words (the, of, and ...) say little
    ranks = np.arange(1, size + 1, dtype=np.float64)
    weights = 1.0 / (ranks + 2.7) ** 1.05
    return Vocabulary(words, pieces, polarity, weights / weights.sum())


@dataclass
class Drafts:
    """A batch's documents as word ranks and punctuation (0 none, 1 comma, 2 full stop),
    compressed row-wise: document ``i`` is ``words[starts[i]:starts[i + 1]]``."""

    words: np.ndarray
    punct: np.ndarray
    starts: np.ndarray
    gold: np.ndarray  # label index
    predicted: np.ndarray
    confidence: np.ndarray
    centre: np.ndarray

    def __len__(self) -> int:
        return len(self.starts) - 1

    def doc(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.starts[i], self.starts[i + 1]
        return self.words[a:b], self.punct[a:b]


def drafts(rng: np.random.Generator, vocab: Vocabulary, n: int, tokens: int) -> Drafts:
    mean_words = max(2.0, (tokens - 2) / (vocab.tokens_per_word + 0.12))
    lengths = np.clip(np.rint(mean_words * np.exp(rng.normal(-0.06, 0.35, n))), 2, 400)
    lengths = lengths.astype(np.int64)
    starts = np.concatenate(([0], np.cumsum(lengths)))
    total = int(starts[-1])
    words = rng.choice(len(vocab.words), total, p=vocab.probability).astype(np.int32)
    punct = (rng.random(total) < 0.07).astype(np.int8)
    punct[starts[1:] - 1] = np.where(rng.random(n) < 0.85, 2, 0)
    gold = rng.integers(0, 2, n)
    predicted = np.where(rng.random(n) < 0.82, gold, 1 - gold)
    confidence = 0.5 + 0.5 * rng.beta(3.0, 1.1, n)
    # half the centres hold positive predictions, half negative: neighbours share labels
    centre = rng.integers(0, CENTRES // 2, n) + predicted * (CENTRES // 2)
    return Drafts(words, punct, starts, gold, predicted, confidence, centre)


@dataclass
class Rendered:
    text: str
    tokens: list[str]
    offsets: list[int]
    words: list[int]
    ranks: np.ndarray  # per token: the vocabulary rank of its word, -1 special/punctuation
    share: np.ndarray  # per token: 1 / pieces of its word (so a word's scores sum to its own)


PUNCTUATION = ("", ",", ".")


def render(vocab: Vocabulary, ranks: np.ndarray, punct: np.ndarray) -> Rendered:
    """The text and its BERT-like tokens: lower-cased pieces, punctuation its own token
    within the word it is glued to, [CLS] and [SEP] at (0, 0) in no word (-1), as a fast
    tokenizer gives them."""
    parts: list[str] = []
    tokens, offsets, words = ["[CLS]"], [0, 0], [-1]
    token_ranks, share = [-1], [0.0]
    position = 0
    for index, (rank, mark) in enumerate(zip(ranks.tolist(), punct.tolist(), strict=True)):
        word = vocab.words[rank]
        written = word.capitalize() if index == 0 else word
        pieces = vocab.pieces[rank]
        for token, start, end in pieces:
            tokens.append(token)
            offsets += (position + start, position + end)
            words.append(index)
            token_ranks.append(rank)
            share.append(1.0 / len(pieces))
        if mark:
            written += PUNCTUATION[mark]
            tokens.append(PUNCTUATION[mark])
            offsets += (position + len(word), position + len(word) + 1)
            words.append(index)
            token_ranks.append(-1)
            share.append(0.0)
        parts.append(written)
        position += len(written) + 1
    tokens.append("[SEP]")
    offsets += (0, 0)
    words.append(-1)
    token_ranks.append(-1)
    share.append(0.0)
    return Rendered(" ".join(parts), tokens, offsets, words, np.asarray(token_ranks),
                    np.asarray(share))  # fmt: skip


def f32(values: np.ndarray) -> list[float]:
    """Python floats of float32 values, as the engine's ``tolist`` gives them."""
    return np.asarray(values, dtype=np.float32).tolist()


def scores(
    method: str, rng: np.random.Generator, doc: Rendered, vocab: Vocabulary, sign: float
) -> np.ndarray:
    """A method's attributions: the words' polarity toward the predicted label, spread
    over their pieces, with the method's own noise and shape."""
    known = doc.ranks >= 0
    signal = np.zeros(len(doc.tokens))
    signal[known] = sign * vocab.polarity[doc.ranks[known]] * doc.share[known]
    noise = rng.normal(0.0, 0.06, len(signal))
    if method == "saliency":  # L1 of the gradient: non-negative
        return np.abs(signal) * 0.3 + np.abs(noise) * 0.2
    if method == "attention":  # rollout weights: non-negative, summing to 1
        raw = np.abs(signal) + np.abs(noise) + 0.01
        return raw / raw.sum()
    scale = {"lig": 1.0, "input_x_gradient": 0.2, "occlusion": 0.5}.get(method, 0.3)
    return scale * signal + noise * (0.5 if method == "lig" else 1.0)


def explanation_records(
    rng: np.random.Generator,
    vocab: Vocabulary,
    drafts_: Drafts,
    i: int,
    doc_id: int,
    doc: Rendered,
    methods: list[str],
    context: dict[str, Any],
) -> list[ExplanationRecord]:
    predicted = int(drafts_.predicted[i])
    confidence = float(np.float32(drafts_.confidence[i]))
    probabilities = f32(np.asarray([1 - confidence, confidence][:: 1 if predicted else -1]))
    sign = 1.0 if predicted else -1.0
    n = len(doc.tokens)
    timings: dict[str, float] = {"predict": float(rng.uniform(0.002, 0.02)),
                                 "tokenize": float(rng.uniform(1e-4, 5e-4))}  # fmt: skip
    per_method: dict[str, dict[str, Any]] = {}
    for method in methods:
        values = scores(method, rng, doc, vocab, sign)
        seconds = float(rng.uniform(0.002, 0.2))
        timings[method] = seconds
        row: dict[str, Any] = {"attributions": f32(values), "seconds": seconds,
                               "params": context["params"][method]}  # fmt: skip
        if method == "lig":
            steps = int(rng.choice([9, 19, 39], p=[0.62, 0.3, 0.08]))
            timings["lig_nodes"] = steps
            gap = float(rng.uniform(0.0, 0.01))
            difference = float(rng.normal(3.0, 1.0))
            row.update(steps=steps, relative_gap=gap, convergence_delta=gap * difference)
        if method == "attention":
            rows = np.abs(rng.normal(0, 1, (LAYERS, n))) + 0.01
            row["extra"] = {"cls_attention": (rows / rows.sum(1, keepdims=True)).astype(
                np.float32).tolist()}  # fmt: skip
        comp = float(rng.normal(0.3, 0.15))
        row["quality"] = {
            "comprehensiveness": comp,
            "sufficiency": float(rng.normal(0.1, 0.1)),
            "random_comprehensiveness": float(rng.normal(0.15, 0.1)),
            "random_sufficiency": float(rng.normal(0.2, 0.1)),
        }
        per_method[method] = row
    timings["quality"] = float(rng.uniform(0.01, 0.1))
    return [
        ExplanationRecord(
            document_id=doc_id,
            model_id=context["model_id"],
            method=method,
            params=row["params"],
            label=LABELS[predicted],
            confidence=confidence,
            probabilities=dict(zip(LABELS, probabilities, strict=True)),
            tokens=doc.tokens,
            attributions=row["attributions"],
            worker=context["worker"],
            device="cpu",
            convergence_delta=row.get("convergence_delta"),
            relative_gap=row.get("relative_gap"),
            steps=row.get("steps"),
            timings={**timings, "seconds": row["seconds"]},
            quality=row["quality"],
            extra=row.get("extra"),
            batch_id=context["batch_id"],
            offsets=doc.offsets,
            words=doc.words,
            execution=EXECUTION,
        )
        for method, row in per_method.items()
    ]


# --- fill -------------------------------------------------------------------------------


def ensure_database(url: str, fresh: bool) -> None:
    """Creates the PostgreSQL database (``--fresh``: drops it first), or deletes the
    SQLite file (``--fresh``)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if fresh and parsed.database and parsed.database != ":memory:":
            for suffix in ("", "-wal", "-shm"):
                Path(parsed.database + suffix).unlink(missing_ok=True)
        return
    import psycopg
    from psycopg import sql

    name = parsed.database
    admin = parsed.set(drivername="postgresql", database="postgres")
    conninfo = admin.render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as connection:
        if fresh:
            statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            connection.execute(statement.format(sql.Identifier(name)))
        exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        if exists.fetchone() is None:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def method_params(methods: list[str]) -> dict[str, dict[str, Any]]:
    """What each method's rows record, as the specs resolve their defaults (lig's node
    density added, as the worker adds it)."""
    params = {m: SPECS[m].resolve({}) for m in methods}
    if "lig" in params:
        params["lig"] = {**params["lig"], "node_density": LIG_DENSITY}
    return params


def split_sizes(total: int, parts: int) -> list[int]:
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


@app.command("fill")
def fill_command(
    url: str = typer.Option(
        ..., help="Database URL (sqlite:////tmp/x.db, postgresql+psycopg://...)."
    ),
    documents: int = typer.Option(..., help="Documents to write."),
    methods: str = typer.Option("lig", help="Methods per document, comma-separated."),
    batches: int = typer.Option(10, help="Batches sharing the corpus."),
    tokens: int = typer.Option(24, help="Mean tokens per document ([CLS] and [SEP] included)."),
    dim: int = typer.Option(384, help="Dimension of the pooled vectors."),
    seed: int = typer.Option(0, help="Random seed."),
    chunk: int = typer.Option(1000, help="Documents per save_chunk transaction."),
    fresh: bool = typer.Option(False, help="Drop the database (delete the file) first."),
    vacuum: bool = typer.Option(True, help="PostgreSQL: VACUUM ANALYZE at the end."),
) -> None:
    """Write DOCUMENTS synthetic explained documents through the workers' store functions."""
    chosen = split_methods([methods])
    unknown = [m for m in chosen if m not in SPECS]
    if unknown:
        raise typer.BadParameter(f"unknown methods {unknown}; known: {', '.join(SPECS)}")
    started = time.perf_counter()
    ensure_database(url, fresh)
    migrate(url)
    migrated = time.perf_counter() - started
    rng = np.random.default_rng(seed)
    vocab = vocabulary(rng)
    centres = rng.normal(0.0, 1.0, (CENTRES, dim))
    params = method_params(chosen)
    with session_scope(url) as session:
        model_id = register_model(
            session, name=MODEL_NAME, path=f"/synthetic/{MODEL_NAME}",
            sha256=hashlib.sha256(f"{MODEL_NAME}:{dim}".encode()).hexdigest(), labels=LABELS,
            info={"model_type": "bert", "layers": LAYERS, "hidden": dim, "synthetic": True},
        )  # fmt: skip
        first = session.scalar(select(func.count()).select_from(Document)) or 0
    console.print(
        f"fill {url}: {documents:,} documents in {min(batches, documents)} batches, methods "
        f"{','.join(chosen)}, ~{tokens} tokens, vectors of {dim}, {chunk} per chunk "
        f"(migrate {migrated:.1f} s; {first:,} documents already there)"
    )
    clock = {"generate": 0.0, "register": 0.0, "save": 0.0}
    written, last_report = 0, time.perf_counter()
    fill_started = time.perf_counter()
    for number, size in enumerate(split_sizes(documents, batches)):
        t = time.perf_counter()
        batch_rng = np.random.default_rng([seed, number, first])
        plan = drafts(batch_rng, vocab, size, tokens)
        texts = [render(vocab, *plan.doc(i)).text for i in range(size)]
        new = [
            NewDocument(
                external_id=f"syn-{seed}-{first + written + i:09d}",
                line=i + 1,
                text=texts[i],
                meta={
                    "gold": LABELS[int(plan.gold[i])],
                    "source": SOURCES[i % len(SOURCES)],
                    "length": int(plan.starts[i + 1] - plan.starts[i]),
                },
            )
            for i in range(size)
        ]
        clock["generate"] += time.perf_counter() - t
        t = time.perf_counter()
        with session_scope(url) as session:
            batch_id, lengths = create_batch(
                session, source=f"synthetic/zipf-seed{seed}-{number}.jsonl", model=MODEL_NAME,
                methods=chosen, params={"n_steps": "auto"}, documents=new, rejections=[],
            )  # fmt: skip
        clock["register"] += time.perf_counter() - t
        ids = [doc_id for doc_id, _ in lengths]
        del new
        context = {"model_id": model_id, "batch_id": batch_id, "params": params,
                   "worker": f"readside-bench pid {os.getpid()}"}  # fmt: skip
        for start in range(0, size, chunk):
            t = time.perf_counter()
            records = ChunkRecords()
            for i in range(start, min(size, start + chunk)):
                doc_id = ids[i]
                doc = render(vocab, *plan.doc(i))
                records.explanations += explanation_records(
                    batch_rng, vocab, plan, i, doc_id, doc, chosen, context
                )
                vector = centres[plan.centre[i]] + batch_rng.normal(0.0, 0.6, dim)
                records.representations.append(RepresentationRecord(doc_id, model_id, f32(vector)))
                for a, b in itertools.combinations(sorted(chosen), 2):
                    rho = float(np.clip(batch_rng.normal(0.35, 0.25), -1, 1))
                    records.agreements.append(AgreementRecord(doc_id, model_id, (a, b), rho))
                records.done.append(doc_id)
                records.texts[doc_id] = doc.text
            clock["generate"] += time.perf_counter() - t
            t = time.perf_counter()
            with session_scope(url) as session:
                save_chunk(session, records, task_id=None)
            clock["save"] += time.perf_counter() - t
            written += len(records.done)
            now = time.perf_counter()
            if now - last_report >= 5 or written == documents:
                elapsed = now - fill_started
                console.print(
                    f"  {written:>10,} / {documents:,}  {written / elapsed:8.1f} docs/s  "
                    f"(batch {number + 1}; generate {clock['generate']:.0f} s, register "
                    f"{clock['register']:.0f} s, save_chunk {clock['save']:.0f} s)"
                )
                last_report = now
    total = time.perf_counter() - fill_started
    vacuumed = 0.0
    if vacuum and make_url(url).get_backend_name() == "postgresql":
        t = time.perf_counter()
        with get_engine(url).connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                "VACUUM ANALYZE"
            )
        vacuumed = time.perf_counter() - t
    database = clock["register"] + clock["save"]
    summary = {
        "url": make_url(url).render_as_string(hide_password=True),
        "documents": written, "methods": chosen, "batches": min(batches, documents),
        "chunk": chunk, "seconds": round(total, 2), "docs_per_s": round(written / total, 1),
        "generate_s": round(clock["generate"], 2), "register_s": round(clock["register"], 2),
        "save_chunk_s": round(clock["save"], 2),
        "database_docs_per_s": round(written / database, 1) if database else None,
        "vacuum_analyze_s": round(vacuumed, 2),
    }  # fmt: skip
    console.print(
        f"filled {written:,} documents in {total:.1f} s ({written / total:.1f} docs/s; in the "
        f"database: register {clock['register']:.1f} s + save_chunk {clock['save']:.1f} s = "
        f"{summary['database_docs_per_s']} docs/s; synthetic generation {clock['generate']:.1f}"
        f" s)" + (f"; VACUUM ANALYZE {vacuumed:.1f} s" if vacuumed else "")
    )
    print(json.dumps({"fill": summary}))


# --- time -------------------------------------------------------------------------------


class Statements:
    """Counts (and, when asked, keeps) the SQL statements an engine sends."""

    def __init__(self, url: str) -> None:
        self.on = False
        self.keep = False
        self.count = 0
        self.kept: list[tuple[str, Any]] = []
        event.listen(get_engine(url), "before_cursor_execute", self._seen)

    def _seen(self, _conn, _cursor, statement, parameters, _context, executemany) -> None:
        if not self.on:
            return
        self.count += 1
        if self.keep and not executemany:
            self.kept.append((statement, parameters))

    @contextmanager
    def watching(self, keep: bool = False) -> Iterator[None]:
        self.on, self.keep, self.count, self.kept = True, keep, 0, []
        try:
            yield
        finally:
            self.on = self.keep = False


@dataclass
class Timed:
    name: str
    first_ms: float
    times_ms: list[float]
    statements: int
    rows: int
    note: str = ""

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms) if self.times_ms else math.nan

    @property
    def p95_ms(self) -> float:
        if not self.times_ms:
            return math.nan
        ordered = sorted(self.times_ms)
        return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]

    def as_json(self) -> dict[str, Any]:
        return {"first_ms": round(self.first_ms, 2), "median_ms": round(self.median_ms, 2),
                "p95_ms": round(self.p95_ms, 2), "repeat": len(self.times_ms),
                "statements": self.statements, "rows": self.rows,
                **({"note": self.note} if self.note else {})}  # fmt: skip


@dataclass
class Read:
    """A read as a request makes it: ``call(session, i)`` for the i-th call (-1: the
    untimed first) returns how many rows it gave."""

    name: str
    call: Callable[[Session, int], int]
    note: str = ""
    describe: Callable[[], str] | None = None  # the note, once the read has run
    prepare: Callable[[], None] | None = None  # untimed, once, before the first call
    prepared: bool = False
    repeat: int | None = None  # timed calls, where not --repeat (the slow baselines)

    def ready(self) -> None:
        if self.prepare and not self.prepared:
            self.prepare()
        self.prepared = True


@dataclass
class Corpus:
    backend: str
    documents: int
    explanations: int
    representations: int
    methods: list[str]
    batches: list[str]
    batch: str  # the batch the per-batch reads use
    batch_documents: int
    method: str
    picks: list[str] = field(default_factory=list)  # external ids of documents to show


def survey(url: str, repeat: int, seed: int) -> Corpus:
    from sqlalchemy.exc import DBAPIError

    with session_scope(url) as session:
        backend = session.get_bind().dialect.name
        try:
            count = session.scalar(select(func.count()).select_from(Document)) or 0
        except DBAPIError as error:
            message = str(error.orig).splitlines()[0]
            raise typer.BadParameter(f"{url}: {message} (run `fill` first)") from None
        if not count:
            raise typer.BadParameter(f"{url} has no documents: run `fill` first")
        explanations = session.scalar(select(func.count()).select_from(Explanation)) or 0
        vectors = session.scalar(text("SELECT count(*) FROM representations")) or 0
        rows = session.execute(
            select(Batch.id, Batch.methods, Batch.submitted).order_by(Batch.created_at, Batch.id)
        ).all()
        batch, methods, size = rows[len(rows) // 2]
        low, high = session.execute(
            select(func.min(Document.id), func.max(Document.id)).where(Document.batch_id == batch)
        ).one()
        rng = np.random.default_rng(seed)
        picks = []
        for wanted in rng.integers(low, high + 1, repeat + 3).tolist():
            picks.append(session.scalar(
                select(Document.external_id).where(Document.batch_id == batch,
                                                   Document.id >= wanted)
                .order_by(Document.id).limit(1)
            ))  # fmt: skip
    all_methods = sorted({m for _, ms, _ in rows for m in ms})
    method = "lig" if "lig" in methods else methods[0]
    return Corpus(backend, count, explanations, vectors, all_methods, [r[0] for r in rows],
                  batch, size, method, picks)  # fmt: skip


def walk(url: str, batch: str, order: str, depth: int, limit: int) -> tuple[str | None, int]:
    """The cursor of page ``depth`` of the batch (or of its last page, when it has fewer),
    and that page's number: walked once, untimed."""
    from db.listing import list_page

    cursor, page = None, 1
    with session_scope(url) as session:
        while page < depth:
            _, following = list_page(session, batch=batch, order=order, limit=limit, after=cursor)
            if following is None:
                break
            cursor, page = following, page + 1
    return cursor, page


def reads(url: str, corpus: Corpus, depth: int, limit: int) -> list[Read]:
    from sqlalchemy import select
    from sqlalchemy.orm import aliased

    from db import export, quality, queries, similar
    from db.listing import list_page
    from db.models import Document, Explanation
    from db.words import merge_wordpieces
    from results import views

    b, picks = corpus.batch, corpus.picks

    def listing(**kwargs: Any) -> Callable[[Session, int], int]:
        return lambda s, _i: len(list_page(s, limit=limit, **kwargs)[0])

    def deep(order: str) -> Read:
        """The page after ``depth`` pages of the batch: the cursor found by ``prepare``."""
        found: dict[str, Any] = {}

        def prepare() -> None:
            found["cursor"], found["page"] = walk(url, b, order, depth, limit)

        def call(s: Session, _i: int) -> int:
            return len(list_page(s, batch=b, order=order, limit=limit, after=found["cursor"])[0])

        def note() -> str:
            return f"page {found['page'] + 1 if found['cursor'] else 1}"

        return Read(f"list deep {order}", call, prepare=prepare, describe=note)

    def show(words: bool) -> Callable[[Session, int], int]:
        def call(s: Session, i: int) -> int:
            document = queries.find_document(s, picks[i + 1])
            records = views.only(export.document_records(s, document), [])
            agreement = quality.document_agreement(s, document.id)
            if words:
                records = [views.for_json(r, agreement, True) for r in records]
            return len(records)

        return call

    def nearest(within: str | None, seen: dict[str, Any]) -> Callable[[Session, int], int]:
        def call(s: Session, i: int) -> int:
            lists = text("SELECT count(*) FROM vector_lists")
            before = s.scalar(lists) if i < 0 else None
            document = queries.find_document(s, picks[i + 1])
            result = similar.nearest(s, document, limit=10, batch=within)
            if i < 0:  # what the first call did, and how every call searched
                seen["built"] = not before and bool(s.scalar(lists))
            seen.setdefault("index", set()).add(
                f"{result['index']}" + (f", {result['probed']} lists" if "probed" in result else "")
            )
            return len(result["neighbours"])

        return call

    def described(seen: dict[str, Any]) -> Callable[[], str]:
        def note() -> str:
            built = "index built by the first call; " if seen.get("built") else ""
            return built + "search: " + " / ".join(sorted(seen.get("index", ())))

        return note

    def summary(batch: str | None) -> Callable[[Session, int], int]:
        def call(s: Session, _i: int) -> int:
            queries.require_batch(s, batch)
            return len(quality.method_quality(s, batch=batch)) + len(
                quality.pair_agreement(s, batch=batch)
            )

        return call

    def offset_page(batch: str) -> Callable[[Session, int], int]:
        def call(s: Session, _i: int) -> int:
            e = aliased(Explanation)
            query = (select(Document, e).join(e, e.document_id == Document.id)
                     .where(Document.batch_id == batch, e.method == corpus.method)
                     .order_by(e.confidence.desc(), Document.id)
                     .offset(depth * limit).limit(limit))  # fmt: skip
            return len(s.execute(query).all())

        return call

    def scan_top(batch: str) -> Callable[[Session, int], int]:
        def call(s: Session, _i: int) -> int:
            query = select(Explanation.tokens, Explanation.attributions).where(
                Explanation.batch_id == batch, Explanation.method == corpus.method,
                Explanation.label == "positive")  # fmt: skip
            totals: dict[str, float] = {}
            for tokens, scores in s.execute(query.execution_options(yield_per=500)):
                for word, score in merge_wordpieces(tokens, scores):
                    totals[word.lower()] = totals.get(word.lower(), 0.0) + score
            return len(totals)

        return call

    def scan_quality(batch: str) -> Callable[[Session, int], int]:
        def call(s: Session, _i: int) -> int:
            # quality is packed (db.compact) since 0007: read and summed here
            query = select(Explanation.method, Explanation.quality).where(
                Explanation.batch_id == batch
            )
            sums: dict[str, list[float]] = {}
            for method, figures in s.execute(query.execution_options(yield_per=2000)):
                comp = (figures or {}).get("comprehensiveness")
                if comp is not None:
                    n, total, squares = sums.get(method, (0, 0.0, 0.0))
                    sums[method] = [n + 1, total + comp, squares + comp * comp]
            return len(sums)

        return call

    def top(batch: str | None) -> Callable[[Session, int], int]:
        return lambda s, _i: len(
            queries.top_tokens(s, label="positive", method=corpus.method, batch=batch)
        )

    everywhere: dict[str, Any] = {}
    within: dict[str, Any] = {}
    out = [
        Read("list p1 -confidence", listing(batch=b, order="-confidence")),
        Read("list p1 id", listing(batch=b, order="id")),
        Read(
            "list p1 id, last batch",
            listing(batch=corpus.batches[-1], order="id"),
            note="the newest batch: the highest ids",
        ),
    ]
    for order in ("-confidence", "id"):
        out.append(deep(order))
    out += [
        Read("list p1 label=positive -confidence",
             listing(batch=b, order="-confidence", label="positive")),
        Read("list p1 errors=gold id", listing(batch=b, order="id", errors="gold")),
        Read("list p1 all batches id", listing(order="id")),
        Read("list p1 all batches -confidence", listing(order="-confidence")),
        Read("show", show(False)),
        Read("show --words", show(True)),
        Read("similar", nearest(None, everywhere), describe=described(everywhere)),
        Read("similar --within batch", nearest(b, within), describe=described(within)),
        Read("top-tokens all", top(None)),
        Read("top-tokens batch", top(b)),
        Read("quality all", summary(None)),
        Read("quality batch", summary(b)),
        # The same answers the way the previous release read them, in the same run:
        Read("baseline: list p1 -confidence by OFFSET, deep", offset_page(b), repeat=2,
             note=f"OFFSET {depth * limit}: what --after replaces"),
        Read("baseline: top-tokens batch by scanning its rows", scan_top(b), repeat=2,
             note="every explanation of the batch read and merged"),
        Read("baseline: quality batch by scanning its rows", scan_quality(b), repeat=2,
             note="an aggregate over the batch's JSON quality"),
    ]  # fmt: skip
    return out


def run_read(url: str, read: Read, repeat: int, statements: Statements) -> Timed:
    read.ready()

    def once(i: int) -> tuple[float, int]:
        t = time.perf_counter()
        with session_scope(url) as session:
            rows = read.call(session, i)
        return (time.perf_counter() - t) * 1000, rows

    with statements.watching():
        first, rows = once(-1)
    counted = statements.count
    times = [once(i)[0] for i in range(read.repeat or repeat)]
    note = read.describe() if read.describe else read.note
    return Timed(read.name, first, times, counted, rows, note)


def explain(url: str, read: Read, statements: Statements) -> None:
    """Prints the plan of each SELECT the read sends."""
    read.ready()
    with statements.watching(keep=True), session_scope(url) as session:
        read.call(session, 0)
    kept = statements.kept
    engine = get_engine(url)
    console.rule(f"plans: {read.name} ({len(kept)} statements)")
    with engine.connect() as connection:
        for statement, parameters in kept:
            head = statement.lstrip().split(None, 1)[0].upper()
            if head not in ("SELECT", "WITH"):
                continue
            print(statement.strip(), "\n-- parameters:", parameters, "\n")
            if engine.dialect.name == "postgresql":
                prefix = "EXPLAIN (ANALYZE, BUFFERS) "
            else:
                prefix = "EXPLAIN QUERY PLAN "
            result = connection.exec_driver_sql(prefix + statement, parameters)
            for row in result:
                print("   ", " | ".join(str(x) for x in row))
            print()
        connection.rollback()


def export_read(batch: str) -> Read:
    from db.export import export_rows

    return Read("export", lambda s, _i: sum(1 for _ in export_rows(s, batch=batch)))


def time_export(url: str, batch: str, export_repeat: int) -> dict[str, Any]:
    """One batch exported as ``results export`` reads it: time to the first record, rows
    per second over the whole batch, and the peak RSS above the start (the kernel's
    high-water mark, reset first) and ``ru_maxrss`` after it (the same high-water mark:
    on Linux, the peak of the export, where the reset worked)."""
    from db.export import export_rows

    runs = []
    for _ in range(max(1, export_repeat)):
        with PeakRSS() as peak:
            t = time.perf_counter()
            first_ms, rows, size = math.nan, 0, 0
            with session_scope(url) as session:
                for record in export_rows(session, batch=batch):
                    if not rows:
                        first_ms = (time.perf_counter() - t) * 1000
                    rows += 1
                    size += len(record["tokens"] or ())
            seconds = time.perf_counter() - t
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        runs.append({"first_record_ms": round(first_ms, 2), "rows": rows,
                     "seconds": round(seconds, 3), "rows_per_s": round(rows / seconds, 1),
                     "peak_rss_above_start_mb": round(peak.mb, 1),
                     "rss_at_start_mb": round(peak.start_mb, 1),
                     "ru_maxrss_mb": round(after / 1024, 1)})  # fmt: skip
    best = min(runs, key=lambda r: r["seconds"])
    return {**best, "runs": len(runs)}


TABLES = ("documents", "explanations", "run_settings", "representations", "agreements",
          "token_stats", "quality_stats", "agreement_stats", "vector_lists")  # fmt: skip


def storage(url: str, corpus: Corpus) -> dict[str, Any]:
    """Bytes per table (its indexes and TOAST included), per document and, for the
    explanations, per row."""
    tables: dict[str, int] = {}
    how = ""
    with session_scope(url) as session:
        if corpus.backend == "postgresql":
            how = "pg_total_relation_size"
            rows = session.execute(text(
                "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = current_schema() AND c.relkind = 'r'"
            ))  # fmt: skip
            tables = {name: int(size) for name, size in rows}
        else:
            try:
                owner = dict(session.execute(text(
                    "SELECT name, tbl_name FROM sqlite_master WHERE type IN ('table', 'index')"
                )).all())  # fmt: skip
                for name, size in session.execute(
                    text("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name")
                ):
                    table = owner.get(name, name)
                    tables[table] = tables.get(table, 0) + int(size)
                how = "dbstat"
            except Exception:  # no dbstat in this SQLite build
                path = Path(make_url(url).database or "")
                files = [path, path.with_name(path.name + "-wal")]
                tables = {"(file)": sum(p.stat().st_size for p in files if p.exists())}
                how = "file size"
    total = sum(tables.values())
    shown = {name: size for name, size in tables.items() if name in TABLES}
    if rest := total - sum(shown.values()):
        shown["(other)"] = rest
    per_doc = {name: round(shown[name] / corpus.documents, 1)
               for name in [*TABLES, "(file)", "(other)"] if name in shown}  # fmt: skip
    explanations = tables.get("explanations", 0)
    return {
        "method": how,
        "total_mb": round(total / 2**20, 2),
        "bytes_per_document": round(total / corpus.documents, 1),
        "bytes_per_explanation_row": round(explanations / max(1, corpus.explanations), 1),
        "per_document_by_table": per_doc,
    }


@app.command("time")
def time_command(
    url: str = typer.Option(..., help="Database URL, filled by `fill`."),
    repeat: int = typer.Option(7, help="Timed calls per read (after one untimed first call)."),
    depth: int = typer.Option(1000, help="The deep page: walked to by cursor, untimed."),
    limit: int = typer.Option(50, help="Rows per page (results list's default)."),
    only: str | None = typer.Option(
        None, help="Only the reads whose name starts with one of these (comma-separated)."
    ),
    explain_reads: str | None = typer.Option(
        None, "--explain", help="Print the query plans of these reads (names, comma-separated)."
    ),
    export: bool = typer.Option(True, help="Time the export of one batch."),
    export_repeat: int = typer.Option(1, help="Exports of the batch (the fastest is kept)."),
    seed: int = typer.Option(0, help="Seed for the documents shown."),
    as_json: bool = typer.Option(False, "--json", help="Also print one JSON line."),
) -> None:
    """Time each read as the web app will call it: median and p95 ms, bytes per document."""
    corpus = survey(url, repeat, seed)
    console.print(
        f"{corpus.backend}: {corpus.documents:,} documents, {corpus.explanations:,} explanations "
        f"({', '.join(corpus.methods)}), {corpus.representations:,} vectors, "
        f"{len(corpus.batches)} batches; per-batch reads on {corpus.batch} "
        f"({corpus.batch_documents:,} documents)"
    )
    sizes = storage(url, corpus)  # as filled, before the reads write anything (the index)
    statements = Statements(url)
    prefixes = [p.strip() for p in (only or "").split(",") if p.strip()]
    timed = []
    every = [*reads(url, corpus, depth, limit), export_read(corpus.batch)]
    for read in every[:-1]:
        if prefixes and not any(read.name.startswith(p) for p in prefixes):
            continue
        timed.append(run_read(url, read, repeat, statements))
        row = timed[-1]
        console.print(
            f"  {row.name:<36} first {row.first_ms:9.1f} ms  median {row.median_ms:9.1f} ms  "
            f"p95 {row.p95_ms:9.1f} ms  ({row.statements} statements, {row.rows} rows)"
            + (f"  [{row.note}]" if row.note else "")
        )
    wanted = [p.strip() for p in (explain_reads or "").split(",") if p.strip()]
    if wanted:
        for read in every:
            if read.name in wanted:
                explain(url, read, statements)
    exported = time_export(url, corpus.batch, export_repeat) if export else None

    table = Table(title=f"read side, {corpus.backend}, {corpus.documents:,} documents")
    for column in ("read", "first ms", "median ms", "p95 ms", "statements", "rows", "note"):
        table.add_column(column, justify="left" if column in ("read", "note") else "right")
    for row in timed:
        figures = (row.first_ms, row.median_ms, row.p95_ms)
        table.add_row(row.name, *(f"{x:.1f}" for x in figures), str(row.statements),
                      str(row.rows), row.note)  # fmt: skip
    console.print(table)
    if exported:
        console.print(
            f"export of batch ({corpus.batch_documents:,} documents): {exported['rows']:,} rows, "
            f"first record {exported['first_record_ms']:.1f} ms, {exported['rows_per_s']:,.0f} "
            f"rows/s, peak RSS +{exported['peak_rss_above_start_mb']} MB above "
            f"{exported['rss_at_start_mb']} MB (ru_maxrss {exported['ru_maxrss_mb']} MB)"
        )
    console.print(
        f"storage ({sizes['method']}): {sizes['total_mb']} MB, {sizes['bytes_per_document']:,.0f}"
        f" bytes per document, {sizes['bytes_per_explanation_row']:,.0f} per explanation row; "
        "per document: "
        + ", ".join(f"{k} {v:,.0f}" for k, v in sizes["per_document_by_table"].items())
    )
    if as_json:
        print(json.dumps({
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
            "backend": corpus.backend, "documents": corpus.documents,
            "explanations": corpus.explanations, "methods": corpus.methods,
            "batches": len(corpus.batches), "batch_documents": corpus.batch_documents,
            "repeat": repeat, "reads": {row.name: row.as_json() for row in timed},
            "export": exported, "storage": sizes,
        }))  # fmt: skip


if __name__ == "__main__":
    app()
