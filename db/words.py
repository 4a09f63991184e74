"""Tokens back into words, for people: the words a text shows, and each word's evidence
as the sum of its tokens' (attributions are additive). Here and not in the engine
because the read side never imports the workers.

A row written with character offsets (every fast tokenizer: BERT ``##``, RoBERTa's
byte-level ``Ġ``, SentencePiece ``▁``) is read through them: a word is a
whitespace-delimited span of the original text, shown as written (case, accents,
punctuation, characters the vocabulary lacks). Older rows, without offsets, fall back
to merging BERT's ``##`` pieces.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence

SPECIAL_TOKENS = frozenset({"[CLS]", "[SEP]", "[PAD]", "<s>", "</s>", "<pad>"})


def word_spans(
    tokens: Sequence[str],
    offsets: Sequence[int] | None = None,
    words: Sequence[int] | None = None,
    text: str | None = None,
) -> list[tuple[str, list[int]]]:
    """Each word with the token positions it is made of; special tokens left out."""
    if offsets is not None and words is not None and text is not None:
        return _from_offsets(offsets, words, text)
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


def _from_offsets(
    offsets: Sequence[int], words: Sequence[int], text: str
) -> list[tuple[str, list[int]]]:
    """Tokens grouped by their word id; each word's text from its first token's start to
    its last token's end (``offsets`` is flat: start, end per token)."""
    grouped: dict[int, list[int]] = {}
    for position, word in enumerate(words):
        if word >= 0:
            grouped.setdefault(word, []).append(position)
    spans = []
    for _, positions in sorted(grouped.items()):
        start = min(offsets[2 * p] for p in positions)
        end = max(offsets[2 * p + 1] for p in positions)
        spans.append((text[start:end], positions))
    return spans


def written_words(
    text: str | None,
    offsets: Sequence[int] | None,
    words: Sequence[int] | None,
    scores: Sequence[float],
) -> list[tuple[str, float | None]] | None:
    """The text cut into its words (each with its tokens' summed score) and the
    whitespace between them (score None), as written (the text's leading and trailing
    whitespace left out); None without usable offsets and word ids: then the caller
    shows the tokens merged (``merge_wordpieces``). The terminal's heatmap
    (``results.render``) and the web's (``web.spans``) both cut the text here."""
    if text is None or offsets is None or words is None:
        return None
    if not len(words) == len(scores) == len(offsets) // 2 or len(offsets) % 2:
        return None
    spans = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
    if any(not -1 <= w < len(spans) for w in words):
        return None  # word ids that are not this text's: the token view instead
    summed = [0.0] * len(spans)
    for word, score in zip(words, scores, strict=True):
        if word >= 0:
            summed[word] += score
    pieces: list[tuple[str, float | None]] = []
    end = spans[0][0] if spans else 0
    for (start, stop), score in zip(spans, summed, strict=True):
        if start > end:
            pieces.append((text[end:start], None))
        pieces.append((text[start:stop], score))
        end = stop
    return pieces


def merge_wordpieces(
    tokens: Sequence[str],
    scores: Sequence[float],
    offsets: Sequence[int] | None = None,
    words: Sequence[int] | None = None,
    text: str | None = None,
) -> list[tuple[str, float]]:
    """Words with summed scores, without special tokens."""
    if len(tokens) != len(scores):
        raise ValueError(f"{len(tokens)} tokens but {len(scores)} scores")
    spans = word_spans(tokens, offsets, words, text)
    return [(word, sum(scores[p] for p in positions)) for word, positions in spans]


def merge_columns(
    tokens: Sequence[str],
    columns: Mapping[str, Sequence[float]],
    offsets: Sequence[int] | None = None,
    words: Sequence[int] | None = None,
    text: str | None = None,
) -> tuple[list[str], dict[str, list[float]]]:
    """Several methods' scores of one document merged alike: the words, and per method
    one summed score per word (for side-by-side views)."""
    spans = word_spans(tokens, offsets, words, text)
    merged = {
        name: [sum(scores[p] for p in positions) for _, positions in spans]
        for name, scores in columns.items()
    }
    return [word for word, _ in spans], merged


def word_key(word: str) -> str:
    """How a word is counted across documents (top tokens): case-folded, without the
    punctuation around it ("Movie." and "movie" are one word; "couldn't" keeps its
    apostrophe); a word of punctuation alone is itself."""
    return (bare(word) or word).casefold()[:200]


def bare(word: str) -> str:
    """The word without the punctuation around it."""
    return word.strip(PUNCTUATION)


PUNCTUATION = "".join(
    sorted(
        {chr(c) for c in range(0x3000) if unicodedata.category(chr(c)).startswith("P")}
        | set("`^~|<>=+$")
    )
)
