"""The results CLI over several methods per document, on SQLite and PostgreSQL, filled
through db/store.py as the worker fills it: `quality` against a hand computation,
`show` side by side, `similar` by cosine, `top-tokens` per method against brute force."""

from __future__ import annotations

import json
import math
import re
import statistics
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import delete, event
from sqlalchemy import text as sql
from typer.testing import CliRunner

from contract.settings import get_settings
from db.models import Batch, Document, Explanation, Status
from db.quality import METRICS
from db.queries import top_words
from db.records import AgreementRecord, ExplanationRecord, RepresentationRecord
from db.session import get_engine, migrate, session_scope
from db.writes import register_model, save_agreements, save_explanations, save_representations
from results.cli import app

runner = CliRunner()
METHODS = ("attention", "lig", "saliency")
TOKENS = {
    "a": ["[CLS]", "great", "act", "##ing", "[SEP]"],
    "b": ["[CLS]", "dull", "plot", "[SEP]"],
    "c": ["[CLS]", "great", "fun", "[SEP]"],
    "d": ["[CLS]", "great", "plot", "[SEP]"],
}
VECTORS = {"a": [1.0, 0.0, 0.0], "b": [0.0, 1.0, 0.0], "c": [1.0, 0.0, 0.0], "d": [0.6, 0.8, 0.0]}
LABELS = {"a": ("positive", 0.9), "b": ("negative", 0.8), "c": ("positive", 0.7),
          "d": ("positive", 0.6)}  # fmt: skip


def scores(doc: str, method: str) -> list[float]:
    """Different, reproducible scores per document and method."""
    seed = sum(map(ord, doc + method))
    return [0.0 if t.startswith("[") else ((seed * (i + 3)) % 17 - 8) / 10
            for i, t in enumerate(TOKENS[doc])]  # fmt: skip


def quality(doc: str, method: str) -> dict[str, float | None] | None:
    if (doc, method) == ("d", "saliency"):
        return None  # measured without quality
    seed = sum(map(ord, doc + method))
    figures: dict[str, float | None] = {
        name: ((seed * (k + 5)) % 23) / 23 for k, name in enumerate(METRICS)
    }
    if (doc, method) == ("c", "attention"):
        figures["sufficiency"] = math.nan  # undefined: stored as unknown
    return figures


def spearman(doc: str, a: str, b: str) -> float:
    return ((sum(map(ord, doc + a + b)) % 19) - 9) / 10


@dataclass(frozen=True)
class Filled:
    url: str
    batch: str
    other: str
    ids: dict[str, int]


@pytest.fixture
def filled(fresh_database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Filled]:
    """Batch "main": documents a, b, c with three methods each, quality, agreement and
    vectors; batch "other": d (its saliency without quality), and x never explained."""
    url = fresh_database_url
    monkeypatch.setenv("EXPLAINQ_DATABASE_URL", url)
    get_settings.cache_clear()
    migrate(url)
    main, other = str(uuid.uuid4()), str(uuid.uuid4())
    ids: dict[str, int] = {}
    with session_scope(url) as session:
        for batch in (main, other):
            session.add(Batch(id=batch, source="s", model="tiny", methods=list(METHODS),
                              params={}))  # fmt: skip
        model_id = register_model(session, name="tiny", path="/m", sha256="cd" * 32,
                                  labels=["negative", "positive"], info={})  # fmt: skip
        for doc in [*TOKENS, "x"]:
            row = Document(batch_id=other if doc in "dx" else main, external_id=doc, line=1,
                           text=f"the text of {doc} " * 3, meta={},
                           status=Status.PENDING if doc == "x" else Status.DONE)  # fmt: skip
            session.add(row)
            session.flush()
            ids[doc] = row.id
        for doc, tokens in TOKENS.items():
            label, confidence = LABELS[doc]
            save_explanations(session, [
                ExplanationRecord(
                    document_id=ids[doc], model_id=model_id, method=method,
                    params={"p": method}, label=label, confidence=confidence,
                    probabilities={label: confidence}, tokens=tokens,
                    attributions=scores(doc, method), worker="w", device="cpu",
                    timings={"seconds": 0.01}, quality=quality(doc, method),
                    extra={"cls_attention": [[0.5] * len(tokens)]}
                    if method == "attention" else None,
                )
                for method in METHODS
            ])  # fmt: skip
            save_agreements(session, [
                AgreementRecord(ids[doc], model_id, (a, b), spearman(doc, a, b))
                for a in METHODS for b in METHODS if a < b
            ])  # fmt: skip
            save_representations(session, [RepresentationRecord(ids[doc], model_id, VECTORS[doc])])
    yield Filled(url, main, other, ids)
    get_settings.cache_clear()


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def run_json(*args: str):
    result = run(*args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def expected_quality(docs: str) -> dict[str, dict]:
    """The summary computed by hand, in Python, from the same figures."""
    out = {}
    for method in METHODS:
        rows = [quality(doc, method) for doc in docs]
        measured = [r for r in rows if r]
        figures = {}
        for name in METRICS:
            values = [r[name] for r in measured if not math.isnan(r[name])]
            ci95 = 1.96 * statistics.stdev(values) / math.sqrt(len(values))  # of the mean
            figures[name] = (statistics.fmean(values), statistics.pstdev(values), ci95)
        comp = [r["comprehensiveness"] > r["random_comprehensiveness"] for r in measured]
        suff = [r["sufficiency"] < r["random_sufficiency"] for r in measured
                if not math.isnan(r["sufficiency"])]  # fmt: skip
        out[method] = {"documents": len(docs), "measured": len(measured), "figures": figures,
                       "beats": (sum(comp) / len(comp), sum(suff) / len(suff))}  # fmt: skip
    return out


@pytest.mark.parametrize("scope", ["batch", "everything"])
def test_quality_equals_a_hand_computation(filled, scope):
    docs, args = ("abc", ["--batch", filled.batch]) if scope == "batch" else ("abcd", [])
    summary = run_json("quality", *args)
    expected = expected_quality(docs)
    assert [row["method"] for row in summary["methods"]] == list(METHODS)
    for row in summary["methods"]:
        want = expected[row["method"]]
        assert (row["documents"], row["measured"]) == (want["documents"], want["measured"])
        for name in METRICS:
            mean, std, ci95 = want["figures"][name]
            assert row[name]["mean"] == pytest.approx(mean, abs=1e-9), name
            assert row[name]["std"] == pytest.approx(std, abs=1e-6), name
            assert row[name]["ci95"] == pytest.approx(ci95, abs=1e-6), name
        beats = row["beats_random"]
        assert (beats["comprehensiveness"], beats["sufficiency"]) == pytest.approx(want["beats"])
    pairs = {tuple(p["methods"]): p for p in summary["agreement"]}
    assert set(pairs) == {(a, b) for a in METHODS for b in METHODS if a < b}
    for (a, b), pair in pairs.items():
        values = [spearman(doc, a, b) for doc in docs]
        assert pair["documents"] == len(docs)
        assert pair["spearman"]["mean"] == pytest.approx(statistics.fmean(values))
        assert pair["spearman"]["std"] == pytest.approx(statistics.pstdev(values), abs=1e-6)


def test_quality_table_and_filters(filled):
    table = run("quality", "--batch", filled.batch)
    assert table.exit_code == 0, table.stderr
    for text in ("faithfulness per method", "lig", "saliency", "attention ~ lig", "beats random"):
        assert text in table.stdout, text
    assert not re.search(r"\[± \d", table.stdout)  # every document of the batch measured
    # d's saliency row has no figures: 3 of 4, with its CI (wide, so no cell wraps)
    everything = runner.invoke(app, ["quality"], env={"COLUMNS": "240"})
    assert "3 of 4" in everything.stdout and re.search(r"\[± \d", everything.stdout)
    assert run_json("quality", "--model", "nope") == {"methods": [], "agreement": []}
    unknown = run("quality", "--batch", missing := str(uuid.uuid4()), "--json")
    assert unknown.exit_code == 1  # an empty summary would pass for a batch without rows
    assert unknown.stderr.startswith(f"error: no batch '{missing}'; recent: ")


def test_show_puts_methods_side_by_side_with_quality_and_agreement(filled):
    shown = run("show", "a", "--words")
    assert shown.exit_code == 0, shown.stderr
    out = shown.stdout
    for text in ("acting", "attention", "saliency", "comp.", "agreement (Spearman)",
                 "lig ~ saliency", "sha256 cdcdcdcdcdcd"):  # fmt: skip
        assert text in out, text
    assert "##ing" not in out
    raw = run("show", "a", "--method", "lig,saliency").stdout
    assert "##ing" in raw and "[CLS]" in raw  # the token view keeps every position
    assert "attention ~" not in raw  # only the pairs shown


def test_show_json_carries_quality_agreement_and_words(filled):
    records = run_json("show", "a", "--method", "lig", "--method", "attention", "--words")
    assert [r["method"] for r in records] == ["attention", "lig"]
    attention, lig = records
    assert attention["quality"] == quality("a", "attention")
    assert attention["extra"]["cls_attention"] == [[0.5] * 5]
    assert attention["agreement"] == {"lig": pytest.approx(spearman("a", "attention", "lig"))}
    lig_scores = scores("a", "lig")
    assert lig["words"] == [["great", lig_scores[1]],
                            ["acting", pytest.approx(lig_scores[2] + lig_scores[3])]]  # fmt: skip
    missing = run("show", "a", "--method", "kernel_shap")
    assert missing.exit_code == 1 and "it has: attention, lig, saliency" in missing.stderr
    (pending,) = run_json("show", "x", "--method", "lig")
    assert pending["status"] == "pending" and pending["tokens"] is None


def test_similar_ranks_the_identical_vector_first(filled):
    result = run_json("similar", "a", "--limit", "3")
    neighbours = result["neighbours"]
    assert [n["external_id"] for n in neighbours] == ["c", "d", "b"]
    assert [n["similarity"] for n in neighbours] == pytest.approx([1.0, 0.6, 0.0])
    assert (neighbours[0]["label"], neighbours[0]["confidence"]) == ("positive", 0.7)
    assert neighbours[0]["snippet"].startswith("the text of c")
    within = run_json("similar", "a", "--within", filled.other)["neighbours"]
    assert [n["external_id"] for n in within] == ["d"]
    assert len(run_json("similar", "b", "--limit", "1")["neighbours"]) == 1
    table = run("similar", "a")
    assert table.exit_code == 0 and "1.0000" in table.stdout and "positive" in table.stdout
    nothing = run("similar", "x")
    assert nothing.exit_code == 1 and "no stored vector" in nothing.stderr


def test_top_tokens_per_method_match_brute_force(filled):
    for method in METHODS:
        totals: dict[str, list[float]] = defaultdict(list)
        documents: dict[str, set[str]] = defaultdict(set)
        for doc in "abc":  # the main batch
            if LABELS[doc][0] != "positive":
                continue
            words: list[list] = []
            for token, score in zip(TOKENS[doc], scores(doc, method), strict=True):
                if token.startswith("["):
                    continue
                if token.startswith("##"):
                    words[-1] = [words[-1][0] + token[2:], words[-1][1] + score]
                else:
                    words.append([token, score])
            for word, score in words:
                totals[word].append(score)
                documents[word].add(doc)
        rows = run_json("top-tokens", "--label", "positive", "--method", method,
                        "--batch", filled.batch, "--min-count", "1", "--limit", "50")  # fmt: skip
        # toward the label: words whose mean pushes against it are not listed
        assert {r["token"] for r in rows} == {
            w for w, v in totals.items() if statistics.fmean(v) > 0
        }
        for row in rows:
            values = totals[row["token"]]
            assert row["mean_attribution"] == pytest.approx(statistics.fmean(values))
            assert row["documents"] == len(documents[row["token"]])
        means = [r["mean_attribution"] for r in rows]
        assert means == sorted(means, reverse=True)


def test_quality_is_aggregated_by_the_database_and_similar_streams(filled):
    statements: list[tuple[str, bool]] = []

    def spy(_conn, _cursor, statement, _params, context, _many) -> None:
        statements.append((statement, bool(context.execution_options.get("stream_results"))))

    engine = get_engine(filled.url)
    event.listen(engine, "before_cursor_execute", spy)
    try:
        run_json("quality")
        assert not [s for s, _ in statements if "FROM explanations" in s]  # no corpus scan
        reads = [s for s, _ in statements if "FROM quality_stats" in s]
        assert len(reads) == 1 and "GROUP BY quality_stats.method" in reads[0]
        statements.clear()
        run_json("similar", "a")
        vectors = [(s, streamed) for s, streamed in statements if "representations.vector" in s]
        assert len(vectors) == 2 and vectors[-1][1]  # its own vector, then one streamed pass
    finally:
        event.remove(engine, "before_cursor_execute", spy)


def test_methods_lists_what_a_batch_can_ask_for():
    listing = run_json("methods")
    assert listing["methods"][0] == "lig" and "occlusion" in listing["methods"]
    assert "n_samples" in listing["params"] and "kernel_shap" in listing["params"]["n_samples"]
    assert "--param window=" in run("methods").stdout


def test_list_shows_a_document_explained_without_lig(filled):
    """Over the whole corpus, each document's lig row by default, or its first row where
    it has no lig (a batch run with --method saliency, say); within a batch, the batch's
    lig (every document of a batch has its methods); --method picks one."""
    postgres = filled.url.startswith("postgresql")
    with session_scope(filled.url) as session:  # explanations are append-only there
        if postgres:
            session.execute(sql("ALTER TABLE explanations DISABLE TRIGGER USER"))
        session.execute(delete(Explanation).where(
            Explanation.document_id == filled.ids["b"], Explanation.method == "lig"))  # fmt: skip
        if postgres:
            session.execute(sql("ALTER TABLE explanations ENABLE TRIGGER USER"))
    rows = {row["external_id"]: row for row in run_json("list") if row["batch_id"] == filled.batch}
    assert rows["b"]["label"] == "negative"  # from its attention row, the first it has
    assert rows["b"]["top_tokens"] == top_words(TOKENS["b"], scores("b", "attention"))
    assert rows["a"]["top_tokens"] == top_words(TOKENS["a"], scores("a", "lig"))
    only_lig = {row["external_id"]: row for row in run_json("list", "--method", "lig")}
    assert only_lig["b"]["label"] is None and only_lig["a"]["label"] == "positive"
