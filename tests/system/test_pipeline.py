"""A batch goes producer -> Redis -> a real Celery worker -> the database, on SQLite and
on PostgreSQL, and the stored explanations are what Captum computes directly."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import torch
from captum.attr import LayerIntegratedGradients
from sqlalchemy import func, select, update
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from contract.tasks import EXPLAIN_TASK
from db.models import Batch, Document, Explanation, Model, Rejection, Status
from db.session import session_scope
from producer.submit import broker_app
from tests.processes import Deployment

pytestmark = pytest.mark.slow

TEXTS = [
    "a gorgeous, witty, seductive movie.",
    "the film is strictly routine.",
    "an utterly incompetent conclusion to a lazy script that drags on and on and on",
    "ok",
    "one of the most exciting and moving films of the year, with a great cast",
    "the plot is predictable but the acting is strong",
]


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def test_every_document_gets_one_explanation(system, write):
    path = write(
        "docs.jsonl",
        jsonl([{"id": f"d{i}", "text": t, "source": "rt"} for i, t in enumerate(TEXTS)]),
    )
    summary = system.submit(path, "--chunk-size", "4")
    assert summary["returncode"] == 0, summary["stderr"]
    assert summary["status"] == {"done": len(TEXTS), "failed": 0, "pending": 0, "running": 0}
    with session_scope(system.url) as session:
        docs = session.scalars(
            select(Document).where(Document.batch_id == summary["batch_id"])
        ).all()
        assert sorted(d.external_id for d in docs) == [f"d{i}" for i in range(len(TEXTS))]
        assert all(d.status is Status.DONE and d.attempts == 1 for d in docs)
        assert all(d.meta == {"source": "rt"} for d in docs)
        for doc in docs:
            (explanation,) = doc.explanations
            assert explanation.method == "lig"
            assert explanation.params["n_steps"] == 20
            assert len(explanation.tokens) == len(explanation.attributions)
            assert explanation.tokens[0] == "[CLS]" and explanation.tokens[-1] == "[SEP]"
            assert set(explanation.probabilities) == {"negative", "positive"}
            assert explanation.confidence == max(explanation.probabilities.values())
            assert explanation.device == "cpu"
            assert "@localhost" in explanation.worker
        model = session.scalars(select(Model)).one()
        assert len(model.sha256) == 64 and model.labels == ["negative", "positive"]
        assert session.get(Batch, summary["batch_id"]).submitted == len(TEXTS)


def test_stored_attributions_equal_a_direct_captum_computation(system, write, tiny_model):
    texts = TEXTS[:3]
    summary = system.submit(write("few.txt", "\n".join(texts) + "\n"))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model).eval()
    embeddings = model.get_input_embeddings()
    with session_scope(system.url) as session:
        stored = {
            doc.text: doc.explanations[0]
            for doc in session.scalars(
                select(Document).where(Document.batch_id == summary["batch_id"])
            )
        }
    for text in texts:
        encoded = tokenizer(text, return_tensors="pt")
        ids = encoded["input_ids"]
        baseline = torch.full_like(ids, tokenizer.pad_token_id)
        baseline[0, 0], baseline[0, -1] = ids[0, 0], ids[0, -1]

        def forward(input_ids, mask, types):
            return model(input_ids=input_ids, attention_mask=mask, token_type_ids=types).logits

        target = int(forward(ids, encoded["attention_mask"], encoded["token_type_ids"]).argmax())
        lig = LayerIntegratedGradients(forward, embeddings)
        attributions, delta = lig.attribute(
            ids, baselines=baseline, target=target, n_steps=20, return_convergence_delta=True,
            additional_forward_args=(encoded["attention_mask"], encoded["token_type_ids"]),
        )  # fmt: skip
        expected = attributions.sum(-1)[0]
        row = stored[text]
        assert row.label == model.config.id2label[target]
        assert row.tokens == tokenizer.convert_ids_to_tokens(ids[0])
        assert torch.allclose(torch.tensor(row.attributions), expected, rtol=1e-4, atol=1e-6)
        assert row.convergence_delta == pytest.approx(float(delta), abs=1e-5)
        assert expected.abs().max() > 1e-3  # the comparison is not between two zero vectors


def test_a_redelivered_task_writes_no_second_row(system, write):
    summary = system.submit(
        write("redo.jsonl", jsonl([{"id": "r1", "text": TEXTS[0]}, {"id": "r2", "text": TEXTS[1]}]))
    )
    batch_id = summary["batch_id"]
    with session_scope(system.url) as session:
        ids = list(session.scalars(select(Document.id).where(Document.batch_id == batch_id)))
        # As if the worker died after committing the rows but before marking the documents.
        session.execute(update(Document).where(Document.id.in_(ids)).values(status=Status.RUNNING))
        (owner,) = set(session.scalars(select(Document.task_id).where(Document.id.in_(ids))))
    # The same message again: a redelivery keeps its task id.
    broker_app(system.settings).send_task(EXPLAIN_TASK, args=[batch_id, ids], task_id=owner)
    deadline = time.monotonic() + 60
    while True:
        with session_scope(system.url) as session:
            statuses = set(session.scalars(select(Document.status).where(Document.id.in_(ids))))
            rows = session.scalar(
                select(func.count())
                .select_from(Explanation)
                .where(Explanation.document_id.in_(ids))
            )
            attempts = set(session.scalars(select(Document.attempts).where(Document.id.in_(ids))))
        if statuses == {Status.DONE}:
            break
        assert time.monotonic() < deadline, statuses
        time.sleep(0.2)
    assert rows == len(ids)
    assert attempts == {2}  # the second delivery ran, and its insert was a no-op


def test_bad_lines_are_rejected_with_their_line_and_the_good_ones_finish(system, write):
    oversize = "x" * 5000
    lines = [
        json.dumps({"id": "ok-[/b]1", "text": "a fine film"}),  # 1 (markup-like id)
        "{not json",  # 2
        json.dumps({"id": "no-text"}),  # 3
        json.dumps({"id": "empty", "text": "   "}),  # 4
        json.dumps({"id": "big", "text": oversize}),  # 5
        json.dumps({"id": "ok-[/b]1", "text": "same id again"}),  # 6
        json.dumps({"id": "ok-2", "text": "a dull film"}),  # 7
    ]
    content = (
        ("\n".join(lines[:6]) + "\n").encode()
        + b'{"id": "bad-utf8", "text": "caf\xe9"}\n'
        + (lines[6] + "\n").encode()
    )
    path = write("mixed.jsonl", content)
    done = system.producer(
        "submit", str(path), "--wait", "--json", EXPLAINQ_MAX_DOCUMENT_BYTES="1000"
    )
    assert done.returncode == 3, done.stderr
    summary = json.loads(done.stdout)
    reasons = {r["line"]: (r["field"], r["reason"]) for r in summary["rejected"]}
    assert reasons[2][1].startswith("invalid JSON")
    assert reasons[3] == ("text", "missing or empty")
    assert reasons[4] == ("text", "missing or empty")
    assert reasons[5][0] == "text" and "over the limit of 1000" in reasons[5][1]
    assert reasons[6][0] == "id" and "duplicate" in reasons[6][1] and "line 1" in reasons[6][1]
    assert reasons[7] == (None, "invalid UTF-8")
    assert set(reasons) == {2, 3, 4, 5, 6, 7}
    for line in reasons:
        assert f"mixed.jsonl:{line}:" in done.stderr
    assert summary["status"]["done"] == 2
    with session_scope(system.url) as session:
        assert session.get(Batch, summary["batch_id"]).rejected == 6
        stored = session.scalars(
            select(Rejection.line).where(Rejection.batch_id == summary["batch_id"])
        )
        assert sorted(stored) == [2, 3, 4, 5, 6, 7]


def test_csv_and_plain_text_inputs(system, write):
    csv_summary = system.submit(
        write("docs.csv", 'id,text,lang\nc1,"great, really great",en\nc2,,en\nc3,awful,en\n')
    )
    assert csv_summary["returncode"] == 3
    assert [(r["line"], r["field"]) for r in csv_summary["rejected"]] == [(3, "text")]
    assert csv_summary["status"]["done"] == 2
    text_summary = system.submit(write("docs.txt", "first document\n\nthird line document\n"))
    assert text_summary["returncode"] == 0 and text_summary["status"]["done"] == 2
    with session_scope(system.url) as session:
        ids = session.scalars(
            select(Document.external_id).where(Document.batch_id == text_summary["batch_id"])
        )
        assert sorted(ids) == ["1", "3"]  # ids from line numbers


def test_status_command_counts_a_finished_batch(system, write):
    summary = system.submit(write("s.txt", "one\ntwo\n"))
    shown = system.producer("status", summary["batch_id"], "--json")
    assert shown.returncode == 0
    assert json.loads(shown.stdout) | {"batch_id": None} == {
        "batch_id": None, "done": 2, "failed": 0, "pending": 0, "running": 0, "total": 2
    }  # fmt: skip
    assert system.producer("status", "no-such-batch").returncode == 1
    waited = system.producer("wait", "no-such-batch")
    assert waited.returncode == 1 and "no documents for batch no-such-batch" in waited.stderr
    assert system.producer("wait", summary["batch_id"], "--timeout", "0").returncode == 0


def test_a_batch_the_broker_refused_is_kept_and_resumed(system, write):
    """The broker is down at submit: the documents stay registered (exit status 5, the
    summary, and the command to send them); `producer resume` refuses to change anything
    while the broker is still down, and sends them once it is back."""
    down = {"EXPLAINQ_BROKER_URL": "redis://127.0.0.1:1/0"}
    refused = system.producer("submit", str(write("down.txt", "one\ntwo\nthree\n")), "--json",
                              **down)  # fmt: skip
    assert refused.returncode == 5 and "registered, not sent" in refused.stderr, refused.stderr
    summary = json.loads(refused.stdout)
    batch_id = summary["batch_id"]
    assert (summary["accepted"], summary["tasks"]) == (3, 0)
    assert f"`producer resume {batch_id} --stale-after 0`" in refused.stderr
    assert system.producer("wait", batch_id, "--timeout", "0").returncode == 5  # unfinished
    still_down = system.producer("resume", batch_id, "--stale-after", "0", **down)
    assert still_down.returncode == 5 and "nothing re-sent" in still_down.stderr
    resumed = system.producer("resume", batch_id, "--stale-after", "0")
    assert resumed.returncode == 0 and "3 documents re-enqueued in 1 task" in resumed.stderr
    assert system.producer("wait", batch_id, "--timeout", "120").returncode == 0
    shown = json.loads(system.producer("status", batch_id, "--json").stdout)
    assert (shown["done"], shown["total"]) == (3, 3)


def test_a_model_the_producer_cannot_find_is_refused_before_anything_is_registered(
    system, write, tmp_path
):
    with session_scope(system.url) as session:
        before = session.scalar(select(func.count()).select_from(Batch))
    nowhere = tmp_path / "nowhere"
    refused = system.producer("submit", str(write("m.txt", "some text\n")), "--model", str(nowhere))
    assert refused.returncode == 1 and not refused.stdout
    assert refused.stderr.strip() == f"error: model '{nowhere}' not found: no directory {nowhere}"
    empty = tmp_path / "empty-dir"
    empty.mkdir()
    refused = system.producer("submit", str(write("m.txt", "some text\n")), "--model", str(empty))
    assert refused.returncode == 1 and "has no config.json (not a checkpoint)" in refused.stderr
    with session_scope(system.url) as session:
        assert session.scalar(select(func.count()).select_from(Batch)) == before


def test_a_missing_model_fails_the_documents_and_wait_says_why(system, write, tmp_path):
    """Where only the workers see the models, the workers find out: a worker started for
    a model it cannot find fails the documents of its queue, and --wait prints the
    failure reasons, grouped, and the command that lists them."""
    nowhere = str(tmp_path / "nowhere")
    env = {**system.env, "EXPLAINQ_CHECK_MODEL": "false", "EXPLAINQ_MODEL": nowhere}
    broken = Deployment(env=env, home=system.home)
    broken.start_worker(f"nowhere-{uuid.uuid4().hex[:6]}")
    try:
        summary = broken.submit(write("m.txt", "some text\nmore\n"), "--model", nowhere)
    finally:
        broken.stop()
    assert summary["returncode"] == 4  # documents failed
    assert summary["status"]["failed"] == 2
    assert "2 documents failed:" in summary["stderr"]
    assert f"  2: loading model '{nowhere}': model '{nowhere}' not found" in summary["stderr"]
    assert f"results list --batch {summary['batch_id']} --status failed" in summary["stderr"]
    with session_scope(system.url) as session:
        docs = session.scalars(select(Document).where(Document.batch_id == summary["batch_id"]))
        assert all(doc.status is Status.FAILED and "not found" in doc.error for doc in docs)


def test_adaptive_steps_through_the_whole_system(system, write):
    summary = system.submit(write("auto.txt", "\n".join(TEXTS) + "\n"), "--n-steps", "auto")
    assert summary["status"]["done"] == len(TEXTS)
    with session_scope(system.url) as session:
        rows = session.scalars(
            select(Explanation).join(Document).where(Document.batch_id == summary["batch_id"])
        ).all()
    assert len(rows) == len(TEXTS)
    for row in rows:
        assert row.params["n_steps"] == "auto" and row.params["tolerance"] == 0.01
        assert row.steps >= 8
        assert row.relative_gap <= 0.01 or abs(row.convergence_delta) <= 1e-4
    bad = system.producer("submit", "/dev/null", "--n-steps", "lots")
    assert bad.returncode == 1 and "--n-steps" in bad.stderr
    typo = system.producer("submit", "/dev/null", "--method", "lig,salency")
    assert typo.returncode == 1 and "unknown method salency" in typo.stderr
    typo = system.producer("submit", "/dev/null", EXPLAINQ_METHOD="saliency,lim")  # the default
    assert typo.returncode == 1 and "unknown method lim" in typo.stderr
