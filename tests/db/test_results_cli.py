"""The results CLI over a real database filled through the ORM: filters, the heatmap,
corpus-level top tokens (against brute force), exports and the order whitelist."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict

import pytest
from sqlalchemy import inspect
from typer.testing import CliRunner

from db.cli import app
from db.engine import get_engine, migrate, session_scope
from db.models import Batch, Document, Explanation, Model, Status
from db.queries import merge_wordpieces
from db.settings import get_settings

runner = CliRunner()
EXPORT_KEYS = {
    "batch_id", "document_id", "text", "status", "model", "model_path", "model_sha256", "method",
    "params", "label", "probabilities", "tokens", "attributions", "convergence_delta", "worker",
    "device", "created_at",
}  # fmt: skip
DOCS = [
    # external id, label, confidence, tokens, attributions
    ("a", "positive", 0.95, ["[CLS]", "great", "act", "##ing", "[SEP]"], [0.0, 0.9, 0.2, 0.3, 0.0]),
    ("b", "positive", 0.70, ["[CLS]", "great", "fun", "[SEP]"], [0.0, 0.5, 0.4, 0.0]),
    ("c", "negative", 0.88, ["[CLS]", "dull", "act", "##ing", "[SEP]"], [0.0, 0.8, 0.1, 0.1, 0.0]),
    ("d", "positive", 0.60, ["[CLS]", "fun", "but", "dull", "[SEP]"], [0.0, 0.6, -0.1, -0.5, 0.0]),
]


@pytest.fixture
def filled(fresh_database_url, monkeypatch):
    monkeypatch.setenv("EXPLAINQ_DATABASE_URL", fresh_database_url)
    get_settings.cache_clear()
    migrate(fresh_database_url)
    with session_scope(fresh_database_url) as session:
        batch = Batch(id=f"batch-{len(DOCS)}-{id(session)}", source="t.jsonl", model="m",
                      methods=["lig"], params={"n_steps": 8})  # fmt: skip
        other = Batch(
            id=f"other-{id(session)}", source="o.jsonl", model="m", methods=["lig"], params={}
        )
        model = Model(
            name="tiny", path="/models/tiny", sha256="ab" * 32, labels=["negative", "positive"]
        )
        session.add_all([batch, other, model])
        session.flush()
        for external_id, label, confidence, tokens, scores in DOCS:
            doc = Document(
                batch_id=batch.id, external_id=external_id, line=1, text=f"text {external_id}",
                meta={"k": external_id}, status=Status.DONE, attempts=1,
            )  # fmt: skip
            session.add(doc)
            session.flush()
            session.add(Explanation(
                document_id=doc.id, model_id=model.id, method="lig", params_key=external_id,
                params={"n_steps": 8}, label=label, confidence=confidence,
                probabilities={label: confidence}, tokens=tokens, attributions=scores,
                convergence_delta=1e-6, relative_gap=1e-5, steps=8, worker="w@h", device="cpu",
            ))  # fmt: skip
        session.add(Document(batch_id=batch.id, external_id="bad", line=9, text="boom", meta={},
                             status=Status.FAILED, attempts=3, error="it broke"))  # fmt: skip
        session.add(Document(batch_id=other.id, external_id="a", line=1, text="other a", meta={}))
    yield batch.id
    get_settings.cache_clear()


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_list_filters_by_label_confidence_status_and_batch(filled):
    listed = json.loads(run("list", "--batch", filled, "--json").stdout)
    assert [r["external_id"] for r in listed] == ["a", "b", "c", "d", "bad"]
    positive = json.loads(
        run("list", "--label", "positive", "--min-confidence", "0.65", "--json").stdout
    )
    assert [r["external_id"] for r in positive] == ["a", "b"]
    assert positive[0]["top_tokens"] == ["great", "acting"]
    failed = json.loads(run("list", "--status", "FAILED", "--json").stdout)
    assert [(r["external_id"], r["error"]) for r in failed] == [("bad", "it broke")]
    ordered = json.loads(run("list", "--batch", filled, "--order", "-confidence", "--json").stdout)
    assert [r["external_id"] for r in ordered][:4] == ["a", "c", "b", "d"]
    assert "acting" in run("list", "--batch", filled).stdout


def test_order_and_status_are_whitelisted(filled, fresh_database_url):
    result = run("list", "--order", "id; DROP TABLE documents")
    assert result.exit_code == 1 and "unknown order" in result.stderr
    assert run("list", "--status", "x' OR '1'='1").exit_code == 1
    assert "documents" in inspect(get_engine(fresh_database_url)).get_table_names()


def test_show_renders_merged_words_and_provenance(filled):
    shown = run("show", "c", "--batch", filled)
    assert shown.exit_code == 0
    assert "acting" in shown.stdout and "sha256 abababababab" in shown.stdout
    ambiguous = run("show", "a")
    assert ambiguous.exit_code == 1 and "several batches" in ambiguous.stderr
    assert run("show", "nope").exit_code == 1
    assert "it broke" in run("show", "bad").stdout


def test_top_tokens_match_a_brute_force_computation(filled):
    expected: dict[str, list[float]] = defaultdict(list)
    docs_with: dict[str, set[str]] = defaultdict(set)
    for external_id, label, _, tokens, scores in DOCS:
        if label == "positive":
            for word, score in merge_wordpieces(tokens, scores):
                expected[word].append(score)
                docs_with[word].add(external_id)
    rows = json.loads(run("top-tokens", "--label", "positive", "--min-count", "2", "--json").stdout)
    assert (
        {r["token"] for r in rows}
        == {w for w in expected if len(docs_with[w]) >= 2}
        == {"great", "fun"}
    )
    for row in rows:
        assert row["mean_attribution"] == pytest.approx(
            sum(expected[row["token"]]) / len(expected[row["token"]])
        )
        assert row["documents"] == len(docs_with[row["token"]])
    assert [r["token"] for r in rows] == ["great", "fun"]  # 0.7 mean before 0.5
    everything = json.loads(
        run("top-tokens", "--label", "positive", "--min-count", "1", "--json").stdout
    )
    assert {"acting", "dull", "but"} <= {r["token"] for r in everything}


def test_export_jsonl_has_every_key_and_the_failed_documents(filled):
    lines = run("export", "--format", "jsonl", "--batch", filled).stdout.splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == len(DOCS) + 1
    assert all(set(r) >= EXPORT_KEYS for r in records)
    done = [r for r in records if r["status"] == "done"]
    assert len(done) == len(DOCS) and all(len(r["tokens"]) == len(r["attributions"]) for r in done)
    assert done[0]["params"] == {"n_steps": 8} and done[0]["model_sha256"] == "ab" * 32
    (failed,) = [r for r in records if r["status"] == "failed"]
    assert (
        failed["document_id"] == "bad" and failed["error"] == "it broke" and failed["label"] is None
    )


def test_export_csv_and_to_a_file(filled, tmp_path):
    rows = list(
        csv.DictReader(io.StringIO(run("export", "--format", "csv", "--batch", filled).stdout))
    )
    assert len(rows) == len(DOCS) + 1
    assert json.loads(rows[0]["tokens"])[0] == "[CLS]"
    target = tmp_path / "all.jsonl"
    assert run("export", "-o", str(target)).exit_code == 0
    assert len(target.read_text().splitlines()) == len(DOCS) + 1
    assert run("export", "--format", "xml").exit_code == 1


def test_batches_and_migrate_twice(filled):
    summaries = json.loads(run("batches", "--json").stdout)
    mine = next(s for s in summaries if s["batch_id"] == filled)
    assert (mine["done"], mine["failed"], mine["pending"]) == (4, 1, 0)
    assert run("migrate").exit_code == 0 and run("migrate").exit_code == 0
