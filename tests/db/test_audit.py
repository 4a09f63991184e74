"""Tamper evidence on SQLite and PostgreSQL: every row's digest, the seal of a finished
batch, `results verify --integrity` naming what changed, the append-only triggers, the
audit bundle checked by its own verify.py in an isolated Python, and `results models`.

Rows are written as the workers write them (db.writes.save_explanations). A change is
made the way an intruder with SQL access would make it: a raw UPDATE or DELETE, which
on PostgreSQL needs the triggers disabled first (as the tables' owner or a superuser)."""

from __future__ import annotations

import ast
import json
import re
import runpy
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from typer.testing import CliRunner

from contract.settings import get_settings
from db import digest as digest_module
from db.batches import NewDocument, create_batch
from db.bundle import verify_script
from db.digest import EMPTY_ROOT, Merkle, canonical_json, merkle_parent, parse_seal_line
from db.models import Document, Explanation, Model, Seal, SealRow, explanation_values
from db.ownership import finish
from db.records import ExplanationRecord, explanation_digest
from db.session import get_engine, migrate, session_scope
from db.writes import register_model, save_explanations
from results.cli import app

runner = CliRunner()
SEAL_LINE = re.compile(
    r"^explainq-seal v1 batch=(?P<batch>[0-9a-f-]{36}) rows=(?P<rows>\d+) "
    r"root=(?P<root>[0-9a-f]{64}) at=(?P<at>\S+)$"
)
TEXTS = {"a": "a gorgeous, witty film", "b": "strictly routine 😀", "c": "lazy, dull script."}


def record(doc_id: int, model_id: int, method: str, seed: int) -> ExplanationRecord:
    tokens = ["[CLS]", "some", "words", "here", "[SEP]"]
    return ExplanationRecord(
        document_id=doc_id, model_id=model_id, method=method, params={"n_steps": 8 + seed},
        label="positive", confidence=0.75 + seed / 100,
        probabilities={"negative": 0.25 - seed / 100, "positive": 0.75 + seed / 100},
        tokens=tokens, attributions=[0.0, 0.1 * seed, -0.3, 1 / 3, 0.0],
        worker="w", device="cpu", convergence_delta=1e-4, relative_gap=2e-3, steps=9,
        quality={"comprehensiveness": 0.4, "sufficiency": -0.0}, timings={"attribute": 0.1},
        offsets=[0, 0, 0, 4, 5, 10, 11, 15, 0, 0], words=[-1, 0, 1, 2, -1],
        execution={"max_tokens": 512, "window_stride": None, "quality": True},
    )  # fmt: skip


@dataclass(frozen=True)
class Audited:
    url: str
    batch: str
    model_id: int
    ids: dict[str, int]  # the user's id -> the document's row id

    @property
    def postgres(self) -> bool:
        return self.url.startswith("postgresql")

    def row(self, external_id: str, method: str) -> int:
        with session_scope(self.url) as session:
            return session.scalars(
                select(Explanation.id).where(
                    Explanation.document_id == self.ids[external_id], Explanation.method == method
                )
            ).one()

    @contextmanager
    def intruder(self) -> Iterator:
        """A connection that changes rows behind the application's back: on PostgreSQL
        with the append-only triggers disabled, as a superuser (or the owner) can."""
        with get_engine(self.url).begin() as connection:
            if self.postgres:
                for table in ("explanations", "seals", "seal_rows"):
                    connection.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
            yield connection
            if self.postgres:
                for table in ("explanations", "seals", "seal_rows"):
                    connection.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER USER"))


@pytest.fixture
def audited(fresh_database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Audited]:
    """A finished batch of three documents explained with lig and saliency, written by
    save_explanations, and `results` pointed at it; not sealed yet."""
    url = fresh_database_url
    monkeypatch.setenv("EXPLAINQ_DATABASE_URL", url)
    get_settings.cache_clear()
    migrate(url)
    with session_scope(url) as session:
        model_id = register_model(session, name="tiny", path="/m/tiny", sha256="ab" * 32,
                                  labels=["negative", "positive"], info={})  # fmt: skip
        batch, made = create_batch(
            session, source="t.jsonl", model="tiny", methods=["lig", "saliency"], params={},
            documents=[NewDocument(k, i, t, {}) for i, (k, t) in enumerate(TEXTS.items(), 1)],
            rejections=[],
        )  # fmt: skip
        ids = dict(zip(TEXTS, (doc_id for doc_id, _ in made), strict=True))
    for seed, doc_id in enumerate(ids.values()):
        with session_scope(url) as session:  # one chunk per document, as workers write
            save_explanations(session, [record(doc_id, model_id, m, seed)
                                        for m in ("lig", "saliency")])  # fmt: skip
            finish(session, [doc_id])
    yield Audited(url, batch, model_id, ids)
    get_settings.cache_clear()


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def verify(*args: str) -> tuple[int, list[str]]:
    result = run("verify", "--integrity", *args)
    return result.exit_code, result.stdout.splitlines()


def seal(batch: str) -> str:
    result = run("seal", batch)
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


# -- the definitions -------------------------------------------------------------------


def test_the_digest_module_needs_only_the_standard_library():
    """verify.py copies it: no import of ours, nor of any third-party package."""
    tree = ast.parse(Path(digest_module.__file__).read_text())
    imported = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported


def naive_root(digests: list[str]) -> str:
    """The definition, level by level: pairs hashed, an odd last node promoted."""
    if not digests:
        return EMPTY_ROOT
    level = digests
    while len(level) > 1:
        pairs = [merkle_parent(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        level = pairs + ([level[-1]] if len(level) % 2 else [])
    return level[0]


def test_the_streaming_merkle_root_is_the_level_by_level_one():
    leaves = [digest_module.hashlib.sha256(str(i).encode()).hexdigest() for i in range(70)]
    for n in range(len(leaves)):
        tree = Merkle()
        for leaf in leaves[:n]:
            tree.add(leaf)
        assert (tree.root(), tree.count) == (naive_root(leaves[:n]), n)
    assert naive_root(leaves[:1]) == leaves[0]


def test_numbers_are_canonical_across_the_jsonb_round_trip():
    """JSONB keeps a number's value, not its spelling: 1e+20 comes back as an integer,
    -0.0 as 0.0; neither changes a digest. A large integer that no float spells keeps
    its digits; the float32 scores, as stored, are repr of their float64."""
    assert canonical_json({"x": 1e20}) == canonical_json({"x": 10**20}) == '{"x":1e+20}'
    assert canonical_json({"x": -0.0}) == canonical_json({"x": 0.0})
    assert canonical_json({"x": 2**60 + 1}) == '{"x":1152921504606846977}'
    assert canonical_json({"b": [1, 2.5], "a": "é"}) == '{"a":"é","b":[1,2.5]}'


def test_a_stored_digest_covers_what_the_row_asserts(audited):
    with session_scope(audited.url) as session:
        row, external_id, text_, sha = session.execute(
            select(Explanation, Document.external_id, Document.text, Model.sha256)
            .join(Document).join(Model).where(Explanation.method == "lig")
            .order_by(Explanation.id).limit(1)
        ).one()  # fmt: skip
        columns = explanation_values(row)
    assert row.digest == explanation_digest(columns, external_id=external_id, text=text_,
                                            model_sha256=sha)  # fmt: skip
    assert row.attributions[3] == pytest.approx(1 / 3) and row.attributions[3] != 1 / 3  # f32
    content = json.loads(canonical_json({"text": text_, "attributions": row.attributions}))
    assert content["attributions"][3] == row.attributions[3]  # the float32 as its float64


# -- sealing and verifying ------------------------------------------------------------


def test_a_finished_batch_seals_to_one_line_and_again_to_the_same(audited):
    line = seal(audited.batch)
    match = SEAL_LINE.match(line)
    assert match and match["batch"] == audited.batch and match["rows"] == "6", line
    assert seal(audited.batch) == line
    with session_scope(audited.url) as session:  # a redelivered chunk: ON CONFLICT DO NOTHING
        again = [record(audited.ids["a"], audited.model_id, m, 0) for m in ("lig", "saliency")]
        assert save_explanations(session, again) == 0  # no UPDATE: the triggers let it be
    with session_scope(audited.url) as session:
        (stored,) = session.scalars(select(Seal)).all()
        rows = session.scalars(select(SealRow).order_by(SealRow.position)).all()
        digests = [r.digest for r in rows]
        assert stored.root == match["root"] == naive_root(digests) and len(rows) == 6
        assert [r.document_id for r in rows] == sorted(r.document_id for r in rows)
    code, lines = verify()
    assert code == 0 and lines == []
    code, lines = verify("--batch", audited.batch, "--seal", line)
    assert code == 0, lines
    as_json = json.loads(run("verify", "--integrity", "--json").stdout)
    assert as_json == {"intact": True, "rows": 6, "sealed_batches": [audited.batch],
                       "problems": []}  # fmt: skip
    assert json.loads(run("seal", audited.batch, "--json").stdout)["line"] == line


def test_an_unfinished_batch_is_not_sealed(audited):
    with session_scope(audited.url) as session:
        batch, _ = create_batch(session, source="u", model="tiny", methods=["lig"],
                                params={}, documents=[NewDocument("p", 1, "later", {})],
                                rejections=[])  # fmt: skip
    result = run("seal", batch)
    assert result.exit_code == 1 and "1 document unfinished" in result.stderr
    assert run("seal", "no-such-batch").exit_code == 1


def test_a_row_changed_in_the_database_is_named(audited):
    """On PostgreSQL the UPDATE is refused by the trigger; with the triggers disabled
    (a superuser can), the change is made, and verify --integrity still names it."""
    line = seal(audited.batch)
    row_id = audited.row("b", "lig")
    scores = bytes(8) + b"\x00\x00\x80\x3f" * 3 + bytes(4)  # five float32, 1.0 in the middle
    update = text("UPDATE explanations SET attributions = :scores WHERE id = :id")
    if audited.postgres:
        refused = pytest.raises(DBAPIError, match="explanations is append-only: UPDATE refused")
        with refused, get_engine(audited.url).begin() as connection:
            connection.execute(update, {"scores": scores, "id": row_id})
        assert verify()[0] == 0  # refused: nothing changed
    with audited.intruder() as connection:
        connection.execute(update, {"scores": scores, "id": row_id})
    code, lines = verify()
    assert code == 1
    assert lines[0].startswith(
        f"row {row_id} (document b, method lig, batch {audited.batch}): content changed"
    ), lines
    assert lines[1].startswith(f"batch {audited.batch}: sealed with root ") and len(lines) == 2
    code, lines = verify("--seal", line)
    assert code == 1 and any("the seal line says root" in x for x in lines)
    problems = json.loads(run("verify", "--integrity", "--json").stdout)["problems"]
    assert (problems[0]["row_id"], problems[0]["document"], problems[0]["kind"]) == (
        row_id, "b", "changed")  # fmt: skip
    # the seal is of the digests as written, which still hold: sealing again gives it
    assert seal(audited.batch) == line


def test_a_change_that_rewrites_the_digest_too_is_named_against_the_seal(audited):
    seal(audited.batch)
    row_id = audited.row("a", "saliency")
    with session_scope(audited.url) as session:
        row = session.get(Explanation, row_id)
        columns = explanation_values(row)
    columns["label"] = "negative"
    forged = explanation_digest(columns, external_id="a", text=TEXTS["a"], model_sha256="ab" * 32)
    with audited.intruder() as connection:
        connection.execute(
            text("UPDATE explanations SET label = 'negative', digest = :d WHERE id = :id"),
            {"d": forged, "id": row_id},
        )
    code, lines = verify("--batch", audited.batch)
    assert code == 1
    assert lines[0] == (
        f"row {row_id} (document a, method saliency, batch {audited.batch}): changed since "
        f"the seal (sealed digest {lines[0].split('sealed digest ')[1][:12]}…, its content "
        f"now {forged[:12]}…)"
    )


def test_a_deleted_and_an_inserted_row_are_named(audited):
    seal(audited.batch)
    gone = audited.row("c", "saliency")
    with audited.intruder() as connection:
        connection.execute(text("DELETE FROM explanations WHERE id = :id"), {"id": gone})
    with session_scope(audited.url) as session:  # an insert: the triggers allow it
        save_explanations(session, [record(audited.ids["a"], audited.model_id, "attention", 5)])
    added = audited.row("a", "attention")
    code, lines = verify()
    assert code == 1
    assert f"row {added} (document a, method attention, batch {audited.batch}): added since " \
           "the batch was sealed" in lines  # fmt: skip
    removed = f"row {gone} (document c, method saliency, batch {audited.batch}): removed since"
    assert any(x.startswith(removed + " the batch was sealed") for x in lines), lines
    assert lines[-1].startswith(f"batch {audited.batch}: sealed with root ")
    assert "over 6 rows; its rows now give " in lines[-1] and lines[-1].endswith("over 6")
    refused = run("seal", audited.batch)
    assert refused.exit_code == 1
    sealed_root = refused.stderr.split("already sealed with root ")[1].split()[0]
    assert f"({6} rows); rows now give " in refused.stderr and len(sealed_root) == 64


def test_a_changed_seal_is_named(audited):
    seal(audited.batch)
    with audited.intruder() as connection:
        connection.execute(text("UPDATE seals SET root = :r"), {"r": "0" * 64})
    code, lines = verify()
    assert code == 1 and any("the seal was altered" in x for x in lines), lines


@pytest.mark.parametrize("fresh_database_url", ["postgresql"], indirect=True)
def test_postgres_refuses_updates_and_deletes_of_seals_and_explanations(audited):
    seal(audited.batch)
    for statement in (
        "UPDATE seals SET count = 0",
        "DELETE FROM seal_rows",
        "DELETE FROM explanations",
        f"DELETE FROM documents WHERE id = {audited.ids['a']}",  # cascades to its rows
        "TRUNCATE explanations",
        "TRUNCATE documents CASCADE",
    ):
        refused = pytest.raises(DBAPIError, match="is append-only")
        with refused, get_engine(audited.url).begin() as connection:
            connection.execute(text(statement))
    assert verify()[0] == 0


# -- the audit bundle -----------------------------------------------------------------


def test_verify_py_is_db_digest_verbatim_followed_by_the_check(tmp_path):
    script = verify_script()
    source = Path(digest_module.__file__).read_text()
    assert source in script
    path = tmp_path / "verify.py"
    path.write_text(script)
    copied = runpy.run_path(str(path), run_name="not_main")
    sample = {"doc": 1, "method": "lig", "attributions": [0.5, -0.0, 1e20], "text": "é"}
    assert copied["row_digest"](sample) == digest_module.row_digest(sample)
    assert copied["merkle_root"](["a" * 64, "b" * 64, "c" * 64]) == digest_module.merkle_root(
        ["a" * 64, "b" * 64, "c" * 64]
    )


def python_isolated(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The bundle's check as an auditor runs it: ``python -I`` (no site packages, no
    PYTHONPATH, nothing of explainq), from elsewhere."""
    return subprocess.run([sys.executable, "-I", str(script), *args], capture_output=True,
                          text=True, cwd=script.parent.parent, timeout=60)  # fmt: skip


def test_the_audit_bundle_verifies_with_its_own_script_and_fails_after_one_byte(audited, tmp_path):
    line = seal(audited.batch)
    bundle = tmp_path / "bundle"
    result = run("export", "--audit", "--batch", audited.batch, "-o", str(bundle))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in bundle.iterdir()) == ["rows.jsonl", "seal.txt", "verify.py"]
    assert (bundle / "seal.txt").read_text() == line + "\n"
    rows = [json.loads(x) for x in (bundle / "rows.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and {r["document_id"] for r in rows} == set(TEXTS)
    assert rows[0]["text"] == TEXTS[rows[0]["document_id"]] and "row_id" in rows[0]

    checked = python_isolated(bundle / "verify.py")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == (
        f"OK: 6 rows of batch {audited.batch} match root {SEAL_LINE.match(line)['root']}"
    )
    assert python_isolated(bundle / "verify.py", "--seal", line).returncode == 0
    other = line.replace("rows=6", "rows=5")
    refused = python_isolated(bundle / "verify.py", "--seal", other)
    assert refused.returncode == 1 and "the seal line says" in refused.stdout

    data = bytearray((bundle / "rows.jsonl").read_bytes())
    at = data.index(b"witty")  # one byte of a document's text
    data[at] = ord("W")
    (bundle / "rows.jsonl").write_bytes(bytes(data))
    failed = python_isolated(bundle / "verify.py")
    assert failed.returncode == 1
    assert "its content does not give its digest" in failed.stdout
    assert failed.stdout.strip().endswith("FAILED: 2 problems")  # the row, and the root


def test_the_bundle_fails_when_a_score_changes_by_one_digit(audited, tmp_path):
    seal(audited.batch)
    bundle = tmp_path / "b"
    assert run("export", "--audit", "--batch", audited.batch, "-o", str(bundle)).exit_code == 0
    data = (bundle / "rows.jsonl").read_bytes()
    at = data.index(b"0.3333333")  # 1/3 as float32, printed as its float64
    changed = data[: at + 8] + (b"4" if data[at + 8 : at + 9] != b"4" else b"5") + data[at + 9 :]
    (bundle / "rows.jsonl").write_bytes(changed)
    failed = python_isolated(bundle / "verify.py")
    assert failed.returncode == 1 and "does not give its digest" in failed.stdout


def test_audit_export_needs_a_sealed_batch_and_a_directory(audited, tmp_path):
    unsealed = run("export", "--audit", "--batch", audited.batch, "-o", str(tmp_path / "x"))
    assert unsealed.exit_code == 1 and f"`results seal {audited.batch}` first" in unsealed.stderr
    assert run("export", "--audit", "-o", str(tmp_path / "x")).exit_code == 1
    assert run("export", "--audit", "--batch", audited.batch).exit_code == 1


def test_verify_says_what_it_needs_in_one_line(audited):
    nothing = run("verify")
    assert nothing.exit_code == 1
    assert nothing.stderr == "error: verify needs a document, --batch B, or --integrity\n"
    mixed = run("verify", "a", "--integrity")
    assert mixed.exit_code == 1 and "--integrity checks stored rows: no DOC" in mixed.stderr
    # replay (tests/workers/test_replay.py) of a model that is nowhere to be found
    lost = run("verify", "a", "--local")
    assert lost.exit_code == 1 and lost.stdout == "", lost.stdout
    assert lost.stderr.startswith("error: model 'tiny' not found") and "/m/tiny" in lost.stderr


# -- models over time -----------------------------------------------------------------


def test_models_lists_two_weight_versions_of_one_name(audited):
    with session_scope(audited.url) as session:
        newer = register_model(session, name="tiny", path="/m/tiny", sha256="cd" * 32,
                               labels=["negative", "positive"], info={})  # fmt: skip
        _, made = create_batch(session, source="n", model="tiny", methods=["lig"],
                                   params={}, documents=[NewDocument("n", 1, "new", {})],
                                   rejections=[])  # fmt: skip
        save_explanations(session, [record(made[0][0], newer, "lig", 1)])
    listing = json.loads(run("models", "--json").stdout)
    assert [(m["name"], m["sha256"], m["explanations"]) for m in listing] == [
        ("tiny", "ab" * 32, 6), ("tiny", "cd" * 32, 1)]  # fmt: skip
    old, new = listing
    assert old["first_used"] <= old["last_used"] <= new["first_used"] == new["last_used"]
    assert old["labels"] == ["negative", "positive"]
    table = run("models").stdout
    assert "abababababab" in table and "cdcdcdcdcdcd" in table
    with session_scope(audited.url) as session:
        from db.model_usage import last_weights

        assert last_weights(session, "tiny") == "cd" * 32
        assert last_weights(session, "other") is None


def test_seal_lines_parse_back():
    line = "explainq-seal v1 batch=b rows=3 root=" + "f" * 64 + " at=2026-01-01T00:00:00+00:00"
    assert parse_seal_line(line)["rows"] == 3
    for bad in ("explainq-seal v2 batch=b rows=1 root=x", "explainq-seal v1 batch=b rows=x"):
        with pytest.raises(ValueError):
            parse_seal_line(bad)
