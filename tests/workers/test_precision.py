"""bf16 autocast (the GPU default) and adaptive steps: a document whose completeness gap
stalls under bf16 is recomputed in fp32, so every document still meets the tolerance.
Runs on the CPU, whose autocast rounds matrix products to bf16 the same way."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from workers.engine import Classifier, explain

TEXTS = [
    "a gorgeous, witty, seductive movie.",
    "the film is strictly routine and the actors seem bored by the material they were given",
    "one of the most exciting and moving films of the year",
    "dull",
    "an uneven but often funny look at a family that falls apart and comes back together",
    "nothing here works",
    "it is a beautiful film, full of life and grace",
    "too long, too loud and too pleased with itself",
]


@pytest.fixture(scope="module")
def bf16(tiny_model) -> Classifier:
    return Classifier.load(tiny_model, autocast=True)


def test_adaptive_steps_meet_the_tolerance_under_bf16_by_falling_back_to_fp32(bf16, classifier):
    results = explain(bf16, TEXTS, params={"n_steps": "auto"}, quality=False)
    lig = [r.methods["lig"] for r in results]
    assert all(m.relative_gap <= m.params["tolerance"] for m in lig)
    fell_back = [r for r in results if r.timings.get("fp32_fallback")]
    # The tiny model's logit gaps are small enough that bf16 rounding exceeds 1% on some
    # documents: without the fallback they would climb to max_steps and still miss.
    assert fell_back, [m.relative_gap for m in lig]
    assert bf16.autocast  # the fallback leaves the classifier as it found it

    reference = explain(classifier, TEXTS, params={"n_steps": 256}, quality=False)
    for result, ref in zip(results, reference, strict=True):
        if result.timings.get("fp32_fallback"):
            a = torch.tensor(result.methods["lig"].attributions, dtype=torch.float64)
            b = torch.tensor(ref.methods["lig"].attributions, dtype=torch.float64)
            assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.99


def test_fixed_steps_under_bf16_record_their_gap_and_never_fall_back(bf16):
    results = explain(bf16, TEXTS[:3], params={"n_steps": 16}, quality=False)
    for result in results:
        assert result.methods["lig"].steps == 16
        assert result.methods["lig"].relative_gap is not None
        assert "fp32_fallback" not in result.timings


def test_the_engine_imports_without_celery_or_the_database():
    """The engine is a plain library: a GPU box with only torch, transformers and captum
    can run it (bench/gpu.py does)."""
    code = (
        "import sys, workers.engine, bench.common;"
        "bad = [m for m in ('celery', 'sqlalchemy', 'db', 'pydantic_settings')"
        " if m in sys.modules];"
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr + done.stdout


def test_non_finite_results_are_failed_with_the_reason_not_stored(bf16):
    """NaN scores are no explanation (and PostgreSQL's JSON refuses them): the worker
    fails the document with the reason instead of losing its whole chunk."""
    from db.records import ChunkRecords
    from workers.encode import encode

    provenance = {"worker": "w", "device": "cpu", "execution": {}}
    (result,) = explain(bf16, TEXTS[:1], params={"n_steps": 4}, quality=False)
    encode(fine := ChunkRecords(), 1, TEXTS[0], 1, result, provenance)
    assert fine.done == [1] and not fine.failed
    result.methods["lig"].attributions[1] = float("nan")
    encode(broken := ChunkRecords(), 1, TEXTS[0], 1, result, provenance)
    assert broken.failed == [(1, "non-finite values in lig")] and not broken.explanations
