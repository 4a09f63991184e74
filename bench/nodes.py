"""How many Integrated Gradients nodes documents need, uniform against calibrated.

    .venv/bin/python bench/nodes.py [--model DIR] [--short 48] [--long 12]

For each set (the held-out sentences and long documents of ``bench/throughput.py``) and
each node placement (Captum's uniform Gauss-Legendre nodes; nodes calibrated to the
model), runs the engine at fixed node counts and prints how many documents meet the 1%
completeness tolerance at each count and the fewest nodes each document needs (the first
count that meets it). Then runs adaptive steps and reports the nodes they actually
evaluated per document (every pass counted) and their docs/s beside fixed 50 steps.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import typer
from rich.console import Console
from rich.table import Table

from bench.throughput import documents
from contract.model_path import resolve_model
from contract.settings import Settings
from workers.engine import Classifier, explain
from workers.engine.methods.lig import node_density

console = Console(width=160)
COUNTS = (6, 8, 9, 10, 12, 14, 16, 20, 24, 28, 32, 40)
TOLERANCE = 0.01


def main(
    model: str = typer.Option("minilm-sentiment", help="Model name or checkpoint directory."),
    short: int = typer.Option(48, help="Held-out sentences."),
    long: int = typer.Option(12, help="Long documents (~128-256 tokens)."),
) -> None:
    classifier = Classifier.load(resolve_model(model, Settings()))
    density = node_density(classifier)
    console.print(f"[bold]nodes[/] model {classifier.name}; calibrated density {density}")
    short_docs, long_docs = documents(short, long, classifier.tokenizer)
    for name, texts in (("short", short_docs), ("long", long_docs)):
        if texts:
            measure(name, texts, classifier)


def measure(name: str, texts: list[str], classifier: Classifier) -> None:
    table = Table(title=f"{name}: {len(texts)} documents")
    table.add_column("nodes")
    needs: dict[str, list[int | None]] = {}
    passing: dict[str, list[int]] = {}
    for placement in ("uniform", "calibrated"):
        table.add_column(f"{placement}: documents within 1%")
        need: list[int | None] = [None] * len(texts)
        passing[placement] = []
        for count in COUNTS:
            results = explain(classifier, texts, params={"n_steps": count, "nodes": placement},
                              quality=False)  # fmt: skip
            ok = [r.methods["lig"].relative_gap <= TOLERANCE for r in results]
            passing[placement].append(sum(ok))
            need = [
                n if n is not None or not good else count for n, good in zip(need, ok, strict=True)
            ]
        needs[placement] = need
    for i, count in enumerate(COUNTS):
        table.add_row(str(count), *(str(passing[p][i]) for p in ("uniform", "calibrated")))
    console.print(table)
    for placement, need in needs.items():
        known = [n for n in need if n is not None] or [0]
        console.print(
            f"  {placement}: fewest nodes per document mean {statistics.mean(known):.1f}, "
            f"max {max(known)}; {len(need) - len(known)} need more than {COUNTS[-1]}"
        )
    started = time.perf_counter()
    explain(classifier, texts, params={"n_steps": 50}, quality=False)
    fixed = time.perf_counter() - started
    started = time.perf_counter()
    adaptive = explain(classifier, texts, params={"n_steps": "auto"}, quality=False)
    seconds = time.perf_counter() - started
    evaluated = [r.timings["lig_nodes"] for r in adaptive]
    final = [r.methods["lig"].steps for r in adaptive]
    gaps = [r.methods["lig"].relative_gap for r in adaptive]
    console.print(
        f"  adaptive: {statistics.mean(evaluated):.1f} nodes evaluated per document "
        f"(final rule {statistics.mean(final):.1f}), max relative gap {max(gaps):.2e}; "
        f"{len(texts) / seconds:.2f} docs/s = {fixed / seconds:.2f}x fixed 50 steps"
    )


if __name__ == "__main__":
    typer.run(main)
