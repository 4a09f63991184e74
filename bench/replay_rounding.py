"""How far a replay may move a score on one machine: the numbers behind replay's float32
tolerances (contract/replay.py, docs/AUDIT.md).

    .venv/bin/python bench/replay_rounding.py [--model PATH] [--max-tokens 64]

A worker explains documents padded together in groups; a replay explains each one alone.
For every method, this explains the same texts (one of them long enough for windows) both
ways and prints the largest score difference over the largest |score|, the largest
probability difference, and whether lig's adaptive steps agree; the baseline is the
grouped run repeated, which must give the same bits. Without --model: the tests' tiny
random BERT.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import typer

from contract.methods import METHODS
from workers.engine import Classifier, explain
from workers.engine.explain import ExecutionOptions

TEXTS = [
    "a gorgeous, witty, seductive movie.",
    "the film is strictly routine.",
    "an utterly incompetent conclusion to a lazy script that goes on and on for ever",
    "one of the most exciting and moving films of the year",
    "bad",
    " ".join(f"scene {i} was great but the ending was awful" for i in range(12)),
]


def worst(a: list, b: list) -> tuple[float, float, bool]:
    """Largest relative score difference, probability difference, steps equal."""
    rel = prob = 0.0
    steps = True
    for x, y in zip(a, b, strict=True):
        for name in x.methods:
            s, t = x.methods[name].attributions, y.methods[name].attributions
            scale = max(abs(v) for v in s) or 1.0
            rel = max(rel, max(abs(p - q) for p, q in zip(s, t, strict=True)) / scale)
            steps &= x.methods[name].steps == y.methods[name].steps
        prob = max(prob, *(abs(x.probabilities[k] - y.probabilities[k]) for k in x.probabilities))
    return rel, prob, steps


def main(model: Path | None = typer.Option(None), max_tokens: int = typer.Option(64)) -> None:
    if model is None:
        from tests.conftest import build_tiny_model

        model = build_tiny_model(Path(tempfile.mkdtemp()))
    classifier = Classifier.load(model)
    options = ExecutionOptions(max_tokens=max_tokens)
    print(f"{'method':<18}{'grouped twice':>15}{'alone: scores':>15}{'probs':>10}  same steps")
    for name in METHODS:
        grouped = explain(classifier, TEXTS, [name], {}, options, quality=False)
        again = explain(classifier, TEXTS, [name], {}, options, quality=False)
        alone = [
            explain(classifier, [t], [name], g.methods[name].params, options, quality=False)[0]
            for t, g in zip(TEXTS, grouped, strict=True)
        ]
        base = worst(grouped, again)[0]
        rel, prob, steps = worst(grouped, alone)
        print(f"{name:<18}{base:>15.1e}{rel:>15.1e}{prob:>10.1e}  {steps}")


if __name__ == "__main__":
    typer.run(main)
