"""A Hugging Face sequence classifier loaded once, with what provenance needs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub at run time

import captum
import torch
import transformers
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from transformers.utils import logging as hf_logging

from contract.model_path import weights_sha256
from workers.engine import first_token

hf_logging.disable_progress_bar()  # worker logs are no place for progress bars


@dataclass
class Classifier:
    """Tokenizer + model on one device, frozen: attribution needs gradients with respect
    to the embeddings only, never to the parameters."""

    name: str
    path: Path
    tokenizer: Any
    model: torch.nn.Module
    device: torch.device
    sha256: str
    labels: list[str]
    info: dict[str, Any] = field(default_factory=dict)
    autocast: bool = False  # bf16 forward/backward on GPUs that support it
    # The last layer computes the first token alone (``first_token``): same logits, less work.
    first_token_only: bool = False
    # Values a method computes once per model and reuses (lig's node density).
    computed: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def load(
        cls,
        path: str | Path,
        device: str | torch.device = "cpu",
        name: str | None = None,
        autocast: bool | None = None,
    ) -> Classifier:
        path = Path(path).expanduser().resolve()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path}: not a Hugging Face checkpoint (no config.json)")
        device = torch.device(device)
        tokenizer = AutoTokenizer.from_pretrained(path)
        model, loading = AutoModelForSequenceClassification.from_pretrained(
            path, output_loading_info=True
        )
        refuse_random_weights(path, loading)
        model.to(device).eval().requires_grad_(False)
        config = model.config
        labels = [str(config.id2label[i]) for i in range(config.num_labels)]
        info = {
            "architecture": type(model).__name__,
            "layers": getattr(config, "num_hidden_layers", None),
            "hidden_size": getattr(config, "hidden_size", None),
            "max_positions": getattr(config, "max_position_embeddings", None),
            "vocab_size": getattr(config, "vocab_size", None),
            "versions": {
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "captum": captum.__version__,
            },
        }
        if autocast is None:  # bf16 where the GPU has it; never on the CPU
            autocast = device.type == "cuda" and torch.cuda.is_bf16_supported()
        info["autocast"] = "bfloat16" if autocast else None
        first_token_only = first_token.supported(model)
        info["last_layer"] = "first token only" if first_token_only else "every token"
        return cls(
            autocast=autocast,
            first_token_only=first_token_only,
            name=name or path.name,
            path=path,
            tokenizer=tokenizer,
            model=model,
            device=device,
            sha256=weights_sha256(path),
            labels=labels,
            info=info,
        )

    @property
    def max_length(self) -> int:
        positions = self.info.get("max_positions") or 512
        return min(positions, self.tokenizer.model_max_length or positions)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits; the signature Captum calls with interpolated embeddings in place."""
        return self._run(input_ids, attention_mask, token_type_ids).logits.float()

    def predict(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and the pooled representation (the final layer's [CLS] hidden state,
        float32) from one forward pass: the vector nearest-neighbour search uses. It is
        read off the base model's output, which the first-token layer still produces."""
        final: list[torch.Tensor] = []
        handle = self.model.base_model.register_forward_hook(
            lambda _module, _inputs, output: final.append(output[0][:, 0])
        )
        try:
            logits = self._run(input_ids, attention_mask, token_type_ids).logits
        finally:
            handle.remove()
        return logits.float(), final[0].float()

    def attentions(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """Attention probabilities of every layer (documents x heads x positions x
        positions, float32), under ``inference_mode``. SDPA kernels do not return them,
        so this forward alone runs with eager attention; every other pass keeps the
        model's faster implementation."""
        with torch.inference_mode(), self._eager_attention():
            out = self._run(input_ids, attention_mask, token_type_ids, output_attentions=True)
        return [layer.float() for layer in out.attentions]

    def _run(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        **flags: bool,
    ) -> Any:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask, **flags}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        # Under autocast the matrix products run in bf16; the embeddings (whose gradient
        # Captum takes) and the attributions it accumulates stay in fp32.
        with (
            torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast),
            self._last_layer(stock=any(flags.values())),
        ):
            return self.model(**kwargs)

    @contextmanager
    def _last_layer(self, stock: bool) -> Iterator[None]:
        """The first-token last layer where the model allows it and the pass returns no
        attention maps or hidden states (whose last layer must cover every token)."""
        config = self.model.config
        stock = stock or bool(config.output_attentions or config.output_hidden_states)
        if stock or not self.first_token_only:
            yield
            return
        with first_token.last_layer_first_token(self.model):
            yield

    @contextmanager
    def _eager_attention(self) -> Iterator[None]:
        own = self.model.config._attn_implementation
        if own == "eager":
            yield
            return
        self.model.set_attn_implementation("eager")
        try:
            yield
        finally:
            self.model.set_attn_implementation(own)


class RandomWeights(ValueError):
    """A checkpoint whose outputs its files do not decide: weights the model needs are
    missing and would be initialised at random on every load."""


def refuse_random_weights(path: Path, loading: dict[str, Any]) -> None:
    """Refuses a checkpoint that lacks weights the model needs (a plain ``BertModel``
    saved without a classification head, say): two loads would predict differently under
    one recorded hash, which defeats the audit record."""
    missing = sorted(loading.get("missing_keys") or [])
    if missing:
        shown = ", ".join(missing[:4]) + (
            f" and {len(missing) - 4} more" if len(missing) > 4 else ""
        )
        raise RandomWeights(
            f"{path}: weights missing from the checkpoint, which would be initialised at "
            f"random on every load: {shown} (is it a sequence classifier, fine-tuned?)"
        )
