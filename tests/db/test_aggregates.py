"""The aggregates behind top tokens and quality equal a brute-force recomputation from
the stored rows: written chunk by chunk, by concurrent writers, and when a task is
redelivered (nothing is counted twice)."""

from __future__ import annotations

import random
import threading
from collections import defaultdict

import pytest
from sqlalchemy import select

from db.aggregates import rebuild
from db.batches import NewDocument, create_batch
from db.models import ALL_BATCHES, Document, Explanation, QualityStat, TokenStat
from db.records import ExplanationRecord
from db.session import migrate, session_scope
from db.words import merge_wordpieces, word_key
from db.writes import register_model, save_explanations

WORDS = ["good", "bad", "Film", "film.", "act", "##ing", "plot", "dull", "great!", "it"]
METRICS = ("comprehensiveness", "sufficiency", "random_comprehensiveness", "random_sufficiency")


def corpus(
    url: str, documents: int, batches: int = 2, seed: int = 0
) -> list[list[ExplanationRecord]]:
    """Registers ``documents`` over ``batches`` and returns their records, in chunks of 10."""
    rng = random.Random(seed)
    with session_scope(url) as session:
        model = register_model(session, name="m", path="/m", sha256="ef" * 32,
                               labels=["negative", "positive"], info={})  # fmt: skip
        ids = []
        for b in range(batches):
            _, made = create_batch(session, source=f"{b}.jsonl", model="m", methods=["lig"],
                                   params={}, rejections=[],
                                   documents=[NewDocument(f"{b}-{i}", i, "t", {})
                                              for i in range(documents // batches)])  # fmt: skip
            ids += [doc_id for doc_id, _ in made]
    records = []
    for doc_id in ids:
        tokens = ["[CLS]", *rng.choices(WORDS, k=rng.randint(3, 9)), "[SEP]"]
        quality = {m: rng.random() for m in METRICS} if rng.random() < 0.8 else None
        for method in ("lig", "saliency"):
            records.append(ExplanationRecord(
                document_id=doc_id, model_id=model, method=method, params={},
                label=rng.choice(["negative", "positive"]), confidence=0.7, probabilities={},
                tokens=tokens, attributions=[0.0, *(rng.uniform(-1, 1) for _ in tokens[2:]), 0.0],
                worker="w", device="cpu", quality=quality,
            ))  # fmt: skip
    return [records[i : i + 10] for i in range(0, len(records), 10)]


def brute_force(url: str) -> tuple[dict, dict]:
    """Token and quality sums recomputed from every stored row, per scope."""
    tokens: dict = defaultdict(lambda: [0.0, 0, 0])
    quality: dict = defaultdict(lambda: defaultdict(float))
    with session_scope(url) as session:
        for exp, batch in session.execute(select(Explanation, Document.batch_id).join(Document)):
            for scope in (batch, ALL_BATCHES):
                seen = set()
                for word, score in merge_wordpieces(exp.tokens, exp.attributions):
                    key = (scope, exp.method, exp.label, word_key(word))
                    tokens[key][0] += score
                    tokens[key][1] += 1
                    tokens[key][2] += key not in seen
                    seen.add(key)
                sums = quality[(scope, exp.method)]
                sums["rows"] += 1
                sums["comp_sum"] += (exp.quality or {}).get("comprehensiveness", 0.0)
                sums["beats_comp"] += bool(exp.quality) and (
                    exp.quality["comprehensiveness"] > exp.quality["random_comprehensiveness"]
                )
    return dict(tokens), dict(quality)


def stored(url: str) -> tuple[dict, dict]:
    with session_scope(url) as session:
        tokens = {(t.scope, t.method, t.label, t.word): [t.total, t.occurrences, t.documents]
                  for t in session.scalars(select(TokenStat))}  # fmt: skip
        quality = {(q.scope, q.method): {"rows": q.rows, "comp_sum": q.comp_sum,
                                         "beats_comp": q.beats_comp}
                   for q in session.scalars(select(QualityStat))}  # fmt: skip
    return tokens, quality


def assert_equal(url: str) -> None:
    expected_tokens, expected_quality = brute_force(url)
    tokens, quality = stored(url)
    assert tokens.keys() == expected_tokens.keys()
    for key, (total, occurrences, documents) in expected_tokens.items():
        # float64 sums of a few hundred float32 scores in another order: 1e-9 is ample
        assert tokens[key][0] == pytest.approx(total, abs=1e-9), key
        assert tokens[key][1:] == [occurrences, documents], key
    for key, sums in expected_quality.items():
        assert (
            quality[key]["rows"] == sums["rows"]
            and quality[key]["beats_comp"] == sums["beats_comp"]
        )
        assert quality[key]["comp_sum"] == pytest.approx(sums["comp_sum"], abs=1e-9)


@pytest.fixture
def url(fresh_database_url: str) -> str:
    migrate(fresh_database_url)
    return fresh_database_url


def test_written_chunk_by_chunk_and_redelivered_they_equal_brute_force(url):
    chunks = corpus(url, 60)
    for chunk in chunks:
        with session_scope(url) as session:
            save_explanations(session, chunk)
    assert_equal(url)
    before = stored(url)
    for chunk in chunks[:3]:  # a redelivered task writes its chunk again: no new rows
        with session_scope(url) as session:
            assert save_explanations(session, chunk) == 0
    assert stored(url) == before
    with session_scope(url) as session:
        rebuild(session)  # the recomputation the migration runs: the same figures
    tokens, quality = stored(url)
    assert tokens.keys() == before[0].keys() and quality.keys() == before[1].keys()


def test_concurrent_writers_add_up(url):
    """Four writers at once, on overlapping words (every chunk touches the same
    aggregate rows), each chunk sent twice: every row counted once."""
    chunks = corpus(url, 120, seed=1)
    errors: list[BaseException] = []

    def write(mine: list[list[ExplanationRecord]]) -> None:
        try:
            for chunk in mine + mine[:2]:
                with session_scope(url) as session:
                    save_explanations(session, chunk)
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(chunks[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert_equal(url)
