"""The last encoder layer, computed for the first token alone.

A BERT-family sequence classifier reads a single vector of its last layer: the first
token's ([CLS], <s>). The stock forward still computes every token's query, attention,
output projection and feed-forward there, and the backward pass carries zeros back
through all of them. Only the key and value projections need every token. Computing the
rest for the first token gives the same logits and input gradients (to float rounding)
with about 5/6 of one layer's work less: a seventh of every pass on the 6-layer MiniLM,
a fourteenth on BERT-base (docs/PERFORMANCE.md).

It is used where the model type's head is known to read the first token, the last layer
has BERT's structure, and a probe forward gives the same logits both ways; any other
model runs its stock forward. Passes that return attentions or every layer's hidden
states run the stock layer. The swap is not meant for threads sharing a model: a worker
refuses pools that would run several tasks in one process (workers/celery_app.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F

# Model types whose sequence-classification head reads only the last layer's first token
# (BERT's pooler; RoBERTa's and ELECTRA's classification heads take features[:, 0]).
FIRST_TOKEN_HEADS = frozenset({"bert", "roberta", "xlm-roberta", "camembert", "electra"})
# Logits: the two layer shapes round differently (fp32; bf16/fp16 weights round more).
# A head that reads other tokens differs by far more.
PROBE_TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-8}
HALF_PROBE_TOLERANCE = 3e-2

log = logging.getLogger(__name__)


class FirstTokenLayer(torch.nn.Module):
    """``layer`` (a BERT layer) computed for position 0 only: keys and values from every
    position, everything else from the first. Returns documents x 1 x hidden."""

    def __init__(self, layer: torch.nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(
        self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None, *_: Any, **__: Any
    ) -> torch.Tensor:
        attention = self.layer.attention.self
        docs = hidden.shape[0]
        heads, head_size = attention.num_attention_heads, attention.attention_head_size
        first = hidden[:, :1]

        def split(x: torch.Tensor) -> torch.Tensor:  # documents x heads x positions x head
            return x.view(docs, -1, heads, head_size).transpose(1, 2)

        query = split(attention.query(first))
        key, value = split(attention.key(hidden)), split(attention.value(hidden))
        mixed = F.scaled_dot_product_attention(
            query, key, value,
            attn_mask=None if attention_mask is None else attention_mask[:, :, :1],
            dropout_p=attention.dropout.p if self.layer.training else 0.0,
            scale=attention.scaling,
        )  # fmt: skip
        mixed = mixed.transpose(1, 2).reshape(docs, 1, -1)
        attended = self.layer.attention.output(mixed, first)
        return self.layer.output(self.layer.intermediate(attended), attended)


def supported(model: torch.nn.Module) -> bool:
    """Whether the first-token layer may stand in for ``model``'s last layer: a head known
    to read the first token, a last layer of BERT's shape, and equal logits on a probe."""
    config = model.config
    if config.model_type not in FIRST_TOKEN_HEADS or getattr(config, "is_decoder", False):
        return False
    if config._attn_implementation not in ("eager", "sdpa"):  # their masks: 4-D or None
        return False
    layers = _layers(model)
    if layers is None or not _bert_shaped(layers[-1]):
        return False
    return _same_logits(model)


@contextmanager
def last_layer_first_token(model: torch.nn.Module) -> Iterator[None]:
    """Within the block, ``model``'s last layer computes the first token alone."""
    layers = _layers(model)
    assert layers is not None, "call only where supported(model)"
    stock = layers[-1]
    if isinstance(stock, FirstTokenLayer):  # already inside a first-token pass
        yield
        return
    layers[-1] = FirstTokenLayer(stock)
    try:
        yield
    finally:
        layers[-1] = stock


def _layers(model: torch.nn.Module) -> torch.nn.ModuleList | None:
    encoder = getattr(model.base_model, "encoder", None)
    layers = getattr(encoder, "layer", None)
    return layers if isinstance(layers, torch.nn.ModuleList) and len(layers) else None


def _bert_shaped(layer: torch.nn.Module) -> bool:
    attention = getattr(getattr(layer, "attention", None), "self", None)
    parts = ("query", "key", "value", "num_attention_heads", "attention_head_size", "scaling")
    return (
        attention is not None
        and all(hasattr(attention, name) for name in parts)
        and hasattr(layer.attention, "output")
        and hasattr(layer, "intermediate")
        and hasattr(layer, "output")
        and not hasattr(layer, "crossattention")
    )


def _same_logits(model: torch.nn.Module) -> bool:
    """Stock and first-token logits agree on a padded probe batch, in the weights' own
    precision. A probe that fails, or cannot run, leaves the stock layer in place."""
    weight = model.get_input_embeddings().weight
    vocab = weight.shape[0]
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(vocab // 2, vocab, (3, 12), generator=generator).to(weight.device)
    mask = torch.ones_like(ids)
    mask[1, 7:], mask[2, 4:] = 0, 0
    try:
        with torch.inference_mode():
            stock = model(input_ids=ids, attention_mask=mask).logits.float()
            with last_layer_first_token(model):
                first = model(input_ids=ids, attention_mask=mask).logits.float()
    except Exception as error:  # any failure means: keep the stock layer
        log.warning("first-token last layer not used: its probe failed (%s)", error)
        return False
    tolerance = PROBE_TOLERANCE.get(weight.dtype, HALF_PROBE_TOLERANCE)
    same = bool(torch.allclose(stock, first, atol=tolerance, rtol=tolerance))
    if not same:
        log.warning("first-token last layer not used: its logits differ from the stock model's")
    return same
