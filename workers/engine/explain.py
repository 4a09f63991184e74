"""Predict and attribute many documents at once, grouped by length."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from workers.engine.batching import (
    auto_internal_batch_size,
    docs_per_group,
    free_accelerator_memory,
)
from workers.engine.classifier import Classifier
from workers.engine.encoding import Group, length_groups, pad_group, tokenize
from workers.engine.methods import METHODS, params_for


@dataclass
class MethodResult:
    method: str
    params: dict[str, Any]
    attributions: list[float]
    convergence_delta: float | None
    seconds: float
    steps: int | None = None  # integration steps actually taken (path methods)
    relative_gap: float | None = None  # |delta| / |f(x) - f(baseline)|


@dataclass
class DocumentExplanation:
    label: str
    label_index: int
    probabilities: dict[str, float]
    tokens: list[str]
    truncated: bool
    methods: dict[str, MethodResult] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def confidence(self) -> float:
        return self.probabilities[self.label]


@dataclass(frozen=True)
class ExecutionOptions:
    """How to run, as opposed to what to compute: none of this changes a result."""

    internal_batch_size: int | None = None  # rows per forward/backward; None: sized per group
    max_docs_per_group: int | None = None  # None: by device (batching.docs_per_group)
    max_tokens_per_group: int = 4096  # documents x padded length in one group
    max_tokens: int = 512  # per document, before truncation


def explain(
    classifier: Classifier,
    texts: Sequence[str],
    methods: Sequence[str] = ("lig",),
    params: dict[str, Any] | None = None,
    options: ExecutionOptions | None = None,
) -> list[DocumentExplanation]:
    """Explain ``texts`` with each of ``methods``; results come back in input order.

    All methods of a document share one prediction pass, and the attribution target
    is the predicted label. ``params`` overrides method parameters by name (e.g.
    ``{"n_steps": 32}``); the full set used is returned with each result.
    """
    options = options or ExecutionOptions()
    method_params = {name: params_for(name, params) for name in methods}
    started = time.perf_counter()
    docs = tokenize(classifier, texts, options.max_tokens)
    tokenize_seconds = (time.perf_counter() - started) / max(len(texts), 1)
    results: list[DocumentExplanation | None] = [None] * len(texts)
    max_docs = options.max_docs_per_group or docs_per_group(classifier)
    groups = length_groups(docs, max_docs, options.max_tokens_per_group)
    for indices in groups:
        group = pad_group(classifier, docs, indices)
        rows = options.internal_batch_size or auto_internal_batch_size(classifier, group)
        explained_group, retries = _with_oom_backoff(classifier, group, method_params, rows)
        for row, explained in enumerate(explained_group):
            explained.truncated = docs[indices[row]].truncated
            explained.timings["tokenize"] = tokenize_seconds
            explained.timings["oom_retries"] = retries
            results[indices[row]] = explained
    return [r for r in results if r is not None]


def _with_oom_backoff(
    classifier: Classifier, group: Group, method_params: dict[str, dict[str, Any]], rows: int
) -> tuple[list[DocumentExplanation], int]:
    """Runs the group; on CUDA out-of-memory, halves the rows per pass and tries again
    (a group wider than the rows is split). Returns the results and the retries."""
    retries = 0
    while True:
        try:
            out: list[DocumentExplanation] = []
            for start in range(0, len(group.indices), rows):
                part = group.subset(torch.arange(start, min(start + rows, len(group.indices))))
                out += _explain_group(classifier, part, method_params, rows)
            return out, retries
        except torch.OutOfMemoryError:
            if rows == 1:
                raise
            retries, rows = retries + 1, max(1, rows // 2)
            free_accelerator_memory()


def _explain_group(
    classifier: Classifier,
    group: Group,
    method_params: dict[str, dict[str, Any]],
    internal_batch_size: int,
) -> list[DocumentExplanation]:
    share = 1 / len(group.indices)  # group timings are split evenly over its documents
    started = time.perf_counter()
    with torch.inference_mode():
        logits = classifier.forward(group.input_ids, group.attention_mask, group.token_type_ids)
        probabilities = torch.softmax(logits.float(), dim=-1)
    targets = probabilities.argmax(dim=-1)
    predict_seconds = (time.perf_counter() - started) * share

    out = []
    for row, length in enumerate(group.lengths):
        index = int(targets[row])
        ids = group.input_ids[row, :length].tolist()
        out.append(
            DocumentExplanation(
                label=classifier.labels[index],
                label_index=index,
                probabilities={
                    name: float(p)
                    for name, p in zip(classifier.labels, probabilities[row], strict=True)
                },
                tokens=classifier.tokenizer.convert_ids_to_tokens(ids),
                truncated=False,
                timings={"predict": predict_seconds},
            )
        )

    for name, params in method_params.items():
        started = time.perf_counter()
        result = METHODS[name].attribute(
            classifier, group, targets.clone(), params, internal_batch_size
        )
        seconds = (time.perf_counter() - started) * share
        scores, deltas, gaps = result.scores.cpu(), result.deltas.cpu(), result.gaps.cpu()
        for row, length in enumerate(group.lengths):
            out[row].methods[name] = MethodResult(
                method=name,
                params=params,
                attributions=scores[row, :length].tolist(),
                convergence_delta=float(deltas[row]),
                seconds=seconds,
                steps=result.steps[row],
                relative_gap=float(gaps[row]),
            )
            out[row].timings[name] = seconds
    return out
