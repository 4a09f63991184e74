"""Long documents as overlapping windows, and their results stitched back.

A document over the limit is cut into windows of ``limit`` tokens, each ``[CLS]`` +
``limit - 2`` content tokens + ``[SEP]``, starting every ``stride`` content tokens
(default: half a window) with the last window flush with the document's end, so every
token is seen in full context at least once. Each window is explained like a document.

Prediction: the mean of the windows' logits (softmax after), so every window counts
equally and a confident window cannot be outvoted by rounding; every window's
attribution target is that document label. Scores: a content token's score is the mean
over the windows covering it; [CLS] comes from the first window and [SEP] from the last.
Path checks: convergence deltas add up over windows (so does completeness: each
window's scores add to its own logit gap), relative gaps and steps take the worst
window. Faithfulness is measured per window and averaged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Window:
    """A window of a document: its token ids and where its content starts within the
    document's content (the tokens between [CLS] and [SEP])."""

    doc: int
    start: int
    ids: list[int]


def split(doc: int, ids: list[int], limit: int, stride: int | None = None) -> list[Window]:
    """The windows of one document (one window, the document itself, when it fits)."""
    if len(ids) <= limit:
        return [Window(doc, 0, list(ids))]
    width = limit - 2
    if width < 1:
        raise ValueError(f"a window of {limit} tokens has no room between [CLS] and [SEP]")
    # A stride wider than this model's window (the producer checks EXPLAINQ_MAX_TOKENS,
    # but a model may allow fewer positions) is narrowed to it: no gaps, no failure.
    stride = min(stride or max(1, width // 2), width)
    if stride < 1:
        raise ValueError(f"window stride must be at least 1 token, not {stride}")
    cls, content, sep = ids[0], ids[1:-1], ids[-1]
    starts = [*range(0, len(content) - width, stride), len(content) - width]
    return [Window(doc, start, [cls, *content[start : start + width], sep]) for start in starts]


def stitch(windows: Sequence[Window], rows: Sequence[Sequence[float]], length: int) -> list[float]:
    """One score per document token from one score per token of each window."""
    if len(windows) == 1:
        return list(rows[0])
    total, count = torch.zeros(length, dtype=torch.float64), torch.zeros(length)
    for window, row in zip(windows, rows, strict=True):
        content = torch.tensor(row[1:-1], dtype=torch.float64)
        total[1 + window.start : 1 + window.start + len(content)] += content
        count[1 + window.start : 1 + window.start + len(content)] += 1
    scores = (total / count.clamp_min(1)).tolist()
    scores[0], scores[-1] = rows[0][0], rows[-1][-1]
    return scores


def mean_logits(logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """The document's logits: the mean over its windows."""
    return torch.stack(list(logits)).mean(dim=0)
