"""A model's recorded identity decides its outputs: a checkpoint whose classification
head is missing (initialised at random on every load) is refused, and the hash covers
the label mapping as well as the weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from workers.engine.classifier import Classifier, RandomWeights


def test_a_checkpoint_without_its_classification_head_is_refused(tiny_model, tmp_path):
    from transformers import BertConfig, BertModel

    config = BertConfig.from_pretrained(tiny_model)
    base = tmp_path / "no-head"
    BertModel(config).save_pretrained(base)  # the encoder alone, as a user might save it
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (tiny_model / name).exists():
            shutil.copy(tiny_model / name, base / name)
    with pytest.raises(RandomWeights, match=r"classifier\.bias, classifier\.weight"):
        Classifier.load(base)


def test_the_hash_covers_the_label_mapping(tiny_model: Path, tmp_path):
    renamed = tmp_path / "renamed-labels"
    shutil.copytree(tiny_model, renamed)
    config = json.loads((renamed / "config.json").read_text())
    config["id2label"] = {"0": "positive", "1": "negative"}  # same weights, labels swapped
    config["label2id"] = {"positive": 0, "negative": 1}
    (renamed / "config.json").write_text(json.dumps(config))
    original, swapped = Classifier.load(tiny_model), Classifier.load(renamed)
    assert original.labels == ["negative", "positive"] and swapped.labels == [
        "positive",
        "negative",
    ]
    assert original.sha256 != swapped.sha256
