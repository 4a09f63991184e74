"""What an explanation row records about where it was computed."""

from __future__ import annotations

import torch

from workers.model_holder import describe_device


def test_a_row_records_the_gpu_and_its_precision(monkeypatch):
    # No GPU here: the name is what torch would report for one.
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: f"NVIDIA H200 ({device})")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert describe_device("cuda:0", autocast=True) == (
        "cuda:0 NVIDIA H200 (cuda:0) (CUDA_VISIBLE_DEVICES=1), bf16 autocast"
    )
    assert describe_device("cuda:0") == "cuda:0 NVIDIA H200 (cuda:0) (CUDA_VISIBLE_DEVICES=1)"
    assert describe_device("cpu") == "cpu"
