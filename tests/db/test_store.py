"""The writes of the worker's saving path, on SQLite and PostgreSQL: the new fields round
trip, NaN becomes unknown, and saving the same results twice writes nothing new."""

from __future__ import annotations

import math
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import pytest
from sqlalchemy import func, select, update

from contract.cost import batch_cost
from contract.settings import Settings
from db.models import (
    Agreement,
    Batch,
    Document,
    Explanation,
    Rejection,
    Representation,
    Status,
)
from db.ownership import claim, fail, finish, hand_over, owned_running
from db.records import AgreementRecord, ExplanationRecord, RepresentationRecord
from db.session import migrate, session_scope
from db.writes import register_model, save_agreements, save_explanations, save_representations

QUALITY = {"comprehensiveness": 0.4, "sufficiency": 0.1, "random_comprehensiveness": 0.2,
           "random_sufficiency": 0.3}  # fmt: skip


@pytest.fixture
def ids(fresh_database_url: str) -> tuple[str, int, int]:
    """(url, document id, model id) in a migrated database with one document."""
    migrate(fresh_database_url)
    with session_scope(fresh_database_url) as session:
        batch = Batch(id=str(uuid.uuid4()), source="s", model="m", methods=["lig"], params={})
        document = Document(batch_id=batch.id, external_id="x", line=1, text="t", meta={})
        session.add_all([batch, document])
        session.flush()
        model_id = register_model(session, name="m", path="/m", sha256="0" * 64,
                                  labels=["neg", "pos"], info={})  # fmt: skip
        return fresh_database_url, document.id, model_id


def row(document_id: int, model_id: int, method: str, **extra) -> ExplanationRecord:
    return ExplanationRecord(
        document_id=document_id, model_id=model_id, method=method, params={}, label="pos",
        confidence=0.9, probabilities={"pos": 0.9, "neg": 0.1}, tokens=["[CLS]", "a", "[SEP]"],
        attributions=[0.0, 1.0, 0.0], worker="w", device="cpu", **extra,
    )  # fmt: skip


def save_all(url: str, doc: int, model: int) -> tuple[int, int, int]:
    explanations = [
        row(doc, model, "lig", quality=QUALITY, windows=3),
        row(doc, model, "attention", quality={**QUALITY, "sufficiency": math.nan},
            extra={"cls_attention": [[0.5, 0.25, 0.25], [0.2, 0.6, 0.2]]}),
        row(doc, model, "saliency"),
    ]  # fmt: skip
    vectors = [RepresentationRecord(doc, model, [3.0, 4.0])]
    agreement = {("lig", "saliency"): 0.5, ("saliency", "attention"): math.nan}
    pairs = [AgreementRecord(doc, model, pair, rho) for pair, rho in agreement.items()]
    with session_scope(url) as session:
        return (
            save_explanations(session, explanations),
            save_representations(session, vectors),
            save_agreements(session, pairs),
        )


def test_new_fields_round_trip(ids):
    url, doc, model = ids
    assert save_all(url, doc, model) == (3, 1, 2)
    with session_scope(url) as session:
        rows = {e.method: e for e in session.scalars(select(Explanation))}
        assert rows["lig"].quality == QUALITY and rows["lig"].windows == 3
        assert rows["attention"].quality["sufficiency"] is None  # NaN: unknown, not a number
        assert rows["attention"].extra == {"cls_attention": [[0.5, 0.25, 0.25], [0.2, 0.6, 0.2]]}
        assert rows["saliency"].windows == 1
        # None is SQL NULL, not JSON null, so "IS NULL" finds rows without quality.
        assert session.scalars(
            select(Explanation.method).where(Explanation.quality.is_(None))
        ).all() == ["saliency"]
        (vector,) = session.scalars(select(Representation))
        assert (vector.vector, vector.norm) == ([3.0, 4.0], 5.0)
        pairs = {(a.method_a, a.method_b): a.spearman for a in session.scalars(select(Agreement))}
        assert pairs == {("lig", "saliency"): 0.5, ("attention", "saliency"): None}


def test_saving_again_writes_nothing(ids):
    url, doc, model = ids
    save_all(url, doc, model)
    assert save_all(url, doc, model) == (0, 0, 0)  # a redelivered task
    with session_scope(url) as session:
        counts = [session.scalar(select(func.count()).select_from(table))
                  for table in (Explanation, Representation, Agreement)]  # fmt: skip
    assert counts == [3, 1, 2]


def test_a_vector_with_nan_is_left_out(ids):
    url, doc, model = ids
    with session_scope(url) as session:
        vector = RepresentationRecord(doc, model, [1.0, math.inf])
        assert save_representations(session, [vector]) == 0


def test_database_retries_widen_the_attempt_limit_but_every_delivery_counts(ids):
    """A poison document burns an attempt per delivery; a task retried after database
    errors may go as many attempts further, never further (so redeliveries still end)."""
    url, document_id, _ = ids
    for _ in range(3):
        with session_scope(url) as session:
            claimed = claim(session, [document_id], max_attempts=3, task_id="t")
            assert [d.id for d in claimed] == [document_id]
    with session_scope(url) as session:  # a fourth plain delivery: out of attempts
        assert claim(session, [document_id], max_attempts=3, task_id="t") == []
        document = session.get(Document, document_id)
        assert (document.attempts, document.status.value) == (3, "FAILED")
        assert document.error == "gave up after 3 attempts (EXPLAINQ_MAX_ATTEMPTS)"
    with session_scope(url) as session:  # what a retried task would have allowed
        document = session.get(Document, document_id)
        document.status, document.error = document.status.__class__.RUNNING, None
    with session_scope(url) as session:
        claimed = claim(session, [document_id], max_attempts=3, task_id="t", allowance=2)
        assert [d.attempts for d in claimed] == [4]
    with session_scope(url) as session:
        claim(session, [document_id], max_attempts=3, task_id="t", allowance=2)
        assert claim(session, [document_id], max_attempts=3, task_id="t", allowance=2) == []


def test_saving_more_values_than_one_statement_may_bind_writes_every_row(ids):
    """A large chunk with many methods exceeds SQLite's 32,766 bound values in one INSERT:
    the rows go in slices, all of them, and a second save still writes nothing."""
    url, document_id, model_id = ids
    rows = [row(document_id, model_id, f"m{i}") for i in range(2000)]  # 2000 x 24 columns
    with session_scope(url) as session:
        assert save_explanations(session, rows) == 2000
    with session_scope(url) as session:
        assert save_explanations(session, rows) == 0
        assert session.scalar(select(func.count()).select_from(Explanation)) == 2000


def test_a_running_document_is_run_only_by_the_task_that_owns_it(ids):
    """The claim makes a task the owner; a copy of the chunk under another task id skips
    the document while its redelivery runs it again; a sweep hands it to a new task, and
    from then on only that one may run it."""
    url, doc, _ = ids
    with session_scope(url) as session:
        assert [(d.id, d.attempts) for d in claim(session, [doc], 3, task_id="a")] == [(doc, 1)]
    with session_scope(url) as session:  # a copy sent while "a" runs it
        assert claim(session, [doc], 3, task_id="b") == []
        assert (owned_running(session, [doc], "a"), owned_running(session, [doc], "b")) == (1, 0)
    with session_scope(url) as session:  # "a" redelivered: its worker died
        assert [d.attempts for d in claim(session, [doc], 3, task_id="a")] == [2]
    with session_scope(url) as session:
        assert hand_over(session, None, older_than=60, chunk_size=16) == []  # fresh: not yet
        (resend,) = hand_over(session, None, older_than=0, chunk_size=16)
        assert resend.document_ids == [doc] and resend.task_id not in ("a", "b")
    with session_scope(url) as session:  # a late redelivery of "a" comes too late
        assert claim(session, [doc], 3, task_id="a") == []
        assert owned_running(session, [doc], resend.task_id) == 1
    with session_scope(url) as session:
        assert [d.attempts for d in claim(session, [doc], 3, task_id=resend.task_id)] == [3]
        document = session.get(Document, doc)
        assert (document.status.value, document.task_id) == ("RUNNING", resend.task_id)


def test_the_sweeper_cuts_re_sent_chunks_by_cost_as_submit_does(fresh_database_url):
    """A stale long document of an occlusion batch is re-sent in a chunk of its own; by
    count alone (no pricing) it would hold the short ones back again."""
    migrate(fresh_database_url)
    with session_scope(fresh_database_url) as session:
        batch = Batch(id=str(uuid.uuid4()), source="s", model="m", methods=["occlusion"],
                      params={})  # fmt: skip
        texts = ["a short review"] * 10 + ["word " * 1_500]
        docs = [Document(batch_id=batch.id, external_id=str(i), line=i, text=t, meta={})
                for i, t in enumerate(texts)]  # fmt: skip
        session.add_all([batch, *docs])
        session.flush()
        long_id = docs[-1].id
    pricing = partial(batch_cost, settings=Settings(_env_file=None))
    with session_scope(fresh_database_url) as session:
        chunks = [r.document_ids for r in hand_over(session, None, 0, 16, pricing)]
    with session_scope(fresh_database_url) as session:  # the same, still stale, by count
        by_count = [r.document_ids for r in hand_over(session, None, 0, 16)]
    assert [long_id] in chunks
    assert sorted(i for chunk in chunks for i in chunk) == sorted(d.id for d in docs)
    assert len(by_count) == 1 and long_id in by_count[0]


def test_a_repeated_id_is_rejected_by_the_database_naming_the_first_line(
    fresh_database_url, monkeypatch
):
    """Within a page and across pages (of 3 here): the first line keeps the id, the
    later ones become rejections that name it, and the counts say so."""
    from db import batches

    monkeypatch.setattr(batches, "PAGE", 3)
    migrate(fresh_database_url)
    ids = ["a", "b", "a", "c", "d", "b", "e", "a"]  # lines 1..8
    verdicts = [batches.NewDocument(i, n, f"text {n}", {}) for n, i in enumerate(ids, 1)]
    heard = []
    with session_scope(fresh_database_url) as session:
        batch_id, accepted, rejected = batches.register_batch(
            session, source="s", model="m", methods=["lig"], params={},
            verdicts=verdicts, on_duplicate=heard.append,
        )  # fmt: skip
    assert (accepted, rejected) == (5, 3)
    assert [(r.line, r.field, r.reason) for r in heard] == [
        (3, "id", "duplicate id 'a' (first on line 1)"),
        (6, "id", "duplicate id 'b' (first on line 2)"),
        (8, "id", "duplicate id 'a' (first on line 1)"),
    ]
    with session_scope(fresh_database_url) as session:
        kept = session.execute(select(Document.external_id, Document.line)).all()
        stored = session.scalars(select(Rejection.line).order_by(Rejection.line)).all()
        batch = session.get(Batch, batch_id)
        assert sorted(kept) == [("a", 1), ("b", 2), ("c", 4), ("d", 5), ("e", 7)]
        assert stored == [3, 6, 8] and (batch.submitted, batch.rejected) == (5, 3)


def test_of_two_tasks_claiming_the_same_documents_at_once_one_gets_each(fresh_database_url):
    """Two copies of a chunk claimed at the same moment from two threads (two workers):
    every document goes to exactly one of them."""
    migrate(fresh_database_url)
    with session_scope(fresh_database_url) as session:
        batch = Batch(id=str(uuid.uuid4()), source="s", model="m", methods=["lig"], params={})
        docs = [Document(batch_id=batch.id, external_id=str(i), line=i, text="t", meta={})
                for i in range(200)]  # fmt: skip
        session.add_all([batch, *docs])
        session.flush()
        doc_ids = [d.id for d in docs]

    def take(start: threading.Barrier, task_id: str) -> list[int]:
        start.wait()
        with session_scope(fresh_database_url) as session:
            return [d.id for d in claim(session, doc_ids, 99, task_id=task_id)]

    for round_ in range(5):
        start = threading.Barrier(2)
        with ThreadPoolExecutor(2) as pool:
            first, second = pool.map(take, [start, start], [f"a{round_}", f"b{round_}"])
        assert sorted(first + second) == doc_ids, (len(first), len(second))
        with session_scope(fresh_database_url) as session:  # queued again for the next round
            session.execute(update(Document).values(status=Status.PENDING))


def test_only_the_owner_fails_a_document(ids):
    """A superseded run that fails late (its chunk was handed to a new task) changes
    nothing, neither while the new owner runs the document nor after it finished."""
    url, doc, _ = ids
    with session_scope(url) as session:
        claim(session, [doc], 3, task_id="old")
        (resend,) = hand_over(session, None, older_than=0, chunk_size=16)
    with session_scope(url) as session:
        fail(session, doc, "CUDA out of memory, late", "old")
        assert session.get(Document, doc).status.value == "RUNNING"
    with session_scope(url) as session:
        finish(session, [doc])
        fail(session, doc, "CUDA out of memory, later", "old")
        fail(session, doc, "a second delivery of the new owner", resend.task_id)
    with session_scope(url) as session:
        document = session.get(Document, doc)
        assert (document.status.value, document.error) == ("DONE", None)
    with session_scope(url) as session:  # the owner's own failure counts
        session.get(Document, doc).status = Status.RUNNING
    with session_scope(url) as session:
        fail(session, doc, "injected", resend.task_id)
        assert session.get(Document, doc).status.value == "FAILED"
