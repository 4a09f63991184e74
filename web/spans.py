"""A document's text cut into the pieces a heatmap colours: words as the text writes them
(each with its tokens' summed score) or subwords (each token's own characters), with
the text between them kept; and the colour of a score, on the terminal view's scale
(``results.render``: green toward the predicted label, red against it, strength = the
score's share of the largest |score| shown)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from db.words import SPECIAL_TOKENS, merge_wordpieces, written_words
from results.render import AGAINST, TOWARD
from web.schemas import Piece

LEVELS = 10  # colour steps each way: classes s-10 .. s10 in static/style.css


def usable(
    text: str, tokens: Sequence[str], offsets: Sequence[int] | None, words: Sequence[int] | None
) -> bool:
    """Whether the row's offsets and word ids fit its tokens and this text (the subword
    view cuts the text at the offsets)."""
    if offsets is None or words is None:
        return False
    if len(offsets) != 2 * len(tokens) or len(words) != len(tokens):
        return False
    spans = len(re.findall(r"\S+", text))
    return all(0 <= o <= len(text) for o in offsets) and all(-1 <= w < spans for w in words)


def word_pieces(
    text: str,
    tokens: Sequence[str],
    scores: Sequence[float],
    offsets: Sequence[int] | None,
    words: Sequence[int] | None,
) -> list[Piece]:
    """The text's whitespace-delimited words with summed scores, and the whitespace
    between (score None), cut as the terminal cuts them (``db.words.written_words``);
    without usable offsets, the ``##``-merged tokens."""
    written = written_words(text, offsets, words, scores)
    if written is not None:
        return [Piece(text=piece, score=score) for piece, score in written]
    out: list[Piece] = []
    for word, score in merge_wordpieces(tokens, scores):
        out += [Piece(text=word, score=score), Piece(text=" ", score=None)]
    return out[:-1]


def subword_pieces(
    text: str,
    tokens: Sequence[str],
    scores: Sequence[float],
    offsets: Sequence[int] | None,
    words: Sequence[int] | None,
) -> list[Piece]:
    """Each token's own characters of the text with its score (special tokens left
    out), and the text between; without usable offsets, the tokens themselves."""
    if not usable(text, tokens, offsets, words):
        return [
            Piece(text=token, score=score, token=token)
            for token, score in zip(tokens, scores, strict=True)
            if token not in SPECIAL_TOKENS
        ]
    pieces: list[Piece] = []
    end = 0
    for position, (token, score) in enumerate(zip(tokens, scores, strict=True)):
        start, stop = offsets[2 * position], offsets[2 * position + 1]  # type: ignore[index]
        if token in SPECIAL_TOKENS or stop <= start or start < end:
            continue  # special, empty, or overlapping a window's earlier token
        if start > end:
            pieces.append(Piece(text=text[end:start], score=None))
        pieces.append(Piece(text=text[start:stop], score=score, token=token))
        end = stop
    if end < len(text.rstrip()):
        pieces.append(Piece(text=text[end:], score=None))
    return pieces


def scale_of(pieces: Sequence[Piece]) -> float:
    return max((abs(p.score) for p in pieces if p.score is not None), default=0.0) or 1.0


def level(score: float | None, scale: float) -> int:
    """The colour step of a score: -LEVELS .. LEVELS, 0 below 5% of the scale (as the
    terminal leaves it unshaded); the sign is the score's."""
    if score is None or not scale:
        return 0
    strength = min(abs(score) / scale, 1.0)
    if strength < 0.05:
        return 0
    step = max(1, round(strength * LEVELS))
    return step if score > 0 else -step


def rgb(step: int) -> str:
    """The background of a step: white blended toward green (+) or red (-)."""
    base = TOWARD if step > 0 else AGAINST
    strength = abs(step) / LEVELS
    r, g, b = (round(255 - (255 - c) * strength) for c in base)
    return f"rgb({r},{g},{b})"


def palette_css() -> str:
    """The classes of the colour steps (s-10 .. s10), for the stylesheet and the report."""
    rules = [f".s{s}{{background:{rgb(s)}}}" for s in range(-LEVELS, LEVELS + 1) if s]
    return "\n".join([".s0{background:transparent}", *rules])
