"""`producer submit` in-process (CliRunner), on a migrated SQLite database of its own.

Every refusal happens before anything is registered: exit status 1, one `error: ...` line
on stderr, nothing on stdout, and no batch in the database. The broker is a port nobody
listens on, so a submit that gets past every check is registered and not sent (exit 5):
no refusal needs a broker or a worker. (That the producer never imports torch is
tests/producer/test_without_torch.py's, in a process of its own.)
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
import redis
from sqlalchemy import select
from typer.testing import CliRunner, Result

from contract.settings import get_settings
from db.models import Batch, Document
from db.session import migrate, session_scope
from producer.cli import EXIT_REJECTED, EXIT_UNFINISHED
from producer.cli import app as producer_app
from results.cli import app as results_app

runner = CliRunner()
DEAD_BROKER = "redis://127.0.0.1:1/0"  # nobody listens: registered, never sent


def configure(monkeypatch: pytest.MonkeyPatch, **values: object) -> None:
    """Sets EXPLAINQ_<NAME> for each value, then makes the settings be read again."""
    for name, value in values.items():
        monkeypatch.setenv(f"EXPLAINQ_{name.upper()}", str(value))
    get_settings.cache_clear()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """``env(name=value, ...)`` sets EXPLAINQ_* variables; none of the developer's own
    apply, and the cached settings are dropped after the test."""
    for key in [key for key in os.environ if key.startswith("EXPLAINQ_")]:
        monkeypatch.delenv(key)
    get_settings.cache_clear()
    yield partial(configure, monkeypatch)
    get_settings.cache_clear()


@dataclass(frozen=True)
class Producer:
    url: str
    model: Path  # looks like a checkpoint to `submit`: a directory with a config.json

    def batches(self) -> list[Batch]:
        with session_scope(self.url) as session:
            return list(session.scalars(select(Batch)))


@pytest.fixture
def producer(tmp_path: Path, env) -> Producer:
    """A migrated SQLite database, a model directory and a dead broker, as settings."""
    url = f"sqlite:///{tmp_path / 'explainq.db'}"
    migrate(url)
    model = tmp_path / "tiny"
    model.mkdir()
    (model / "config.json").write_text("{}")
    env(home=tmp_path / "home", database_url=url, broker_url=DEAD_BROKER, model=model)
    return Producer(url, model)


@pytest.fixture
def doc(write) -> Path:
    """A plain-text file of one good document: a refusal is the options' doing."""
    return write("doc.txt", "a perfectly good sentence\n")


def submit(*args: object) -> Result:
    return runner.invoke(producer_app, ["submit", *map(str, args)], catch_exceptions=False)


def refusal(result: Result) -> str:
    """The one line a refused command prints: exit status 1, nothing on stdout, no
    traceback. A bad EXPLAINQ_* setting exits with its message (SystemExit), which Python
    prints on stderr; CliRunner writes it to stdout, so it is read from the exception."""
    assert result.exit_code == 1, f"exit {result.exit_code}: {result.output}"
    assert "Traceback" not in result.output
    exit_message = result.exception.code if isinstance(result.exception, SystemExit) else None
    if isinstance(exit_message, str):
        text = exit_message
    else:
        assert result.stdout == "", result.stdout
        text = result.stderr
    (line,) = text.strip().splitlines()
    assert line.startswith("error: "), line
    return line


# Moved from tests/system/test_methods.py (they ran `producer submit` in a subprocess).
@pytest.mark.parametrize(
    ("args", "settings", "expected"),
    [
        (("--method", "lig,nope"), {}, "unknown method nope; known: lig, saliency"),
        (("--method", "lig", "--method", "typo"), {}, "unknown method typo"),
        (("--n-steps", "5000"), {}, "--n-steps 5000 is over the limit EXPLAINQ_MAX_STEPS=1024"),
        (("--n-steps", "64"), {"max_steps": 32}, "EXPLAINQ_MAX_STEPS=32"),
        (("--param", "max_steps=2048"), {}, "EXPLAINQ_MAX_STEPS=1024"),
        (("--param", "n_samples=100000"), {}, "EXPLAINQ_MAX_SAMPLES=4096"),
        (("--chunk-size", "2000"), {}, "EXPLAINQ_MAX_CHUNK_SIZE=1024"),
        (("--param", "n_samples=1"), {}, "n_samples=1: must be at least 2"),
        (("--n-steps", "50", "--param", "tolerance=0.05"), {}, "adaptive steps only"),
        (("--param", f"seed={2**64}"), {}, "must be between 0 and 2**63 - 1"),
        (("--param", "colour=red"), {}, "expected key=value with a key of: n_steps"),
        ((), {"n_steps": 5000}, "EXPLAINQ_N_STEPS=5000 is over the limit"),
        ((), {"internal_batch_size": 9999}, "EXPLAINQ_MAX_INTERNAL_BATCH_SIZE=4096"),
        (("--window-stride", "600"), {}, "--window-stride 600 is over the limit EXPLAINQ_MAX"),
        ((), {"window_stride": 511}, "EXPLAINQ_MAX_TOKENS-2=510"),
    ],
)
def test_submit_refuses_a_bad_option_or_setting_before_registering(
    producer, env, doc, args, settings, expected
):
    env(**settings)
    assert expected in refusal(submit(doc, *args))
    assert producer.batches() == []


def test_an_empty_file_is_refused_as_having_no_documents(producer, write):
    path = write("empty.jsonl", b"")
    assert refusal(submit(path)) == f"error: {path}: no documents (the file is empty)"
    assert producer.batches() == []


def test_a_file_whose_every_line_is_rejected_lists_them_and_registers_nothing(producer, write):
    path = write("bad.jsonl", "{not json\n[1,\n")
    result = submit(path)
    assert result.exit_code == 1 and result.stdout == ""
    *rejected, last = result.stderr.strip().splitlines()
    assert [line.split(": ")[0] for line in rejected] == [
        f"rejected {path}:1",
        f"rejected {path}:2",
    ]
    assert all("invalid JSON" in line for line in rejected)
    assert last == f"error: {path}: nothing submitted: all 2 lines were rejected (above)"
    assert producer.batches() == []


def test_a_binary_file_is_refused_in_one_line(producer, write):
    path = write("ls.txt", bytes(range(256)) * 40)
    line = refusal(submit(path))
    assert line.startswith(f"error: {path}: ") and "not a text file" in line
    assert producer.batches() == []


def test_a_directory_is_refused_in_one_line(producer, tmp_path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    assert refusal(submit(folder)) == f"error: {folder}: is a directory, not a file"
    assert producer.batches() == []


def test_a_param_over_its_cap_is_named_as_given(producer, doc):
    """--param n_samples is not the option --n-samples (there is none)."""
    line = refusal(submit(doc, "--param", "n_samples=999999", "--method", "kernel_shap"))
    assert "--param n_samples=999999 is over the limit EXPLAINQ_MAX_SAMPLES=4096" in line
    assert "--n-samples" not in line
    line = refusal(submit(doc, "--chunk-size", "5000"))
    assert "--chunk-size 5000 is over the limit EXPLAINQ_MAX_CHUNK_SIZE=1024" in line
    assert producer.batches() == []


def test_a_param_that_no_chosen_method_takes_is_refused(producer, doc):
    line = refusal(submit(doc, "--param", "window=3"))
    assert line == "error: --param window: no chosen method (lig) takes it (taken by occlusion)"
    assert producer.batches() == []


def test_a_param_that_a_chosen_method_takes_is_registered_with_the_batch(producer, doc):
    result = submit(doc, "--param", "window=3", "--method", "lig,occlusion")
    assert result.exit_code == EXIT_UNFINISHED, result.output  # registered, not sent
    (batch,) = producer.batches()
    assert batch.methods == ["lig", "occlusion"] and batch.params["window"] == 3
    assert result.stdout.strip() == batch.id


def test_a_missing_model_is_refused_naming_the_path_once(producer, doc):
    line = refusal(submit(doc, "--model", "/nope"))
    assert line == "error: model '/nope' not found: no directory /nope"
    assert producer.batches() == []


def test_a_directory_without_config_json_is_not_a_checkpoint(producer, doc, tmp_path):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    line = refusal(submit(doc, "--model", empty))
    assert line.endswith(f"{empty} has no config.json (not a checkpoint)"), line
    assert producer.batches() == []


def test_check_model_false_leaves_the_model_to_the_workers(producer, env, doc):
    env(check_model="false")
    result = submit(doc, "--model", "/nope")
    assert result.exit_code == EXIT_UNFINISHED, result.output  # registered, not sent
    (batch,) = producer.batches()
    assert batch.model == "/nope"


def test_the_summary_line_counts_in_the_singular(producer, env, doc, broker_url):
    """A live broker (no worker needed to enqueue): exit 0 and '1 document ... 1 task'."""
    queue = f"test-cli-{uuid.uuid4().hex[:8]}"
    env(broker_url=broker_url, queue=queue)
    try:
        result = submit(doc)
        assert result.exit_code == 0, result.output
        (batch,) = producer.batches()
        assert result.stdout == f"{batch.id}\n"
        summary, note = result.stderr.strip().splitlines()
        assert summary == f"batch {batch.id}: 1 document accepted, 0 rejected, 1 task enqueued"
        # nobody consumes the model's queue, and the user is told so
        assert note.startswith(f"warning: no live worker consumes queue {queue}.")
    finally:  # nobody consumes this queue
        client = redis.Redis.from_url(broker_url)
        for key in client.scan_iter(f"{queue}*"):
            client.delete(key)


@pytest.mark.parametrize(
    ("cli", "args"),
    [
        (producer_app, ["--help"]),
        (producer_app, ["submit", "--help"]),
        (results_app, ["--help"]),
        (results_app, ["list", "--help"]),
        (results_app, ["show", "--help"]),
    ],
    ids=["producer", "producer submit", "results", "results list", "results show"],
)
def test_help_shows_no_value_after_a_flag(cli, args):
    result = runner.invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output
    if len(args) > 1:
        assert "--json" in result.output


def test_submit_notes_weights_that_differ_from_the_ones_last_used(producer, doc):
    """Hashed as the workers hash it (without torch); one line when the weights under
    the model's name are not the ones last used with it, none when they are."""
    from contract.model_path import weights_sha256
    from db.writes import register_model

    (producer.model / "model.safetensors").write_bytes(b"new weights")
    local = weights_sha256(producer.model)
    assert "note:" not in submit(doc).stderr  # a name never used: nothing to compare

    def used(sha256: str) -> None:
        with session_scope(producer.url) as session:
            register_model(session, name="tiny", path=str(producer.model), sha256=sha256,
                           labels=["negative", "positive"], info={})  # fmt: skip

    used("ab" * 32)
    result = submit(doc)
    assert result.exit_code == EXIT_UNFINISHED, result.output
    assert result.stderr.splitlines()[0] == (
        f"note: model tiny: weights differ from the ones last used (sha256 abababababab… → "
        f"{local[:12]}…)"
    )
    used(local)  # the latest registered: these weights are the ones last used
    assert "note:" not in submit(doc).stderr


def test_wait_seals_a_finished_batch_and_prints_its_seal_line(producer):
    from db.batches import NewDocument, create_batch
    from db.ownership import finish
    from db.records import ExplanationRecord
    from db.writes import register_model, save_explanations

    with session_scope(producer.url) as session:
        model = register_model(session, name="tiny", path="/m", sha256="ab" * 32,
                               labels=["negative", "positive"], info={})  # fmt: skip
        batch, made = create_batch(session, source="s", model="tiny", methods=["lig"],
                                   params={}, documents=[NewDocument("a", 1, "good", {})],
                                   rejections=[])  # fmt: skip
        save_explanations(session, [ExplanationRecord(
            document_id=made[0][0], model_id=model, method="lig", params={}, label="positive",
            confidence=0.9, probabilities={"positive": 0.9}, tokens=["good"],
            attributions=[0.5], worker="w", device="cpu",
        )])  # fmt: skip
        finish(session, [made[0][0]])
    waited = runner.invoke(producer_app, ["wait", batch], catch_exceptions=False)
    assert waited.exit_code == 0, waited.output
    line = waited.stdout.strip()
    assert line.startswith(f"explainq-seal v1 batch={batch} rows=1 root=")
    again = runner.invoke(results_app, ["seal", batch], catch_exceptions=False)
    assert again.stdout.strip() == line


def queued_chunks(broker_url: str, queue: str) -> list[list[int]]:
    """The document ids of every chunk waiting under the prefix ``queue``: in the model
    queues ``<queue>.<model>`` the chunks go to (kombu's JSON envelopes)."""
    client = redis.Redis.from_url(broker_url)
    chunks = []
    lists = [k for k in client.scan_iter(f"{queue}.*") if client.type(k) == b"list"]
    assert len(lists) <= 1, lists  # one model, one queue
    for raw in (raw for key in lists for raw in client.lrange(key, 0, -1)):
        args, _kwargs, _embed = json.loads(base64.b64decode(json.loads(raw)["body"]))
        chunks.append(args[1])
    return chunks


def test_a_long_expensive_document_gets_a_chunk_of_its_own_and_a_note(
    producer, env, write, broker_url
):
    """Issue 19: a 1,500-word document with occlusion held ten short ones of its chunk for
    8.5 minutes. Chunks are closed by estimated cost: it goes alone, the ten stay
    together, and the note names it before anything is queued."""
    queue = f"test-cost-{uuid.uuid4().hex[:8]}"
    env(broker_url=broker_url, queue=queue)
    long_text = " ".join(["a long and winding sentence about the film"] * 190)  # ~1,500 words
    lines = [json.dumps({"id": f"s{i}", "text": f"short review number {i}"}) for i in range(10)]
    lines.insert(4, json.dumps({"id": "long", "text": long_text}))
    path = write("mixed.jsonl", "\n".join(lines) + "\n")
    try:
        result = submit(path, "--method", "occlusion")
        assert result.exit_code == 0, result.output
        note = next(line for line in result.stderr.splitlines() if line.startswith("note:"))
        assert "1 long document with occlusion: line 5 (~2," in note
        assert "each runs in a chunk of its own" in note
        with session_scope(producer.url) as session:
            ids = dict(session.execute(select(Document.external_id, Document.id)).all())
        chunks = sorted(map(sorted, queued_chunks(broker_url, queue)), key=len)
        assert chunks == [[ids["long"]], sorted(ids[f"s{i}"] for i in range(10))]
        quiet = submit(write("short.jsonl", "\n".join(lines[:4]) + "\n"), "--method", "lig")
        assert "note:" not in quiet.stderr  # short documents: nothing to say
    finally:  # nobody consumes this queue
        client = redis.Redis.from_url(broker_url)
        for key in client.scan_iter(f"{queue}*"):
            client.delete(key)


def test_a_file_longer_than_a_page_streams_in_whole_and_is_sent_once(
    producer, env, write, broker_url
):
    """12,000 lines (over two pages of inserts), a bad line in each page and ids used
    twice (within a page and across pages, caught by the database, not a table of every
    id in memory): every good line registered once, every bad one rejected (duplicates
    naming the first line), each document sent in exactly one chunk, and `producer
    status` counts them all."""
    queue = f"test-stream-{uuid.uuid4().hex[:8]}"
    env(broker_url=broker_url, queue=queue)
    bad = {7, 5_003, 11_999}
    again = {9: 8, 11_000: 3}  # line -> the earlier line whose id it repeats
    lines = [
        "{not json" if n in bad else json.dumps({"id": again.get(n, n), "text": f"review {n}"})
        for n in range(1, 12_001)
    ]
    path = write("big.jsonl", "\n".join(lines) + "\n")
    refused = bad | set(again)
    try:
        result = submit(path, "--json")
        assert result.exit_code == EXIT_REJECTED, result.output
        summary = json.loads(result.stdout)
        assert summary["accepted"] == 12_000 - len(refused)
        assert [r["line"] for r in summary["rejected"]] == sorted(refused)
        for line, first in again.items():
            (reason,) = [r["reason"] for r in summary["rejected"] if r["line"] == line]
            assert reason == f"duplicate id '{first}' (first on line {first})"
        printed = [line for line in result.stderr.splitlines() if line.startswith("rejected")]
        assert sorted(int(line.split(":")[1]) for line in printed) == sorted(refused)
        (batch,) = producer.batches()
        assert (batch.submitted, batch.rejected) == (12_000 - len(refused), len(refused))
        with session_scope(producer.url) as session:
            ids = set(session.scalars(select(Document.id).where(Document.batch_id == batch.id)))
            lines_in = set(session.scalars(select(Document.line)))
        assert lines_in == set(range(1, 12_001)) - refused
        sent = [doc for chunk in queued_chunks(broker_url, queue) for doc in chunk]
        assert len(sent) == len(ids) and set(sent) == ids  # each once
        assert summary["tasks"] == -(-len(ids) // 16)  # short documents: chunks by count
        status = runner.invoke(producer_app, ["status", batch.id], catch_exceptions=False)
        assert f"{len(ids)}" in status.stdout
    finally:  # nobody consumes this queue
        client = redis.Redis.from_url(broker_url)
        for key in client.scan_iter(f"{queue}*"):
            client.delete(key)
