"""What a document will cost to explain, estimated before any tokenizer runs.

The producer chunks a batch by this estimate, so that one long document sent with an
expensive method does not hold a chunk of short ones for minutes (issue 19), and says
so before the work is queued. The unit is the *token-pass*: one forward pass of one
token through the model; a backward pass counts as two. The estimate is coarse on
purpose (it sees characters, not tokens) and only compares documents of one batch:

- tokens ~ characters / 4 + [CLS] and [SEP] (English WordPiece or BPE: 3.5-4.5);
- a document over ``max_tokens`` is explained in windows every half window (``windows``);
- per window of ``m`` tokens, each method runs this many passes of ``m`` tokens:
  lig 3 x its steps (forward + backward; adaptive: the second level's nodes, where most
  documents stop), saliency and input x gradient 3, attention 1, occlusion one per
  window position (~m: its cost grows with the square of the length), kernel SHAP and
  LIME one per sample; plus the prediction pass, and faithfulness's perturbations: 10
  per ranking (the method's, and the random one's), which delete their tokens, so that
  together they hold about 5 documents' tokens (comprehensiveness keeps 1 - k of the
  tokens, sufficiency k, over the bins), counted twice for the method's (the short case,
  where each pass is small, rounded up).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from contract.methods import LIG_LEVELS, SPECS

if TYPE_CHECKING:
    from contract.settings import Settings

CHARS_PER_TOKEN = 4
TYPICAL_CHARS = 4 * 126  # a 128-token document: the unit a chunk's budget is counted in
QUALITY_PASSES = 10  # ERASER's 5 bins x 2 metrics, each deleting its share: ~5, x 2
RANDOM_PASSES = 5


def estimated_tokens(chars: int) -> int:
    """Tokens of a text of ``chars`` characters, with [CLS] and [SEP]."""
    return math.ceil(chars / CHARS_PER_TOKEN) + 2


def windows(tokens: int, max_tokens: int, stride: int | None = None) -> int:
    """How many windows a document of ``tokens`` is explained in (workers.engine.windows)."""
    if tokens <= max_tokens:
        return 1
    width = max(1, max_tokens - 2)
    step = min(stride or max(1, width // 2), width)
    return math.ceil((tokens - 2 - width) / step) + 1


def passes_per_window(method: str, params: Mapping[str, Any], tokens: int) -> float:
    """Forward-pass equivalents one method runs over one window of ``tokens``."""
    resolved = SPECS[method].resolve(params)
    if method == "lig":
        steps = resolved["n_steps"]
        return 3.0 * (LIG_LEVELS[1] if steps == "auto" else int(steps))
    if method in ("saliency", "input_x_gradient"):
        return 3.0
    if method == "attention":
        return 1.0
    if method == "occlusion":
        return float(max(1, tokens - 2 - int(resolved["window"]) + 1))
    return float(resolved["n_samples"])  # kernel_shap, lime


def document_cost(
    chars: int,
    methods: Sequence[str],
    params: Mapping[str, Any],
    *,
    quality: bool | float = True,
    max_tokens: int = 512,
    stride: int | None = None,
) -> float:
    """Estimated token-passes to predict and explain a text of ``chars`` characters."""
    tokens = estimated_tokens(chars)
    width = min(tokens, max_tokens)
    passes = 1.0 + sum(passes_per_window(m, params, width) for m in methods)
    if quality:
        share = 1.0 if quality is True else float(quality)
        passes += share * (QUALITY_PASSES * len(methods) + RANDOM_PASSES)
    return windows(tokens, max_tokens, stride) * width * passes


def batch_cost(
    methods: Sequence[str], params: Mapping[str, Any], settings: Settings
) -> Callable[[int], float]:
    """A text's estimated cost (characters -> token-passes) with a batch's methods and
    parameters under these settings: what the producer and the sweeper chunk by."""
    stride = params.get("window_stride") or settings.window_stride
    return partial(document_cost, methods=methods, params=params, quality=settings.quality,
                   max_tokens=settings.max_tokens, stride=stride)  # fmt: skip
