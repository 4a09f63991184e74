"""Replay's yardstick: the tolerance per method and precision, and the comparison of a
stored explanation with its recomputation (``results verify DOC``; docs/AUDIT.md says
why each number is what it is).

Standard library only: the workers compare with it, and the results CLI prints its
table without torch. PyTorch promises no bitwise reproducibility across releases and
devices, so a replay is judged within these bounds, never bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

SAMPLING = ("kernel_shap", "lime")  # seeded per document: the draws repeat on one device kind


@dataclass(frozen=True)
class Tolerance:
    """A row passes when its label is the stored one, every probability is within
    ``probability``, the cosine of the scores is at least ``cosine``, and the largest
    difference of a score is at most ``atol + rtol * (largest |stored score|)``."""

    rtol: float
    atol: float
    cosine: float
    probability: float
    basis: str  # one line: why these numbers


# float32: the same computation in another grouping (padding, batch shapes, kernels)
# measured 2.6e-6 of the largest score at most on the tiny BERT (bench/replay_rounding.py).
_FP32 = Tolerance(1e-4, 1e-6, 0.9999, 1e-5, "float32 rounding (measured 2.6e-6: 40x margin)")
# bfloat16 autocast, on either side: 8 bits of mantissa (2^-8 = 0.4 %) per product.
_BF16 = Tolerance(5e-2, 1e-3, 0.99, 1e-2, "bfloat16 rounding (2^-8 per product)")
TOLERANCES: dict[str, dict[str, Tolerance]] = {
    "lig": {
        "fp32": Tolerance(1e-4, 1e-6, 0.9999, 1e-5,
                          "float32 rounding when the same steps are taken; else completeness"),
        "bf16": _BF16,
    },
    "saliency": {"fp32": _FP32, "bf16": _BF16},
    "input_x_gradient": {"fp32": _FP32, "bf16": _BF16},
    "attention": {"fp32": _FP32, "bf16": _BF16},
    "occlusion": {"fp32": _FP32, "bf16": _BF16},
    **{
        name: {
            "fp32": Tolerance(1e-3, 1e-5, 0.999, 1e-5,
                              "same seeded draws; the surrogate's solve amplifies rounding"),
            "bf16": Tolerance(1e-1, 1e-3, 0.98, 1e-2,
                              "same seeded draws; bfloat16 outputs through the solve"),
            # Another device kind may draw other coalitions from the same seed: two
            # independent estimates, of which only a gross change can be told apart.
            "other-device": Tolerance(5e-1, 1e-3, 0.8, 1e-2,
                                      "other device kind: draws may differ; coarse"),
        }
        for name in SAMPLING
    },
}  # fmt: skip
# lig when the replay took other steps than the row (adaptive steps decided by a gap
# within rounding of the tolerance): both estimates meet the completeness tolerance, so
# each token may move by the quadrature error, bounded here by twice that tolerance of
# |f(x) - f(baseline)|, and the scores must still point the same way.
LIG_OTHER_STEPS_COSINE = 0.99


def precision_of(device: str) -> str:
    """``bf16`` for a row computed under bfloat16 autocast (its device says so), else
    ``fp32``."""
    return "bf16" if "bf16" in device else "fp32"


def device_kind(device: str) -> str:
    """``cpu``, ``cuda``, ...: the part of a recorded device before ``:`` or a space."""
    return device.split(":")[0].split()[0] if device.strip() else "unknown"


def tolerance_for(method: str, stored_device: str, replay_device: str) -> tuple[str, Tolerance]:
    """The table's row for this method, the two precisions and the two device kinds."""
    table = TOLERANCES[method]
    if method in SAMPLING and device_kind(stored_device) != device_kind(replay_device):
        return "other-device", table["other-device"]
    both = {precision_of(stored_device), precision_of(replay_device)}
    key = "bf16" if "bf16" in both else "fp32"
    return key, table[key]


@dataclass
class Verdict:
    """One row's replay: what was compared, the figures, and whether it passes."""

    row_id: int
    document: str
    method: str
    batch_id: str | None
    ok: bool = False
    problems: list[str] = field(default_factory=list)
    label: str | None = None  # stored
    replayed_label: str | None = None
    label_reproduced: bool = False
    probability_diff: float | None = None  # largest |stored - replayed| probability
    max_abs_diff: float | None = None  # largest |stored - replayed| score
    max_rel_diff: float | None = None  # that over the largest |stored score|
    cosine: float | None = None
    stored_gap: float | None = None  # relative completeness gap (lig), stored
    replayed_gap: float | None = None
    completeness_gap_diff: float | None = None
    steps: tuple[int | None, int | None] | None = None  # stored, replayed (lig)
    tolerance: str | None = None  # the table's row used: fp32, bf16, other-device, ...
    other_weights: bool = False  # replayed with weights other than the row's
    stored_device: str | None = None
    replay_device: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The verdict as JSON allows it: a non-finite figure is null, never NaN."""
        return {k: None if isinstance(v, float) and not math.isfinite(v) else v
                for k, v in asdict(self).items()}  # fmt: skip


def _largest(values: Iterable[float]) -> float:
    """The largest value, NaN if any is NaN (``max`` skips a NaN that is not first)."""
    largest = 0.0
    for value in values:
        if math.isnan(value):
            return math.nan
        largest = max(largest, value)
    return largest


def _non_finite(row: Mapping[str, Any]) -> list[str]:
    """The numeric fields of a row (stored or replayed) holding NaN or infinity."""
    fields = {
        "probabilities": list(row["probabilities"].values()),
        "scores": list(row["attributions"]),
        "completeness gap": [row.get("relative_gap")],
        "convergence delta": [row.get("convergence_delta")],
    }
    return [name for name, values in fields.items()
            if any(v is not None and not math.isfinite(v) for v in values)]  # fmt: skip


def _fsum(values: Iterable[float]) -> float:
    """``math.fsum``, NaN where it raises (on +inf and -inf together)."""
    try:
        return math.fsum(values)
    except ValueError:
        return math.nan


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = _fsum(x * y for x, y in zip(a, b, strict=True))
    norms = math.sqrt(_fsum(x * x for x in a)) * math.sqrt(_fsum(y * y for y in b))
    if norms == 0.0:
        return 1.0 if not any(a) and not any(b) else 0.0
    return dot / norms


def compare(stored: Mapping[str, Any], replayed: Mapping[str, Any], verdict: Verdict) -> Verdict:
    """Fills ``verdict`` from a stored row and its replay: both mappings carry
    ``label``, ``probabilities``, ``tokens``, ``attributions``, ``relative_gap``,
    ``convergence_delta``, ``steps``, ``params`` and ``device``."""
    method = verdict.method
    key, tol = tolerance_for(method, stored["device"], replayed["device"])
    verdict.tolerance, verdict.label = key, stored["label"]
    verdict.stored_device, verdict.replay_device = stored["device"], replayed["device"]
    verdict.replayed_label = replayed["label"]
    verdict.label_reproduced = stored["label"] == replayed["label"]
    problems = verdict.problems
    if not verdict.label_reproduced:
        problems.append(f"label {replayed['label']!r}, stored {stored['label']!r}")
    for side, row in (("stored", stored), ("replayed", replayed)):
        if bad := _non_finite(row):
            problems.append(f"{side} {', '.join(bad)} not finite")
    probs, again = stored["probabilities"], replayed["probabilities"]
    if set(probs) != set(again):
        problems.append(f"labels {sorted(again)}, stored {sorted(probs)}")
    else:
        verdict.probability_diff = _largest(abs(probs[k] - again[k]) for k in probs)
        if not (verdict.probability_diff <= tol.probability):
            problems.append(f"probabilities differ by {verdict.probability_diff:.3g} "
                            f"(tolerance {tol.probability:g})")  # fmt: skip
    a, b = list(stored["attributions"]), list(replayed["attributions"])
    if list(stored["tokens"]) != list(replayed["tokens"]) or len(a) != len(b):
        problems.append(f"tokens differ ({len(replayed['tokens'])} replayed, "
                        f"{len(stored['tokens'])} stored)")  # fmt: skip
        return verdict
    if stored.get("windows", 1) != replayed.get("windows", 1):
        problems.append(f"{replayed.get('windows')} windows, stored {stored.get('windows')}")
    scale = _largest(abs(x) for x in a)
    verdict.max_abs_diff = _largest(abs(x - y) for x, y in zip(a, b, strict=True))
    verdict.max_rel_diff = verdict.max_abs_diff / scale if scale else None
    verdict.cosine = _cosine(a, b)
    verdict.stored_gap, verdict.replayed_gap = stored["relative_gap"], replayed["relative_gap"]
    if verdict.stored_gap is not None and verdict.replayed_gap is not None:
        verdict.completeness_gap_diff = verdict.replayed_gap - verdict.stored_gap
    bound, least_cosine = tol.atol + tol.rtol * scale, tol.cosine
    if method == "lig":
        verdict.steps = (stored["steps"], replayed["steps"])
        if stored["steps"] != replayed["steps"] and key == "fp32":
            bound, least_cosine = _lig_other_steps(stored, replayed, tol, problems)
    # written so that NaN fails: every comparison with NaN is False
    if not (verdict.max_abs_diff <= bound):
        problems.append(f"scores differ by {verdict.max_abs_diff:.3g} at most "
                        f"(tolerance {bound:.3g})")  # fmt: skip
    if not (verdict.cosine >= least_cosine):
        problems.append(f"cosine {verdict.cosine:.6f} (at least {least_cosine:g})")
    verdict.ok = not problems
    return verdict


def _lig_other_steps(
    stored: Mapping[str, Any], replayed: Mapping[str, Any], tol: Tolerance, problems: list[str]
) -> tuple[float, float]:
    """Adaptive lig that stopped at another level: the replay must meet the completeness
    tolerance the row records (or the row's own gap, where it stopped at its last level),
    and the scores may differ by twice that tolerance of |f(x) - f(baseline)|."""
    target = stored["params"].get("tolerance")
    if target is None:  # fixed steps differ only if the row was changed
        problems.append(f"steps {replayed['steps']}, stored {stored['steps']} (fixed steps)")
        return tol.atol, tol.cosine
    allowed = max(float(target), stored["relative_gap"] or 0.0) + 1e-6
    if replayed["relative_gap"] is None or not (replayed["relative_gap"] <= allowed):
        problems.append(f"completeness gap {replayed['relative_gap']} over {allowed:.3g}")
    # the sum of the scores is f(x) - f(baseline) + the convergence delta
    gap = abs(_fsum(stored["attributions"]) - (stored["convergence_delta"] or 0.0))
    return tol.atol + 2 * allowed * gap, LIG_OTHER_STEPS_COSINE
