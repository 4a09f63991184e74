"""Replay (`results verify DOC --local`): rows written by the real chunk path on the tiny
BERT, recomputed in this process and judged by contract.replay's tolerances, on SQLite
and PostgreSQL; a changed weight file, and a row changed in the database, are caught."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from pathlib import Path

import pytest
import redis
import torch
import typer
from safetensors.torch import load_file, save_file
from sqlalchemy import event, func, select, text, update
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from contract.methods import METHODS
from contract.model_path import weights_sha256
from contract.replay import LIG_OTHER_STEPS_COSINE, TOLERANCES, Verdict, compare
from contract.settings import get_settings
from contract.tasks import queue_for_model
from db import replay_rows
from db.batches import NewDocument, create_batch
from db.models import Batch, Document, Explanation
from db.replay_rows import choose_rows, stored_chunks, stored_rows
from db.session import migrate, session_scope
from results.cli import app
from results.replay_cli import report
from tests.processes import BIN, explainq_env
from workers.chunk import run_chunk
from workers.job import decode
from workers.model_holder import get_model
from workers.replay import Weights, WeightsChanged, held_loader, local_loader, replay

runner = CliRunner()
LONG = " ".join(f"scene {i} was dull but the ending moved me" for i in range(6))  # > 24 tokens
TEXTS = {"t0": "a gorgeous, witty, seductive movie.", "t1": "strictly routine.", "t2": LONG}


@dataclass
class Made:
    url: str
    batch: str
    model: Path


@pytest.fixture
def made(fresh_database_url, tiny_model, tmp_path, monkeypatch) -> Iterator[Made]:
    """A batch of TEXTS explained by every method through the workers' chunk path (its
    long text in windows of 24 tokens), with a copy of the tiny model that a test may
    change, and `results` pointed at its database."""
    model = Path(shutil.copytree(tiny_model, tmp_path / "model"))
    url = fresh_database_url
    # the worker's own model (a worker serves one): this copy
    for key, value in {"DATABASE_URL": url, "MAX_TOKENS": "24", "QUALITY": "false",
                       "MODEL": str(model)}.items():  # fmt: skip
        monkeypatch.setenv(f"EXPLAINQ_{key}", value)
    get_settings.cache_clear()
    settings = get_settings()
    migrate(url)
    with session_scope(url) as session:
        batch, docs = create_batch(
            session, source="r.jsonl", model=str(model), methods=list(METHODS),
            params={"n_samples": 40, "seed": 7}, rejections=[],
            documents=[NewDocument(k, i, t, {}) for i, (k, t) in enumerate(TEXTS.items(), 1)],
        )  # fmt: skip
        job = decode(session.get(Batch, batch), settings)
    counts = run_chunk(job, [d for d, _ in docs], settings, task_id=None, retries=0,
                       hostname="test")  # fmt: skip
    assert counts == {"done": len(TEXTS), "failed": 0}
    with session_scope(url) as session:  # the long text was cut: replay must cut it alike
        assert session.scalar(select(func.min(Explanation.windows)).join(Document)
                              .where(Document.external_id == "t2")) > 1  # fmt: skip
    yield Made(url, batch, model)
    get_settings.cache_clear()


def verify(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["verify", *args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_every_method_is_reproduced_within_its_tolerance(made):
    code, out, err = verify("--batch", made.batch, "--all", "--local", "--json")
    assert code == 0, out + err
    report = json.loads(out)
    n = len(TEXTS) * len(METHODS)
    assert report["summary"] == {"checked": n, "reproduced": n, "failed": 0,
                                 "other_weights": False}  # fmt: skip
    assert f"{n} rows checked: {n} reproduced, 0 failed" in err
    assert {r["method"] for r in report["rows"]} == set(METHODS)
    with session_scope(made.url) as session:  # each row's scale, as stored
        scales = {i: max(abs(s) for s in scores) for i, scores in
                  session.execute(select(Explanation.id, Explanation.attributions))}  # fmt: skip
    for row in report["rows"]:
        tolerance = TOLERANCES[row["method"]]["fp32"]
        assert row["tolerance"] == "fp32" and row["label_reproduced"], row
        bound = tolerance.atol + tolerance.rtol * scales[row["row_id"]]
        assert row["max_abs_diff"] <= bound, row
        assert row["cosine"] >= tolerance.cosine and row["probability_diff"] <= 1e-5, row
        if row["method"] == "lig":  # adaptive steps: the same level reached again
            assert row["stored_gap"] is not None and row["replayed_gap"] is not None, row
            assert row["steps"][0] == row["steps"][1], row

    # one document, one method, as a person reads it
    code, out, err = verify("t2", "--method", "kernel_shap", "--local")
    assert code == 0, out + err
    assert out.startswith("row ") and "(document t2, kernel_shap): reproduced" in out, out
    assert "1 rows checked: 1 reproduced, 0 failed" in err


def _change_weights(model: Path) -> None:
    weights = model / "model.safetensors"
    tensors = load_file(weights)
    torch.manual_seed(1)
    save_file({k: v + 0.05 * torch.randn_like(v) if v.is_floating_point() else v
               for k, v in tensors.items()}, weights, metadata={"format": "pt"})  # fmt: skip


def test_changed_weights_are_refused_naming_both_hashes(made):
    before = weights_sha256(made.model)
    _change_weights(made.model)
    after = weights_sha256(made.model)
    assert before != after
    code, out, err = verify("--batch", made.batch, "--all", "--local", "--method", "saliency")
    assert code == 1 and out == ""
    assert err.startswith("error: ") and before in err and after in err, err

    code, out, err = verify("--batch", made.batch, "--all", "--local", "--method", "saliency",
                            "--allow-other-weights", "--json")  # fmt: skip
    report = json.loads(out)
    assert report["summary"]["other_weights"] and report["summary"]["checked"] == len(TEXTS)
    assert all(row["other_weights"] for row in report["rows"])
    moved = [row["max_rel_diff"] for row in report["rows"]]
    assert max(moved) > TOLERANCES["saliency"]["fp32"].rtol, moved  # it says how far
    # noise of 5 % of each weight moves every row out of float32 rounding
    assert report["summary"]["failed"] == len(TEXTS) and code == 1, report["rows"]
    assert "replayed with other weights" in err


@pytest.mark.parametrize("loader", ["local", "held"])
def test_weights_changed_between_the_check_and_the_load_are_refused(made, loader):
    settings = get_settings()
    if loader == "held":  # hold the worker's model loaded from other weights (a worker
        # serves one model), so that the replay loads it again, from the swapped files
        original = (made.model / "model.safetensors").read_bytes()
        _change_weights(made.model)
        get_model(str(made.model), settings, sha256=weights_sha256(made.model))
        (made.model / "model.safetensors").write_bytes(original)
    with session_scope(made.url) as session:
        rows = stored_rows(session, choose_rows(session, batch=made.batch, method="saliency"))
    before = weights_sha256(made.model)
    inner = local_loader() if loader == "local" else held_loader(settings)

    def swap_then_load(weights: Weights):  # after check_weights hashed the files
        assert weights.now == before
        _change_weights(made.model)
        return inner(weights)

    with pytest.raises(WeightsChanged) as refused:
        replay(rows, settings, swap_then_load)
    after = weights_sha256(made.model)
    assert before != after and before in str(refused.value) and after in str(refused.value)


def test_rows_are_read_and_replayed_a_chunk_at_a_time(made, monkeypatch):
    queries: list[int] = []  # bound parameters of each read of stored rows

    def count(conn, cursor, statement, parameters, context, executemany) -> None:
        if "model_sha256" in statement:
            queries.append(len(parameters))

    with session_scope(made.url) as session:
        ids = choose_rows(session, batch=made.batch)
        chunks = list(stored_chunks(session, ids, chunk=4))
        assert len(ids) == 3 * len(METHODS) and [len(c) for c in chunks][:2] == [4, 4]
        assert [r["id"] for c in chunks for r in c] == ids
        with pytest.raises(ValueError, match="stored_chunks"):
            stored_rows(session, ids * 100)  # > READ_CHUNK ids in one query is refused

    monkeypatch.setattr(replay_rows, "READ_CHUNK", 2)
    event.listen(Engine, "before_cursor_execute", count)
    try:
        code, out, err = verify("--batch", made.batch, "--all", "--local", "--method", "lime",
                                "--json")  # fmt: skip
    finally:
        event.remove(Engine, "before_cursor_execute", count)
    assert code == 0, out + err
    assert json.loads(out)["summary"]["reproduced"] == len(TEXTS) == 3
    # three rows read two at a time: two queries, of two row ids and one
    assert queries == [2, 1], queries


def test_a_row_changed_in_the_database_fails_replay(made):
    with session_scope(made.url) as session:
        if session.bind.dialect.name == "postgresql":  # as the tables' owner could
            session.execute(text("ALTER TABLE explanations DISABLE TRIGGER USER"))
        row = session.scalar(select(Explanation.id).where(Explanation.method == "lig").limit(1))
        scores = list(session.get(Explanation, row).attributions)
        scores[1] += 0.01 * max(abs(s) for s in scores)  # one token, by 1 % of the scale
        session.execute(update(Explanation).where(Explanation.id == row)
                        .values(attributions=scores))  # fmt: skip
    code, out, err = verify("--batch", made.batch, "--all", "--local", "--method", "lig")
    assert code == 1, out + err
    failed = [line for line in out.splitlines() if "FAILED" in line]
    assert len(failed) == 1 and failed[0].startswith(f"row {row} "), out
    assert "scores differ" in failed[0]
    assert f"{len(TEXTS)} rows checked: {len(TEXTS) - 1} reproduced, 1 failed" in err


def test_verify_tasks_nobody_takes_expire_and_the_wait_ends_in_one_line(
    made, broker_url, monkeypatch
):
    prefix = f"nobody-{uuid.uuid4().hex[:8]}"  # no worker listens here
    queue = queue_for_model(str(made.model), prefix)  # the rows' model's queue
    monkeypatch.setenv("EXPLAINQ_BROKER_URL", broker_url)
    monkeypatch.setenv("EXPLAINQ_QUEUE", prefix)
    get_settings.cache_clear()
    client = redis.Redis.from_url(broker_url)
    try:
        code, out, err = verify("--batch", made.batch, "--all", "--timeout", "1")
        assert code == 1 and out == "", out
        assert err.strip() == (f"error: no worker on queue {queue!r} replayed rows "
                               f"{min_row(made)}.. within 1 s (is one running? --local "
                               "replays here)")  # fmt: skip
        messages = [json.loads(m) for m in client.lrange(queue, 0, -1)]
    finally:
        client.delete(queue)
    # 21 rows, 8 per task: each task expires when the command would stop waiting for it
    assert len(messages) == 3
    expires = sorted(datetime.fromisoformat(m["headers"]["expires"]) for m in messages)
    gaps = [(b - a).total_seconds() for a, b in pairwise(expires)]
    assert all(0.5 < gap < 1.5 for gap in gaps), gaps


def min_row(made: Made) -> int:
    with session_scope(made.url) as session:
        return session.scalar(select(func.min(Explanation.id)))


def test_local_replay_without_torch_says_what_is_missing(tmp_path):
    blocker = tmp_path / "blocked"
    (blocker / "torch").mkdir(parents=True)
    (blocker / "torch" / "__init__.py").write_text("raise ImportError('no torch here')\n")
    path = os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")])
    env = explainq_env(database_url=f"sqlite:///{tmp_path / 'x.db'}") | {"PYTHONPATH": path}
    done = subprocess.run([str(BIN / "results"), "verify", "d1", "--local"], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip() == (
        "error: --local needs the workers' extra (pip install 'explainq[workers]'): no torch here"
    )


# The comparison itself, on made-up rows: what fails and what the table allows.
def _row(**changes) -> dict:
    row = {"label": "positive", "probabilities": {"negative": 0.25, "positive": 0.75},
           "tokens": ["[CLS]", "a", "b", "[SEP]"], "attributions": [0.0, 1.0, -0.5, 0.25],
           "relative_gap": 0.004, "convergence_delta": 0.003, "steps": 15,
           "params": {"tolerance": 0.01}, "device": "cpu", "windows": 1}  # fmt: skip
    return row | changes


def _judge(method: str, stored: dict, replayed: dict) -> Verdict:
    return compare(stored, replayed, Verdict(row_id=1, document="d", method=method, batch_id="b"))


def test_compare_fails_a_label_probabilities_or_scores_out_of_tolerance():
    assert _judge("saliency", _row(), _row()).ok
    assert _judge("saliency", _row(), _row(attributions=[0.0, 1.0 + 5e-5, -0.5, 0.25])).ok
    flipped = _judge("saliency", _row(), _row(label="negative"))
    assert not flipped.ok and "label 'negative', stored 'positive'" in flipped.problems[0]
    probs = _row(probabilities={"negative": 0.2501, "positive": 0.7499})
    assert not _judge("saliency", _row(), probs).ok
    moved = _judge("saliency", _row(), _row(attributions=[0.0, 1.001, -0.5, 0.25]))
    assert not moved.ok and moved.max_abs_diff == pytest.approx(1e-3)
    assert _judge("saliency", _row(), _row(tokens=["[CLS]", "a", "[SEP]"])).problems


@pytest.mark.parametrize("side", ["stored", "replayed"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_score_or_probability_on_either_side_fails(side, bad, capsys):
    finite = _row(attributions=[0.5, -7.0, 0.2, 0.0])
    broken = _row(attributions=[0.5, bad, 0.2, 0.0])
    # a NaN that is not first is skipped by max() and compares False with every bound
    pair = (broken, finite) if side == "stored" else (finite, broken)
    judged = _judge("saliency", *pair)
    assert not judged.ok and f"{side} scores not finite" in judged.problems, judged.problems
    nan_probability = _row(probabilities={"negative": math.nan, "positive": 0.75})
    pair = (nan_probability, _row()) if side == "stored" else (_row(), nan_probability)
    judged = _judge("lig", *pair)
    assert not judged.ok and f"{side} probabilities not finite" in judged.problems

    # --json prints null for the figures, never NaN (not JSON)
    with pytest.raises(typer.Exit):
        report([judged.as_json(), _judge("saliency", broken, finite).as_json()], as_json=True)
    printed = json.loads(capsys.readouterr().out, parse_constant=_no_constant)
    assert printed["summary"]["failed"] == 2
    assert printed["rows"][0]["probability_diff"] is None


def _no_constant(name: str) -> None:
    raise AssertionError(f"{name} in JSON output")


def test_compare_picks_the_row_of_the_table_by_precision_and_device_kind():
    bf16 = "cuda:0 NVIDIA H200 (CUDA_VISIBLE_DEVICES=0), bf16 autocast"
    off = _row(attributions=[0.0, 1.02, -0.5, 0.25])  # 2 %: bf16 rounding, not fp32
    assert not _judge("occlusion", _row(), off).ok
    judged = _judge("occlusion", _row(device=bf16), off | {"device": "cpu"})
    assert judged.ok and judged.tolerance == "bf16"
    other = _judge("lime", _row(), off | {"device": "cuda:0 NVIDIA H200"})
    assert other.ok and other.tolerance == "other-device"


def test_lig_that_took_other_steps_is_held_to_its_completeness_tolerance():
    # the sum of the stored scores minus the delta: |f(x) - f(baseline)| = 0.747
    nearby = _row(steps=29, relative_gap=0.002, attributions=[0.0, 1.005, -0.5, 0.25])
    assert _judge("lig", _row(), nearby).ok
    incomplete = nearby | {"relative_gap": 0.02}
    assert "completeness gap" in _judge("lig", _row(), incomplete).problems[0]
    far = nearby | {"attributions": [0.0, 1.05, -0.5, 0.25]}
    assert not _judge("lig", _row(), far).ok
    turned = nearby | {"attributions": [0.0, 0.0, 0.0, 0.25]}
    assert _judge("lig", _row(), turned).cosine < LIG_OTHER_STEPS_COSINE
    fixed = _judge("lig", _row(params={}), nearby)
    assert not fixed.ok and "fixed steps" in fixed.problems[0]


def test_the_table_states_a_tolerance_for_every_method_and_precision():
    assert set(TOLERANCES) == set(METHODS)
    for method, rows in TOLERANCES.items():
        assert {"fp32", "bf16"} <= set(rows), method
        # bfloat16 never judges tighter than float32
        assert rows["bf16"].rtol >= rows["fp32"].rtol and rows["bf16"].cosine <= rows["fp32"].cosine
