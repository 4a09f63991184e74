"""Cost and faithfulness of every attribution method, on the same documents, one process.

    .venv/bin/python bench/methods.py [--model minilm-sentiment] [--documents 48]

Cost: documents per second of each method alone (one prediction pass + its attribution,
no quality metrics), relative to ``lig`` at 50 steps, measured in the same run.
Faithfulness: one run with every method and the quality metrics on; per method the mean
and standard deviation of ERASER comprehensiveness and sufficiency (AOPC over the top
1/5/10/20/50% of tokens), the same for a random ranking of the same documents, and the share
of documents where the method beats random (higher comprehensiveness, lower
sufficiency); then the mean Spearman agreement of every pair of methods. Tables for
docs/PERFORMANCE.md and docs/QUALITY.md; JSON in bench/results/.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import typer
from rich.console import Console
from rich.table import Table

from contract.model_path import resolve_model
from contract.settings import Settings
from workers.engine import METHODS, Classifier, explain
from workers.rt_data import load_sentences, split

console = Console(width=160)
RESULTS = Path(__file__).with_name("results")


def cost(classifier: Classifier, texts: list[str], methods: list[str]) -> dict[str, float]:
    """Documents per second of each method alone."""
    explain(classifier, texts[:2], methods, quality=False)  # warm-up
    rates = {}
    for method in methods:
        started = time.perf_counter()
        explain(classifier, texts, [method], quality=False)
        rates[method] = len(texts) / (time.perf_counter() - started)
        console.print(f"  {method}: {rates[method]:.2f} docs/s")
    return rates


def faithfulness(classifier: Classifier, texts: list[str], methods: list[str]) -> dict:
    results = explain(classifier, texts, methods, quality=True)
    per_method = {}
    for method in methods:
        rows = [r.methods[method].quality for r in results if r.methods[method].quality]
        figures = {
            key: (statistics.mean(q[key] for q in rows), statistics.pstdev(q[key] for q in rows))
            for key in rows[0]
        }
        beats = sum(
            q["comprehensiveness"] > q["random_comprehensiveness"]
            and q["sufficiency"] < q["random_sufficiency"]
            for q in rows
        )
        per_method[method] = {"documents": len(rows), "figures": figures,
                              "beats_random": beats / len(rows)}  # fmt: skip
    pairs: dict[tuple[str, str], list[float]] = {}
    for r in results:
        for pair, rho in r.agreement.items():
            pairs.setdefault(pair, []).append(rho)
    agreement = {" / ".join(pair): statistics.mean(values) for pair, values in pairs.items()}
    return {"methods": per_method, "agreement": agreement}


def main(
    model: str = typer.Option("minilm-sentiment", help="Model name or checkpoint directory."),
    documents: int = typer.Option(48, help="Held-out sentences."),
    methods: str = typer.Option(",".join(METHODS), help="Comma-separated methods."),
) -> None:
    names = [m for m in methods.split(",") if m]
    if names[0] != "lig":
        names = ["lig", *[m for m in names if m != "lig"]]  # lig is the cost baseline
    path = resolve_model(model, Settings())
    classifier = Classifier.load(path)
    texts = [s.text for s in split(load_sentences()).held_out[:documents]]
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, " \
              f"torch {torch.__version__}, {torch.get_num_threads()} threads"  # fmt: skip
    console.print(f"[bold]methods[/] model {path.name}; {len(texts)} documents; {machine}")
    rates = cost(classifier, texts, names)
    quality = faithfulness(classifier, texts, names)
    show(rates, quality)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"methods-{datetime.now(UTC):%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps({"date": datetime.now(UTC).isoformat(timespec="seconds"),
                               "machine": machine, "model": str(path), "documents": len(texts),
                               "docs_per_second": rates, **quality}, indent=2))  # fmt: skip
    console.print(f"written {out}")


def show(rates: dict[str, float], quality: dict) -> None:
    table = Table(title="cost and faithfulness per method")
    for column in ("method", "docs/s", "x lig", "comprehensiveness", "random comp.",
                   "sufficiency", "random suff.", "beats random"):  # fmt: skip
        table.add_column(column)
    for method, rate in rates.items():
        q = quality["methods"][method]
        f = q["figures"]

        def cell(key: str, f: dict = f) -> str:
            return f"{f[key][0]:.3f} ± {f[key][1]:.3f}"

        table.add_row(method, f"{rate:.2f}", f"{rate / rates['lig']:.2f}",
                      cell("comprehensiveness"), cell("random_comprehensiveness"),
                      cell("sufficiency"), cell("random_sufficiency"),
                      f"{q['beats_random']:.0%}")  # fmt: skip
    console.print(table)
    agreement = Table(title="mean Spearman agreement")
    agreement.add_column("pair")
    agreement.add_column("rho")
    for pair, rho in sorted(quality["agreement"].items()):
        agreement.add_row(pair, f"{rho:.2f}")
    console.print(agreement)


if __name__ == "__main__":
    typer.run(main)
