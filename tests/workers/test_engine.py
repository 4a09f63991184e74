"""The engine alone: batched and length-grouped attribution equals the per-document
computation, completeness holds, and long documents are explained in windows."""

from __future__ import annotations

import pytest
import torch

from workers.engine import Classifier, explain
from workers.engine.explain import ExecutionOptions

TEXTS = [
    "a gorgeous, witty, seductive movie.",
    "ok",
    "the film is strictly routine and the actors seem bored by the material they were given",
    "one of the most exciting and moving films of the year",
    "dull",
]


def test_batched_attributions_equal_one_document_at_a_time(classifier):
    options = ExecutionOptions(internal_batch_size=16, max_docs_per_group=3)
    batched = explain(classifier, TEXTS, params={"n_steps": 16}, options=options)
    for text, together in zip(TEXTS, batched, strict=True):
        (alone,) = explain(classifier, [text], params={"n_steps": 16})
        assert together.tokens == alone.tokens
        assert together.label == alone.label
        a, b = together.methods["lig"], alone.methods["lig"]
        assert torch.allclose(torch.tensor(a.attributions), torch.tensor(b.attributions), atol=1e-5)
        assert a.convergence_delta == pytest.approx(b.convergence_delta, abs=1e-5)


def test_results_come_back_in_input_order(classifier):
    results = explain(classifier, TEXTS, params={"n_steps": 4})
    for text, result in zip(TEXTS, results, strict=True):
        expected = classifier.tokenizer.tokenize(text)
        assert result.tokens[1:-1] == expected


def test_completeness_holds_up_to_the_recorded_delta(classifier):
    (result,) = explain(classifier, [TEXTS[0]], params={"n_steps": 50})
    encoded = classifier.tokenizer(TEXTS[0], return_tensors="pt")
    baseline = torch.full_like(encoded["input_ids"], classifier.tokenizer.pad_token_id)
    baseline[0, 0], baseline[0, -1] = encoded["input_ids"][0, 0], encoded["input_ids"][0, -1]
    with torch.inference_mode():
        gap = (
            classifier.forward(encoded["input_ids"], encoded["attention_mask"])[
                0, result.label_index
            ]
            - classifier.forward(baseline, encoded["attention_mask"])[0, result.label_index]
        )
    lig = result.methods["lig"]
    assert sum(lig.attributions) - float(gap) == pytest.approx(lig.convergence_delta, abs=1e-5)
    assert abs(lig.convergence_delta) < 1e-3 * max(abs(float(gap)), 1e-3)


def test_long_documents_are_windowed_not_truncated(classifier):
    long_text = "word " * 300
    (result,) = explain(
        classifier, [long_text], options=ExecutionOptions(max_tokens=64), params={"n_steps": 4}
    )
    assert result.windows > 1
    assert len(result.tokens) == 302 and result.tokens[-1] == "[SEP]"
    assert len(result.methods["lig"].attributions) == 302
    (short,) = explain(classifier, ["short"], params={"n_steps": 4})
    assert short.windows == 1


def test_special_tokens_get_no_attribution(classifier):
    (result,) = explain(classifier, [TEXTS[2]], params={"n_steps": 8})
    scores = result.methods["lig"].attributions
    assert scores[0] == 0 and scores[-1] == 0  # [CLS] and [SEP] equal the baseline
    assert any(abs(s) > 0 for s in scores[1:-1])


def test_unknown_method_is_refused(classifier):
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        explain(classifier, ["x"], methods=["nope"])


def test_model_identity_is_the_hash_of_its_weights(classifier, tiny_model):
    assert classifier.sha256 == Classifier.load(tiny_model).sha256
    assert classifier.labels == ["negative", "positive"]
    assert classifier.info["versions"]["captum"]


def cosine(a: list[float], b: list[float]) -> float:
    return float(torch.nn.functional.cosine_similarity(torch.tensor(a), torch.tensor(b), dim=0))


@pytest.fixture(scope="module")
def loud(tiny_model) -> Classifier:
    """The tiny model with logits 1,000 times larger: the same relative errors, but
    completeness gaps far above the absolute float floor, so that tight tolerances bite."""
    classifier = Classifier.load(tiny_model)
    with torch.no_grad():
        classifier.model.classifier.weight.mul_(1000)
        classifier.model.classifier.bias.mul_(1000)
    return classifier


def test_adaptive_steps_meet_the_tolerance_on_every_document(loud):
    adaptive = explain(loud, TEXTS, params={"n_steps": "auto", "tolerance": 0.001})
    reference = explain(loud, TEXTS, params={"n_steps": 256})
    for result, ref in zip(adaptive, reference, strict=True):
        lig = result.methods["lig"]
        assert lig.params["n_steps"] == "auto" and lig.params["tolerance"] == 0.001
        assert lig.params["integration"] == "gauss-kronrod-patterson-9"
        assert lig.relative_gap <= 0.001
        assert lig.steps in (9, 19, 39, 79, 159)
        # nested levels: a document costs the nodes of the level it ends at, no more
        assert result.timings["lig_nodes"] == lig.steps
        assert cosine(lig.attributions, ref.methods["lig"].attributions) > 0.99


def test_adaptive_steps_raise_steps_only_where_needed(loud):
    loose = explain(loud, TEXTS, params={"n_steps": "auto", "tolerance": 0.5})
    tight = explain(loud, TEXTS, params={"n_steps": "auto", "tolerance": 1e-6})
    assert sum(r.methods["lig"].steps for r in loose) < sum(r.methods["lig"].steps for r in tight)
    assert all(r.methods["lig"].relative_gap <= 0.5 for r in loose)


def test_raised_levels_reuse_the_nodes_already_evaluated(loud):
    """A document raised to a level gets what that level's whole rule gives in one pass:
    the new nodes' integrand joins the earlier ones' with the level's weights."""
    from workers.engine.encoding import Tokenized, pad_group, reference_ids, token_ids
    from workers.engine.methods import lig

    classifier = loud
    results = explain(
        classifier, TEXTS, params={"n_steps": "auto", "tolerance": 1e-6, "max_steps": 39},
        quality=False,
    )  # fmt: skip
    density = lig.node_density(classifier)
    for text, result in zip(TEXTS, results, strict=True):
        got = result.methods["lig"]
        assert got.steps == result.timings["lig_nodes"] <= 39
        group = pad_group(classifier, [Tokenized(token_ids(classifier, [text])[0])], [0])
        level = (9, 19, 39).index(got.steps)
        whole = lig._integrate(
            classifier, group, reference_ids(classifier, group),
            torch.tensor([result.label_index]), density.nested(level), 64,
        )[0]  # fmt: skip
        assert torch.allclose(torch.tensor(got.attributions), whole, atol=1e-5)
    assert any(r.methods["lig"].steps == 39 for r in results)  # some went all the way


def test_max_steps_below_the_first_level_is_refused(classifier):
    with pytest.raises(ValueError, match="max_steps must be at least 9"):
        explain(classifier, ["x"], params={"n_steps": "auto", "max_steps": 8})


def test_fixed_steps_carry_no_adaptive_parameters(classifier):
    (result,) = explain(classifier, ["x"], params={"n_steps": 7, "tolerance": 0.2})
    assert result.methods["lig"].params["n_steps"] == 7
    assert "tolerance" not in result.methods["lig"].params
    assert result.methods["lig"].steps == 7 == result.timings["lig_nodes"]


def test_out_of_memory_halves_the_rows_and_retries(classifier, monkeypatch):
    """A CUDA out-of-memory error is injected into the first two passes."""
    from workers.engine.methods import lig

    real, calls = lig._integrate, []

    def failing_integrate(*args, **kwargs):
        calls.append(args[-1])  # internal_batch_size
        if len(calls) <= 2:
            raise torch.OutOfMemoryError("injected")
        return real(*args, **kwargs)

    monkeypatch.setattr(lig, "_integrate", failing_integrate)
    options = ExecutionOptions(internal_batch_size=8)
    results = explain(classifier, TEXTS[:4], params={"n_steps": 8}, options=options)
    assert calls[:3] == [8, 4, 2]
    assert all(r.timings["oom_retries"] == 2 for r in results)
    monkeypatch.undo()
    expected = explain(classifier, TEXTS[:4], params={"n_steps": 8})
    for got, want in zip(results, expected, strict=True):
        a, b = got.methods["lig"].attributions, want.methods["lig"].attributions
        assert torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-5)


def test_the_rows_chosen_per_pass_obey_their_cap(classifier, monkeypatch):
    """EXPLAINQ_MAX_INTERNAL_BATCH_SIZE caps the size chosen per group too, not only the
    one an operator sets (the CPU budget alone would give hundreds of rows here)."""
    from workers.engine.methods import lig

    real, sizes = lig._integrate, []

    def recording_integrate(*args, **kwargs):
        sizes.append(args[-1])  # internal_batch_size
        return real(*args, **kwargs)

    monkeypatch.setattr(lig, "_integrate", recording_integrate)
    explain(classifier, TEXTS[:2], params={"n_steps": 8},
            options=ExecutionOptions(max_internal_batch_size=3))  # fmt: skip
    assert sizes and set(sizes) == {3}


def test_rows_per_pass_follow_the_cpu_token_budget(classifier):
    from workers.engine.batching import CPU_TOKENS_PER_PASS, auto_internal_batch_size
    from workers.engine.encoding import Tokenized, pad_group, token_ids

    docs = [Tokenized(ids) for ids in token_ids(classifier, TEXTS)]
    group = pad_group(classifier, docs, list(range(len(docs))))
    assert (
        auto_internal_batch_size(classifier, group)
        == CPU_TOKENS_PER_PASS // group.input_ids.shape[1]
    )
    assert not classifier.autocast  # never on the CPU


def test_the_baselines_logits_are_computed_once_per_distinct_baseline(loud):
    """f(baseline) depends on the length alone ([CLS] [PAD] ... [SEP]): one forward pass
    per length and precision, unpadded, whatever the group; f(x) is the prediction
    pass's. The gap each row implies equals the one computed document by document."""
    loud.computed.pop("lig_baseline_logits", None)
    texts = ["one two", "three four", "five six seven eight nine"]  # 4, 4 and 7 tokens
    results = explain(loud, texts, params={"n_steps": 8}, quality=False)
    explain(loud, texts[:1], params={"n_steps": 8}, quality=False)
    assert len(loud.computed["lig_baseline_logits"]) == 2
    for text, result in zip(texts, results, strict=True):
        ids = loud.tokenizer(text, return_tensors="pt")["input_ids"]
        baseline = torch.full_like(ids, loud.tokenizer.pad_token_id)
        baseline[0, 0], baseline[0, -1] = ids[0, 0], ids[0, -1]
        with torch.no_grad():
            both = loud.forward(
                torch.cat([ids, baseline]), torch.ones(2, ids.shape[1], dtype=torch.long)
            )
        expected = float(both[0, result.label_index] - both[1, result.label_index])
        lig = result.methods["lig"]
        implied = sum(lig.attributions) - lig.convergence_delta
        assert implied == pytest.approx(expected, rel=1e-4, abs=1e-3)
