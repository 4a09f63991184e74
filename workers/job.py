"""Decode: what a chunk's batch asks for, checked once in the worker.

The producer checks a batch before registering it, but a batch may come from another
client, or this worker may be configured with lower caps: the worker checks the same
contract again before it runs anything, and refuses with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from contract.caps import as_param, cap_problems, within_caps
from contract.methods import SPECS, methods_problem, params_problems
from contract.settings import Settings, quality_label
from db.models import Batch
from workers.engine.faithfulness import REMOVAL


@dataclass(frozen=True)
class Job:
    batch_id: str
    model: str
    methods: list[str]
    params: dict[str, Any]  # the batch's, capped defaults brought within this worker's caps
    max_tokens: int
    window_stride: int | None
    quality: bool | float  # True, False, or the share of documents measured
    refusal: str | None = None  # why this worker will not run the batch, if it will not

    def method_params(self) -> dict[str, dict[str, Any]]:
        """Each method's full parameter set, as recorded on its rows."""
        return {name: SPECS[name].resolve(self.params) for name in self.methods}

    def execution(self) -> dict[str, Any]:
        """The settings of the run that change stored numbers (``explanations.execution``)."""
        execution = {"max_tokens": self.max_tokens, "window_stride": self.window_stride,
                     "quality": quality_label(self.quality)}  # fmt: skip
        if self.quality:  # how faithfulness removed tokens (rows written before: by [PAD])
            execution["quality_removal"] = REMOVAL
        return execution


def decode(batch: Batch, settings: Settings) -> Job:
    methods = list(batch.methods)
    params = dict(batch.params)
    stride = params.pop("window_stride", None) or settings.window_stride
    problems = [problem] if (problem := methods_problem(methods)) else []
    if not problems:
        problems = params_problems(methods, params, given=())
        problems += cap_problems(params, settings, as_param)
        params = within_caps(params, methods, settings)
    return Job(
        batch_id=batch.id,
        model=batch.model,
        methods=methods,
        params=params,
        max_tokens=settings.max_tokens,
        window_stride=stride,
        quality=settings.quality,
        refusal=f"refused by this worker: {'; '.join(problems)}" if problems else None,
    )
