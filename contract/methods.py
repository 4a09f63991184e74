"""The attribution methods as the producer, the workers and the read side know them.

A ``MethodSpec`` is everything about a method except its computation: the parameters a
batch may set (with type, default, cap and help), the descriptors recorded on every row
(baseline, target, layer), and how its full parameter set is resolved. The engine's
method modules (``workers/engine/methods/``) import their spec and add only
``attribute()``. Adding a parameter or a cap means editing one spec here and the one
method module that uses it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from contract.params import Param, at_least, fraction, one_of, seed, steps

# Adaptive steps' nested rule (workers/engine/patterson.json; a test holds them equal):
# every document starts at the first level, the least that max_steps can be.
LIG_LEVELS = (9, 19, 39, 79, 159)
FIRST_LEVEL = LIG_LEVELS[0]


@dataclass(frozen=True)
class MethodSpec:
    name: str
    summary: str
    params: tuple[Param, ...] = ()  # what a batch may set
    fixed: Mapping[str, Any] = field(default_factory=dict)  # recorded, never set
    finish: Callable[[dict[str, Any]], dict[str, Any]] | None = None  # method's own defaults
    conflicts: Callable[[Mapping[str, Any]], str | None] | None = None  # bad combinations

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    def resolve(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The full parameter set recorded on a row: the defaults, the (already checked)
        overrides this method takes, its fixed descriptors, and its own resolution."""
        values = {p.name: (overrides or {}).get(p.name, p.default) for p in self.params}
        merged = {**self.fixed, **values}
        return self.finish(merged) if self.finish else merged


def _lig_finish(params: dict[str, Any]) -> dict[str, Any]:
    """Fixed steps carry no adaptive parameters and integrate by Gauss-Legendre; adaptive
    steps carry all of them and integrate by the nested rule (named with its first level,
    so rows of different sequences never share an identity). Nodes default to Captum's
    uniform placement for fixed steps and to calibrated ones for adaptive steps."""
    adaptive = str(params["n_steps"]) == "auto"
    nodes = params["nodes"] or ("calibrated" if adaptive else "uniform")
    if adaptive:
        integration = f"gauss-kronrod-patterson-{FIRST_LEVEL}"
        return {**params, "n_steps": "auto", "integration": integration, "nodes": nodes}
    clean = {k: v for k, v in params.items() if k not in ("tolerance", "max_steps")}
    return {**clean, "n_steps": int(params["n_steps"]), "integration": "gausslegendre",
            "nodes": nodes}  # fmt: skip


def _lig_conflicts(given: Mapping[str, Any]) -> str | None:
    adaptive_only = sorted({"tolerance", "max_steps"} & set(given))
    n_steps = given.get("n_steps", "auto")
    if adaptive_only and str(n_steps) != "auto":
        return (
            f"--param {', '.join(adaptive_only)} applies to adaptive steps only "
            f"(--n-steps auto), not to n_steps={n_steps}"
        )
    return None


N_SAMPLES = Param(
    "n_samples", 200, at_least(2, " (a surrogate model needs two coalitions)"),
    "perturbed samples per document (2 or more)", cap="max_samples",
)  # fmt: skip
SEED = Param("seed", 0, seed, "sampling seed (0 .. 2**63 - 1)")
SPECS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec(
            "lig",
            "Layer Integrated Gradients over the word embeddings",
            params=(
                Param("n_steps", "auto", steps, "integration steps, or auto", cap="max_steps"),
                Param(
                    "nodes",
                    None,
                    one_of("uniform", "calibrated"),
                    "uniform (Captum's Gauss-Legendre) or calibrated to the model",
                ),
                Param("tolerance", 0.01, fraction, "with n_steps=auto: completeness gap to reach"),
                Param(
                    "max_steps",
                    256,
                    at_least(FIRST_LEVEL, ", the first level of adaptive steps"),
                    "with n_steps=auto: most steps per document (levels: "
                    f"{', '.join(map(str, LIG_LEVELS))})",
                    cap="max_steps",
                ),
            ),
            fixed={
                "integration": "gausslegendre",
                "baseline": "cls-pad-sep",
                "target": "predicted",
                "layer": "word_embeddings",
            },
            finish=_lig_finish,
            conflicts=_lig_conflicts,
        ),
        MethodSpec(
            "saliency",
            "gradient of the target logit per token (norm over the embedding)",
            params=(Param("norm", "l1", one_of("l1", "l2"), "l1 or l2 norm of the gradient"),),
            fixed={"target": "predicted", "layer": "word_embeddings"},
        ),
        MethodSpec(
            "input_x_gradient",
            "embedding times its gradient, summed per token",
            fixed={"target": "predicted", "layer": "word_embeddings"},
        ),
        MethodSpec(
            "attention",
            "attention rollout from [CLS], heads averaged",
            fixed={"rollout": "residual-0.5", "heads": "mean", "row": "cls"},
        ),
        MethodSpec(
            "occlusion",
            "logit drop when a sliding window of tokens is replaced by [PAD]",
            params=(Param("window", 1, at_least(1), "tokens occluded together"),),
            fixed={"baseline": "pad", "target": "predicted"},
        ),
        MethodSpec(
            "kernel_shap",
            "Kernel SHAP over tokens, absent tokens as [PAD]",
            params=(N_SAMPLES, SEED),
            fixed={"baseline": "pad", "target": "predicted"},
        ),
        MethodSpec(
            "lime",
            "LIME over tokens, absent tokens as [PAD]",
            params=(N_SAMPLES, SEED),
            fixed={"kernel_width": 0.25, "ridge": 1.0, "baseline": "pad", "target": "predicted"},
        ),
    )
}
METHODS = tuple(SPECS)


def split_methods(values: Iterable[str]) -> list[str]:
    """Methods as users give them: comma-separated, repeated, or both; in order, once each."""
    names = (name.strip() for value in values for name in value.split(","))
    return list(dict.fromkeys(name for name in names if name))


def methods_problem(methods: list[str]) -> str | None:
    """Why a batch cannot ask for these methods, if it cannot."""
    unknown = sorted(set(methods) - set(METHODS)) or ([] if methods else ["(none)"])
    return f"unknown method {', '.join(unknown)}; known: {', '.join(METHODS)}" if unknown else None


def tunable() -> dict[str, tuple[Param, list[str]]]:
    """Every parameter a batch may set, with the methods that take it."""
    found: dict[str, tuple[Param, list[str]]] = {}
    for spec in SPECS.values():
        for param in spec.params:
            found.setdefault(param.name, (param, []))[1].append(spec.name)
    return found


def describe_params() -> dict[str, str]:
    """``--param`` keys and what they mean, for help texts and ``results methods``."""
    return {
        name: f"{', '.join(methods)}: {param.help}" for name, (param, methods) in tunable().items()
    }


def parse_pairs(pairs: Iterable[str]) -> dict[str, Any]:
    """``key=value`` strings (``--param``) as typed values; a ValueError names the first
    bad one and why."""
    known = tunable()
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in known:
            raise ValueError(
                f"--param {pair!r}: expected key=value with a key of: {', '.join(known)}"
            )
        try:
            params[key] = known[key][0].check(text.strip())
        except ValueError as error:
            raise ValueError(f"--param {key}={text.strip()}: {error}") from None
    return params


def params_problems(
    methods: list[str], params: Mapping[str, Any], given: Iterable[str] | None = None
) -> list[str]:
    """Why a batch's parameters do not fit its methods: a value of the wrong type, a key
    that no chosen method takes (of those in ``given``: every key by default), or a
    combination a method refuses. Caps are ``caps.cap_problems``'."""
    known = tunable()
    problems = []
    for key in params if given is None else given:
        if key not in known or not set(known[key][1]) & set(methods):
            takers = f" (taken by {', '.join(known[key][1])})" if key in known else ""
            problems.append(
                f"--param {key}: no chosen method ({', '.join(methods)}) takes it{takers}"
            )
    for key, value in params.items():
        if key in known:
            try:
                known[key][0].check(value)
            except ValueError as error:
                problems.append(f"--param {key}={value}: {error}")
    for name in methods:
        conflicts = SPECS[name].conflicts if name in SPECS else None
        if conflicts and (problem := conflicts(params)):
            problems.append(problem)
    return problems
