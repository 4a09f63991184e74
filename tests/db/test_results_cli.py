"""The results CLI over a real database (SQLite in tmp_path, and PostgreSQL when reachable)
filled through the ORM: filters, the heatmap, corpus-level top tokens against brute force,
exports, the order/status whitelists and the error paths."""

from __future__ import annotations

import csv
import io
import json
import re
import struct
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import pytest
from rich.console import Console
from sqlalchemy import event, func, inspect, select
from typer.testing import CliRunner

from contract.settings import get_settings
from db.aggregates import rebuild
from db.models import Batch, Document, Explanation, Model, RunSettings, Status
from db.session import get_engine, migrate, session_scope
from db.words import merge_wordpieces
from results import render
from results.cli import app

runner = CliRunner()
EXPORT_KEYS = {
    "batch_id", "document_id", "text", "metadata", "status", "error", "model", "model_path",
    "model_sha256", "method", "params", "label", "confidence", "probabilities", "tokens",
    "attributions", "convergence_delta", "relative_gap", "steps", "truncated", "worker",
    "device", "timings", "quality", "extra", "windows", "execution", "offsets", "word_ids",
    "created_at",
}  # fmt: skip
SPECIAL = {"[CLS]", "[SEP]", "[PAD]"}
DOCS = [
    # your id, label, confidence, tokens, attributions
    ("a", "positive", 0.95, ["[CLS]", "great", "act", "##ing", "[SEP]"], [0.0, 0.9, 0.2, 0.3, 0.0]),
    ("b", "positive", 0.70, ["[CLS]", "great", "fun", "[SEP]", "[PAD]"], [0.0, 0.5, 0.4, 0, 0]),
    ("c", "negative", 0.88, ["[CLS]", "dull", "act", "##ing", "[SEP]"], [0.0, 0.8, 0.1, 0.1, 0.0]),
    ("d", "positive", 0.60, ["[CLS]", "fun", "but", "dull", "[SEP]"], [0.0, 0.6, -0.1, -0.5, 0.0]),
    ("e", "positive", 0.80, ["[CLS]", "Great", "great", "act", "##ing", "[SEP]"],
     [0.0, 0.2, 0.1, -0.3, 0.1, 0.0]),
]  # fmt: skip


@dataclass(frozen=True)
class Filled:
    url: str
    batch: str
    other: str
    ids: dict[str, int]  # your id in the main batch -> internal id


@pytest.fixture
def database(fresh_database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A migrated, empty database that ``results`` (through get_settings) points at."""
    monkeypatch.setenv("EXPLAINQ_DATABASE_URL", fresh_database_url)
    get_settings.cache_clear()
    migrate(fresh_database_url)
    yield fresh_database_url
    get_settings.cache_clear()


@pytest.fixture
def filled(database: str) -> Filled:
    """Main batch: five explained documents, one FAILED, one PENDING; the other batch:
    a pending "a" (so "a" is ambiguous) and one whose id is the digits of main's "a"."""
    main, other = str(uuid.uuid4()), str(uuid.uuid4())
    with session_scope(database) as session:
        session.add_all([
            Batch(id=main, source="t.jsonl", model="m", methods=["lig"], params={"n_steps": 8},
                  submitted=7, rejected=2),
            Batch(id=other, source="o.jsonl", model="m", methods=["lig"], params={}),
        ])  # fmt: skip
        model = Model(
            name="tiny", path="/models/tiny", sha256="ab" * 32, labels=["negative", "positive"]
        )
        settings = RunSettings(key="k", params={"n_steps": 8}, worker="w@h", device="cpu")
        session.add_all([model, settings])
        session.flush()
        ids = {}
        for line, (external_id, label, confidence, tokens, scores) in enumerate(DOCS, 1):
            doc = Document(batch_id=main, external_id=external_id, line=line, meta={"k": line},
                           text=f"text {external_id}", status=Status.DONE, attempts=1)  # fmt: skip
            session.add(doc)
            session.flush()
            ids[external_id] = doc.id
            session.add(Explanation(
                document_id=doc.id, batch_id=main, model_id=model.id, method="lig", params_key="k",
                settings_id=settings.id, label=label, confidence=confidence,
                probabilities={label: confidence, "other": 1 - confidence}, tokens=tokens,
                attributions=scores, convergence_delta=1e-6, relative_gap=1e-5, steps=8,
                timings={"attribute": 0.1},
            ))  # fmt: skip
        session.add_all([
            Document(batch_id=main, external_id="bad", line=8, text="boom", meta={},
                     status=Status.FAILED, attempts=3, error="it broke\nTraceback ..."),
            Document(batch_id=main, external_id="p", line=9, text="later", meta={}),
            Document(batch_id=other, external_id="a", line=1, text="other a", meta={}),
        ])  # fmt: skip
        session.add(
            Document(batch_id=other, external_id=str(ids["a"]), line=2, text="clash", meta={})
        )
        session.flush()
        rebuild(session)  # rows added through the ORM: the aggregates recomputed from them
    return Filled(database, main, other, ids)


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def run_json(*args: str):
    result = run(*args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def ids_of(rows: list[dict]) -> list[str]:
    return [row["external_id"] for row in rows]


def one_error_line(result) -> str:
    assert result.exit_code == 1 and result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    return line


def words_of(tokens: list[str], scores: list[float]) -> list[tuple[str, float]]:
    """The test's own wordpiece merge, written apart from the one under test."""
    words: list[list] = []
    for token, score in zip(tokens, scores, strict=True):
        if token in SPECIAL:
            continue
        if token.startswith("##"):
            words[-1] = [words[-1][0] + token.removeprefix("##"), words[-1][1] + score]
        else:
            words.append([token, score])
    return [(word, score) for word, score in words]


def test_merge_wordpieces_joins_pieces_and_drops_special_tokens():
    merged = merge_wordpieces(["[CLS]", "great", "act", "##ing", "[SEP]", "[PAD]"],
                              [0.1, 0.9, 0.2, 0.3, 0.4, 0.5])  # fmt: skip
    assert [w for w, _ in merged] == ["great", "acting"]
    assert [s for _, s in merged] == pytest.approx([0.9, 0.5])
    assert merge_wordpieces(["##ing", "x"], [1.0, 2.0]) == [("##ing", 1.0), ("x", 2.0)]


def test_list_filters_by_batch_label_confidence_and_status(filled):
    assert ids_of(run_json("list", "--batch", filled.batch)) == [*"abcde", "bad", "p"]
    assert ids_of(run_json("list", "--batch", filled.other)) == ["a", str(filled.ids["a"])]
    confident = run_json("list", "--label", "positive", "--min-confidence", "0.75")
    assert ids_of(confident) == ["a", "e"]
    assert confident[0]["top_tokens"] == ["great", "acting"]
    assert confident[1]["top_tokens"] == ["Great"]  # acting is negative, "great" the same word
    assert confident[0]["id"] == filled.ids["a"] and confident[0]["confidence"] == 0.95
    failed = run_json("list", "--status", "FAILED")
    assert [(r["external_id"], r["status"]) for r in failed] == [("bad", "failed")]
    assert failed[0]["error"].startswith("it broke") and failed[0]["label"] is None
    pending = run_json("list", "--status", "pending")
    assert ids_of(pending) == ["p", "a", str(filled.ids["a"])]


def test_list_orders_with_documents_without_explanations_last(filled):
    by = filled.batch
    assert ids_of(run_json("list", "--batch", by, "--order", "-confidence")) == [
        *"acebd", "bad", "p"]  # fmt: skip
    assert ids_of(run_json("list", "--batch", by, "--order", "confidence")) == [
        *"dbeca", "bad", "p"]  # fmt: skip
    assert ids_of(run_json("list", "--batch", by, "--order", "label"))[:5] == [*"cabde"]
    assert ids_of(run_json("list", "--batch", by, "--limit", "2", "--offset", "1")) == ["b", "c"]
    table = run("list", "--batch", by)
    assert table.exit_code == 0
    assert "acting" in table.stdout and "it broke" in table.stdout
    assert "Traceback" not in table.stdout  # an error's first line only
    assert "##ing" not in table.stdout and "[CLS]" not in table.stdout


def test_order_and_status_are_whitelisted(filled):
    injected = run("list", "--order", "id; DROP TABLE documents")
    assert "unknown order" in one_error_line(injected)
    assert "unknown order" in one_error_line(run("list", "--order", "confidence desc"))
    assert "unknown status" in one_error_line(run("list", "--status", "x' OR '1'='1"))
    assert "documents" in inspect(get_engine(filled.url)).get_table_names()
    with session_scope(filled.url) as session:
        assert session.scalar(select(func.count()).select_from(Document)) == 9


def test_show_renders_merged_words_and_provenance(filled):
    shown = run("show", "c", "--batch", filled.batch)
    assert shown.exit_code == 0, shown.stderr
    assert "acting" in shown.stdout and "##ing" not in shown.stdout
    assert "[CLS]" not in shown.stdout and "dull" in shown.stdout
    for fact in ("sha256 abababababab", "n_steps", "1e-06", "cpu", "w@h", "negative 0.880"):
        assert fact in shown.stdout, fact
    assert "it broke" in run("show", "bad").stdout
    assert "pending" in run("show", "p").stdout


def test_show_finds_documents_by_either_id_and_refuses_to_guess(filled):
    assert "several batches" in one_error_line(run("show", "a"))
    assert filled.other in one_error_line(run("show", "a"))
    assert "no document 'nope'" in one_error_line(run("show", "nope"))
    assert "dull" in run("show", str(filled.ids["c"])).stdout  # the internal id
    clash = str(filled.ids["a"])  # internal id of main's "a", your id of another
    assert "ambiguous" in one_error_line(run("show", clash))
    (mine,) = run_json("show", clash, "--batch", filled.other)
    assert (mine["text"], mine["status"], mine["tokens"]) == ("clash", "pending", None)
    (internal,) = run_json("show", clash, "--batch", filled.batch)
    assert internal["document_id"] == "a" and internal["tokens"] == DOCS[0][3]
    assert set(internal) == EXPORT_KEYS | {"agreement"}  # show adds its agreement


def test_heatmap_colours_by_share_of_the_largest_attribution():
    _, label, _, tokens, scores = DOCS[3]  # fun 0.6 (the largest), but -0.1, dull -0.5
    console = Console(file=io.StringIO(), force_terminal=True, color_system="truecolor")
    console.print(render.heatmap(tokens, scores, label, {label: 0.6}, title="d"))
    shown = console.file.getvalue()

    def background(word: str) -> tuple[int, ...]:
        found = re.search(r"48;2;(\d+);(\d+);(\d+)m" + word + r"\b", shown)
        assert found, word
        return tuple(map(int, found.groups()))

    assert background("fun") == render.TOWARD  # full strength
    red, green, blue = background("dull")
    assert red > green and red > blue and (red, green, blue) != render.AGAINST
    assert "positive 0.600" in shown  # the probabilities


def test_top_tokens_match_a_brute_force_computation(filled):
    scores: dict[str, list[float]] = defaultdict(list)
    documents: dict[str, set[str]] = defaultdict(set)
    for external_id, label, _, tokens, attributions in DOCS:
        if label == "positive":
            for word, score in words_of(tokens, attributions):
                scores[word.lower()].append(score)
                documents[word.lower()].add(external_id)
    toward = {w for w in scores if sum(scores[w]) > 0}  # against the label: not listed
    expected = sorted(
        (w for w in toward if len(documents[w]) >= 2),
        key=lambda w: -sum(scores[w]) / len(scores[w]),
    )
    rows = run_json("top-tokens", "--label", "positive", "--min-count", "2")
    assert [r["token"] for r in rows] == expected == ["fun", "great", "acting"]
    for row in rows:
        word = row["token"]
        assert row["mean_attribution"] == pytest.approx(sum(scores[word]) / len(scores[word]))
        assert row["total_attribution"] == pytest.approx(sum(scores[word]))
        assert (row["documents"], row["occurrences"]) == (len(documents[word]), len(scores[word]))
    assert [r["token"] for r in run_json("top-tokens", "--label", "positive", "--min-count", "3")
            ] == ["great"]  # fmt: skip
    everything = run_json("top-tokens", "--label", "positive", "--min-count", "1")
    assert {r["token"] for r in everything} == toward != set(scores)  # some push against
    assert run_json("top-tokens", "--label", "positive", "--batch", filled.other) == []
    assert "great" in run("top-tokens", "--label", "positive").stdout


def test_corpus_queries_stream_rather_than_load_everything(filled):
    streamed: list[str] = []

    def spy(_conn, _cursor, statement, _params, context, _many) -> None:
        if "explanations" in statement and context.execution_options.get("stream_results"):
            streamed.append(statement)

    event.listen(get_engine(filled.url), "before_cursor_execute", spy)
    try:
        run_json("top-tokens", "--label", "positive")
        assert not streamed  # read from the aggregates, not the explanations
        assert run("export", "--format", "jsonl").exit_code == 0
        assert len(streamed) == 1
    finally:
        event.remove(get_engine(filled.url), "before_cursor_execute", spy)


def as_float32(values: list[float]) -> list[float]:
    return list(struct.unpack(f"<{len(values)}f", struct.pack(f"<{len(values)}f", *values)))


def test_export_jsonl_one_record_per_explanation_and_per_failed_document(filled):
    lines = run("export", "--format", "jsonl", "--batch", filled.batch).stdout.splitlines()
    records = [json.loads(line) for line in lines]
    assert all(set(record) == EXPORT_KEYS for record in records)
    assert [r["document_id"] for r in records] == [*"abcde", "bad"]  # not the pending "p"
    for record, (external_id, label, _, tokens, scores) in zip(records, DOCS, strict=False):
        assert (record["status"], record["label"]) == ("done", label)
        # stored as float32, as the engine computes them: the test's float64 figures come
        # back as their nearest float32
        assert (record["tokens"], record["attributions"]) == (tokens, as_float32(scores))
        assert record["params"] == {"n_steps": 8} and record["model_sha256"] == "ab" * 32
        assert record["metadata"] == {"k": ord(external_id) - ord("a") + 1}
        assert datetime.fromisoformat(record["created_at"]).tzinfo is not None
    failed = records[-1]
    assert (failed["status"], failed["error"][:8]) == ("failed", "it broke")
    assert failed["label"] is failed["tokens"] is failed["model"] is None
    assert len(run("export").stdout.splitlines()) == 6  # the other batch adds nothing
    only_failed = run("export", "--method", "occlusion").stdout.splitlines()
    assert [json.loads(line)["status"] for line in only_failed] == ["failed"]


def test_export_csv_parses_and_writes_files(filled, tmp_path):
    stdout = run("export", "--format", "csv", "--batch", filled.batch).stdout
    reader = csv.DictReader(io.StringIO(stdout))
    rows = list(reader)
    assert set(reader.fieldnames or []) == EXPORT_KEYS and len(rows) == len(DOCS) + 1
    assert json.loads(rows[0]["tokens"]) == DOCS[0][3]
    assert json.loads(rows[0]["probabilities"])["positive"] == 0.95
    assert (rows[-1]["status"], rows[-1]["tokens"]) == ("failed", "")
    target = tmp_path / "all.csv"
    written = run("export", "--format", "csv", "-o", str(target))
    assert written.exit_code == 0 and written.stdout == ""
    assert list(csv.DictReader(io.StringIO(target.read_text(), newline=""))) == rows
    assert "unknown format" in one_error_line(run("export", "--format", "xml"))


def test_batches_count_documents_per_status(filled):
    summaries = {s["batch_id"]: s for s in run_json("batches")}
    mine, other = summaries[filled.batch], summaries[filled.other]
    assert (mine["done"], mine["failed"], mine["pending"], mine["running"]) == (5, 1, 1, 0)
    assert (mine["submitted"], mine["rejected"]) == (7, 2)
    assert (other["done"], other["pending"]) == (0, 2)
    assert filled.batch[:8] in run("batches").stdout


def test_migrate_is_idempotent(database):
    first, second = run("migrate"), run("migrate")
    assert first.exit_code == second.exit_code == 0
    assert database.rsplit("/", 1)[-1] in first.stdout  # which database
    assert "explanations" in inspect(get_engine(database)).get_table_names()


def test_migrate_hides_the_database_password(monkeypatch):
    migrated: list[str] = []
    monkeypatch.setattr("db.session.migrate", migrated.append)
    url = "postgresql+psycopg://explainq:s3cret@db:5432/explainq"
    monkeypatch.setenv("EXPLAINQ_DATABASE_URL", url)
    get_settings.cache_clear()
    try:
        result = run("migrate")
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0 and migrated == [url]
    assert "s3cret" not in result.stdout and "explainq:***@db:5432" in result.stdout


def test_an_unmigrated_database_is_one_line_of_advice(monkeypatch, tmp_path):
    monkeypatch.setenv("EXPLAINQ_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    get_settings.cache_clear()
    try:
        assert "results migrate" in one_error_line(run("list"))
    finally:
        get_settings.cache_clear()
