"""How good an explanation is: faithfulness (ERASER) and agreement between methods.

Faithfulness (DeYoung et al., 2020), for the target (predicted) label's probability p:
- comprehensiveness = p(x) - p(x without its top-k% tokens): large when the tokens the
  explanation ranks first are the ones the model needs;
- sufficiency = p(x) - p(only the top-k% tokens): small when they are all it needs;
each an AOPC, the mean over k in 1, 5, 10, 20, 50% of the content tokens (at least one
token per bin; [CLS]/[SEP] are never ranked nor removed). Tokens are ranked by signed
attribution toward the target, highest first, ties by position. "Removing" a token
replaces its id by [PAD] and keeps its position and attention (the ``lig`` and
``occlusion`` baseline, and one tensor shape for every perturbation, so all of them
batch together). The same two figures for a random ranking of the same document
(seeded by its token ids: deterministic) are its baseline.

Agreement: Spearman's rank correlation between two methods' scores over a document's
content tokens.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping, Sequence

import torch

from workers.engine.classifier import Classifier
from workers.engine.encoding import Group

BINS = (0.01, 0.05, 0.10, 0.20, 0.50)  # ERASER's AOPC thresholds
RANDOM = "random"


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
    classifier: Classifier,
    group: Group,
    targets: torch.Tensor,
    scores: Mapping[str, torch.Tensor],
    rows_per_pass: int,
    full: torch.Tensor,
    rows: Sequence[int] | None = None,
) -> dict[int, dict[str, dict[str, float]]]:
    """Per document (of ``rows``, all by default), per method in ``scores`` (documents x
    positions): comprehensiveness, sufficiency and the random ranking's two figures.

    ``full`` is p(target) of each unperturbed document, from the prediction pass. Every
    distinct perturbation of the group runs once, in as few forward passes as
    ``rows_per_pass`` allows: bins that round to the same number of tokens, and rankings
    whose top tokens coincide, share their rows (a 20-token document's 1% and 5% bins are
    both its top token)."""
    rankings = {**scores, RANDOM: _random(group)}
    masks: list[torch.Tensor] = []  # each distinct perturbation once
    docs: list[int] = []  # the document of each mask
    plan: list[tuple[int, str, str, int]] = []  # (document, ranking, metric, mask) per bin
    for row in range(len(group.lengths)) if rows is None else rows:
        seen: dict[bytes, int] = {}
        for name, metric, mask in _perturbations(group, row, rankings):
            key = mask.numpy().tobytes()
            if key not in seen:
                seen[key] = len(masks)
                masks.append(mask)
                docs.append(row)
            plan.append((row, name, metric, seen[key]))
    perturbed = _target_probabilities(classifier, group, targets, docs, masks, rows_per_pass)
    drops: dict[tuple[int, str, str], list[float]] = {}
    for row, name, metric, mask in plan:
        drops.setdefault((row, name, metric), []).append(float(full[row] - perturbed[mask]))
    out = {}
    for row in sorted({row for row, *_ in plan}):
        aopc = {key[1:]: sum(v) / len(v) for key, v in drops.items() if key[0] == row}
        baseline = {f"random_{metric}": aopc.get((RANDOM, metric), 0.0) for metric in METRICS}
        out[row] = {
            name: {**{m: aopc.get((name, m), 0.0) for m in METRICS}, **baseline} for name in scores
        }
    return out


def _perturbations(
    group: Group, row: int, rankings: Mapping[str, torch.Tensor]
) -> Iterator[tuple[str, str, torch.Tensor]]:
    """(ranking name, metric, positions replaced by [PAD]) for every bin of one
    document: comprehensiveness removes the top tokens, sufficiency all but them."""
    length = group.lengths[row]
    content = torch.arange(1, length - 1)
    for name, ranking in rankings.items():
        order = content[torch.argsort(-ranking[row, 1 : length - 1].cpu(), stable=True)]
        for size in bin_sizes(len(content)):
            top = torch.zeros(group.input_ids.shape[1], dtype=torch.bool)
            top[order[:size]] = True
            rest = torch.zeros_like(top)
            rest[content] = True
            rest[top] = False
            yield name, "comprehensiveness", top
            yield name, "sufficiency", rest


METRICS = ("comprehensiveness", "sufficiency")


def _random(group: Group) -> torch.Tensor:
    ranking = torch.zeros(group.input_ids.shape, dtype=torch.float32)
    for row, length in enumerate(group.lengths):
        ranking[row, :length] = random_scores(group.input_ids[row, :length].tolist())
    return ranking


def _target_probabilities(
    classifier: Classifier,
    group: Group,
    targets: torch.Tensor,
    docs: list[int],
    masks: list[torch.Tensor],
    rows_per_pass: int,
) -> torch.Tensor:
    """p(target) of each perturbation: document ``docs[i]`` with ``masks[i]`` replaced."""
    if not masks:
        return torch.zeros(0)
    device = group.input_ids.device
    rows_of = torch.tensor(docs, device=device)
    removed = torch.stack(masks).to(device)
    pad = classifier.tokenizer.pad_token_id
    out = []
    with torch.inference_mode():
        for start in range(0, len(docs), max(1, rows_per_pass)):
            rows, drop = (
                rows_of[start : start + rows_per_pass],
                removed[start : start + rows_per_pass],
            )
            ids = torch.where(drop, pad, group.input_ids[rows])
            types = None if group.token_type_ids is None else group.token_type_ids[rows]
            logits = classifier.forward(ids, group.attention_mask[rows], types)
            p = torch.softmax(logits.float(), dim=-1)
            out.append(p[torch.arange(len(rows), device=device), targets[rows]])
    return torch.cat(out).cpu()


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
