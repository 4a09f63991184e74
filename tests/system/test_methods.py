"""Several attribution methods per batch, end to end: chosen at `producer submit` (which
checks them, and the caps on their parameters, without torch), explained by a real
worker, stored with their quality, agreement and the document's vector, and read back by
`results quality`, `show` and `similar`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from db.engine import session_scope
from db.models import Agreement, Batch, Document, Explanation, Representation, Status
from db.quality import METRICS
from db.settings import EXPLAIN_TASK
from producer.submit import broker_app
from tests.processes import BIN, explainq_env

BLOCKED = ("torch", "transformers", "captum", "workers")


@pytest.fixture
def no_torch_env(tmp_path: Path) -> dict[str, str]:
    """An environment whose PYTHONPATH shadows the heavy packages with ones that refuse
    to import, and whose database is a SQLite file nobody else uses."""
    for name in BLOCKED:
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(
            f"raise ImportError('{name} is blocked in this test')\n"
        )
    env = explainq_env(home=tmp_path, database_url=f"sqlite:///{tmp_path / 'x.db'}")
    return {**env, "PYTHONPATH": str(tmp_path)}


def submit(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "producer"), "submit", "/dev/null", *args],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (("--method", "lig,nope"), {}, "unknown method nope; known: lig, saliency"),
        (("--method", "lig", "--method", "typo"), {}, "unknown method typo"),
        (("--n-steps", "5000"), {}, "--n-steps 5000 is over the limit EXPLAINQ_MAX_STEPS=1024"),
        (("--n-steps", "64"), {"EXPLAINQ_MAX_STEPS": "32"}, "EXPLAINQ_MAX_STEPS=32"),
        (("--param", "max_steps=2048"), {}, "EXPLAINQ_MAX_STEPS=1024"),
        (("--param", "n_samples=100000"), {}, "EXPLAINQ_MAX_SAMPLES=4096"),
        (("--chunk-size", "2000"), {}, "EXPLAINQ_MAX_CHUNK_SIZE=1024"),
        (("--param", "n_samples=1"), {}, "n_samples=1: must be at least 2"),
        (("--n-steps", "50", "--param", "tolerance=0.05"), {}, "adaptive steps only"),
        (("--param", f"seed={2**64}"), {}, "must be between 0 and 2**63 - 1"),
        (("--param", "colour=red"), {}, "expected key=value with a key of: n_steps"),
        ((), {"EXPLAINQ_N_STEPS": "5000"}, "EXPLAINQ_N_STEPS=5000 is over the limit"),
        ((), {"EXPLAINQ_INTERNAL_BATCH_SIZE": "9999"}, "EXPLAINQ_MAX_INTERNAL_BATCH_SIZE=4096"),
        (("--window-stride", "600"), {}, "--window-stride 600 is over the limit EXPLAINQ_MAX"),
        ((), {"EXPLAINQ_WINDOW_STRIDE": "511"}, "EXPLAINQ_MAX_TOKENS-2=510"),
    ],
)
def test_producer_refuses_without_torch(no_torch_env, args, env, expected):
    done = submit({**no_torch_env, **env}, *args)
    assert done.returncode == 1 and done.stdout == ""
    assert expected in " ".join(done.stderr.split()), done.stderr  # rich may wrap
    assert "Traceback" not in done.stderr


COMMANDS = [("producer", "status", "b"), ("producer", "wait", "b"), ("producer", "resume"),
            ("results", "list"), ("results", "migrate")]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_names_a_bad_setting_in_one_line(no_torch_env, command):
    env = {**no_torch_env, "EXPLAINQ_N_STEPS": "0", "EXPLAINQ_METHOD": "lig"}
    done = subprocess.run([str(BIN / command[0]), *command[1:]], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    expected = "error: EXPLAINQ_N_STEPS: Input should be greater than or equal to 1"
    assert done.stderr.strip() == expected


def test_the_blocker_blocks(no_torch_env):
    check = subprocess.run(
        [sys.executable, "-c", "import torch"], env=no_torch_env, capture_output=True, text=True
    )
    assert "torch is blocked" in check.stderr


def test_settings_methods_are_the_engines():
    from db.settings import METHODS as ADVERTISED
    from workers.engine.methods import METHODS

    assert list(ADVERTISED) == list(METHODS)  # same names, and --help lists them alike


def test_a_worker_caps_the_implicit_limits_of_adaptive_steps():
    from db.settings import Settings
    from workers.tasks import capped

    low = Settings(max_steps=100)
    assert capped({"n_steps": "auto"}, low) == {"n_steps": "auto", "max_steps": 100}
    assert capped({"n_steps": "auto", "max_steps": 200}, low)["max_steps"] == 100
    assert capped({"n_steps": "auto"}, Settings())["max_steps"] == 256  # the engine's own
    assert capped({"n_steps": 50}, low) == {"n_steps": 50}


def test_max_steps_below_the_first_adaptive_level_is_refused_at_submit():
    from db.params import parse_params
    from db.settings import FIRST_LEVEL, Settings
    from workers.engine.quadrature import nested_sizes

    assert nested_sizes()[0] == FIRST_LEVEL == 9
    with pytest.raises(ValueError, match="max_steps=8: must be at least 9"):
        parse_params(["max_steps=8"], Settings())
    assert parse_params(["max_steps=9"], Settings()) == {"max_steps": 9}
    # nor can a worker's cap fall below it: every adaptive document would fail
    assert Settings(max_steps=FIRST_LEVEL).max_steps == FIRST_LEVEL
    with pytest.raises(ValueError, match="max_steps"):
        Settings(max_steps=FIRST_LEVEL - 1)


def test_every_tunable_parameter_belongs_to_some_method():
    from db.params import TUNABLE
    from workers.engine.methods import METHODS

    known = set()
    for module in METHODS.values():
        known |= set(module.PARAMS) | set(getattr(module, "ADAPTIVE_PARAMS", {}))
    assert set(TUNABLE) <= known, set(TUNABLE) - known


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
        assert row.windows > 1 and not row.truncated
        assert len(row.tokens) == len(row.attributions) > 700
        assert row.tokens[0] == "[CLS]" and row.tokens[-1] == "[SEP]"
