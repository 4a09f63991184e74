"""The first-token last layer: the same logits and input gradients as the stock model,
where it is used; the stock layer wherever it cannot be."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    ElectraConfig,
    ElectraForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
    XLMRobertaConfig,
    XLMRobertaForSequenceClassification,
)

from tests.workers.test_engine import TEXTS as ENGINE_TEXTS
from workers.engine import Classifier, first_token
from workers.engine.encoding import Tokenized, pad_group

TEXTS = ENGINE_TEXTS[:3]  # three lengths: padding and masks matter


def _padded(classifier: Classifier):
    docs = [Tokenized(classifier.tokenizer(t)["input_ids"]) for t in TEXTS]
    return pad_group(classifier, docs, list(range(len(docs))))


def _logits_and_gradient(classifier: Classifier, group, first_token_only: bool):
    """Target logits and their gradient with respect to the word embeddings."""
    embed = classifier.model.get_input_embeddings()
    points = embed(group.input_ids).detach().requires_grad_()
    saved, classifier.first_token_only = classifier.first_token_only, first_token_only
    handle = embed.register_forward_hook(lambda _m, _i, _o: points)
    try:
        logits = classifier.forward(group.input_ids, group.attention_mask, group.token_type_ids)
    finally:
        handle.remove()
        classifier.first_token_only = saved
    (gradient,) = torch.autograd.grad(logits[:, 1].sum(), points)
    return logits.detach(), gradient


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_same_logits_and_gradients_as_the_stock_last_layer(classifier, attention):
    own = classifier.model.config._attn_implementation
    classifier.model.set_attn_implementation(attention)
    try:
        assert first_token.supported(classifier.model)
        group = _padded(classifier)  # three lengths: the mask matters
        stock = _logits_and_gradient(classifier, group, first_token_only=False)
        first = _logits_and_gradient(classifier, group, first_token_only=True)
    finally:
        classifier.model.set_attn_implementation(own)
    assert torch.allclose(first[0], stock[0], atol=1e-5)
    # The two layers reduce in another order: the gradients (largest ~1) differ by up
    # to ~1.2e-6, 10 float32 ulps, here; a mask or key/value slip moves them by > 1e-3.
    assert torch.allclose(first[1], stock[1], atol=1e-5 * float(stock[1].abs().max()))
    assert stock[1].abs().sum() > 0  # a gradient that reaches the embeddings at all


def test_a_bert_classifier_uses_it_and_says_so(classifier):
    assert classifier.first_token_only
    assert classifier.info["last_layer"] == "first token only"
    layers = classifier.model.base_model.encoder.layer
    seen = []
    handle = layers[-1].register_forward_hook(lambda _m, _i, out: seen.append(out.shape))
    try:
        group = _padded(classifier)
        with torch.inference_mode():
            classifier.forward(group.input_ids, group.attention_mask, group.token_type_ids)
    finally:
        handle.remove()
    assert not isinstance(layers[-1], first_token.FirstTokenLayer)  # restored after the pass
    assert seen == []  # its parts ran for the first token; its own forward (every token) did not


def test_attention_maps_and_pooled_vectors_are_the_stock_models(classifier):
    group = _padded(classifier)
    inputs = {"input_ids": group.input_ids, "attention_mask": group.attention_mask,
              "token_type_ids": group.token_type_ids}  # fmt: skip
    width = group.input_ids.shape[1]
    maps = classifier.attentions(**inputs)
    assert maps[-1].shape[-2:] == (width, width)
    with torch.inference_mode():
        _, pooled = classifier.predict(**inputs)
        stock = classifier.model(**inputs, output_hidden_states=True).hidden_states[-1][:, 0]
    assert torch.allclose(pooled, stock, atol=1e-5)


def test_under_bf16_autocast_the_logits_agree_to_bf16_rounding(tiny_model):
    bf16 = Classifier.load(tiny_model, autocast=True)  # the GPU path, on the CPU's bf16
    assert bf16.first_token_only
    group = _padded(bf16)
    stock = _logits_and_gradient(bf16, group, first_token_only=False)
    first = _logits_and_gradient(bf16, group, first_token_only=True)
    assert torch.allclose(first[0], stock[0], atol=3e-2, rtol=3e-2)
    assert torch.allclose(first[1], stock[1], atol=3e-2 * float(stock[1].abs().max()))


@pytest.mark.parametrize(
    ("model_class", "config_class", "extra"),
    [
        (RobertaForSequenceClassification, RobertaConfig, {"pad_token_id": 1}),
        (XLMRobertaForSequenceClassification, XLMRobertaConfig, {"pad_token_id": 1}),
        (ElectraForSequenceClassification, ElectraConfig, {"embedding_size": 16}),
    ],
)
def test_other_bert_family_heads_are_recognised(model_class, config_class, extra):
    torch.manual_seed(0)
    shape = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 37, "vocab_size": 200}  # fmt: skip
    model = model_class(config_class(**shape, **extra)).eval()
    assert first_token.supported(model)  # the probe: equal logits on a padded batch


def test_models_it_does_not_know_run_their_stock_forward():
    torch.manual_seed(0)
    distil = DistilBertForSequenceClassification(
        DistilBertConfig(vocab_size=200, dim=32, n_layers=2, n_heads=2, hidden_dim=37)
    ).eval()
    assert not first_token.supported(distil)  # another head, another layer shape
    decoder = BertForSequenceClassification(
        BertConfig(vocab_size=200, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                   intermediate_size=37, is_decoder=True)
    ).eval()  # fmt: skip
    assert not first_token.supported(decoder)  # causal attention: token 0 sees itself only


class _MeanPooler(torch.nn.Module):
    """A head that reads every token of the last layer, not only the first."""

    def __init__(self, dense: torch.nn.Linear) -> None:
        super().__init__()
        self.dense = dense

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden.mean(1)))


def test_the_probe_refuses_a_head_that_reads_every_token():
    torch.manual_seed(0)
    model = BertForSequenceClassification(
        BertConfig(vocab_size=200, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                   intermediate_size=37, initializer_range=0.3)
    ).eval()  # fmt: skip
    assert first_token.supported(model)
    model.bert.pooler = _MeanPooler(model.bert.pooler.dense)
    assert not first_token.supported(model)
