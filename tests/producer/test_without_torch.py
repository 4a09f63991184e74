"""The producer needs none of the worker's heavy dependencies."""

from __future__ import annotations

import subprocess
import sys

import pytest

BLOCKED = ("torch", "transformers", "captum", "workers")


@pytest.fixture
def no_torch_path(tmp_path):
    """A PYTHONPATH entry whose packages shadow the heavy ones and refuse to import."""
    for name in BLOCKED:
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(
            f"raise ImportError('{name} is blocked in this test')\n"
        )
    return str(tmp_path)


@pytest.mark.slow
def test_producer_submits_and_waits_without_torch(system, write, no_torch_path):
    env = {**system.env, "PYTHONPATH": no_torch_path}
    check = subprocess.run(
        [sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True
    )
    assert "torch is blocked" in check.stderr  # the blocker itself works
    path = write("plain.txt", "the producer never loads a model\n")
    done = system.producer("submit", str(path), "--wait", "--json", PYTHONPATH=no_torch_path)
    assert done.returncode == 0, done.stderr
    assert '"done": 1' in done.stdout
