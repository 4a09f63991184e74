"""Encode: the engine's explanation of a document as the records the data layer writes."""

from __future__ import annotations

from typing import Any

from db.records import AgreementRecord, ChunkRecords, ExplanationRecord, RepresentationRecord


def encode(
    records: ChunkRecords,
    document_id: int,
    text: str,
    model_id: int,
    explained: Any,  # workers.engine.DocumentExplanation (typed loosely: torch stays lazy)
    provenance: dict[str, Any],  # batch_id, worker, device, execution
) -> None:
    """Adds the document's records to the chunk's: DONE with one explanation per method,
    its vector and its agreements; or FAILED when a method's numbers are not finite."""
    rows = [
        ExplanationRecord(
            document_id=document_id,
            model_id=model_id,
            method=name,
            params=result.params,
            label=explained.label,
            confidence=explained.confidence,
            probabilities=explained.probabilities,
            tokens=explained.tokens,
            attributions=result.attributions,
            convergence_delta=result.convergence_delta,
            relative_gap=result.relative_gap,
            steps=result.steps,
            timings={**explained.timings, "seconds": result.seconds},
            quality=result.quality,
            extra=result.extra,
            windows=explained.windows,
            offsets=explained.offsets,
            words=explained.words,
            **provenance,
        )
        for name, result in explained.methods.items()
    ]
    bad = list(dict.fromkeys(p for row in rows if (p := row.problem())))
    if bad:
        records.failed.append((document_id, f"non-finite values in {', '.join(bad)}"))
        return
    records.done.append(document_id)
    records.texts[document_id] = text
    records.explanations.extend(rows)
    if explained.embedding is not None:
        records.representations.append(
            RepresentationRecord(document_id, model_id, explained.embedding)
        )
    records.agreements.extend(
        AgreementRecord(document_id, model_id, pair, spearman)
        for pair, spearman in explained.agreement.items()
    )
