"""Tamper evidence end to end: a batch explained by a real worker with four methods is
sealed by `producer submit --wait`, its rows' digests (computed by the worker's writes)
verify, and its audit bundle passes its own verify.py in an isolated Python."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.processes import BIN

TEXTS = [
    "a gorgeous, witty, seductive movie.",
    "Couldn't stand it — strictly routine 😀",
    "l'ennui, à mourir : 我 不 喜欢",
]


def results(system, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "results"), *args], env=system.env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
def test_a_batch_explained_by_a_worker_is_sealed_and_verifies(system, write, tmp_path):
    lines = "".join(json.dumps({"id": f"t{i}", "text": t}) + "\n" for i, t in enumerate(TEXTS))
    summary = system.submit(write("audit.jsonl", lines), "--method", "lig,saliency",
                            "--method", "attention,occlusion")  # fmt: skip
    assert summary["status"]["done"] == len(TEXTS), summary["stderr"]
    batch, line = summary["batch_id"], summary["seal"]
    assert line.startswith(f"explainq-seal v1 batch={batch} rows={4 * len(TEXTS)} root=")
    assert line in summary["stderr"]

    checked = results(system, "verify", "--integrity", "--batch", batch, "--seal", line)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert results(system, "seal", batch).stdout.strip() == line

    bundle = tmp_path / "bundle"
    exported = results(system, "export", "--audit", "--batch", batch, "-o", str(bundle))
    assert exported.returncode == 0, exported.stderr
    verified = subprocess.run([sys.executable, "-I", str(bundle / "verify.py"), "--seal", line],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr

    models = json.loads(results(system, "models", "--json").stdout)
    assert any(m["explanations"] >= 4 * len(TEXTS) and m["last_used"] for m in models), models
