"""Several attribution methods per batch, end to end: chosen at `producer submit` (which
checks them, and the caps on their parameters, without torch), explained by a real
worker, stored with their quality, agreement and the document's vector, and read back by
`results quality`, `show` and `similar`."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from sqlalchemy import func, select, update

from contract.tasks import EXPLAIN_TASK
from db.models import Agreement, Batch, Document, Explanation, Representation, Status
from db.quality import METRICS
from db.records import params_key
from db.session import session_scope
from db.words import merge_wordpieces
from producer.submit import broker_app
from tests.processes import BIN


def test_a_worker_caps_the_implicit_limits_of_adaptive_steps():
    from contract.caps import within_caps
    from contract.settings import Settings

    low = Settings(max_steps=100)
    assert within_caps({"n_steps": "auto"}, ["lig"], low) == {"n_steps": "auto", "max_steps": 100}
    assert within_caps({"n_steps": "auto"}, ["lig"], Settings()) == {"n_steps": "auto"}  # 256
    # a value the batch spelled out is the caps' check to refuse, never lowered silently
    assert within_caps({"n_steps": "auto", "max_steps": 200}, ["lig"], low)["max_steps"] == 200
    assert within_caps({}, ["kernel_shap"], Settings(max_samples=50)) == {"n_samples": 50}


def test_max_steps_below_the_first_adaptive_level_is_refused_at_submit():
    from contract.methods import FIRST_LEVEL, LIG_LEVELS, parse_pairs
    from contract.settings import Settings
    from workers.engine.quadrature import nested_sizes

    assert nested_sizes() == LIG_LEVELS  # the generated table has the contract's levels
    with pytest.raises(ValueError, match="max_steps=8: must be at least 9"):
        parse_pairs(["max_steps=8"])
    assert parse_pairs(["max_steps=9"]) == {"max_steps": 9}
    # nor can a worker's cap fall below it: every adaptive document would fail
    assert Settings(max_steps=FIRST_LEVEL).max_steps == FIRST_LEVEL
    with pytest.raises(ValueError, match="max_steps"):
        Settings(max_steps=FIRST_LEVEL - 1)


TEXTS = [
    "a gorgeous, witty, seductive movie.",
    "the film is strictly routine.",
    "an utterly incompetent conclusion to a lazy script that drags on",
    "one of the most exciting and moving films of the year",
]
FOUR = ("lig", "saliency", "attention", "occlusion")


def results(system, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(BIN / "results"), *args], env=system.env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done


@pytest.mark.slow
def test_a_batch_with_four_methods_stores_everything_and_reads_back(system, write):
    lines = "".join(json.dumps({"id": f"m{i}", "text": t}) + "\n" for i, t in enumerate(TEXTS))
    summary = system.submit(write("methods.jsonl", lines), "--method", "lig,saliency",
                            "--method", "attention,occlusion")  # fmt: skip
    assert summary["status"]["done"] == len(TEXTS), summary["stderr"]
    batch = summary["batch_id"]
    with session_scope(system.url) as session:
        docs = session.scalars(select(Document).where(Document.batch_id == batch)).all()
        assert session.get(Batch, batch).methods == list(FOUR)
        for doc in docs:
            rows = {e.method: e for e in doc.explanations}
            assert sorted(rows) == sorted(FOUR)  # one row per method, none twice
            for row in rows.values():
                assert set(row.quality) == set(METRICS) and row.windows == 1
                assert len(row.attributions) == len(row.tokens)
                # the worker stores offsets and words: words as the text writes them
                located = (row.offsets, row.words, doc.text)
                merged = merge_wordpieces(row.tokens, row.attributions, *located)
                assert [word for word, _ in merged] == doc.text.split()
            cls = rows["attention"].extra["cls_attention"]
            assert len(cls) == 2 and all(len(layer) == len(row.tokens) for layer in cls)
            assert rows["lig"].steps == 20 and rows["saliency"].steps is None
            pairs = session.scalars(select(Agreement).where(Agreement.document_id == doc.id))
            assert {(a.method_a, a.method_b) for a in pairs} == {
                (a, b) for a in FOUR for b in FOUR if a < b
            }
            (vector,) = session.scalars(
                select(Representation).where(Representation.document_id == doc.id)
            )
            assert len(vector.vector) == 32 and vector.norm > 0  # the tiny BERT's width

    summary = json.loads(results(system, "quality", "--batch", batch, "--json").stdout)
    assert [m["method"] for m in summary["methods"]] == sorted(FOUR)
    assert all(m["documents"] == m["measured"] == len(TEXTS) for m in summary["methods"])
    assert len(summary["agreement"]) == 6
    assert "occlusion" in results(system, "quality", "--batch", batch).stdout

    shown = results(system, "show", "m0", "--batch", batch, "--words").stdout
    for text in ("gorgeous", "saliency", "occlusion", "comp.", "agreement"):
        assert text in shown, text
    similar = json.loads(results(system, "similar", "m0", "--batch", batch, "--within", batch,
                                 "--json").stdout)  # fmt: skip
    assert len(similar["neighbours"]) == len(TEXTS) - 1
    assert all(-1 <= n["similarity"] <= 1 for n in similar["neighbours"])

    # Redelivered after the commit (as if its worker died before acknowledging): the
    # documents are explained again and nothing is written twice.
    ids = [doc.id for doc in docs]
    before = stored_counts(system.url, ids)
    assert before == (4 * len(TEXTS), len(TEXTS), 6 * len(TEXTS))
    with session_scope(system.url) as session:
        session.execute(update(Document).where(Document.id.in_(ids)).values(status=Status.RUNNING))
        (owner,) = set(session.scalars(select(Document.task_id).where(Document.id.in_(ids))))
    # The same message again: a redelivery keeps its task id.
    broker_app(system.settings).send_task(EXPLAIN_TASK, args=[batch, ids], task_id=owner)
    deadline = time.monotonic() + 120
    while not all_done(system.url, ids):
        assert time.monotonic() < deadline, "the redelivered task did not finish"
        time.sleep(0.5)
    assert stored_counts(system.url, ids) == before


def stored_counts(url: str, ids: list[int]) -> tuple[int, int, int]:
    with session_scope(url) as session:
        return tuple(
            session.scalar(
                select(func.count()).select_from(table).where(table.document_id.in_(ids))
            )
            for table in (Explanation, Representation, Agreement)
        )


def all_done(url: str, ids: list[int]) -> bool:
    with session_scope(url) as session:
        statuses = session.scalars(select(Document.status).where(Document.id.in_(ids)))
        return set(statuses) == {Status.DONE}


@pytest.mark.slow
def test_a_long_document_is_explained_in_windows_covering_every_token(system, write):
    words = [f"word{i % 50}" for i in range(700)]  # over the tiny model's 512 positions
    path = write("long.jsonl", json.dumps({"id": "long", "text": " ".join(words)}) + "\n")
    summary = system.submit(path, "--method", "saliency", "--window-stride", "200")
    assert summary["status"]["done"] == 1, summary["stderr"]
    with session_scope(system.url) as session:
        (doc,) = session.scalars(select(Document).where(Document.batch_id == summary["batch_id"]))
        (row,) = doc.explanations
        assert row.windows > 1
        # how it was cut is recorded, and part of the row's identity (it changes the
        # numbers); so is how faithfulness removed tokens
        assert row.execution == {"max_tokens": 512, "window_stride": 200, "quality": True,
                                 "quality_removal": "delete"}  # fmt: skip
        assert row.params_key == params_key(
            "saliency", row.params, {"max_tokens": 512, "window_stride": 200}
        )
        assert row.params_key != params_key("saliency", row.params)
        assert len(row.tokens) == len(row.attributions) > 700
        assert row.tokens[0] == "[CLS]" and row.tokens[-1] == "[SEP]"
