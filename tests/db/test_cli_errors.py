"""The command lines in-process (CliRunner) where they meet the database (issue 15): a
bad setting, a database never migrated or one that does not exist is one line and exit
status 1 from every command, never a traceback; and what `results` prints: unknown
batches and labels, an unwritable export, CSV cells a spreadsheet would run, top tokens'
figures, the batches' model and methods."""

from __future__ import annotations

import csv
import io
import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner, Result

from db.batches import NewDocument, create_batch
from db.models import Document, Status
from db.records import ExplanationRecord
from db.session import migrate, session_scope
from db.writes import register_model, save_explanations
from producer.cli import app as producer_app
from results.cli import app as results_app
from tests.producer.test_cli import configure, refusal
from tests.services import postgres_available

runner = CliRunner()
MISSING_POSTGRES = "postgresql+psycopg://127.0.0.1:5432/no_such_db_explainq"


@cache
def postgres_up() -> bool:
    return postgres_available()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """``env(name=value, ...)`` sets EXPLAINQ_* variables; none of the developer's own
    apply, and the cached settings are dropped after the test."""
    for key in [key for key in os.environ if key.startswith("EXPLAINQ_")]:
        monkeypatch.delenv(key)
    configure(monkeypatch)
    yield partial(configure, monkeypatch)
    configure(monkeypatch)


def invoke(cli, *args: object) -> Result:
    return runner.invoke(cli, [str(arg) for arg in args], catch_exceptions=False)


def results(*args: object) -> Result:
    return invoke(results_app, *args)


# Moved from tests/system/test_methods.py (they ran each command in a subprocess).
@pytest.mark.parametrize(
    ("cli", "args"),
    [
        (producer_app, ["status", "b"]),
        (producer_app, ["wait", "b"]),
        (producer_app, ["resume"]),
        (results_app, ["list"]),
        (results_app, ["migrate"]),
    ],
    ids=["producer status", "producer wait", "producer resume", "results list", "results migrate"],
)
def test_every_command_names_a_bad_setting_in_one_line(env, tmp_path, cli, args):
    env(home=tmp_path, database_url=f"sqlite:///{tmp_path / 'x.db'}", n_steps=0, method="lig")
    line = refusal(invoke(cli, *args))
    assert line == "error: EXPLAINQ_N_STEPS: Input should be greater than or equal to 1"


DATABASE_COMMANDS = [
    (producer_app, ["submit", "{doc}"]),
    (producer_app, ["status", "x"]),
    (producer_app, ["wait", "x"]),
    (producer_app, ["resume"]),
    (results_app, ["list"]),
]
DATABASE_IDS = ["producer submit", "producer status", "producer wait", "producer resume",
                "results list"]  # fmt: skip


def database_error(env, tmp_path: Path, write, broker_url: str, url: str, cli, args) -> str:
    """The one error line of ``cli args`` on the database at ``url``. The broker is the
    real one (resume checks it first, before the database); the model is not checked."""
    doc = write("doc.txt", "a perfectly good sentence\n")
    queue = f"test-{uuid.uuid4().hex[:8]}"
    env(home=tmp_path, database_url=url, broker_url=broker_url, queue=queue, check_model="false")
    return refusal(invoke(cli, *(arg.format(doc=doc) for arg in args)))


@pytest.mark.parametrize(("cli", "args"), DATABASE_COMMANDS, ids=DATABASE_IDS)
def test_a_database_never_migrated_is_one_line_pointing_at_migrate(
    env, tmp_path, write, broker_url, cli, args
):
    url = f"sqlite:///{tmp_path / 'never-migrated.db'}"
    line = database_error(env, tmp_path, write, broker_url, url, cli, args)
    assert line.startswith("error: database") and "results migrate" in line, line


@pytest.mark.parametrize(("cli", "args"), DATABASE_COMMANDS, ids=DATABASE_IDS)
def test_a_database_that_does_not_exist_is_one_line_saying_unreachable(
    env, tmp_path, write, broker_url, cli, args
):
    if not postgres_up():
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    line = database_error(env, tmp_path, write, broker_url, MISSING_POSTGRES, cli, args)
    assert line.startswith("error: database unreachable"), line


@dataclass(frozen=True)
class Explained:
    url: str
    batch: str


@pytest.fixture
def database(env, tmp_path: Path) -> str:
    """A migrated, empty SQLite database that the command lines are pointed at."""
    url = f"sqlite:///{tmp_path / 'explainq.db'}"
    migrate(url)
    env(home=tmp_path, database_url=url)
    return url


def explain(url: str, documents: list[dict], *, methods=("lig",), model="/models/tiny") -> str:
    """Registers a batch of ``documents`` (external_id, text, and optionally meta, label,
    confidence, tokens, attributions, convergence_delta) through the data layer, each
    DONE with one lig explanation by a model whose labels are negative and positive."""
    with session_scope(url) as session:
        model_id = register_model(session, name=Path(model).name, path=model, sha256="ab" * 32,
                                  labels=["negative", "positive"], info={})  # fmt: skip
        batch, _ = create_batch(
            session, source="in.jsonl", model=model, methods=list(methods),
            params={"n_steps": 8}, rejections=[],
            documents=[NewDocument(d["external_id"], line, d["text"], d.get("meta", {}))
                       for line, d in enumerate(documents, 1)],
        )  # fmt: skip
        rows = session.scalars(
            select(Document).where(Document.batch_id == batch).order_by(Document.line)
        )
        records, texts = [], {}
        for row, d in zip(rows, documents, strict=True):
            row.status = Status.DONE
            label, confidence = d.get("label", "positive"), d.get("confidence", 0.9)
            texts[row.id] = row.text
            records.append(ExplanationRecord(
                document_id=row.id, batch_id=batch, model_id=model_id, method="lig",
                params={"n_steps": 8}, label=label, confidence=confidence,
                probabilities={label: confidence}, worker="w@h", device="cpu",
                tokens=d.get("tokens", ["[CLS]", "word", "[SEP]"]),
                attributions=d.get("attributions", [0.0, 0.5, 0.0]),
                convergence_delta=d.get("convergence_delta", 1e-6), steps=8,
            ))  # fmt: skip
        save_explanations(session, records, texts)  # as the workers write them
    return batch


@pytest.fixture
def explained(database: str) -> Explained:
    """One batch of two explained documents."""
    batch = explain(database, [{"external_id": "a", "text": "first"},
                               {"external_id": "b", "text": "second"}])  # fmt: skip
    return Explained(database, batch)


def test_an_unknown_batch_is_named_with_none_yet(database):
    assert refusal(results("list", "--batch", "nope")) == "error: no batch 'nope'; none yet"


def test_an_unknown_batch_is_named_with_the_recent_ones(explained):
    line = refusal(results("list", "--batch", "nope"))
    assert line == f"error: no batch 'nope'; recent: {explained.batch} (`results batches`)"


def test_an_unknown_label_lists_the_models_labels(explained):
    """Labels are case-sensitive: "Positive" is not "positive"."""
    line = refusal(results("top-tokens", "--label", "Positive"))
    assert line == "error: unknown label 'Positive'; known: negative, positive"


def test_an_export_to_an_unwritable_path_is_one_line(explained):
    line = refusal(results("export", "-o", "/nonexistent/dir/x.jsonl"))
    assert line.startswith("error: cannot write /nonexistent/dir/x.jsonl: "), line
    assert not Path("/nonexistent/dir/x.jsonl").exists()


FORMULAS = [
    {"external_id": "formula", "text": '=HYPERLINK("http://x","y")', "meta": {"note": "+1"}},
    {"external_id": "@id", "text": "@cmd", "convergence_delta": -0.25},
    {"external_id": "minus", "text": "-2+3"},
]


def test_csv_export_quotes_cells_a_spreadsheet_would_run(explained):
    explain(explained.url, FORMULAS)
    result = results("export", "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = {row["text"]: row for row in csv.DictReader(io.StringIO(result.stdout))}
    formula = rows["'" + FORMULAS[0]["text"]]
    assert json.loads(formula["metadata"]) == {"note": "+1"}  # '{...' runs nothing
    assert rows["'@cmd"]["document_id"] == "'@id"
    assert rows["'-2+3"]["document_id"] == "minus"
    assert rows["first"]["text"] == "first"  # only formula starts are touched
    # numbers stay numbers: a negative figure is no formula
    assert rows["'@cmd"]["convergence_delta"] == "-0.25"
    assert json.loads(rows["'@cmd"]["attributions"]) == [0.0, 0.5, 0.0]


def test_jsonl_export_keeps_the_text_byte_exact(explained):
    explain(explained.url, FORMULAS)
    result = results("export", "--format", "jsonl")
    assert result.exit_code == 0, result.output
    records = {r["document_id"]: r for r in map(json.loads, result.stdout.splitlines())}
    for document in FORMULAS:
        assert records[document["external_id"]]["text"] == document["text"]
    assert records["formula"]["metadata"] == {"note": "+1"}
    assert records["@id"]["convergence_delta"] == -0.25


def test_top_tokens_shows_three_significant_digits_and_only_words_toward_the_label(database):
    tokens = ["[CLS]", "faint", "awful", "[SEP]"]
    explain(database, [
        {"external_id": str(i), "text": "faint awful", "tokens": tokens,
         "attributions": [0.0, 0.0000123, -0.2, 0.0]}
        for i in range(2)
    ])  # fmt: skip
    table = results("top-tokens", "--label", "positive")
    assert table.exit_code == 0, table.output
    assert "+1.23e-05" in table.stdout and "+0.0000" not in table.stdout
    assert "faint" in table.stdout and "awful" not in table.stdout
    listed = json.loads(results("top-tokens", "--label", "positive", "--json").stdout)
    assert [row["token"] for row in listed] == ["faint"]
    assert listed[0]["mean_attribution"] == pytest.approx(1.23e-5)


@pytest.mark.parametrize("columns", ["120", "80"])
def test_batches_show_the_model_and_methods(database, columns):
    """At 80 columns too: what a pipe or a CI log gets (rich's width off a terminal)."""
    batch = explain(database, [{"external_id": "a", "text": "x"}], methods=("lig", "saliency"),
                    model="/models/some/tiny")  # fmt: skip
    table = runner.invoke(results_app, ["batches"], env={"COLUMNS": columns})
    assert table.exit_code == 0, table.output
    assert batch in table.stdout  # never cut
    assert "model" in table.stdout and "tiny" in table.stdout, table.stdout
    if columns == "120":
        assert "model · methods" in table.stdout and "tiny · lig,saliency" in table.stdout
