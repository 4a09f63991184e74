"""The weighted linear surrogate that LIME and Kernel SHAP fit, and the per-document
loop both share.

Captum's default surrogates call scikit-learn, which explainq does not install; this
one solves the weighted (ridge) least squares in closed form with torch, in float64 on
the CPU: exact, deterministic and fast for the few hundred samples and features of a
sentence.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from captum._utils.models.model import Model
from captum.attr import Lime
from torch.utils.data import DataLoader

from workers.engine.classifier import Classifier
from workers.engine.encoding import Group
from workers.engine.methods.common import with_special_tokens


class WeightedRidge(Model):
    """min_b,c  sum_i w_i (y_i - c - x_i . b)^2 + alpha |b|^2, intercept not penalised."""

    def __init__(self, alpha: float = 0.0) -> None:
        self.alpha = alpha
        self.coefficients: torch.Tensor | None = None
        self.intercept: torch.Tensor | None = None

    def fit(self, train_data: DataLoader, **kwargs: object) -> dict[str, float]:
        xs, ys, ws = zip(*train_data, strict=True)
        device = xs[0].device  # Captum keeps the samples there and the weights on the CPU
        x = torch.cat(xs).cpu().double()
        y = torch.cat(ys).cpu().double().reshape(-1)
        w = torch.cat(ws).cpu().double().reshape(-1)
        w = w / w.sum()
        x_mean, y_mean = w @ x, w @ y  # centring leaves the intercept unpenalised
        xc, yc = x - x_mean, y - y_mean
        gram = xc.T @ (w[:, None] * xc) + self.alpha * torch.eye(x.shape[1], dtype=x.dtype)
        rhs = xc.T @ (w * yc)
        coefficients = torch.linalg.lstsq(gram, rhs[:, None]).solution[:, 0]
        self.coefficients = coefficients.float()[None, :].to(device)
        self.intercept = (y_mean - x_mean @ coefficients).float().to(device)
        return {}

    def representation(self) -> torch.Tensor:
        assert self.coefficients is not None, "fit first"
        return self.coefficients

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        assert self.coefficients is not None and self.intercept is not None, "fit first"
        return x.float() @ self.coefficients.T + self.intercept


def per_document(
    classifier: Classifier,
    group: Group,
    targets: torch.Tensor,
    explainer: Callable[[Callable[[torch.Tensor], torch.Tensor]], Lime],
    n_samples: int,
    seed: int,
    internal_batch_size: int,
) -> torch.Tensor:
    """Scores (documents x positions) from a Captum ``Lime``-family explainer (built by
    ``explainer`` around a forward over content ids), one
    document at a time (Captum samples per example anyway), each content token one
    feature, removed = [PAD]; the RNG is seeded per document, so a document's scores
    do not depend on the others in its group. Captum cannot sample a single feature:
    a one-token document's score is f(x) - f(baseline), which both methods estimate."""
    scores = torch.zeros(group.input_ids.shape, dtype=torch.float32, device=targets.device)
    for row, length in enumerate(group.lengths):
        if length <= 2:
            continue  # nothing but [CLS] [SEP]: no feature to score
        content = group.input_ids[row : row + 1, 1 : length - 1]
        forward = with_special_tokens(classifier, group, row)
        if content.shape[1] == 1:  # one feature: its value is the whole logit gap, exactly
            scores[row, 1] = _gap(forward, content, classifier.tokenizer.pad_token_id, targets[row])
            continue
        method = explainer(forward)
        devices = [classifier.device] if classifier.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(seed)
            coefficients = method.attribute(
                content,
                baselines=classifier.tokenizer.pad_token_id,
                target=int(targets[row]),
                feature_mask=torch.arange(content.shape[1], device=content.device)[None],
                n_samples=n_samples,
                perturbations_per_eval=max(1, min(n_samples, internal_batch_size)),
            )
        scores[row, 1 : length - 1] = coefficients[0].float()
    return scores


def _gap(
    forward: Callable[[torch.Tensor], torch.Tensor],
    content: torch.Tensor,
    pad: int,
    target: torch.Tensor,
) -> torch.Tensor:
    with torch.inference_mode():
        logits = forward(torch.cat([content, torch.full_like(content, pad)]))
    return (logits[0, target] - logits[1, target]).float()
