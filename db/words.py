"""Wordpieces back into words, for people: ``act ##ing`` is read as ``acting``, and its
evidence is the sum of its pieces' (attributions are additive). Here and not in the
engine because the read side (db) never imports the workers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

SPECIAL_TOKENS = frozenset({"[CLS]", "[SEP]", "[PAD]"})


def word_spans(tokens: Sequence[str]) -> list[tuple[str, list[int]]]:
    """Each word with the token positions it is made of; special tokens left out. A
    ``##`` piece with nothing before it stays a word of its own."""
    spans: list[tuple[str, list[int]]] = []
    for position, token in enumerate(tokens):
        if token in SPECIAL_TOKENS:
            continue
        if token.startswith("##") and len(token) > 2 and spans:
            word, positions = spans[-1]
            spans[-1] = (word + token[2:], [*positions, position])
        else:
            spans.append((token, [position]))
    return spans


def merge_wordpieces(tokens: Sequence[str], scores: Sequence[float]) -> list[tuple[str, float]]:
    """Words with summed scores, without special tokens."""
    if len(tokens) != len(scores):
        raise ValueError(f"{len(tokens)} tokens but {len(scores)} scores")
    return [(word, sum(scores[p] for p in positions)) for word, positions in word_spans(tokens)]


def merge_columns(
    tokens: Sequence[str], columns: Mapping[str, Sequence[float]]
) -> tuple[list[str], dict[str, list[float]]]:
    """Several methods' scores of one document merged alike: the words, and per method
    one summed score per word (for side-by-side views)."""
    spans = word_spans(tokens)
    merged = {
        name: [sum(scores[p] for p in positions) for _, positions in spans]
        for name, scores in columns.items()
    }
    return [word for word, _ in spans], merged
