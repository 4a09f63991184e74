"""Replay through a real worker: `results verify` (without --local) sends explainq.verify
by name, the worker that holds the model recomputes the rows and the verdicts come back
through the Redis result backend; `results` itself never loads torch."""

from __future__ import annotations

import json
import shutil
import subprocess
from uuid import uuid4

import pytest
from safetensors.torch import load_file, save_file

from contract.model_path import weights_sha256
from tests.processes import BIN, Deployment

TEXTS = ["a gorgeous, witty, seductive movie.", "the film is strictly routine."]


def results(system, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "results"), *args], env=system.env, capture_output=True, text=True, timeout=180
    )


@pytest.mark.slow
def test_a_worker_replays_its_own_rows(system, write):
    lines = "".join(json.dumps({"id": f"r{i}", "text": t}) + "\n" for i, t in enumerate(TEXTS))
    summary = system.submit(write("replay.jsonl", lines), "--method", "lig,kernel_shap",
                            "--param", "n_samples=30")  # fmt: skip
    assert summary["status"]["done"] == len(TEXTS), summary["stderr"]
    batch = summary["batch_id"]

    done = results(system, "verify", "--batch", batch, "--all", "--json", "--timeout", "120")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    n = 2 * len(TEXTS)
    assert report["summary"] == {"checked": n, "reproduced": n, "failed": 0,
                                 "other_weights": False}  # fmt: skip
    assert {(r["document"], r["method"]) for r in report["rows"]} == {
        (f"r{i}", m) for i in range(len(TEXTS)) for m in ("lig", "kernel_shap")
    }
    # recomputed by the worker, on the device kind the rows name, within float32 rounding
    assert all(r["replay_device"] == r["stored_device"] == "cpu" for r in report["rows"])
    assert all(r["tolerance"] == "fp32" and r["cosine"] > 0.9999 for r in report["rows"])

    sampled = results(system, "verify", "--batch", batch, "--sample", "1", "--json")
    assert sampled.returncode == 0, sampled.stdout + sampled.stderr
    assert json.loads(sampled.stdout)["summary"]["checked"] == 1

    one = results(system, "verify", "r1", "--batch", batch, "--method", "lig")
    assert one.returncode == 0, one.stdout + one.stderr
    assert "(document r1, lig): reproduced" in one.stdout
    assert "1 rows checked: 1 reproduced, 0 failed" in one.stderr


@pytest.mark.slow
def test_a_worker_refuses_changed_weights_in_one_line(system, write, tiny_model, tmp_path, request):
    model = shutil.copytree(tiny_model, tmp_path / "copy")  # the worker loads it by path
    # A worker serves one model: one for the copy, on a queue prefix of its own (the
    # verify tasks go to the copy's queue under it, as its chunks do).
    env = {**system.env, "EXPLAINQ_MODEL": str(model), "EXPLAINQ_QUEUE": f"copy-{uuid4().hex[:8]}"}
    system = Deployment(env=env, home=tmp_path)
    system.start_worker(f"copy-{uuid4().hex[:6]}")
    request.addfinalizer(system.stop)
    lines = "".join(json.dumps({"id": f"w{i}", "text": t}) + "\n" for i, t in enumerate(TEXTS))
    summary = system.submit(write("weights.jsonl", lines), "--method", "saliency",
                            "--model", str(model))  # fmt: skip
    assert summary["status"]["done"] == len(TEXTS), summary["stderr"]
    before = weights_sha256(model)
    tensors = load_file(model / "model.safetensors")
    save_file({k: v + 0.05 if v.is_floating_point() else v for k, v in tensors.items()},
              model / "model.safetensors", metadata={"format": "pt"})  # fmt: skip
    after = weights_sha256(model)

    done = results(system, "verify", "--batch", summary["batch_id"], "--all", "--timeout", "120")
    assert done.returncode == 1 and done.stdout == "", done.stdout
    # one line, not the worker's traceback, naming both hashes
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("error: a worker refused: "), done.stderr
    assert before in done.stderr and after in done.stderr

    # weights that cannot be loaded, replayed anyway: the worker raises; its exception
    # comes back as one line, not as a traceback
    (model / "model.safetensors").write_bytes(b"not a safetensors file")
    done = results(system, "verify", "--batch", summary["batch_id"], "--all",
                   "--allow-other-weights", "--timeout", "120")  # fmt: skip
    assert done.returncode == 1 and done.stdout == "", done.stdout
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("error: a worker failed to replay rows "), done.stderr
