"""Where a model lives (a checkpoint directory, or a name under ``$EXPLAINQ_HOME/models``),
and what identifies its weights."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from contract.settings import Settings

DEFAULT_MODEL = "minilm-sentiment"


def resolve_model(spec: str, settings: Settings) -> Path:
    """The checkpoint directory of ``spec``; FileNotFoundError names both places looked in."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path.resolve()
    named = settings.models_dir / spec
    if named.is_dir():
        return named
    hint = " (prepare it with `make model`)" if spec == DEFAULT_MODEL else ""
    places = f"no directory {path}" + ("" if named == path else f" or {named}")
    raise FileNotFoundError(f"model {spec!r} not found: {places}{hint}")


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def weights_sha256(path: Path) -> str:
    """SHA-256 over what decides the outputs, in name order: the weight files, and the
    configuration that maps logits to labels (config.json): the model's identity for
    audits. Plain hashlib, so the producer can hash a checkpoint without torch."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    if not files:
        raise FileNotFoundError(f"{path}: no weight files ({', '.join(WEIGHT_SUFFIXES)})")
    for file in [*files, path / "config.json"]:
        digest.update(file.name.encode())
        with file.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()
