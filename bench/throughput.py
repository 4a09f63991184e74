"""Attribution throughput and quality, side by side with the per-document Captum loop.

    .venv/bin/python bench/throughput.py [--model DIR] [--short 48] [--long 12] [--repeat 3]

Runs in one process, on the same documents (held-out Rotten Tomatoes sentences, plus
long documents of ~128-256 tokens made of consecutive sentences):

1. baseline: a per-document Captum LayerIntegratedGradients loop at n_steps=50, the way
   TorchServe's explain handler and the Captum tutorials do it;
2. transformers-interpret's SequenceClassificationExplainer, if it imports;
3. the explainq engine at n_steps=50;
4. the explainq engine with adaptive steps;
5. the whole system: ``producer submit`` -> Redis -> a worker -> the database, from
   submit to the last row (worker started and warmed beforehand), with faithfulness
   off, on (the default) and sampled (``EXPLAINQ_QUALITY=sample:0.1``).

With ``--repeat N`` every variant runs N times, round by round (each round runs them all
in turn; the system's three workers are started first and wait idle meanwhile), and each
one's fastest run is kept: on a shared machine a slow spell then falls on every variant.

For each: documents per second, ratio to the baseline, peak memory above the start,
the largest relative completeness gap, and the minimum cosine similarity to a
Gauss-Legendre 256-step reference. Results are printed as a table and written to
bench/results/throughput-<date>.json.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import typer
from rich.console import Console
from rich.table import Table

from bench.common import Attributed, baseline_loop, engine_run, min_cosine
from bench.memory import PeakRSS
from contract.model_path import resolve_model
from contract.settings import Settings
from workers.engine import Classifier
from workers.engine.methods.lig import node_density
from workers.rt_data import load_sentences, split

console = Console(width=160)  # the table is wide; logs are not terminals
RESULTS = Path(__file__).with_name("results")


@dataclass
class Row:
    variant: str
    documents: int
    seconds: float
    docs_per_second: float
    ratio: float
    peak_mb: float
    max_relative_gap: float | None
    min_cosine: float | None
    note: str = ""


def documents(short: int, long: int, tokenizer) -> tuple[list[str], list[str]]:
    held_out = [s.text for s in split(load_sentences()).held_out]
    short_docs = held_out[:short]
    long_docs, current = [], ""
    for sentence in held_out[short:] if long else []:
        current = f"{current} {sentence}".strip()
        if len(tokenizer(current)["input_ids"]) >= 128 + len(long_docs) * (128 // max(long, 1)):
            long_docs.append(current)
            current = ""
            if len(long_docs) == long:
                break
    return short_docs, long_docs


def interpret_loop(classifier: Classifier, texts: list[str]) -> list[Attributed]:
    from transformers_interpret import SequenceClassificationExplainer

    explainer = SequenceClassificationExplainer(classifier.model, classifier.tokenizer)
    out = []
    for text in texts:
        pairs = explainer(text, n_steps=50)
        out.append(Attributed([score for _, score in pairs], None))
    return out


@dataclass
class Variant:
    name: str
    run: Callable[[], list[Attributed]]
    note: str = ""
    scored: bool = True  # compared with the reference (gap, cosine)
    pids: list[int] | None = None  # processes whose memory counts (default: this one)


def measure(variants: list[Variant], reference: list[Attributed], repeat: int) -> list[Row]:
    """Runs every variant ``repeat`` times, round by round (each round runs them all in
    turn, so a slow spell of a shared machine falls on every variant alike), and keeps
    each one's fastest run: the machine's noise only ever slows a run down."""
    seconds = {v.name: float("inf") for v in variants}
    peaks = {v.name: 0.0 for v in variants}
    outputs: dict[str, list[Attributed]] = {}
    for round_ in range(max(1, repeat)):
        for variant in variants:
            with PeakRSS(variant.pids) as peak:
                started = time.perf_counter()
                outputs[variant.name] = variant.run()
                seconds[variant.name] = min(seconds[variant.name], time.perf_counter() - started)
            peaks[variant.name] = max(peaks[variant.name], peak.mb)
            rate = len(outputs[variant.name]) / seconds[variant.name]
            console.print(f"  round {round_ + 1}, {variant.name}: {rate:.2f} docs/s (best)")
    rows = []
    for variant in variants:
        out, took = outputs[variant.name], seconds[variant.name]
        gaps = [a.gap for a in out if a.gap is not None]
        rows.append(Row(variant.name, len(out), took, len(out) / took, 0.0, peaks[variant.name],
                        max(gaps) if gaps else None,
                        min_cosine(out, reference) if variant.scored else None,
                        variant.note))  # fmt: skip
    return rows


def main(
    model: str = typer.Option("minilm-sentiment", help="Model name or checkpoint directory."),
    short: int = typer.Option(48, help="Held-out sentences."),
    long: int = typer.Option(12, help="Long documents (~128-256 tokens)."),
    system: bool = typer.Option(True, help="Also measure the whole system."),
    threads: int | None = typer.Option(None, help="torch threads (default: torch's)."),
    repeat: int = typer.Option(1, help="Rounds of every variant; each one's fastest is kept."),
) -> None:
    if threads:
        torch.set_num_threads(threads)
    settings = Settings()
    path = resolve_model(model, settings)
    classifier = Classifier.load(path)
    short_docs, long_docs = documents(short, long, classifier.tokenizer)
    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    console.print(f"[bold]throughput[/] model {path.name}; {machine}")
    report = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine,
              "model": str(path), "repeat": repeat, "sets": {}}  # fmt: skip
    for set_name, texts in (("short", short_docs), ("long", long_docs)):
        if texts:
            report["sets"][set_name] = measure_set(
                set_name, texts, classifier, path, system, repeat
            )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"throughput-{datetime.now(UTC):%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(report, indent=2))
    console.print(f"written {out}")


def measure_set(
    set_name: str, texts: list[str], classifier: Classifier, path: Path, system: bool, repeat: int
) -> dict:
    lengths = [len(classifier.tokenizer(t)["input_ids"]) for t in texts]
    console.print(
        f"[bold]{set_name}[/]: {len(texts)} documents, {min(lengths)}-{max(lengths)} tokens"
    )
    reference = engine_run(classifier, texts, {"n_steps": 256})
    node_density(classifier)  # once per model (a worker's first task pays it), untimed
    variants = [
        Variant("baseline: Captum loop, 50 steps", lambda: baseline_loop(classifier, texts)),
        Variant(
            "explainq engine, 50 steps", lambda: engine_run(classifier, texts, {"n_steps": 50})
        ),
        Variant(
            "explainq engine, adaptive", lambda: engine_run(classifier, texts, {"n_steps": "auto"})
        ),
    ]
    if importlib.util.find_spec("transformers_interpret"):
        note = "attributes the probability: no gap or cosine"

        def interpreted() -> list[Attributed]:
            return interpret_loop(classifier, texts)

        variants.insert(1, Variant("transformers-interpret, 50 steps", interpreted, note, False))
    else:
        console.print("  transformers-interpret not installed: skipped")
    with ExitStack() as stack:
        if system:
            variants += [system_variant(stack, path, texts, quality) for quality in QUALITY_MODES]
        rows = measure(variants, reference, repeat)
    for row in rows:
        row.ratio = row.docs_per_second / rows[0].docs_per_second
    show(set_name, rows)
    return {"documents": len(texts), "tokens": [min(lengths), max(lengths)],
            "rows": [asdict(r) for r in rows]}  # fmt: skip


# The whole system with faithfulness off, on (the default) and on a tenth of the documents.
QUALITY_MODES = ("false", "true", "sample:0.1")


def system_variant(stack: ExitStack, path: Path, texts: list[str], quality: str) -> Variant:
    """The whole system with ``quality``, its worker started (and kept, idle, while the
    other variants run) and warmed."""
    from bench.system import RunningSystem

    running = stack.enter_context(RunningSystem(path, quality=quality))
    # Untimed pass over the same documents: the engine variants ran after the GL-256
    # reference had seen these shapes, so the worker gets the same warm kernel caches.
    running.explain(texts)

    def run() -> list[Attributed]:
        return [Attributed(r.attributions, r.relative_gap) for r in running.explain(texts)]

    return Variant(f"whole system, adaptive, EXPLAINQ_QUALITY={quality}", run,
                   "producer -> Redis -> worker -> DB",
                   pids=[os.getpid(), running.worker.pid])  # fmt: skip


def show(set_name: str, rows: list[Row]) -> None:
    table = Table(title=f"{set_name} documents")
    for column in (
        "variant",
        "docs/s",
        "x baseline",
        "peak MB",
        "max rel. gap",
        "min cosine",
        "note",
    ):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r.variant, f"{r.docs_per_second:.2f}", f"{r.ratio:.2f}", f"{r.peak_mb:.0f}",
            "-" if r.max_relative_gap is None else f"{r.max_relative_gap:.2e}",
            "-" if r.min_cosine is None else f"{r.min_cosine:.4f}", r.note,
        )  # fmt: skip
    console.print(table)


if __name__ == "__main__":
    typer.run(main)
