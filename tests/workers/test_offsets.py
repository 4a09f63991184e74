"""Every explanation carries its tokens' character offsets and words (issue 16), from the
tokenizer's own offset mapping, so the read side shows words as the text writes them:
BERT's WordPiece (the tiny model, MiniLM's real tokenizer), a byte-level BPE RoBERTa
built here offline, windowed documents, and a slow tokenizer (no offsets, nothing breaks)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from db.words import merge_wordpieces, word_key
from workers.engine import Classifier, ExecutionOptions, explain
from workers.engine.encoding import encode_texts, token_ids

QUICK = {"n_steps": 8}
SENTENCES = [
    "The movie was great.",
    "The film was dull and long.",
    "I loved the acting!",
    "It was not good at all, the movie was a mess.",
]


def words_and_scores(explained: Any, text: str, method: str = "lig") -> list[tuple[str, float]]:
    scores = explained.methods[method].attributions
    return merge_wordpieces(explained.tokens, scores, explained.offsets, explained.words, text)


def assert_located(explained: Any, text: str) -> None:
    """Offsets and words cover every token: special tokens -1 at 0, 0, the others inside
    the text, their words in order and every word of the text reached."""
    n = len(explained.tokens)
    assert len(explained.offsets) == 2 * n and len(explained.words) == n
    spans = [m.span() for m in re.finditer(r"\S+", text)]
    for position, word in enumerate(explained.words):
        start, end = explained.offsets[2 * position : 2 * position + 2]
        if word == -1:
            assert (start, end) == (0, 0)
            continue
        assert spans[word][0] <= start <= end <= spans[word][1]
    content = [w for w in explained.words if w >= 0]
    assert content == sorted(content) and set(content) == set(range(len(spans)))


def test_bert_words_are_the_texts_whitespace_spans_with_summed_scores(classifier):
    text = "It couldn't be better."
    (explained,) = explain(classifier, [text], ("lig", "saliency"), QUICK, quality=False)
    assert explained.tokens[2:5] == ["couldn", "'", "t"]  # the pieces BERT makes
    assert_located(explained, text)
    assert explained.words[0] == explained.words[-1] == -1  # [CLS], [SEP]
    assert explained.offsets[:4] == [0, 0, 0, 2]  # [CLS]; "it" is text[0:2], "It"
    for method in ("lig", "saliency"):
        merged = words_and_scores(explained, text, method)
        assert [word for word, _ in merged] == ["It", "couldn't", "be", "better."]
        scores = explained.methods[method].attributions
        assert merged[1][1] == pytest.approx(sum(scores[2:5]))  # couldn + ' + t
        assert merged[3][1] == pytest.approx(sum(scores[6:8]))  # better + .
    # without offsets (an old row) the pieces stay apart, lower-cased
    old = merge_wordpieces(explained.tokens, explained.methods["lig"].attributions)
    assert [word for word, _ in old][:4] == ["it", "couldn", "'", "t"]


def test_characters_the_vocabulary_lacks_show_as_themselves(classifier):
    text = "我喜欢 this  Café 😀!\nsuperbe"
    (explained,) = explain(classifier, [text], ("saliency",), quality=False)
    assert "[UNK]" in explained.tokens and "cafe" in explained.tokens  # lost to the vocabulary
    assert_located(explained, text)
    words = [word for word, _ in words_and_scores(explained, text, "saliency")]
    assert words == ["我喜欢", "this", "Café", "😀!", "superbe"] == text.split()
    assert [word_key(word) for word in words] == ["我喜欢", "this", "café", "😀", "superbe"]


def test_encode_texts_keeps_token_ids_and_marks_special_tokens(classifier):
    texts = ["a gorgeous, witty movie.", "", "   "]
    encoded = encode_texts(classifier, texts)
    assert [e.ids for e in encoded] == token_ids(classifier, texts)
    assert encode_texts(classifier, []) == []
    for e in encoded[1:]:  # nothing but [CLS] [SEP]
        assert e.words == [-1, -1] and e.offsets == [0, 0, 0, 0]


class _Slow:
    """A tokenizer without offsets (as a slow, Python tokenizer): it refuses
    ``return_offsets_mapping`` like transformers' slow tokenizers do."""

    is_fast = False

    def __init__(self, fast: Any) -> None:
        self._fast = fast

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fast, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("return_offsets_mapping"):
            raise NotImplementedError("return_offset_mapping is not available")
        return self._fast(*args, **kwargs)


def test_a_slow_tokenizer_gives_no_offsets_and_nothing_breaks(classifier):
    slow = dataclasses.replace(classifier, tokenizer=_Slow(classifier.tokenizer))
    text = "It couldn't be better."
    (explained,) = explain(slow, [text], ("saliency",), quality=False)
    (fast,) = explain(classifier, [text], ("saliency",), quality=False)
    assert explained.offsets is None and explained.words is None
    assert explained.tokens == fast.tokens
    assert explained.methods["saliency"].attributions == fast.methods["saliency"].attributions
    merged = merge_wordpieces(explained.tokens, explained.methods["saliency"].attributions)
    assert [word for word, _ in merged][:2] == ["it", "couldn"]  # the old fallback


def test_a_windowed_document_has_offsets_and_words_for_every_token(classifier):
    words = [f"Word{i % 50}," if i % 7 == 0 else f"word{i % 50}" for i in range(700)]
    text = " ".join(words)  # over the tiny model's 512 positions
    options = ExecutionOptions(window_stride=200)
    (explained,) = explain(classifier, [text], ("saliency",), options=options, quality=False)
    assert explained.windows > 1 and len(explained.tokens) > 700
    assert_located(explained, text)
    merged = words_and_scores(explained, text, "saliency")
    assert [word for word, _ in merged] == words
    scores = explained.methods["saliency"].attributions
    content = sum(s for s, w in zip(scores, explained.words, strict=True) if w >= 0)
    assert sum(score for _, score in merged) == pytest.approx(content)


def build_tiny_roberta(directory: Path) -> Path:
    """A tiny random RoBERTa classifier with a byte-level BPE tokenizer trained here on a
    few sentences (nothing downloaded), written with save_pretrained like any checkpoint."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import RobertaProcessing
    from transformers import (
        RobertaConfig,
        RobertaForSequenceClassification,
        RobertaTokenizerFast,
    )

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        SENTENCES, vocab_size=300, min_frequency=1, special_tokens=specials, show_progress=False
    )
    bpe.post_processor = RobertaProcessing(
        ("</s>", bpe.token_to_id("</s>")), ("<s>", bpe.token_to_id("<s>"))
    )
    tokenizer = RobertaTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
        pad_token="<pad>", unk_token="<unk>", mask_token="<mask>",
        model_max_length=512,  # RoBERTa's positions start after the padding index: 514 - 2
    )  # fmt: skip
    torch.manual_seed(0)
    config = RobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=514,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        num_labels=2,
        id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
        initializer_range=0.3,
    )
    RobertaForSequenceClassification(config).eval().save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def roberta(tmp_path_factory: pytest.TempPathFactory) -> Classifier:
    return Classifier.load(build_tiny_roberta(tmp_path_factory.mktemp("tiny-roberta")))


def test_a_byte_level_bpe_roberta_gets_words_as_written(roberta):
    assert roberta.info["architecture"] == "RobertaForSequenceClassification"
    assert roberta.tokenizer.is_fast
    texts = ["The movie was great.", "the  film\nwas 😀 café"]
    first, second = explain(roberta, texts, ("lig", "saliency"), QUICK, quality=False)
    assert first.tokens[0] == "<s>" and first.tokens[-1] == "</s>"
    assert any(token.startswith("Ġ") for token in first.tokens)  # byte-level BPE pieces
    for explained, text in ((first, texts[0]), (second, texts[1])):
        assert_located(explained, text)
        merged = words_and_scores(explained, text)
        assert [word for word, _ in merged] == text.split()  # no Ġ, no <s>, bytes joined
        # every content token's score is in its word, whitespace tokens (Ġ, Ċ alone) too
        scores = explained.methods["lig"].attributions
        assert sum(score for _, score in merged) == pytest.approx(sum(scores[1:-1]))
    keys = [word_key(word) for word, _ in words_and_scores(first, texts[0])]
    assert keys == ["the", "movie", "was", "great"]
    # what the fallback for rows without offsets would have counted
    old = merge_wordpieces(first.tokens, first.methods["lig"].attributions)
    assert "ġwas" in [word_key(word) for word, _ in old]
