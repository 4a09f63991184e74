"""Predict and attribute many documents at once, grouped by length."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from workers.engine import faithfulness
from workers.engine.batching import (
    auto_internal_batch_size,
    docs_per_group,
    free_accelerator_memory,
    rows_per_pass,
)
from workers.engine.classifier import Classifier
from workers.engine.encoding import Group, Tokenized, encode_texts, length_groups, pad_group
from workers.engine.methods import METHODS, params_for
from workers.engine.results import DocumentExplanation, MethodResult, merge_windows
from workers.engine.windows import mean_logits, split

__all__ = ["DocumentExplanation", "ExecutionOptions", "MethodResult", "explain"]

T = TypeVar("T")


@dataclass(frozen=True)
class ExecutionOptions:
    """How to run, as opposed to what to compute: none of this changes a result, except
    where a document is cut into windows."""

    internal_batch_size: int | None = None  # rows per forward/backward; None: sized per group
    max_internal_batch_size: int | None = None  # cap on the size chosen per group
    max_docs_per_group: int | None = None  # None: by device (batching.docs_per_group)
    max_tokens_per_group: int = 4096  # documents x padded length in one group
    max_tokens: int = 512  # per window; longer documents are explained in windows
    window_stride: int | None = None  # content tokens between window starts; None: half


def explain(
    classifier: Classifier,
    texts: Sequence[str],
    methods: Sequence[str] = ("lig",),
    params: dict[str, Any] | None = None,
    options: ExecutionOptions | None = None,
    quality: bool | float = True,
) -> list[DocumentExplanation]:
    """Explain ``texts`` with each of ``methods``; results come back in input order.

    All methods of a document share one prediction pass, and the attribution target
    is the predicted label. ``params`` overrides method parameters by name (e.g.
    ``{"n_steps": 32}``); the full set used is returned with each result. ``quality``
    adds the faithfulness figures of every method (``faithfulness``): True for every
    document, or the share of documents to measure (``faithfulness.sampled`` picks them
    by their tokens, the same on every run); agreement between methods is always
    computed. A document over ``min(max_tokens, model limit)`` tokens is explained in
    overlapping windows (``windows``), never truncated. Each result
    carries its tokens' character offsets and words in its text (``encoding.Encoded``;
    None with a slow tokenizer).
    """
    options = options or ExecutionOptions()
    method_params = {name: params_for(name, params) for name in methods}
    started = time.perf_counter()
    encoded = encode_texts(classifier, texts)  # ids, and each token's place in its text
    ids = [e.ids for e in encoded]
    limit = min(options.max_tokens, classifier.max_length)
    windows = [w for doc, d in enumerate(ids) for w in split(doc, d, limit, options.window_stride)]
    tokenize_seconds = (time.perf_counter() - started) / max(len(texts), 1)
    pieces = [Tokenized(w.ids) for w in windows]
    by_doc: dict[int, list[int]] = {}
    for piece, window in enumerate(windows):
        by_doc.setdefault(window.doc, []).append(piece)
    windowed = {doc: p for doc, p in by_doc.items() if len(p) > 1}
    started = time.perf_counter()
    predictions = _predict_windowed(classifier, pieces, windowed, options)
    prepass_seconds = (time.perf_counter() - started) / max(len(windowed), 1)
    forced = {
        piece: int(predictions[doc][0].argmax()) for doc, p in windowed.items() for piece in p
    }
    measured = {
        p for doc, ps in by_doc.items() if faithfulness.sampled(ids[doc], quality) for p in ps
    }
    explained = _explain_pieces(classifier, pieces, method_params, options, forced, measured)
    results = []
    for doc, doc_pieces in sorted(by_doc.items()):
        if doc in windowed:
            logits, embedding = predictions[doc]
            result = merge_windows(
                classifier.tokenizer.convert_ids_to_tokens(ids[doc]),
                classifier.labels,
                logits,
                embedding,
                [windows[p] for p in doc_pieces],
                [explained[p] for p in doc_pieces],
            )
            result.timings["predict"] = result.timings.get("predict", 0.0) + prepass_seconds
        else:
            result = explained[doc_pieces[0]]
        result.timings["tokenize"] = tokenize_seconds
        # the whole document's tokens (a windowed one's too): its whole offsets and words
        result.offsets, result.words = encoded[doc].offsets, encoded[doc].words
        result.agreement = faithfulness.agreement(
            {name: m.attributions for name, m in result.methods.items()}
        )
        results.append(result)
    return results


def _predict_windowed(
    classifier: Classifier,
    pieces: list[Tokenized],
    windowed: dict[int, list[int]],
    options: ExecutionOptions,
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Each windowed document's logits and embedding, the means over its windows: the
    label that all its windows are then attributed toward. (Their attribution groups
    predict them once more, a forward pass per window.)"""
    wanted = [p for doc_pieces in windowed.values() for p in doc_pieces]
    logits: dict[int, torch.Tensor] = {}
    embeddings: dict[int, torch.Tensor] = {}
    max_docs = options.max_docs_per_group or docs_per_group(classifier)
    subset = [pieces[p] for p in wanted]
    for indices in length_groups(subset, max_docs, options.max_tokens_per_group):
        group = pad_group(classifier, subset, indices)
        with torch.inference_mode():
            out, pooled = classifier.predict(
                group.input_ids, group.attention_mask, group.token_type_ids
            )
        for row, i in enumerate(indices):
            logits[wanted[i]], embeddings[wanted[i]] = out[row].cpu(), pooled[row].cpu()
    return {
        doc: (mean_logits([logits[p] for p in ps]), mean_logits([embeddings[p] for p in ps]))
        for doc, ps in windowed.items()
    }


def _explain_pieces(
    classifier: Classifier,
    pieces: list[Tokenized],
    method_params: dict[str, dict[str, Any]],
    options: ExecutionOptions,
    forced: dict[int, int],
    measured: set[int],
) -> list[DocumentExplanation]:
    """Every piece (a document or a window) explained, in order, grouped by length."""
    results: list[DocumentExplanation | None] = [None] * len(pieces)
    max_docs = options.max_docs_per_group or docs_per_group(classifier)
    for indices in length_groups(pieces, max_docs, options.max_tokens_per_group):
        group = pad_group(classifier, pieces, indices)
        rows = options.internal_batch_size or auto_internal_batch_size(classifier, group)
        rows = min(rows, options.max_internal_batch_size or rows)
        run = _Run(classifier, method_params, forced)
        explained_group, retries = _with_oom_backoff(run, group, rows)
        for row, explained in enumerate(explained_group):
            explained.timings["oom_retries"] = retries
            results[indices[row]] = explained
    done = [r for r in results if r is not None]
    _measure_quality(classifier, pieces, done, sorted(measured), options)
    return done


def _measure_quality(
    classifier: Classifier,
    pieces: list[Tokenized],
    results: list[DocumentExplanation],
    measured: list[int],
    options: ExecutionOptions,
) -> None:
    """Adds the faithfulness of each measured piece's methods to its result. The pieces
    of every group share the perturbed passes (there are ~16 per document and method,
    mostly short); on CUDA out-of-memory the passes are halved and tried again."""
    if not measured:
        return
    started = time.perf_counter()
    documents = [
        faithfulness.Measured(
            ids=pieces[p].ids,
            target=results[p].label_index,
            full=results[p].confidence,
            scores={name: torch.tensor(m.attributions) for name, m in results[p].methods.items()},
        )
        for p in measured
    ]
    widest = max(len(d.ids) for d in documents)
    rows = options.internal_batch_size or rows_per_pass(classifier, widest)
    rows = min(rows, options.max_internal_batch_size or rows)
    figures, retries = _halving_on_oom(
        lambda tokens: faithfulness.evaluate(classifier, documents, tokens), rows * widest, widest
    )
    seconds = (time.perf_counter() - started) / len(measured)
    for p, per_method in zip(measured, figures, strict=True):
        for name, quality in per_method.items():
            results[p].methods[name].quality = quality
        results[p].timings["quality"] = seconds
        results[p].timings["oom_retries"] = results[p].timings.get("oom_retries", 0) + retries


@dataclass
class _Run:
    """What every group of one ``explain`` call computes."""

    classifier: Classifier
    method_params: dict[str, dict[str, Any]]
    forced: dict[int, int]  # piece -> target label (windows of a long document)


def _with_oom_backoff(run: _Run, group: Group, rows: int) -> tuple[list[DocumentExplanation], int]:
    """Runs the group, the rows per pass halved on CUDA out-of-memory (a group wider than
    the rows is split). Returns the results and the retries."""

    def attempt(rows: int) -> list[DocumentExplanation]:
        out: list[DocumentExplanation] = []
        for start in range(0, len(group.indices), rows):
            part = group.subset(torch.arange(start, min(start + rows, len(group.indices))))
            out += _explain_group(run, part, rows)
        return out

    return _halving_on_oom(attempt, rows, 1)


def _halving_on_oom(attempt: Callable[[int], T], size: int, smallest: int) -> tuple[T, int]:
    """``attempt(size)``; on CUDA out-of-memory, the size halved (not below ``smallest``)
    and tried again. Returns its result and the retries."""
    retries = 0
    while True:
        try:
            return attempt(size), retries
        except torch.OutOfMemoryError:
            if size <= smallest:
                raise
            retries, size = retries + 1, max(smallest, size // 2)
            free_accelerator_memory()


def _explain_group(run: _Run, group: Group, internal_batch_size: int) -> list[DocumentExplanation]:
    classifier = run.classifier
    share = 1 / len(group.indices)  # group timings are split evenly over its documents
    started = time.perf_counter()
    with torch.inference_mode():
        logits, pooled = classifier.predict(
            group.input_ids, group.attention_mask, group.token_type_ids
        )
        probabilities = torch.softmax(logits.float(), dim=-1)
    group.logits = logits  # f(x) for the path methods' completeness gap
    targets = probabilities.argmax(dim=-1).clone()  # a normal tensor: rows may be forced
    for row, piece in enumerate(group.indices):
        targets[row] = run.forced.get(piece, int(targets[row]))
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
                timings={"predict": predict_seconds},
                embedding=pooled[row].cpu().tolist(),
            )
        )

    scores = {}
    for name, params in run.method_params.items():
        started = time.perf_counter()
        result = METHODS[name].attribute(
            classifier, group, targets.clone(), params, internal_batch_size
        )
        seconds = (time.perf_counter() - started) * share
        scores[name] = result.scores
        maps = {key: value.cpu() for key, value in result.maps.items()}
        values = result.scores.cpu()
        deltas = None if result.deltas is None else result.deltas.cpu()
        gaps = None if result.gaps is None else result.gaps.cpu()
        for row, length in enumerate(group.lengths):
            out[row].methods[name] = MethodResult(
                method=name,
                params=result.params or params,
                attributions=values[row, :length].tolist(),
                convergence_delta=None if deltas is None else float(deltas[row]),
                seconds=seconds,
                steps=None if result.steps is None else result.steps[row],
                relative_gap=None if gaps is None else float(gaps[row]),
                extra={key: value[row, :, :length].tolist() for key, value in maps.items()} or None,
            )
            out[row].timings[name] = seconds
            if result.nodes:
                out[row].timings[f"{name}_nodes"] = result.nodes[row]
            if result.fp32 and result.fp32[row]:
                out[row].timings["fp32_fallback"] = 1  # bf16 could not meet the tolerance

    return out
