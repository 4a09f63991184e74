"""Small per-row values in few bytes (db.compact, db.run_settings): every value reads
back as JSON gave it, on SQLite and PostgreSQL, and a set of settings is stored once
however many writers save it at once."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from db.audit import verify_integrity
from db.compact import (
    pack_deltas,
    pack_dict,
    pack_tokens,
    unpack_deltas,
    unpack_dict,
    unpack_tokens,
)
from db.models import Batch, Document, Explanation, RunSettings, explanation_values
from db.records import ExplanationRecord
from db.session import migrate, session_scope
from db.writes import register_model, save_explanations

DICTS = [
    {},
    {"seconds": 0.1, "lig_nodes": 33, "fp32_fallback": 1, "oom_retries": 0},
    {"comprehensiveness": 0.4, "sufficiency": None, "random_comprehensiveness": -1e-300},
    {"a label": 0.75, "é": 0.25, "flag": True, "off": False, "big": 2**62, "neg": -(2**62)},
    {"nested": {"x": [1, 2.5]}, "seconds": 1.0},  # not flat: JSON
    {"huge": 2**70},  # beyond int64: JSON
    {"k" * 300: 1.0},  # a name longer than a byte says: JSON
]


@pytest.mark.parametrize("value", DICTS)
def test_a_dict_reads_back_with_its_values_and_their_types(value):
    back = unpack_dict(pack_dict(value))
    assert back == value and [type(v) for v in back.values()] == [type(v) for v in value.values()]


def test_a_flat_dict_takes_a_fraction_of_its_json():
    timings = {"predict": 0.0123, "tokenize": 3e-4, "lig": 1.25, "lig_nodes": 33,
               "quality": 0.05, "seconds": 1.3}  # fmt: skip
    assert len(pack_dict(timings)) == 1 + 6 * 10  # key byte, type byte, 8 bytes each


@pytest.mark.parametrize(
    "values",
    [[], [0], [0, 0, 0, 4, 5, 9, 9, 10, 0, 0], [-1, 0, 1, 1, 2, -1], [0, 70000, 3, 9],
     [2**31 - 1, -(2**31)], list(range(0, 3000, 7))],
)  # fmt: skip
def test_ints_read_back_from_their_differences(values):
    assert unpack_deltas(pack_deltas(values)) == values


def test_offsets_take_a_byte_each_where_tokens_are_short():
    offsets = [0, 0, *[x for i in range(22) for x in (5 * i, 5 * i + 4)], 110, 110]
    assert len(pack_deltas(offsets)) == 1 + len(offsets)
    assert len(pack_deltas([0, 40000])) == 1 + 2 * 4  # 40,000 needs 32 bits


@pytest.mark.parametrize(
    "tokens",
    [[], [""], ["[CLS]", "Caf", "##é", "!", "[SEP]"], ["<s>", "Ġwas", "▁x", "🙂"],
     ["a\x1fb", "c"], ["", "x"]],
)  # fmt: skip
def test_tokens_read_back_exactly(tokens):
    assert unpack_tokens(pack_tokens(tokens)) == tokens


def record(doc: int, model: int, method: str, worker: str) -> ExplanationRecord:
    return ExplanationRecord(
        document_id=doc, model_id=model, method=method, params={"n_steps": 8, "x": [1, 2]},
        label="pos", confidence=0.875, probabilities={"pos": 0.875, "neg": 0.125},
        tokens=["[CLS]", "a", "[SEP]"], attributions=[0.0, 1.0, 0.0], worker=worker,
        device="cpu", timings={"predict": 0.01, "lig_nodes": 8},
        quality={"comprehensiveness": 0.5, "sufficiency": None}, offsets=[0, 0, 0, 1, 1, 1],
        words=[-1, 0, -1], execution={"max_tokens": 512, "window_stride": 128},
    )  # fmt: skip


def test_concurrent_writers_of_one_set_share_its_row_and_the_rows_verify(fresh_database_url):
    url = fresh_database_url
    migrate(url)
    with session_scope(url) as session:
        batch = Batch(id=str(uuid.uuid4()), source="s", model="m", methods=["lig"], params={})
        docs = [Document(batch_id=batch.id, external_id=f"d{i}", line=i, text="a", meta={})
                for i in range(8)]  # fmt: skip
        session.add_all([batch, *docs])
        session.flush()
        doc_ids = [d.id for d in docs]
        model = register_model(session, name="m", path="/m", sha256="0" * 64,
                               labels=["neg", "pos"], info={})  # fmt: skip

    def write(doc: int) -> int:
        with session_scope(url) as session:
            rows = [record(doc, model, m, "w@1") for m in ("lig", "saliency")]
            return save_explanations(session, [*rows, record(doc, model, "attention", "w@2")])

    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(write, doc_ids)) == 24
    with session_scope(url) as session:
        assert session.scalar(select(func.count()).select_from(RunSettings)) == 2
        rows = session.scalars(select(Explanation).order_by(Explanation.id)).all()
        expected = record(doc_ids[0], model, "lig", "w@1")
        values = explanation_values(rows[0])
        for name in ("params", "execution", "worker", "device", "probabilities", "tokens",
                     "timings", "quality", "offsets", "words"):  # fmt: skip
            assert values[name] == getattr(expected, name), name
        assert {r.worker for r in rows} == {"w@1", "w@2"}
        report = verify_integrity(session)
        assert report.intact and report.rows == 24
