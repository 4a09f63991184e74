"""Fixtures shared by the engine's tests."""

from __future__ import annotations

import pytest

from workers.engine import Classifier


@pytest.fixture(scope="session")
def classifier(tiny_model) -> Classifier:
    """The tiny model as the CPU loads it (fp32, no autocast), shared by every module.

    Sharing is safe: tests that switch its attention implementation or first-token
    layer restore them in ``finally``, the engine restores ``autocast`` after its fp32
    passes, and what it keeps in ``classifier.computed`` is a pure function of the
    model: the baselines' logits (each computed alone, unpadded, whichever test asks
    first) and lig's node density (used only by ``nodes="calibrated"``, compared with
    a quadrature's tolerance). A test that changes the weights or wants bf16 autocast,
    or needs a fresh ``computed``, loads a classifier of its own."""
    return Classifier.load(tiny_model)
