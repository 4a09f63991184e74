"""What ``results show`` makes of a document's export records: the methods asked for,
grouped by model, with their agreement and word view (JSON), and their provenance."""

from __future__ import annotations

import json
from typing import Any

from db.words import merge_wordpieces

Located = tuple[list[int] | None, list[int] | None, str | None]


def only(records: list[dict[str, Any]], methods: list[str]) -> list[dict[str, Any]]:
    """The records of ``methods`` (all when empty); a method the document was not
    explained with is an error naming the ones it was."""
    explained = [r for r in records if r["tokens"] is not None]
    if not methods or not explained:
        return records
    missing = sorted(set(methods) - {r["method"] for r in explained})
    if missing:
        have = sorted({r["method"] for r in explained})
        raise ValueError(
            f"no {', '.join(missing)} explanation of this document; it has: {', '.join(have)}"
        )
    return [r for r in explained if r["method"] in methods]


def by_model(records: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Explanations grouped by model (tokens line up only within one model)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault((record["model"], record["model_sha256"]), []).append(record)
    return list(groups.values())


def for_json(
    record: dict[str, Any], agreement: dict[tuple[str, str], float | None], words: bool
) -> dict[str, Any]:
    """A show record with its agreement with each other shown method and, with
    ``--words``, its word view."""
    if record["tokens"] is None:
        return record
    method = record["method"]
    mine = {(b if a == method else a): rho for (a, b), rho in agreement.items() if method in (a, b)}
    extra: dict[str, Any] = {"agreement": mine}
    if words:
        merged = merge_wordpieces(record["tokens"], record["attributions"], *located(record))
        extra["words"] = [list(p) for p in merged]
    return {**record, **extra}


def located(record: dict[str, Any]) -> Located:
    """The record's character offsets, words and text, for words as the text shows them;
    all None where the row has no offsets (a slow tokenizer, or written before they
    were stored) or they do not fit its tokens and text: the word views then merge
    BERT's ``##`` pieces."""
    offsets, words, text = record.get("offsets"), record.get("word_ids"), record.get("text")
    tokens = record.get("tokens") or []
    if offsets is None or words is None or text is None:
        return None, None, None
    fits = len(offsets) == 2 * len(tokens) and len(words) == len(tokens)
    if not fits or any(not 0 <= o <= len(text) for o in offsets):
        return None, None, None
    return list(offsets), list(words), text


def provenance(record: dict[str, Any], several: bool = False) -> dict[str, Any]:
    """Where an explanation comes from; with ``several`` methods, what they share (their
    parameters and completeness are in the methods table)."""
    delta, gap = record["convergence_delta"], record["relative_gap"]
    fields: dict[str, Any] = {
        "batch": record["batch_id"],
        "model": f"{record['model']} sha256 {record['model_sha256'][:12]} ({record['model_path']})",
    }
    if not several:
        fields["params"] = json.dumps(record["params"], sort_keys=True)
        fields["convergence delta"] = (
            "n/a"
            if delta is None
            else f"{delta:.3g}" + ("" if gap is None else f" (relative {gap:.2g})")
        )
    windows = record.get("windows") or 1
    fields["words"] = (
        "as the text shows them (character offsets)"
        if located(record)[0] is not None
        else "wordpieces merged (no character offsets on this row)"
    )
    if windows > 1:
        fields["windows"] = f"{windows} overlapping (prediction: mean of their logits)"
    fields.update(
        device=record["device"],
        worker=record["worker"],
        metadata=json.dumps(record["metadata"], ensure_ascii=False),
        created=record["created_at"],
    )
    return fields
