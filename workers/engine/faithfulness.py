"""How good an explanation is: faithfulness (ERASER) and agreement between methods.

Faithfulness (DeYoung et al., 2020), for the target (predicted) label's probability p:
- comprehensiveness = p(x) - p(x without its top-k% tokens): large when the tokens the
  explanation ranks first are the ones the model needs;
- sufficiency = p(x) - p(only the top-k% tokens): small when they are all it needs;
each an AOPC, the mean over k in 1, 5, 10, 20, 50% of the content tokens (at least one
token per bin; [CLS]/[SEP] are never ranked nor removed). Tokens are ranked by signed
attribution toward the target, highest first, ties by position. "Removing" a token
deletes it from the input, as ERASER and ferret do (``REMOVAL``): the rest close up, so
a perturbed document is shorter than the document and costs less to run. The same two
figures for a random ranking of the same document (seeded by its token ids:
deterministic) are its baseline.

Agreement: Spearman's rank correlation between two methods' scores over a document's
content tokens.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch

from workers.engine.batching import pass_overhead_tokens, passes_by_length
from workers.engine.classifier import Classifier
from workers.engine.encoding import Tokenized, pad_group

BINS = (0.01, 0.05, 0.10, 0.20, 0.50)  # ERASER's AOPC thresholds
RANDOM = "random"
METRICS = ("comprehensiveness", "sufficiency")
# How a token is removed, as each row's execution records it. Rows written before it was
# recorded (2026-12-03) replaced a removed token's id by [PAD] at its position instead.
REMOVAL = "delete"


@dataclass(frozen=True)
class Measured:
    """A document (or window) whose faithfulness is measured."""

    ids: list[int]  # its token ids, with [CLS] and [SEP]
    target: int  # the label its explanations are toward
    full: float  # p(target) of the document itself, from the prediction pass
    scores: Mapping[str, torch.Tensor]  # each method's attributions, one per token


def bin_sizes(n: int) -> list[int]:
    """Tokens per bin for a document of ``n`` content tokens (half rounds up)."""
    return [min(n, max(1, int(n * share + 0.5))) for share in BINS]


def sampled(ids: list[int], share: bool | float) -> bool:
    """Whether a document's faithfulness is measured when only ``share`` of documents
    are: decided by a hash of its token ids, so a redelivered or replayed document gets
    the same answer on any machine, and the chosen ones are a uniform sample."""
    if share is True or share >= 1:
        return True
    if share is False or share <= 0:
        return False
    return zlib.crc32(torch.tensor(ids, dtype=torch.int64).numpy().tobytes()) < share * 2**32


def random_scores(ids: list[int]) -> torch.Tensor:
    """A random ranking of a document's positions, seeded by its token ids."""
    generator = torch.Generator().manual_seed(zlib.crc32(torch.tensor(ids).numpy().tobytes()))
    return torch.rand(len(ids), generator=generator)


def evaluate(
    classifier: Classifier, documents: Sequence[Measured], tokens_per_pass: int
) -> list[dict[str, dict[str, float]]]:
    """Per document, per method of its ``scores``: comprehensiveness, sufficiency and the
    random ranking's two figures.

    Every distinct perturbation runs once: bins that round to the same number of
    tokens, and rankings whose top tokens coincide, share it (a 20-token document's 1%
    and 5% bins are both its top token), and one that removes nothing is the document
    itself. The perturbed documents of all ``documents`` share forward passes of at most
    ``tokens_per_pass`` tokens, cut by length (``batching.passes_by_length``)."""
    pieces: list[Tokenized] = []  # each distinct perturbed document once
    targets: list[int] = []  # the target of each piece
    # per document, per bin: (ranking, metric, its piece, or None for the document itself)
    plans: list[list[tuple[str, str, int | None]]] = []
    for document in documents:
        ids = torch.tensor(document.ids)
        seen: dict[bytes, int | None] = {}
        plan = []
        rankings = {**document.scores, RANDOM: random_scores(document.ids)}
        for name, metric, kept in _perturbations(len(ids), rankings):
            key = kept.numpy().tobytes()
            if key not in seen:
                removes = len(kept) < len(ids)
                seen[key] = len(pieces) if removes else None
                if removes:
                    pieces.append(Tokenized(ids[kept].tolist()))
                    targets.append(document.target)
            plan.append((name, metric, seen[key]))
        plans.append(plan)
    perturbed = _target_probabilities(classifier, pieces, targets, tokens_per_pass)
    out = []
    for document, plan in zip(documents, plans, strict=True):
        drops: dict[tuple[str, str], list[float]] = {}
        for name, metric, piece in plan:
            p = document.full if piece is None else float(perturbed[piece])
            drops.setdefault((name, metric), []).append(document.full - p)
        aopc = {key: sum(values) / len(values) for key, values in drops.items()}
        baseline = {f"random_{metric}": aopc.get((RANDOM, metric), 0.0) for metric in METRICS}
        out.append(
            {
                name: {**{m: aopc.get((name, m), 0.0) for m in METRICS}, **baseline}
                for name in document.scores
            }
        )
    return out


def _perturbations(
    length: int, rankings: Mapping[str, torch.Tensor]
) -> Iterator[tuple[str, str, torch.Tensor]]:
    """(ranking name, metric, positions kept, in order) for every bin of a document of
    ``length`` tokens: comprehensiveness removes the top tokens, sufficiency all but
    them; [CLS] and [SEP] always stay."""
    content = torch.arange(1, length - 1)
    special = torch.zeros(length, dtype=torch.bool)
    special[[0, length - 1]] = True
    for name, ranking in rankings.items():
        order = content[torch.argsort(-ranking[1 : length - 1].cpu(), stable=True)]
        for size in bin_sizes(len(content)):
            top = torch.zeros(length, dtype=torch.bool)
            top[order[:size]] = True
            yield name, "comprehensiveness", torch.nonzero(~top).flatten()
            yield name, "sufficiency", torch.nonzero(top | special).flatten()


def _target_probabilities(
    classifier: Classifier, pieces: list[Tokenized], targets: list[int], tokens_per_pass: int
) -> torch.Tensor:
    """p(target) of each perturbed document, in passes of at most ``tokens_per_pass``
    tokens cut by length so that padding and passes cost least together."""
    out = torch.zeros(len(pieces))
    lengths = [len(piece.ids) for piece in pieces]
    overhead = pass_overhead_tokens(classifier)
    with torch.inference_mode():
        for indices in passes_by_length(lengths, overhead, tokens_per_pass):
            batch = pad_group(classifier, pieces, indices)
            logits = classifier.forward(batch.input_ids, batch.attention_mask, batch.token_type_ids)
            p = torch.softmax(logits.float(), dim=-1).cpu()
            out[indices] = p[torch.arange(len(indices)), [targets[i] for i in indices]]
    return out


def spearman(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Spearman's rho (ties get their mean rank); None when either side is constant or
    there are fewer than two values, where the correlation is undefined."""
    if len(a) < 2:
        return None
    ra, rb = _ranks(a.double()), _ranks(b.double())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    norm = ra.norm() * rb.norm()
    return None if norm == 0 else float((ra @ rb) / norm)


def _ranks(values: torch.Tensor) -> torch.Tensor:
    _, inverse, counts = torch.unique(values, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()  # 1-based rank of each distinct value's last
    return (ends - (counts.double() - 1) / 2)[inverse]


def agreement(scores: Mapping[str, list[float]]) -> dict[tuple[str, str], float]:
    """Spearman between every pair of methods over the content tokens ((a, b), names
    sorted); pairs where it is undefined (a constant side, under two tokens) are left
    out rather than stored as NaN."""
    names = sorted(scores)
    out = {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            rho = spearman(torch.tensor(scores[a][1:-1]), torch.tensor(scores[b][1:-1]))
            if rho is not None:
                out[(a, b)] = rho
    return out
