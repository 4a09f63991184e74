"""What every attribution method returns, and the pieces several of them share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from workers.engine.classifier import Classifier
from workers.engine.encoding import Group


@dataclass
class Attribution:
    """One method's output for a group of documents.

    ``scores`` has one value per token position (documents x positions, 0 on padding).
    Path methods also give the completeness delta, the relative gap and the steps per
    document; the others leave them ``None``. ``maps`` holds extra per-token arrays
    (documents x rows x positions, e.g. attention per layer) that windows are stitched
    like the scores and that end up in ``MethodResult.extra``.
    """

    scores: torch.Tensor
    deltas: torch.Tensor | None = None  # per document: sum(scores) - (f(x) - f(baseline))
    steps: list[int] | None = None  # per document: the nodes of the rule it ended with
    gaps: torch.Tensor | None = None  # per document: |delta| / |f(x) - f(baseline)|
    maps: dict[str, torch.Tensor] = field(default_factory=dict)
    fp32: list[bool] | None = None  # per document: recomputed in fp32 after bf16 stalled
    params: dict[str, Any] | None = None  # the parameters as resolved (None: as given)
    nodes: list[int] | None = None  # per document: nodes evaluated over every pass


def masked(scores: torch.Tensor, group: Group) -> torch.Tensor:
    """Scores as float32 on their device, 0 on padding positions."""
    return (scores.float() * group.attention_mask).detach()


def with_special_tokens(
    classifier: Classifier, group: Group, row: int
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A forward over a document's content ids alone (rows x content): [CLS] and [SEP]
    are added back around them. Perturbation methods sample over this input, so the
    special tokens are never features and get a score of exactly 0, as in ``lig``."""
    length = group.lengths[row]
    cls, sep = group.input_ids[row, :1], group.input_ids[row, length - 1 : length]
    types = None if group.token_type_ids is None else group.token_type_ids[row : row + 1, :length]

    def forward(content: torch.Tensor) -> torch.Tensor:
        rows = content.shape[0]
        ids = torch.cat([cls.expand(rows, 1), content, sep.expand(rows, 1)], dim=1)
        mask = torch.ones_like(ids)
        return classifier.forward(ids, mask, None if types is None else types.expand(rows, -1))

    return forward
