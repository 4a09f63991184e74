"""How many rows (documents x integration steps) one forward/backward pass takes.

On a GPU: as many as half the free memory holds, by an estimate of the activations
that the backward pass keeps per row (out-of-memory back-off in ``explain`` covers an
estimate that was too bold). On the CPU: a fixed token budget per pass, the optimum
measured by ``bench/throughput.py`` (larger passes bought nothing on 2 cores), and
few documents per padded group. Rows of very unequal lengths (faithfulness's perturbed
documents) are cut into passes by length, weighing padding against passes.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Sequence

import torch

from workers.engine.classifier import Classifier
from workers.engine.encoding import Group

CPU_TOKENS_PER_PASS = 4096
MAX_ROWS = 4096
GPU_MEMORY_SHARE = 0.5
# Documents padded together. On 2 CPU cores, groups of 16 were 20% slower than groups
# of 1-4 (padding and masked attention cost more than batching saves); a GPU needs
# wide batches to be busy. See docs/PERFORMANCE.md.
CPU_DOCS_PER_GROUP = 4
GPU_DOCS_PER_GROUP = 64
# What a pass costs beyond its tokens, counted in tokens (``passes_by_length``): on 2 CPU
# cores a MiniLM pass reads all its weights whatever it holds, ~6 ms, the time of ~50
# tokens (docs/PERFORMANCE.md, "The default path"); a GPU pass is bound by its kernel
# launches until it holds thousands of tokens (an estimate, not measured here).
CPU_PASS_OVERHEAD_TOKENS = 64
GPU_PASS_OVERHEAD_TOKENS = 4096


def docs_per_group(classifier: Classifier) -> int:
    return GPU_DOCS_PER_GROUP if classifier.device.type == "cuda" else CPU_DOCS_PER_GROUP


def pass_overhead_tokens(classifier: Classifier) -> int:
    cuda = classifier.device.type == "cuda"
    return GPU_PASS_OVERHEAD_TOKENS if cuda else CPU_PASS_OVERHEAD_TOKENS


def passes_by_length(lengths: Sequence[int], overhead: int, max_tokens: int) -> list[list[int]]:
    """Indices of rows of these ``lengths`` cut into passes, each padded to its longest
    row and holding at most ``max_tokens`` (or one row), so that the padded tokens plus
    ``overhead`` per pass are fewest among the cuts that keep rows of one length
    together (dynamic programming over the distinct lengths: fast for the thousands of
    rows of a GPU chunk's perturbations, 3 to 512 tokens each)."""
    widths = sorted(set(lengths))
    counts = [0] * len(widths)
    at = {width: i for i, width in enumerate(widths)}
    for length in lengths:
        counts[at[length]] += 1
    # best[k]: the least cost of the first k widths; first[k]: where its last pass starts
    best, first = [0.0] + [math.inf] * len(widths), [0] * (len(widths) + 1)
    for k in range(1, len(widths) + 1):
        rows = 0
        for j in range(k, 0, -1):  # the last pass holds widths j..k, padded to widths[k-1]
            rows += counts[j - 1]
            per_pass = max(1, max_tokens // widths[k - 1])
            cost = best[j - 1] + math.ceil(rows / per_pass) * overhead + rows * widths[k - 1]
            if cost < best[k]:
                best[k], first[k] = cost, j
    cuts, k = [], len(widths)
    while k:
        cuts.append((first[k] - 1, k))
        k = first[k] - 1
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    out, taken = [], 0
    for start, stop in reversed(cuts):
        rows = sum(counts[start:stop])
        per_pass = max(1, max_tokens // widths[stop - 1])
        span = order[taken : taken + rows]
        out += [span[i : i + per_pass] for i in range(0, rows, per_pass)]
        taken += rows
    return out


def auto_internal_batch_size(classifier: Classifier, group: Group) -> int:
    return rows_per_pass(classifier, group.input_ids.shape[1])


def rows_per_pass(classifier: Classifier, width: int) -> int:
    """Rows of ``width`` tokens one forward/backward pass takes."""
    if classifier.device.type != "cuda":
        return _clamp(CPU_TOKENS_PER_PASS // width)
    free, _ = torch.cuda.mem_get_info(classifier.device)
    return _clamp(int(free * GPU_MEMORY_SHARE) // _bytes_per_row(classifier, width))


def _bytes_per_row(classifier: Classifier, width: int) -> int:
    """Activations a transformer keeps for backward: ~34 values per token and hidden unit
    per layer, plus the attention maps (heads x width^2), at 2 bytes (bf16) or 4."""
    info = classifier.info
    layers, hidden = info.get("layers") or 12, info.get("hidden_size") or 768
    heads = getattr(classifier.model.config, "num_attention_heads", 12)
    element = 2 if classifier.autocast else 4
    return layers * (width * hidden * 34 + 5 * heads * width * width) * element


def _clamp(rows: int) -> int:
    return max(1, min(MAX_ROWS, rows))


def free_accelerator_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
