"""Node placement for Integrated Gradients: the rules are quadratures of the same
integral (weights sum to the path's length, nodes inside it), a density centred on a
sharp peak integrates it with far fewer nodes than evenly spread ones, the band is
found from a profile, and the calibrated rule leaves the attributions unchanged."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from captum.attr._utils.approximation_methods import approximation_parameters

from workers.engine import Classifier, explain
from workers.engine.quadrature import SPREAD, UNIFORM, NodeDensity, fit

PEAK = NodeDensity(center=0.42, width=0.05, uniform=0.4)


def lorentzian(alphas: torch.Tensor, center: float = 0.42, width: float = 0.05) -> torch.Tensor:
    return 1 / ((alphas - center) ** 2 + width**2)


def lorentzian_integral(center: float = 0.42, width: float = 0.05) -> float:
    return (math.atan((1 - center) / width) - math.atan(-center / width)) / width


def test_uniform_rule_is_captums_gauss_legendre():
    alphas, weights = UNIFORM.rule(12)
    step_sizes, captum_alphas = (f(12) for f in approximation_parameters("gausslegendre"))
    assert np.allclose(alphas.numpy(), captum_alphas)
    assert np.allclose(weights.numpy(), step_sizes)


@pytest.mark.parametrize("density", [UNIFORM, PEAK, NodeDensity(0.05, 0.3, 0.7)])
def test_every_rule_covers_the_path_once(density):
    alphas, weights = density.rule(16)
    assert float(weights.sum()) == pytest.approx(1.0, abs=1e-4)  # the path's length
    assert (alphas > 0).all() and (alphas < 1).all() and (alphas.diff() > 0).all()
    assert (weights > 0).all()
    # a smooth integrand comes out right: a polynomial of degree 3
    assert float((weights * alphas**3).sum()) == pytest.approx(0.25, abs=1e-4)


def test_nodes_on_the_peak_integrate_it_with_fewer_steps():
    exact = lorentzian_integral()
    for n in (8, 12):
        placed = PEAK.rule(n)
        even = UNIFORM.rule(n)
        placed_error = abs(float((placed[1] * lorentzian(placed[0])).sum()) - exact) / exact
        even_error = abs(float((even[1] * lorentzian(even[0])).sum()) - exact) / exact
        assert placed_error < 1e-3 < even_error
        assert placed_error < even_error / 100


def test_fit_finds_the_band_and_gives_up_on_a_flat_profile():
    alphas, _ = UNIFORM.rule(64)
    found = fit(alphas, lorentzian(alphas))
    assert found.center == pytest.approx(0.42, abs=0.02)
    assert found.width == pytest.approx(0.05 * SPREAD, abs=0.02)  # the band's, spread
    assert found.uniform < 1
    assert fit(alphas, torch.ones_like(alphas) + 0.1 * alphas) == UNIFORM


TEXTS = ["a gorgeous, witty, seductive movie.", "dull and bored actors", "one of the best"]


def test_calibrated_nodes_give_the_same_attributions_as_uniform_ones(classifier):
    calibrated = explain(classifier, TEXTS, params={"n_steps": 128, "nodes": "calibrated"})
    uniform = explain(classifier, TEXTS, params={"n_steps": 128})
    for a, b in zip(calibrated, uniform, strict=True):
        x, y = a.methods["lig"], b.methods["lig"]
        assert torch.allclose(torch.tensor(x.attributions), torch.tensor(y.attributions), atol=1e-4)
        assert x.params["nodes"] == "calibrated" and y.params["nodes"] == "uniform"
        density = x.params["node_density"]
        assert set(density) == {"center", "width", "uniform"}
        assert "node_density" not in y.params


def test_calibration_is_computed_once_per_model_and_in_fp32(tiny_model):
    from workers.engine.methods.lig import node_density

    bf16 = Classifier.load(tiny_model, autocast=True)
    fp32 = Classifier.load(tiny_model)
    assert node_density(bf16) == node_density(fp32)  # the same rows whatever the device
    assert node_density(fp32) is node_density(fp32)
    assert bf16.autocast


def test_uniform_nodes_equal_captums_layer_integrated_gradients(classifier):
    from captum.attr import LayerIntegratedGradients

    model, tokenizer = classifier.model, classifier.tokenizer
    for text, result in zip(TEXTS, explain(classifier, TEXTS, params={"n_steps": 20}), strict=True):
        encoded = tokenizer(text, return_tensors="pt")
        ids, mask = encoded["input_ids"], encoded["attention_mask"]
        types = encoded["token_type_ids"]
        baseline = torch.full_like(ids, tokenizer.pad_token_id)
        baseline[0, 0], baseline[0, -1] = ids[0, 0], ids[0, -1]

        def forward(input_ids, attention_mask, token_type_ids):
            return model(input_ids=input_ids, attention_mask=attention_mask,
                         token_type_ids=token_type_ids).logits  # fmt: skip

        lig = LayerIntegratedGradients(forward, model.get_input_embeddings())
        expected, delta = lig.attribute(
            ids, baselines=baseline, target=result.label_index, n_steps=20,
            additional_forward_args=(mask, types), return_convergence_delta=True,
        )  # fmt: skip
        ours = result.methods["lig"]
        assert torch.allclose(torch.tensor(ours.attributions), expected.sum(-1)[0], atol=1e-5)
        assert ours.convergence_delta == pytest.approx(float(delta), abs=1e-5)


def test_node_choice_is_a_batch_parameter_and_the_density_no_part_of_a_rows_identity():
    from contract.methods import parse_pairs
    from db.records import params_key

    assert parse_pairs(["nodes=calibrated"]) == {"nodes": "calibrated"}
    with pytest.raises(ValueError, match="nodes=even: must be uniform or calibrated"):
        parse_pairs(["nodes=even"])
    params = {"n_steps": "auto", "nodes": "calibrated"}
    derived = {**params, "node_density": {"center": 0.4, "width": 0.1, "uniform": 0.4}}
    assert params_key("lig", derived) == params_key("lig", params)
    assert params_key("lig", {**params, "nodes": "uniform"}) != params_key("lig", params)


def test_attribution_works_for_a_caller_inside_no_grad(classifier):
    with torch.no_grad():
        (inside,) = explain(classifier, TEXTS[:1], params={"n_steps": 8}, quality=False)
    (outside,) = explain(classifier, TEXTS[:1], params={"n_steps": 8}, quality=False)
    assert inside.methods["lig"].attributions == pytest.approx(outside.methods["lig"].attributions)


def test_nested_levels_extend_each_other_and_integrate_polynomials_exactly():
    from numpy.polynomial import legendre

    from workers.engine.quadrature import nested_levels, nested_sizes

    assert nested_sizes() == (9, 19, 39, 79, 159)
    degree = 17  # Gauss-Legendre 9
    for level, (nodes, weights) in enumerate(nested_levels()):
        x, w = np.array(nodes), np.array(weights)
        assert (np.diff(x) > 0).all() and x[0] > -1 and x[-1] < 1 and (w > 0).all()
        if level:
            earlier = nested_levels()[level - 1][0]
            assert set(earlier) < set(nodes)  # every earlier node, bit for bit
            degree = 3 * len(earlier) + 1  # Kronrod-Patterson: m old + (m + 1) new nodes
        for k in range(degree + 1):
            integral = float(w @ legendre.legval(x, np.eye(k + 1)[k]))
            assert integral == pytest.approx(2.0 if k == 0 else 0.0, abs=1e-12)


def test_the_nested_table_is_what_the_script_computes():
    from workers.engine.patterson import compute
    from workers.engine.quadrature import nested_levels

    for (nodes, weights), (table_nodes, table_weights) in zip(
        compute(count=2, digits=40), nested_levels(), strict=False
    ):
        assert np.allclose(nodes, table_nodes, rtol=0, atol=1e-15)
        assert np.allclose(weights, table_weights, rtol=0, atol=1e-15)


@pytest.mark.parametrize("density", [UNIFORM, PEAK])
def test_a_nested_level_starts_with_the_nodes_of_the_level_before(density):
    before, _ = density.nested(1)
    alphas, weights = density.nested(2)
    assert torch.equal(alphas[: len(before)], before)
    assert float(weights.sum()) == pytest.approx(1.0, abs=1e-6)
    exact = lorentzian_integral()
    first = density.nested(0)
    error = abs(float((weights * lorentzian(alphas)).sum()) - exact) / exact
    assert error < abs(float((first[1] * lorentzian(first[0])).sum()) - exact) / exact / 10
