"""Replay: recompute stored explanations with the model, method, parameters and
execution settings each row records, and judge them against ``contract.replay``'s
tolerances (``results verify DOC``; docs/AUDIT.md).

The weights are hashed again before anything runs: a row replayed with other weights
than the ones it names proves nothing, so that is refused with both hashes unless the
caller allows it (then the verdicts say how far the explanations moved). The replay runs
here (``--local``) or in a worker (``workers.tasks.verify_rows``), which passes the model
it holds.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contract.model_path import resolve_model, weights_sha256
from contract.replay import Verdict, compare
from contract.settings import Settings

log = logging.getLogger(__name__)
ROWS_PER_PASS = 16  # documents explained together: grouping changes only rounding


class WeightsChanged(ValueError):
    """The weights on disk are not the ones the rows were made with."""


@dataclass(frozen=True)
class Weights:
    spec: str  # what to load: the batch's model spec, or the recorded path
    path: Path
    recorded: str  # the rows' hash
    now: str  # the hash of the files now

    @property
    def other(self) -> bool:
        return self.recorded != self.now


# (spec, path, sha256 now) -> (classifier, its device as rows record it)
Loader = Callable[[Weights], tuple[Any, str]]


def check_weights(
    rows: Sequence[dict[str, Any]], settings: Settings, allow_other_weights: bool
) -> dict[tuple[str, str], Weights]:
    """Each model of the rows, hashed again; WeightsChanged names both hashes when the
    files are not the ones a row was made with (unless that is allowed)."""
    found: dict[tuple[str, str], Weights] = {}
    for row in rows:
        key = (row["model_spec"], row["model_sha256"])
        if key in found:
            continue
        spec, path = _model_path(row, settings)
        weights = Weights(spec, path, row["model_sha256"], weights_sha256(path))
        if weights.other and not allow_other_weights:
            raise WeightsChanged(
                f"model {row['model_name']!r} at {path}: its weights now hash to {weights.now}, "
                f"the rows were made with {weights.recorded}; refused "
                "(--allow-other-weights replays them anyway and reports how far they move)"
            )
        found[key] = weights
    return found


def _model_path(row: dict[str, Any], settings: Settings) -> tuple[str, Path]:
    """Where the batch's model spec resolves here, else the path the model was loaded
    from when the row was made."""
    try:
        return row["model_spec"], resolve_model(row["model_spec"], settings)
    except FileNotFoundError as error:
        recorded = Path(row["model_path"])
        if recorded.is_dir():
            return str(recorded), recorded
        raise FileNotFoundError(f"{error}; nor at its recorded path {recorded}") from None


def replay(
    rows: Sequence[dict[str, Any]],
    settings: Settings,
    load: Loader,
    *,
    allow_other_weights: bool = False,
    progress: Callable[[int], None] | None = None,
) -> list[Verdict]:
    """A verdict per stored row (``db.replay_rows.stored_rows``), in their order."""
    models = check_weights(rows, settings, allow_other_weights)
    groups: dict[tuple[Any, ...], list[int]] = {}
    for index, row in enumerate(rows):
        key = (row["model_spec"], row["model_sha256"], row["method"],
               json.dumps(row["params"], sort_keys=True),
               json.dumps(row["execution"] or {}, sort_keys=True))  # fmt: skip
        groups.setdefault(key, []).append(index)
    verdicts: list[Verdict | None] = [None] * len(rows)
    for key, indices in groups.items():
        weights = models[key[0], key[1]]
        classifier, device = load(weights)
        _same_weights(weights, classifier.sha256)
        for start in range(0, len(indices), ROWS_PER_PASS):
            some = indices[start : start + ROWS_PER_PASS]
            part = [rows[i] for i in some]
            for i, verdict in zip(some, _replay_part(classifier, device, part, settings),
                                  strict=True):  # fmt: skip
                verdict.other_weights = weights.other
                verdicts[i] = verdict
            if progress:
                progress(len(part))
    missing = [rows[i]["id"] for i, verdict in enumerate(verdicts) if verdict is None]
    if missing:  # every row is in one group: a row without a verdict is a bug here
        raise RuntimeError(f"replay gave no verdict for rows {missing[:5]}")
    return [v for v in verdicts if v is not None]


def _same_weights(weights: Weights, loaded: str) -> None:
    """The files were hashed before the model was loaded: if they changed in between,
    the model replaying the rows is neither the one checked nor, maybe, the rows'."""
    if loaded != weights.now:
        raise WeightsChanged(
            f"model at {weights.path} changed while it was loaded: its weights hashed to "
            f"{weights.now} when checked, to {loaded} when loaded; refused (run it again)"
        )


def _replay_part(
    classifier: Any, device: str, rows: list[dict[str, Any]], settings: Settings
) -> list[Verdict]:
    """Rows of one model, method, parameters and execution, explained together."""
    from workers.engine import explain
    from workers.engine.explain import ExecutionOptions

    first = rows[0]
    execution = first["execution"] or {}
    options = ExecutionOptions(
        internal_batch_size=settings.internal_batch_size,
        max_internal_batch_size=settings.max_internal_batch_size,
        max_tokens=execution.get("max_tokens") or settings.max_tokens,
        window_stride=execution.get("window_stride", settings.window_stride),
    )
    method = first["method"]
    verdicts = [
        Verdict(row_id=r["id"], document=r["external_id"], method=method, batch_id=r["batch_id"])
        for r in rows
    ]
    try:
        # the recorded parameters are the method's full, resolved set: resolving them
        # again gives the same set (contract.methods.MethodSpec.resolve)
        explained = explain(classifier, [r["text"] for r in rows], [method], first["params"],
                            options, quality=False)  # fmt: skip
    except Exception as error:
        log.exception("replay of rows %s failed", [r["id"] for r in rows])
        for verdict in verdicts:
            verdict.problems.append(f"replay failed: {type(error).__name__}: {error}")
        return verdicts
    for row, again, verdict in zip(rows, explained, verdicts, strict=True):
        result = again.methods[method]
        replayed = {
            "label": again.label, "probabilities": again.probabilities, "tokens": again.tokens,
            "attributions": result.attributions, "relative_gap": result.relative_gap,
            "convergence_delta": result.convergence_delta, "steps": result.steps,
            "params": result.params, "device": device, "windows": again.windows,
        }  # fmt: skip
        compare(row, replayed, verdict)
    return verdicts


def local_loader() -> Loader:
    """Loads each model in this process (no database write), once per replay."""
    from workers.engine import Classifier
    from workers.model_holder import describe_device, pick_device

    loaded: dict[tuple[Path, str], tuple[Any, str]] = {}

    def load(weights: Weights) -> tuple[Any, str]:
        key = (weights.path, weights.now)
        if key not in loaded:
            loaded.clear()  # one model in memory at a time
            classifier = Classifier.load(weights.path, device=pick_device())
            loaded[key] = classifier, describe_device(str(classifier.device), classifier.autocast)
        return loaded[key]

    return load


def held_loader(settings: Settings) -> Loader:
    """The worker's held model (``model_holder``), loaded again if its files changed."""
    from workers.model_holder import describe_device, get_model

    def load(weights: Weights) -> tuple[Any, str]:
        held = get_model(weights.spec, settings, sha256=weights.now)
        return held.classifier, describe_device(held.device, held.classifier.autocast)

    return load
