"""Device selection, checked on CPU by patching torch.cuda.is_available()."""

import pytest
import torch

from kmx_eval.device import resolve_device
from kmx_eval.errors import UnavailableError


def test_auto_picks_cuda_when_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda"
    assert resolve_device("cuda").type == "cuda"
    assert resolve_device("cpu").type == "cpu"


def test_auto_falls_back_to_cpu_and_cuda_without_gpu_is_one_sentence(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(UnavailableError) as info:
        resolve_device("cuda")
    assert "no CUDA GPU" in str(info.value) and "device: auto" in str(info.value)


def test_pin_threads_sets_torch_and_blas_pools():
    from threadpoolctl import threadpool_info

    before = torch.get_num_threads()
    try:
        resolve_device("cpu", threads=1)
        assert torch.get_num_threads() == 1
        assert all(pool["num_threads"] == 1 for pool in threadpool_info())
    finally:
        torch.set_num_threads(before)
