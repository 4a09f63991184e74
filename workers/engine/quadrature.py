"""Where Integrated Gradients takes its gradients along the path.

IG integrates the gradient along the straight line from the baseline to the input.
How the line is parameterised changes the quadrature, never the integral: nodes can go
where the integrand changes. On BERT it changes most in a narrow band of the path (on
the MiniLM demo model around a = 0.39, half-width 0.11: where the interpolated word
vector overtakes the position vector inside the embedding LayerNorm), and evenly spread
Gauss-Legendre nodes spend most of their steps elsewhere.

``lig.node_density`` measures the integrand once per model on a few fixed probe
sentences, ``fit`` finds the band in it, and
``NodeDensity`` places the Gauss-Legendre nodes of the substituted variable by a mixture
of a uniform density and a Cauchy density centred on it. Measured on 48 held-out
sentences (``bench/nodes.py``, docs/PERFORMANCE.md): 1% completeness needs 10.2
Gauss-Legendre nodes on average instead of 17.6, and at most 32 instead of 40.

Fixed steps place Gauss-Legendre rules (``rule``); adaptive steps place the levels of a
nested rule (``nested``: Gauss-Kronrod-Patterson, 9, 19, 39, 79, 159 nodes), so that a
document that needs more nodes keeps the ones it has.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

# Fixed probe sentences: calibration depends on the model alone (and, through float
# rounding at a near-tie, on the device), so workers that load the same weights place the
# same nodes; the density each row used is recorded with it.
PROBES = (
    "The service was slow, but the food was worth the wait.",
    "I would not recommend this product to anyone.",
    "An honest, moving film with a weak and predictable ending.",
    "The report was filed on time and nothing in it was unusual.",
)
PROFILE_STEPS = 64
# The mixture's uniform part, and the Cauchy part's width over the band's half-width:
# chosen on the demo model by the nodes adaptive steps need on sentences and long
# documents not in the benchmarks, with the nested levels then from 10 nodes (0.3 and 1.4
# against 0.4 and 1: 16.4 against 18.2 per sentence, 16.4 against 17.3 per long
# document; docs/PERFORMANCE.md).
UNIFORM_SHARE, SPREAD = 0.3, 1.4
MIN_WIDTH, FLAT_WIDTH = 0.02, 0.45  # a band over 90% of the path: no band at all
# Nested Gauss-Kronrod-Patterson rules on [-1, 1] (9, 19, 39, 79, 159 nodes), tabulated
# by ``python -m workers.engine.patterson``.
NESTED_TABLE = Path(__file__).with_name("patterson.json")


@dataclass(frozen=True)
class NodeDensity:
    """Nodes placed by ``uniform`` x U(0, 1) + (1 - ``uniform``) x Cauchy(``center``,
    ``width``) cut to [0, 1]. ``uniform=1`` is plain Gauss-Legendre."""

    center: float = 0.5
    width: float = 1.0
    uniform: float = 1.0

    def rule(self, n_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n_steps`` positions along the path (0 = baseline, 1 = input) and their
        weights, float64: Gauss-Legendre in the substituted variable."""
        return self._placed(*np.polynomial.legendre.leggauss(n_steps))

    def nested(self, level: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Level ``level`` of the nested Gauss-Kronrod-Patterson rule (``patterson``) in
        the substituted variable: positions and weights, float64, the earlier levels'
        nodes first, so that a document raised from level ``k - 1`` to ``k`` needs only
        the nodes from ``nested_sizes()[k - 1]`` on."""
        nodes, weights = nested_levels()[level]
        order = list(_nested_order(level))
        return self._placed(np.array(nodes)[order], np.array(weights)[order])

    def _placed(self, nodes: np.ndarray, weights: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """A rule on [-1, 1] moved to the path and spread by this density."""
        u = torch.from_numpy((nodes + 1) / 2)
        w = torch.from_numpy(weights / 2)
        if self.uniform >= 1:
            return u, w
        alphas = self._inverse_cdf(u)
        return alphas, w / self._density(alphas)

    def as_params(self) -> dict[str, Any]:
        return asdict(self)

    def _arctan(self, alphas: torch.Tensor) -> torch.Tensor:
        return torch.atan((alphas - self.center) / self.width)

    def _cauchy_mass(self) -> float:
        ends = self._arctan(torch.tensor([0.0, 1.0], dtype=torch.float64))
        return float(ends[1] - ends[0])

    def _cdf(self, alphas: torch.Tensor) -> torch.Tensor:
        start = self._arctan(torch.zeros((), dtype=torch.float64))
        cauchy = (self._arctan(alphas) - start) / self._cauchy_mass()
        return self.uniform * alphas + (1 - self.uniform) * cauchy

    def _density(self, alphas: torch.Tensor) -> torch.Tensor:
        cauchy = 1 / (self.width * (1 + ((alphas - self.center) / self.width) ** 2))
        return self.uniform + (1 - self.uniform) * cauchy / self._cauchy_mass()

    def _inverse_cdf(self, targets: torch.Tensor) -> torch.Tensor:
        low, high = torch.zeros_like(targets), torch.ones_like(targets)
        for _ in range(60):  # bisection: the CDF is increasing; 2^-60 is below float64
            middle = (low + high) / 2
            below = self._cdf(middle) < targets
            low, high = torch.where(below, middle, low), torch.where(below, high, middle)
        return (low + high) / 2


UNIFORM = NodeDensity()


@cache
def nested_levels() -> tuple[tuple[tuple[float, ...], tuple[float, ...]], ...]:
    """(nodes ascending, weights) of every level of the nested rule, on [-1, 1]."""
    return tuple((tuple(n), tuple(w)) for n, w in json.loads(NESTED_TABLE.read_text()))


def nested_sizes() -> tuple[int, ...]:
    return tuple(len(nodes) for nodes, _ in nested_levels())


@cache
def _nested_order(level: int) -> tuple[int, ...]:
    """Indices of level ``level``'s (ascending) nodes, in the order they are first
    evaluated: the previous level's order, then the new nodes."""
    nodes = nested_levels()[level][0]
    if level == 0:
        return tuple(range(len(nodes)))
    earlier = nested_levels()[level - 1][0]
    position = {x: i for i, x in enumerate(nodes)}
    old = [position[earlier[i]] for i in _nested_order(level - 1)]
    return (*old, *sorted(set(range(len(nodes))) - set(old)))


def fit(alphas: torch.Tensor, profile: torch.Tensor) -> NodeDensity:
    """A density on the band where ``profile`` (the integrand's size at ``alphas``,
    ascending) is above half its peak: centred on its peak, ``SPREAD`` times its
    half-width wide. Plain Gauss-Legendre when the integrand has no such band."""
    peak = int(profile.argmax())
    above = profile >= profile[peak] / 2
    left, right = peak, peak
    while left > 0 and above[left - 1]:
        left -= 1
    while right < len(profile) - 1 and above[right + 1]:
        right += 1
    width = max(MIN_WIDTH, float(alphas[right] - alphas[left]) / 2)
    if width >= FLAT_WIDTH:
        return UNIFORM
    # Rounded: the recorded density is exactly what ran, and reads as a setting.
    return NodeDensity(round(float(alphas[peak]), 2), round(width * SPREAD, 2), UNIFORM_SHARE)
