"""How many rows (documents x integration steps) one forward/backward pass takes.

On a GPU: as many as half the free memory holds, by an estimate of the activations
that the backward pass keeps per row (out-of-memory back-off in ``explain`` covers an
estimate that was too bold). On the CPU: a fixed token budget per pass, the optimum
measured by ``bench/throughput.py`` (larger passes bought nothing on 2 cores), and
few documents per padded group.
"""

from __future__ import annotations

import gc

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


def docs_per_group(classifier: Classifier) -> int:
    return GPU_DOCS_PER_GROUP if classifier.device.type == "cuda" else CPU_DOCS_PER_GROUP


def auto_internal_batch_size(classifier: Classifier, group: Group) -> int:
    width = group.input_ids.shape[1]
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
