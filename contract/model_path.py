"""Where a model lives: a checkpoint directory, or a name under ``$EXPLAINQ_HOME/models``."""

from __future__ import annotations

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
