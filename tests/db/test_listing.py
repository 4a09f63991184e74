"""`results list` pages by keyset: every order, walked page by page, gives each document
once, in the same order as one big page; filters on metadata and on errors against a
gold label; no page reads by OFFSET."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import event, select
from typer.testing import CliRunner

from contract.settings import get_settings
from db.batches import NewDocument, create_batch
from db.listing import decode_cursor, list_page
from db.models import Document, Status
from db.records import ExplanationRecord
from db.session import get_engine, migrate, session_scope
from db.writes import register_model, save_explanations
from results.cli import app

runner = CliRunner()
ORDERS = ("id", "confidence", "-confidence", "label", "status")


@dataclass(frozen=True)
class Corpus:
    url: str
    batch: str


@pytest.fixture
def corpus(fresh_database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Corpus]:
    """40 documents: 34 explained (confidence in ties of two, labels alternating, a gold
    label in the metadata that is wrong every third time), 3 FAILED and 3 PENDING."""
    url = fresh_database_url
    migrate(url)
    with session_scope(url) as session:
        model = register_model(session, name="tiny", path="/m", sha256="cd" * 32,
                               labels=["negative", "positive"], info={})  # fmt: skip
        labels = ["negative", "positive"]
        docs = [
            NewDocument(
                f"d{i}", i, f"text {i}", {"gold": labels[(i + (i % 3 == 0)) % 2], "k": i % 4}
            )
            for i in range(40)
        ]
        batch, _ = create_batch(session, source="in.jsonl", model="tiny", methods=["lig"],
                                params={}, documents=docs, rejections=[])  # fmt: skip
        rows = session.scalars(
            select(Document).where(Document.batch_id == batch).order_by(Document.line)
        ).all()
        records = []
        for i, row in enumerate(rows):
            if i >= 34:
                row.status = Status.FAILED if i < 37 else Status.PENDING
                continue
            row.status = Status.DONE
            records.append(ExplanationRecord(
                document_id=row.id, model_id=model, method="lig", params={}, label=labels[i % 2],
                confidence=0.5 + (i // 2) / 100, probabilities={}, tokens=["[CLS]", "t", "[SEP]"],
                attributions=[0.0, 0.1, 0.0], worker="w", device="cpu",
            ))  # fmt: skip
        save_explanations(session, records)
    monkeypatch.setenv("EXPLAINQ_DATABASE_URL", url)
    get_settings.cache_clear()
    yield Corpus(url, batch)
    get_settings.cache_clear()


def page(*args: str) -> tuple[list[dict], str | None]:
    result = runner.invoke(app, ["list", "--json", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    cursor = None
    for line in result.stderr.splitlines():
        if line.startswith("next page: --after "):
            cursor = line.removeprefix("next page: --after ")
    return json.loads(result.stdout), cursor


def walk(*args: str, limit: int = 7) -> list[dict]:
    rows, cursor = page(*args, "--limit", str(limit))
    while cursor:
        more, cursor = page(*args, "--limit", str(limit), "--after", cursor)
        rows += more
    return rows


@pytest.mark.parametrize("order", ORDERS)
def test_paging_by_cursor_gives_every_document_once_in_order(corpus, order):
    whole, cursor = page("--batch", corpus.batch, "--order", order, "--limit", "1000")
    assert cursor is None and len(whole) == 40
    walked = walk("--batch", corpus.batch, "--order", order)
    assert [r["id"] for r in walked] == [r["id"] for r in whole]
    if order in ("confidence", "-confidence", "label"):  # the explained first, then the rest
        assert [r["status"] for r in whole[-6:]] == ["failed"] * 3 + ["pending"] * 3
        keys = [r["confidence" if "confidence" in order else "label"] for r in whole[:34]]
        assert keys == sorted(keys, reverse=order == "-confidence")


def test_filters_page_too(corpus):
    positive = walk(
        "--batch", corpus.batch, "--label", "positive", "--min-confidence", "0.6", limit=4
    )
    assert positive and all(r["label"] == "positive" and r["confidence"] >= 0.6 for r in positive)
    expected = [i for i in range(34) if i % 2 and 0.5 + (i // 2) / 100 >= 0.6]
    assert len(positive) == len({r["id"] for r in positive}) == len(expected) == 7


def test_where_filters_on_metadata_text_and_numbers(corpus):
    gold = walk("--batch", corpus.batch, "--where", "gold=negative")
    with session_scope(corpus.url) as session:
        expected = session.scalars(
            select(Document.id).where(Document.batch_id == corpus.batch)
        ).all()
        metas = {
            d.id: d.meta for d in session.scalars(select(Document).where(Document.id.in_(expected)))
        }
    assert {r["id"] for r in gold} == {i for i, m in metas.items() if m["gold"] == "negative"}
    twos = walk("--batch", corpus.batch, "--where", "k=2", "--where", "gold=positive")
    assert {r["id"] for r in twos} == {
        i for i, m in metas.items() if m["k"] == 2 and m["gold"] == "positive"
    }
    assert walk("--batch", corpus.batch, "--where", "k=two") == []  # the text "two", not 2


def test_errors_lists_the_documents_predicted_against_their_gold_label(corpus):
    wrong = walk("--batch", corpus.batch, "--errors", "gold", "--order", "-confidence", limit=3)
    with session_scope(corpus.url) as session:
        metas = {d.id: d.meta for d in session.scalars(select(Document))}
    assert wrong and all(r["label"] != metas[r["id"]]["gold"] for r in wrong)
    assert len(wrong) == sum(1 for i in range(34) if i % 3 == 0)  # every third is wrong


def test_no_page_is_read_by_offset_and_a_bad_cursor_is_one_line(corpus):
    statements: list[tuple[str, object]] = []
    engine = get_engine(corpus.url)

    def spy(_conn, _cursor, statement, parameters, *_args) -> None:
        statements.append((statement, parameters))

    _, cursor = page("--batch", corpus.batch, "--order", "-confidence", "--limit", "5")
    event.listen(engine, "before_cursor_execute", spy)
    try:
        page("--batch", corpus.batch, "--order", "-confidence", "--limit", "5", "--after", cursor)
    finally:
        event.remove(engine, "before_cursor_execute", spy)
    (paged,) = [(s, p) for s, p in statements if "FROM documents JOIN explanations" in s]
    statement, parameters = paged
    assert "explanations_1.document_id) < (" in statement  # where the last page ended
    if engine.dialect.name == "sqlite":  # SQLAlchemy always writes OFFSET for SQLite: 0
        assert statement.rstrip().endswith("OFFSET ?") and parameters[-1] == 0
    else:
        assert not re.search(r"\bOFFSET\b", statement)
    bad = runner.invoke(app, ["list", "--after", "not-a-cursor"])
    assert bad.exit_code == 1
    assert (
        bad.stderr.strip()
        == "error: --after 'not-a-cursor' is not a cursor printed by results list"
    )


def test_paging_without_a_batch_keeps_the_unexplained_of_every_batch(fresh_database_url):
    """Ordered by confidence over all batches, the documents without an explanation
    (failed, pending) come by id across batches: none is skipped by the cursor."""
    url = fresh_database_url
    migrate(url)
    with session_scope(url) as session:
        model = register_model(session, name="tiny", path="/m", sha256="ef" * 32,
                               labels=["negative", "positive"], info={})  # fmt: skip
        batches: list[str] = []
        # batch ids are random: add batches until one sorts before an older one, the
        # order that lost documents when the rows were sorted by batch, then id
        while batches == sorted(batches):
            docs = [NewDocument(f"b{len(batches)}-{i}", i, f"text {i}", {}) for i in range(3)]
            batch, ids = create_batch(session, source="in.jsonl", model="tiny",
                                      methods=["lig"], params={}, documents=docs,
                                      rejections=[])  # fmt: skip
            batches.append(batch)
            first, second, _pending = (session.get(Document, doc_id) for doc_id, _ in ids)
            first.status = Status.DONE
            second.status = Status.FAILED  # third stays PENDING
            save_explanations(session, [ExplanationRecord(
                document_id=first.id, model_id=model, method="lig", params={}, label="positive",
                confidence=0.9 - len(batches) / 100, probabilities={},
                tokens=["[CLS]", "t", "[SEP]"], attributions=[0.0, 0.1, 0.0], worker="w",
                device="cpu",
            )])  # fmt: skip
        every = sorted(session.scalars(select(Document.id)))
    for limit in (1, 2, 3):
        seen: list[int] = []
        after = None
        with session_scope(url) as session:
            while True:
                rows, after = list_page(session, order="confidence", limit=limit, after=after)
                seen += [row.id for row in rows]
                if after is None:
                    break
                assert len(seen) <= len(every)
        assert sorted(seen) == every and len(seen) == len(set(seen)), limit


@pytest.mark.parametrize(
    "cursor",
    [[1], ["a", None], ["a", None, 2**80], ["a", None, 0], ["a", {"x": 1}, 3],
     ["a", None, True], ["a", [1], 3], ["c", None, 3], ["a", None, 1.5], 1, "x", None],
)  # fmt: skip
def test_a_tampered_cursor_is_a_value_error(cursor):
    forged = base64.urlsafe_b64encode(json.dumps(cursor).encode()).decode().rstrip("=")
    with pytest.raises(ValueError, match="is not a cursor printed by results list"):
        decode_cursor(forged)
