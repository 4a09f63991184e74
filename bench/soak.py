"""Worker memory over a long run: does a worker process's RSS stay flat?

    .venv/bin/python bench/soak.py [--documents 10000] [--batch 1000] [--model DIR]

Starts the whole system (embedded Redis, SQLite, one real worker), warms it up, then
submits the documents in batches and records the worker's resident memory (the
Celery pool process that holds the model) after each batch. Without --model it uses
the tiny random BERT of the tests, so that 10,000 documents take minutes on a CPU:
what grows with the count of documents is the code around the model, not the model.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import typer
from rich.console import Console

from bench.memory import rss_bytes, with_children
from bench.system import RunningSystem
from workers.rt_data import load_sentences

console = Console()
RESULTS = Path(__file__).with_name("results")


def worker_rss_mb(system: RunningSystem) -> float:
    pool = with_children(system.worker.pid)[1:] or [system.worker.pid]
    return sum(rss_bytes(pid) for pid in pool) / 2**20


def main(
    documents: int = typer.Option(10_000),
    batch: int = typer.Option(1_000),
    model: Path | None = typer.Option(None, help="Checkpoint (default: a tiny random BERT)."),
    n_steps: str = typer.Option("20"),
) -> None:
    texts = [s.text for s in load_sentences()]
    with tempfile.TemporaryDirectory() as scratch:
        if model is None:
            from tests.conftest import build_tiny_model

            model = build_tiny_model(Path(scratch))
        with RunningSystem(model, n_steps=n_steps) as system:
            start = worker_rss_mb(system)
            figures = [{"documents": 0, "rss_mb": round(start, 1), "seconds": 0.0}]
            console.print(f"worker RSS after warm-up: {start:.1f} MB")
            began = time.perf_counter()
            for done in range(batch, documents + 1, batch):
                chunk = [texts[(done - batch + i) % len(texts)] for i in range(batch)]
                system.explain(chunk)
                rss = worker_rss_mb(system)
                elapsed = time.perf_counter() - began
                figures.append(
                    {"documents": done, "rss_mb": round(rss, 1), "seconds": round(elapsed, 1)}
                )
                console.print(f"{done:>6} documents  worker RSS {rss:7.1f} MB  {elapsed:6.0f} s")
    report = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "model": str(model),
              "n_steps": n_steps, "figures": figures}  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"soak-{datetime.now(UTC):%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(report, indent=2))
    end = figures[-1]["rss_mb"]
    console.print(f"start {start:.1f} MB, end {end:.1f} MB ({end - start:+.1f} MB); written {out}")


if __name__ == "__main__":
    typer.run(main)
