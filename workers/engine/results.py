"""What the engine returns per document, and how a windowed document's results are
assembled from its windows' (see ``windows`` for the rules)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from workers.engine.windows import Window, stitch


@dataclass
class MethodResult:
    method: str
    params: dict[str, Any]
    attributions: list[float]
    convergence_delta: float | None  # path methods only
    seconds: float
    steps: int | None = None  # integration steps actually taken (path methods)
    relative_gap: float | None = None  # |delta| / |f(x) - f(baseline)|
    # keys: "comprehensiveness", "sufficiency", "random_comprehensiveness",
    # "random_sufficiency" (see ``faithfulness``); None when not asked for
    quality: dict[str, float] | None = None
    # method-specific payload; attention: {"cls_attention": list[list[float]]} (layers x tokens)
    extra: dict[str, Any] | None = None


@dataclass
class DocumentExplanation:
    label: str
    label_index: int
    probabilities: dict[str, float]
    tokens: list[str]
    methods: dict[str, MethodResult] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    # the final layer's [CLS] hidden state from the prediction pass (windows: their
    # mean), for nearest-neighbour search
    embedding: list[float] | None = None
    # (a, b) (method names sorted) -> Spearman over the content tokens (special excluded)
    agreement: dict[tuple[str, str], float] = field(default_factory=dict)
    windows: int = 1  # overlapping windows the document was explained in (1: none)
    # character (start, end) per token, flattened, and each token's word (whitespace-
    # delimited span of the text; -1: special token); None without a fast tokenizer
    offsets: list[int] | None = None
    words: list[int] | None = None

    @property
    def confidence(self) -> float:
        return self.probabilities[self.label]


def merge_windows(
    tokens: list[str],
    labels: list[str],
    logits: torch.Tensor,
    embedding: torch.Tensor,
    windows: Sequence[Window],
    parts: Sequence[DocumentExplanation],
) -> DocumentExplanation:
    """One document's explanation from its windows' (in window order), given the
    document's logits and embedding (the means over its windows)."""
    probabilities = torch.softmax(logits.float(), dim=-1)
    index = int(probabilities.argmax())
    timings: dict[str, float] = {}
    for part in parts:
        for key, value in part.timings.items():
            timings[key] = max(timings.get(key, 0), value) if key == "oom_retries" else (
                timings.get(key, 0) + value
            )  # fmt: skip
    return DocumentExplanation(
        label=labels[index],
        label_index=index,
        probabilities={name: float(p) for name, p in zip(labels, probabilities, strict=True)},
        tokens=tokens,
        methods={
            name: _merge_method([part.methods[name] for part in parts], windows, len(tokens))
            for name in parts[0].methods
        },
        timings=timings,
        embedding=embedding.float().tolist(),
        windows=len(windows),
    )


def _merge_method(
    results: list[MethodResult], windows: Sequence[Window], length: int
) -> MethodResult:
    first = results[0]
    deltas = [r.convergence_delta for r in results if r.convergence_delta is not None]
    gaps = [r.relative_gap for r in results if r.relative_gap is not None]
    steps = [r.steps for r in results if r.steps is not None]
    return MethodResult(
        method=first.method,
        params=first.params,
        attributions=stitch(windows, [r.attributions for r in results], length),
        convergence_delta=sum(deltas) if deltas else None,
        seconds=sum(r.seconds for r in results),
        steps=max(steps) if steps else None,
        relative_gap=max(gaps) if gaps else None,
        quality=_mean_quality([r.quality for r in results]),
        extra=_stitch_extra([r.extra for r in results], windows, length),
    )


def _mean_quality(qualities: list[dict[str, float] | None]) -> dict[str, float] | None:
    """Each faithfulness figure averaged over the windows."""
    present = [q for q in qualities if q is not None]
    if not present:
        return None
    return {key: sum(q[key] for q in present) / len(present) for key in present[0]}


def _stitch_extra(
    extras: list[dict[str, Any] | None], windows: Sequence[Window], length: int
) -> dict[str, Any] | None:
    """Per-token maps (rows x window tokens) stitched row by row like the scores."""
    present = [e for e in extras if e is not None]
    if len(present) != len(extras) or not present:
        return None
    return {
        key: [stitch(windows, [e[key][i] for e in present], length) for i in range(len(rows))]
        for key, rows in present[0].items()
    }
