"""Words as the text writes them on the read side (issue 16): ``results show``, its
``--words`` view, the side-by-side table and ``results list``'s top tokens read a row's
character offsets and word ids with the document's text; a row written without them (a
slow tokenizer, or before they were stored) still shows, with BERT's ``##`` pieces
merged. Rows are written as the workers write them, through ``save_explanations``."""

from __future__ import annotations

import io
import json
import re
import uuid
from collections.abc import Iterator

import pytest
from rich.console import Console
from typer.testing import CliRunner

from contract.settings import get_settings
from db.models import Batch, Document, Model, Status
from db.queries import top_words
from db.records import ExplanationRecord
from db.session import migrate, session_scope
from db.words import written_words
from db.writes import save_explanations
from results import render
from results.cli import app

runner = CliRunner()
TEXT = "It couldn't be better. 我喜欢 😀!"
# What MiniLM's tokenizer (the tiny test model's) makes of TEXT, with the engine's offsets
# and words (tests/workers/test_offsets.py checks the engine against the real tokenizer).
TOKENS = ["[CLS]", "it", "couldn", "'", "t", "be", "better", ".", "我", "[UNK]", "[UNK]",
          "[UNK]", "!", "[SEP]"]  # fmt: skip
OFFSETS = [0, 0, 0, 2, 3, 9, 9, 10, 10, 11, 12, 14, 15, 21, 21, 22, 23, 24, 24, 25, 25, 26,
           27, 28, 28, 29, 0, 0]  # fmt: skip
WORDS = [-1, 0, 1, 1, 1, 2, 3, 3, 4, 4, 4, 5, 5, -1]
LIG = [0.0, 0.1, 0.4, 0.05, 0.05, -0.2, 0.3, 0.1, 0.2, 0.1, 0.1, -0.6, 0.1, 0.0]
SALIENCY = [0.0, 0.2, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.3, 0.0, 0.0, 0.2, 0.0, 0.0]
AS_WRITTEN = ["It", "couldn't", "be", "better.", "我喜欢", "😀!"]


@pytest.fixture
def database(fresh_database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("EXPLAINQ_DATABASE_URL", fresh_database_url)
    get_settings.cache_clear()
    migrate(fresh_database_url)
    yield fresh_database_url
    get_settings.cache_clear()


def record(document_id: int, model_id: int, method: str, scores: list[float], located: bool):
    return ExplanationRecord(
        document_id=document_id, model_id=model_id, method=method, params={}, label="positive",
        confidence=0.9, probabilities={"negative": 0.1, "positive": 0.9}, tokens=TOKENS,
        attributions=scores, worker="w@h", device="cpu",
        offsets=OFFSETS if located else None, words=WORDS if located else None,
    )  # fmt: skip


@pytest.fixture
def filled(database: str) -> str:
    """One batch: "new" with offsets (lig and saliency), "old" without them (lig)."""
    batch = str(uuid.uuid4())
    with session_scope(database) as session:
        session.add(Batch(id=batch, source="t.jsonl", model="m", methods=["lig"], params={}))
        model = Model(name="tiny", path="/m", sha256="cd" * 32, labels=["negative", "positive"])
        docs = {
            name: Document(batch_id=batch, external_id=name, line=line, text=TEXT, meta={},
                           status=Status.DONE, attempts=1)
            for line, name in enumerate(("new", "old"), 1)
        }  # fmt: skip
        session.add_all([model, *docs.values()])
        session.flush()
        new, old = docs["new"].id, docs["old"].id
        rows = [
            record(new, model.id, "lig", LIG, located=True),
            record(new, model.id, "saliency", SALIENCY, located=True),
            record(old, model.id, "lig", LIG, located=False),
        ]
        assert save_explanations(session, rows) == 3
    return batch


def run(*args: str):
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return result


def test_show_words_json_gives_the_words_as_written(filled):
    lig, saliency = json.loads(run("show", "new", "--words", "--json").stdout)
    assert lig["offsets"] == OFFSETS and lig["word_ids"] == WORDS  # stored and exported
    assert [word for word, _ in lig["words"]] == AS_WRITTEN
    assert [word for word, _ in saliency["words"]] == AS_WRITTEN
    scores = dict(lig["words"])
    assert scores["couldn't"] == pytest.approx(0.5)  # couldn + ' + t
    assert scores["我喜欢"] == pytest.approx(0.4) and scores["😀!"] == pytest.approx(-0.5)


def test_show_words_json_on_an_old_row_merges_wordpieces(filled):
    (old,) = json.loads(run("show", "old", "--words", "--json").stdout)
    assert old["offsets"] is None and old["word_ids"] is None
    words = [word for word, _ in old["words"]]
    assert words[:4] == ["it", "couldn", "'", "t"] and "[UNK]" in words


def test_show_and_the_side_by_side_table_use_the_text(filled):
    shown = run("show", "new", "--words").stdout
    assert "couldn't" in shown and "我喜欢" in shown and "😀!" in shown
    assert "[UNK]" not in shown and "couldn " not in shown
    assert "as the text shows them" in shown  # the provenance says where the words come from
    tokens = run("show", "new").stdout  # the token table, without --words
    assert "[UNK]" in tokens
    old = run("show", "old", "--words").stdout
    assert "couldn" in old and "wordpieces merged" in old


def test_the_heatmap_colours_the_original_text_by_word():
    console = Console(file=io.StringIO(), force_terminal=True, color_system="truecolor",
                      width=200)  # fmt: skip
    console.print(render.heatmap(TOKENS, LIG, "positive", {"positive": 0.9}, title="d",
                                 text=TEXT, offsets=OFFSETS, words=WORDS))  # fmt: skip
    shown = console.file.getvalue()
    plain = re.sub(r"\x1b\[[0-9;]*m", "", shown)
    assert TEXT in plain  # case, apostrophe, punctuation, CJK and the emoji as written
    # "😀!" (-0.5) is the largest |score|: the word, with its "!", on full red
    assert f"48;2;{';'.join(map(str, render.AGAINST))}m😀!" in shown
    # without offsets: the old token view
    console = Console(file=io.StringIO(), force_terminal=True, color_system="truecolor")
    console.print(render.heatmap(TOKENS, LIG, "positive", {"positive": 0.9}))
    assert "couldn" in console.file.getvalue() and "couldn't" not in console.file.getvalue()


def test_top_words_of_a_row_with_offsets_are_written_words():
    assert top_words(TOKENS, LIG, 3, OFFSETS, WORDS, TEXT) == ["couldn't", "better", "我喜欢"]
    assert top_words(TOKENS, LIG) == ["couldn", "better", "我"]  # an old row
    # mismatched offsets (not this row's) fall back rather than misplace words
    assert top_words(TOKENS, LIG, 3, OFFSETS[:-2], WORDS, TEXT) == ["couldn", "better", "我"]


def test_results_list_shows_written_top_words(filled):
    rows = {r["external_id"]: r for r in json.loads(run("list", "--json").stdout)}
    assert rows["new"]["top_tokens"][0] == "couldn't"
    assert rows["old"]["top_tokens"][0] == "couldn"


def test_written_words_are_the_text_cut_as_the_terminal_and_the_web_show_it():
    shown = written_words(TEXT, OFFSETS, WORDS, LIG)
    assert "".join(piece for piece, _ in shown) == TEXT.strip()
    summed = {}
    for word, score in zip(WORDS, LIG, strict=True):
        if word >= 0:
            summed[word] = summed.get(word, 0.0) + score
    assert [score for _, score in shown if score is not None] == list(summed.values())
    # offsets or word ids that are not this row's: None (the merged tokens instead)
    assert written_words(TEXT, OFFSETS[:-2], WORDS, LIG) is None
    assert written_words(TEXT, OFFSETS, [*WORDS[:-1], 99], LIG) is None
    assert written_words(None, OFFSETS, WORDS, LIG) is None
