"""How many documents to pad together and how many rows per pass, on this machine.

    .venv/bin/python bench/grouping.py [--documents 24] [--model NAME]

Times the engine at 50 steps over the same held-out sentences for several groupings,
beside the per-document Captum loop (the baseline), in one process.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import typer

from bench.common import baseline_loop
from contract.model_path import resolve_model
from contract.settings import Settings
from workers.engine import Classifier, explain
from workers.engine.explain import ExecutionOptions
from workers.rt_data import load_sentences, split


def main(documents: int = typer.Option(24), model: str = typer.Option("minilm-sentiment")) -> None:
    classifier = Classifier.load(resolve_model(model, Settings()))
    texts = [s.text for s in split(load_sentences()).held_out[:documents]]
    explain(classifier, texts[:2], params={"n_steps": 8})  # warm up

    def timed(run) -> float:
        started = time.perf_counter()
        run()
        return time.perf_counter() - started

    base = timed(lambda: baseline_loop(classifier, texts))
    print(f"baseline loop: {base:.2f} s")
    for docs in (1, 2, 4, 16):
        for rows in (None, 50, 100):
            options = ExecutionOptions(internal_batch_size=rows, max_docs_per_group=docs)
            seconds = timed(
                lambda o=options: explain(classifier, texts, params={"n_steps": 50}, options=o)
            )
            print(f"{docs:>2} docs/group, rows {rows or 'auto':>4}: {seconds:.2f} s  "
                  f"{base / seconds:.2f}x baseline")  # fmt: skip


if __name__ == "__main__":
    typer.run(main)
