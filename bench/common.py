"""What every throughput benchmark shares: the peers' per-document loop (the baseline),
the engine run, and how results are scored. Imports only torch, captum and the engine,
so it runs on a machine that has nothing else (a lent GPU)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from captum.attr import LayerIntegratedGradients

from workers.engine import Classifier, explain
from workers.engine.explain import ExecutionOptions


@dataclass
class Attributed:
    """What every variant returns per document, to score it the same way."""

    scores: list[float]
    gap: float | None  # relative completeness gap, None where the target differs
    steps: int | None = None


def baseline_loop(classifier: Classifier, texts: list[str]) -> list[Attributed]:
    """One document per call, a fresh LIG per request, fp32, Captum's default batching
    (all 50 steps in one pass): TorchServe's explain handler and the Captum tutorials."""
    model, tokenizer, device = classifier.model, classifier.tokenizer, classifier.device
    out = []
    for text in texts:
        enc = tokenizer(text, return_tensors="pt").to(device)
        ids, mask = enc["input_ids"], enc["attention_mask"]
        ref = torch.full_like(ids, tokenizer.pad_token_id)
        ref[0, 0], ref[0, -1] = ids[0, 0], ids[0, -1]

        def forward(input_ids, attention_mask):
            return model(input_ids=input_ids, attention_mask=attention_mask).logits

        target = int(forward(ids, mask).argmax())
        lig = LayerIntegratedGradients(forward, model.get_input_embeddings())
        attributions, delta = lig.attribute(
            ids, baselines=ref, target=target, additional_forward_args=(mask,),
            n_steps=50, return_convergence_delta=True,
        )  # fmt: skip
        scores = attributions.sum(-1)[0]
        gap = float(scores.sum() - delta)  # f(x) - f(x')
        out.append(Attributed(scores.tolist(), abs(float(delta)) / max(abs(gap), 1e-4), 50))
    return out


def engine_run(
    classifier: Classifier, texts: list[str], params: dict, options: ExecutionOptions | None = None
) -> list[Attributed]:
    # quality=False: the peers compute no faithfulness metrics, so neither do we here
    options = options or ExecutionOptions()
    results = explain(classifier, texts, params=params, options=options, quality=False)
    lig = [r.methods["lig"] for r in results]
    return [Attributed(m.attributions, m.relative_gap, m.steps) for m in lig]


def cosine(a: list[float], b: list[float]) -> float:
    x, y = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    return float(torch.nn.functional.cosine_similarity(x, y, dim=0))


def min_cosine(out: list[Attributed], reference: list[Attributed]) -> float | None:
    """Lowest cosine to the reference; None where token counts differ (another tokenizer
    view, e.g. transformers-interpret drops special tokens)."""
    pairs = list(zip(out, reference, strict=True))
    if not all(len(a.scores) == len(r.scores) for a, r in pairs):
        return None
    return min(cosine(a.scores, r.scores) for a, r in pairs)
