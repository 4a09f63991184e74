"""Long documents: overlapping windows cover every token, the document's prediction is
the mean of its windows' logits, every window is attributed toward that label, and a
document within the limit is explained exactly as before."""

from __future__ import annotations

import pytest
import torch

from workers.engine import Classifier, ExecutionOptions, explain
from workers.engine.windows import split, stitch

LIMIT = 24
LONG = " ".join(["the film is strictly routine and the actors seem bored"] * 8)
SHORT = "a gorgeous, witty, seductive movie."
FAST = {"n_steps": 8, "n_samples": 32}


@pytest.fixture(scope="module")
def windowed(classifier):
    options = ExecutionOptions(max_tokens=LIMIT)
    methods = ["lig", "occlusion", "attention", "saliency"]
    return explain(classifier, [LONG, SHORT], methods=methods, params=FAST, options=options)


def test_windows_cover_the_document_with_the_last_flush_at_its_end():
    ids = [101, *range(1000, 1070), 102]
    windows = split(0, ids, limit=24)
    assert [w.start for w in windows] == [0, 11, 22, 33, 44, 48]  # stride: half of 22
    assert all(len(w.ids) == 24 and w.ids[0] == 101 and w.ids[-1] == 102 for w in windows)
    covered = {1 + w.start + i for w in windows for i in range(22)}
    assert covered == set(range(1, 71))
    assert [w.start for w in split(0, ids, limit=24, stride=22)] == [0, 22, 44, 48]
    assert split(3, ids[:24], limit=24)[0].ids == ids[:24]  # fits: one window, itself
    assert [w.start for w in split(0, ids, limit=24, stride=23)] == [0, 22, 44, 48]  # narrowed
    with pytest.raises(ValueError, match="stride"):
        split(0, ids, limit=24, stride=-1)


def test_stitched_scores_are_the_mean_over_covering_windows():
    ids = [101, *range(1000, 1006), 102]
    windows = split(0, ids, limit=6, stride=2)  # content 0-3, 2-5
    rows = [[9.0, 1, 1, 1, 1, 7.0], [8.0, 3, 3, 3, 3, 6.0]]
    assert stitch(windows, rows, len(ids)) == [9.0, 1, 1, 2, 2, 3, 3, 6.0]


def test_a_long_document_gets_a_score_for_every_token(classifier, windowed):
    result = windowed[0]
    ids = classifier.tokenizer(LONG)["input_ids"]
    assert len(ids) > 3 * LIMIT
    assert result.windows > 1
    assert result.tokens == classifier.tokenizer.convert_ids_to_tokens(ids)
    for name, method in result.methods.items():
        assert len(method.attributions) == len(ids), name
        assert method.quality is not None, name  # the mean over windows
    content = result.methods["occlusion"].attributions[1:-1]
    assert sum(1 for s in content if s != 0) > 0.9 * len(content)
    cls_map = result.methods["attention"].extra["cls_attention"]
    assert len(cls_map) == classifier.info["layers"]
    assert all(len(row) == len(ids) for row in cls_map)
    assert result.methods["lig"].convergence_delta is not None
    assert result.methods["lig"].steps == 8
    assert len(result.embedding) == classifier.info["hidden_size"]


def window_logits(classifier: Classifier, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        batch = torch.tensor([ids])
        return classifier.forward(batch, torch.ones_like(batch))[0]


def test_prediction_is_the_mean_of_window_logits_and_every_window_targets_it(classifier, windowed):
    result = windowed[0]
    windows = split(0, classifier.tokenizer(LONG)["input_ids"], LIMIT)
    assert result.windows == len(windows)
    logits = torch.stack([window_logits(classifier, w.ids) for w in windows]).mean(0)
    expected = torch.softmax(logits, -1)
    assert list(result.probabilities.values()) == pytest.approx(expected.tolist(), abs=1e-5)
    assert result.label_index == int(expected.argmax())
    # the first content token is covered by the first window alone: its occlusion score
    # is that window's leave-one-out drop for the document's label
    first = windows[0].ids
    removed = [first[0], classifier.tokenizer.pad_token_id, *first[2:]]
    drop = window_logits(classifier, first) - window_logits(classifier, removed)
    score = result.methods["occlusion"].attributions[1]
    assert score == pytest.approx(float(drop[result.label_index]), abs=1e-5)


def test_a_document_within_the_limit_is_explained_as_before(classifier, windowed):
    (plain,) = explain(
        classifier, [SHORT], methods=["lig", "occlusion", "attention", "saliency"], params=FAST
    )
    short = windowed[1]
    assert short.windows == 1 and plain.windows == 1
    # Padded among the windows vs alone: float32 rounding moves a probability by ~3e-8;
    # a wrong window or logit mean would move it by far more than 1e-6.
    assert short.tokens == plain.tokens and short.probabilities == pytest.approx(
        plain.probabilities, rel=0, abs=1e-6
    )
    for name, method in plain.methods.items():
        got = short.methods[name]
        assert got.attributions == pytest.approx(method.attributions, rel=1e-5, abs=1e-5), name
        assert got.quality == pytest.approx(method.quality, abs=1e-5), name


def test_the_stride_sets_the_number_of_windows(classifier):
    dense, sparse = (
        explain(
            classifier, [LONG], methods=["saliency"], quality=False,
            options=ExecutionOptions(max_tokens=LIMIT, window_stride=stride),
        )[0]
        for stride in (4, 22)
    )  # fmt: skip
    assert dense.windows > sparse.windows > 1
    assert len(dense.methods["saliency"].attributions) == len(sparse.tokens)


def test_a_stride_wider_than_the_window_is_narrowed_to_it():
    """The producer checks the stride against EXPLAINQ_MAX_TOKENS, but a model may allow
    fewer positions: the window then steps by its full width, leaving no gap."""
    ids = [101, *range(1000, 1030), 102]
    windows = split(0, ids, limit=10, stride=300)
    assert [w.start for w in windows] == [0, 8, 16, 22]
    covered = {w.start + i for w in windows for i in range(len(w.ids) - 2)}
    assert covered == set(range(30))


@pytest.mark.parametrize("stride", [None, 1, 100, 255, 510])
def test_the_producers_cost_estimate_counts_the_windows_the_engine_cuts(stride):
    from contract.cost import windows

    for tokens in [*range(2, 40), *range(500, 530), 1024, 1822, 5000]:
        ids = list(range(tokens))
        assert windows(tokens, 512, stride) == len(split(0, ids, 512, stride)), tokens
