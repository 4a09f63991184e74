"""Tokenising documents and padding them into length-bucketed groups."""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from workers.engine.classifier import Classifier


@dataclass(frozen=True)
class Tokenized:
    """One document's (or window's) token ids, with special tokens."""

    ids: list[int]


@dataclass
class Group:
    """Documents padded to one length, as tensors on the classifier's device."""

    indices: list[int]  # positions of these documents in the caller's list
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor | None
    lengths: list[int]
    logits: torch.Tensor | None = None  # the prediction pass's, once it has run

    def subset(self, rows: torch.Tensor) -> Group:
        """The documents at ``rows`` of this group, still padded to its width."""
        picked = rows.tolist()
        return Group(
            indices=[self.indices[r] for r in picked],
            input_ids=self.input_ids[rows],
            attention_mask=self.attention_mask[rows],
            token_type_ids=None if self.token_type_ids is None else self.token_type_ids[rows],
            lengths=[self.lengths[r] for r in picked],
            logits=None if self.logits is None else self.logits[rows],
        )


def token_ids(classifier: Classifier, texts: Sequence[str]) -> list[list[int]]:
    """Every text's whole token ids with special tokens: nothing is cut here (long
    documents become windows, see ``windows``)."""
    if not texts:
        return []  # fast tokenizers fail on an empty batch
    tokenizer = classifier.tokenizer
    encoded = tokenizer(list(texts), add_special_tokens=True, truncation=False, verbose=False)
    return [list(ids) for ids in encoded["input_ids"]]


@dataclass(frozen=True)
class Encoded:
    """One whole document's token ids (with special tokens) and where each token is in
    its text: ``offsets`` flattened (start, end per token) and ``words``, the index of the
    whitespace-delimited word (``\\S+``) each token belongs to, -1 for special tokens.
    Both None when the tokenizer gives no offsets (a slow tokenizer).

    Offsets are the token's characters in the text with surrounding whitespace trimmed
    (as fast tokenizers trim them by default), so a word's text is its first token's
    start to its last token's end. A token of whitespace only (byte-level BPE's ``Ġ`` or
    ``Ċ`` alone) belongs to the word after it (the one before it at the end of the text)
    and gets an empty span at that word's edge; special tokens get ``0, 0``."""

    ids: list[int]
    offsets: list[int] | None = None
    words: list[int] | None = None


WORD = re.compile(r"\S+")


def encode_texts(classifier: Classifier, texts: Sequence[str]) -> list[Encoded]:
    """Every text's whole token ids, with their character offsets and words where the
    tokenizer is fast (one tokenizer call, as ``token_ids``); nothing is cut here."""
    if not texts:
        return []  # fast tokenizers fail on an empty batch
    tokenizer = classifier.tokenizer
    if not getattr(tokenizer, "is_fast", False):
        return [Encoded(ids) for ids in token_ids(classifier, texts)]
    encoded = tokenizer(
        list(texts),
        add_special_tokens=True,
        truncation=False,
        verbose=False,
        return_offsets_mapping=True,
    )
    special = frozenset(tokenizer.all_special_ids)
    return [
        locate(list(ids), mapping, text, special)
        for ids, mapping, text in zip(
            encoded["input_ids"], encoded["offset_mapping"], texts, strict=True
        )
    ]


def locate(
    ids: list[int], mapping: Sequence[tuple[int, int]], text: str, special: frozenset[int]
) -> Encoded:
    """One document's ``Encoded`` from the tokenizer's offset mapping (see ``Encoded``)."""
    spans = [(m.start(), m.end()) for m in WORD.finditer(text)]
    starts = [start for start, _ in spans]
    offsets: list[int] = []
    words: list[int] = []
    for token, (start, end) in zip(ids, mapping, strict=True):
        if start == end == 0 and token in special:
            offsets += (0, 0)
            words.append(-1)
            continue
        piece = text[start:end]
        trimmed = piece.lstrip()
        start, end = start + len(piece) - len(trimmed), start + len(piece.rstrip())
        word = bisect_right(starts, start) - 1  # the last word starting at or before it
        if start >= end:  # whitespace alone (its start past its end once trimmed), or empty
            if not spans:  # a text of whitespace only: no word to join
                word, start = -1, 0
            elif word < 0 or start >= spans[word][1]:  # between words: the next one's
                word = min(word + 1, len(spans) - 1)  # (at the end of the text, the last's)
                start = spans[word][0] if spans[word][0] >= start else spans[word][1]
            end = start  # an empty span at that word's edge (or inside it)
        offsets += (start, end)
        words.append(word)
    return Encoded(ids, offsets, words)


def length_groups(
    docs: Sequence[Tokenized], max_docs: int, max_tokens_per_group: int
) -> Iterator[list[int]]:
    """Indices of documents grouped by similar length, so padding stays small."""
    order = sorted(range(len(docs)), key=lambda i: len(docs[i].ids))
    group: list[int] = []
    for i in order:
        width = len(docs[i].ids)  # sorted ascending, so the newcomer is the widest
        if group and (len(group) >= max_docs or (len(group) + 1) * width > max_tokens_per_group):
            yield group
            group = []
        group.append(i)
    if group:
        yield group


def pad_group(classifier: Classifier, docs: Sequence[Tokenized], indices: list[int]) -> Group:
    width = max(len(docs[i].ids) for i in indices)
    pad = classifier.tokenizer.pad_token_id
    input_ids = torch.full((len(indices), width), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(indices), width), dtype=torch.long)
    for row, i in enumerate(indices):
        ids = docs[i].ids
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
    device = classifier.device
    uses_types = "token_type_ids" in classifier.tokenizer.model_input_names
    return Group(
        indices=list(indices),
        input_ids=input_ids.to(device),
        attention_mask=attention_mask.to(device),
        token_type_ids=torch.zeros_like(input_ids).to(device) if uses_types else None,
        lengths=[len(docs[i].ids) for i in indices],
    )


def reference_ids(classifier: Classifier, group: Group) -> torch.Tensor:
    """The baseline: [CLS] [PAD] ... [PAD] [SEP] over each document's own length."""
    tokenizer = classifier.tokenizer
    baseline = torch.full_like(group.input_ids, tokenizer.pad_token_id)
    baseline[:, 0] = group.input_ids[:, 0]
    for row, length in enumerate(group.lengths):
        baseline[row, length - 1] = group.input_ids[row, length - 1]
    return baseline
