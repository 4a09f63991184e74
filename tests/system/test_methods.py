"""Several attribution methods per batch, end to end: chosen at `producer submit` (which
checks them, and the caps on their parameters, without torch), explained by a real
worker, stored with their quality, agreement and the document's vector, and read back by
`results quality`, `show` and `similar`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import BIN, explainq_env

BLOCKED = ("torch", "transformers", "captum", "workers")


@pytest.fixture
def no_torch_env(tmp_path: Path) -> dict[str, str]:
    """An environment whose PYTHONPATH shadows the heavy packages with ones that refuse
    to import, and whose database is a SQLite file nobody else uses."""
    for name in BLOCKED:
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(
            f"raise ImportError('{name} is blocked in this test')\n"
        )
    env = explainq_env(home=tmp_path, database_url=f"sqlite:///{tmp_path / 'x.db'}")
    return {**env, "PYTHONPATH": str(tmp_path)}


def submit(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "producer"), "submit", "/dev/null", *args],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (("--method", "lig,nope"), {}, "unknown method nope; known: lig, saliency"),
        (("--method", "lig", "--method", "typo"), {}, "unknown method typo"),
        (("--n-steps", "5000"), {}, "--n-steps 5000 is over the limit EXPLAINQ_MAX_STEPS=1024"),
        (("--n-steps", "64"), {"EXPLAINQ_MAX_STEPS": "32"}, "EXPLAINQ_MAX_STEPS=32"),
        (("--param", "max_steps=2048"), {}, "EXPLAINQ_MAX_STEPS=1024"),
        (("--param", "n_samples=100000"), {}, "EXPLAINQ_MAX_SAMPLES=4096"),
        (("--chunk-size", "2000"), {}, "EXPLAINQ_MAX_CHUNK_SIZE=1024"),
        (("--param", "n_samples=0"), {}, "n_samples=0: must be at least 1"),
        (("--param", "colour=red"), {}, "expected key=value with a key of: n_steps"),
        ((), {"EXPLAINQ_N_STEPS": "5000"}, "EXPLAINQ_N_STEPS=5000 is over the limit"),
        ((), {"EXPLAINQ_INTERNAL_BATCH_SIZE": "9999"}, "EXPLAINQ_MAX_INTERNAL_BATCH_SIZE=4096"),
    ],
)
def test_producer_refuses_without_torch(no_torch_env, args, env, expected):
    done = submit({**no_torch_env, **env}, *args)
    assert done.returncode == 1 and done.stdout == ""
    assert expected in " ".join(done.stderr.split()), done.stderr  # rich may wrap
    assert "Traceback" not in done.stderr


def test_the_blocker_blocks(no_torch_env):
    check = subprocess.run(
        [sys.executable, "-c", "import torch"], env=no_torch_env, capture_output=True, text=True
    )
    assert "torch is blocked" in check.stderr


def test_settings_methods_are_the_engines():
    from db.settings import METHODS as ADVERTISED
    from workers.engine.methods import METHODS

    assert list(ADVERTISED) == list(METHODS)  # same names, and --help lists them alike


def test_every_tunable_parameter_belongs_to_some_method():
    from db.params import TUNABLE
    from workers.engine.methods import METHODS

    known = set()
    for module in METHODS.values():
        known |= set(module.PARAMS) | set(getattr(module, "ADAPTIVE_PARAMS", {}))
    assert set(TUNABLE) <= known, set(TUNABLE) - known
