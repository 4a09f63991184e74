"""Text into coloured pieces: words as written, subwords, the fallback without offsets,
and the colour steps (the terminal's convention: green toward, red against)."""

from __future__ import annotations

import pytest

from db.words import written_words
from results.render import shade
from web.spans import LEVELS, level, palette_css, rgb, scale_of, subword_pieces, word_pieces

TEXT = "  Don't   stop, ever!\n"
TOKENS = ["[CLS]", "don", "'", "t", "stop", ",", "ever", "!", "[SEP]"]
OFFSETS = [0, 0, 2, 5, 5, 6, 6, 7, 10, 14, 14, 15, 16, 20, 20, 21, 0, 0]
WORDS = [-1, 0, 0, 0, 1, 1, 2, 2, -1]
SCORES = [0.0, 0.5, 0.25, -0.125, -1.0, 0.0, 0.375, 0.0, 0.0]


def test_words_are_the_text_as_written_with_summed_scores():
    pieces = word_pieces(TEXT, TOKENS, SCORES, OFFSETS, WORDS)
    assert "".join(p.text for p in pieces) == TEXT.strip()
    assert [(p.text, p.score) for p in pieces if p.score is not None] == [
        ("Don't", 0.625), ("stop,", -1.0), ("ever!", 0.375)
    ]  # fmt: skip
    assert scale_of(pieces) == 1.0
    # cut as the terminal cuts it: one function (db.words)
    assert [(p.text, p.score) for p in pieces] == written_words(TEXT, OFFSETS, WORDS, SCORES)


def test_subwords_are_each_tokens_characters():
    pieces = subword_pieces(TEXT, TOKENS, SCORES, OFFSETS, WORDS)
    shown = [(p.text, p.score) for p in pieces if p.score is not None]
    assert shown == [("Don", 0.5), ("'", 0.25), ("t", -0.125), ("stop", -1.0), (",", 0.0),
                     ("ever", 0.375), ("!", 0.0)]  # fmt: skip
    assert "".join(p.text for p in pieces) == TEXT.rstrip()


@pytest.mark.parametrize("offsets", [None, [0, 1] * 9, [0, 99] * 9])
def test_without_usable_offsets_the_tokens_are_merged(offsets):
    tokens = ["[CLS]", "play", "##ful", "cat", "[SEP]"]
    scores = [0.0, 0.5, 0.25, -0.5, 0.0]
    words = [-1, 0, 0, 1, -1]
    pieces = word_pieces("playful cat", tokens, scores, offsets and offsets[:10], words)
    assert [(p.text, p.score) for p in pieces] == [("playful", 0.75), (" ", None), ("cat", -0.5)]
    subwords = subword_pieces("playful cat", tokens, scores, None, words)
    assert [p.text for p in subwords] == ["play", "##ful", "cat"]


def test_the_colour_has_the_sign_and_the_terminals_strength():
    assert level(0.04, 1.0) == 0 and level(None, 1.0) == 0  # unshaded, as in the terminal
    assert level(0.05, 1.0) == 1 and level(-0.05, 1.0) == -1
    assert level(2.0, 1.0) == LEVELS and level(-0.5, 1.0) == -LEVELS // 2
    for step in (1, 5, LEVELS):
        r, g, _ = map(int, rgb(step)[4:-1].split(","))
        assert g > r  # green toward
        r, g, _ = map(int, rgb(-step)[4:-1].split(","))
        assert r > g  # red against
    # full strength: the terminal's colours exactly
    assert shade(1.0).endswith(rgb(LEVELS)) and shade(-1.0).endswith(rgb(-LEVELS))
    css = palette_css()
    assert all(f".s{s}{{" in css for s in range(-LEVELS, LEVELS + 1))
