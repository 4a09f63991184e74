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
sentences (``bench/nodes.py``, docs/PERFORMANCE.md): 1% completeness needs 9.9 nodes
on average instead of 17.6, and at most 24 instead of 40.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
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
UNIFORM_SHARE = 0.4  # the mixture's uniform part: measured best of 0.4-0.7
MIN_WIDTH, FLAT_WIDTH = 0.02, 0.45  # a band over 90% of the path: no band at all


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
        nodes, weights = np.polynomial.legendre.leggauss(n_steps)
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


def fit(alphas: torch.Tensor, profile: torch.Tensor) -> NodeDensity:
    """The band where ``profile`` (the integrand's size at ``alphas``, ascending) is
    above half its peak: its centre and half-width. Plain Gauss-Legendre when the
    integrand has no such band."""
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
    return NodeDensity(round(float(alphas[peak]), 2), round(width, 2), UNIFORM_SHARE)
