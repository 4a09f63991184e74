"""Preparing the default model: a loadable two-label checkpoint with its provenance and
demo sample, written once and never retrained or half-written behind a reader's back.
Trains on 64 sentences (two optimizer steps) to stay fast; the real run uses 4000."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from workers.prepare_model import MARKER, SAMPLE, _replace, prepare_model


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    output = tmp_path_factory.mktemp("models") / "minilm-sentiment"
    return output, prepare_model(output, train_size=64, held_out_size=64)


def test_prepared_model_loads_with_labels_and_provenance(prepared):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    output, record = prepared
    model = AutoModelForSequenceClassification.from_pretrained(output)
    tokenizer = AutoTokenizer.from_pretrained(output)
    assert model.config.id2label == {0: "negative", 1: "positive"}
    assert model.config.label2id == {"negative": 0, "positive": 1}
    assert tokenizer("a witty film")["input_ids"][0] == tokenizer.cls_token_id

    on_disk = json.loads((output / MARKER).read_text())
    assert on_disk == record
    assert 0.0 <= on_disk["held_out_accuracy"] <= 1.0
    assert (on_disk["name"], on_disk["train_size"], on_disk["held_out_size"]) == (
        "minilm-sentiment",
        64,
        64,
    )
    assert on_disk["torch"] and on_disk["transformers"] and on_disk["seed"] == 0
    lines = (output / SAMPLE).read_text(encoding="utf-8").splitlines()
    assert len(lines) == 24
    assert {json.loads(line)["gold"] for line in lines} == {"negative", "positive"}
    assert not [p for p in output.parent.iterdir() if p.name.startswith(".")]  # no staging left


def test_second_call_returns_the_record_without_retraining(prepared):
    output, record = prepared
    weights = output / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert prepare_model(output, train_size=64, held_out_size=64) == record
    assert weights.stat().st_mtime_ns == before


def test_cli_finds_a_prepared_model_without_importing_torch(prepared):
    output, _ = prepared
    code = (
        "import sys, typer\n"
        "from workers.prepare_model import main\n"
        f"sys.argv = ['prepare_model', '--output', {str(output)!r}]\n"
        "try:\n    typer.run(main)\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "assert 'torch' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "already prepared" in done.stderr


def test_refuses_to_replace_a_directory_that_is_not_a_model(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a prepared model"):
        prepare_model(tmp_path, train_size=64)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_replace_swaps_in_the_new_directory(tmp_path: Path):
    output, staging = tmp_path / "model", tmp_path / ".model.tmp"
    for directory, content in ((output, "old"), (staging, "new")):
        directory.mkdir()
        (directory / MARKER).write_text(content)
    _replace(staging, output)
    assert (output / MARKER).read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
