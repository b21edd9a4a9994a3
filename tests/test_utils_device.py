"""Device choice and to_host: the values, dtype and shape of the tensor, into `out` too.

The page-locked road runs only on a GPU (benchmarks/bench_gpu.py checks it there, against
`.cpu()`); here the CPU road and the contract both roads share."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from l2bt.errors import InputError
from l2bt.utils.device import resolve_device, to_host


def test_to_host_of_a_cpu_tensor_is_a_view_with_its_values() -> None:
    values = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    host = to_host(values)
    assert host.dtype == np.float32 and host.shape == (2, 3, 4)
    np.testing.assert_array_equal(host, values.numpy())
    values[0, 0, 0] = -1.0
    assert host[0, 0, 0] == -1.0  # no copy


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_to_host_writes_a_strided_slice_into_out(dtype: torch.dtype) -> None:
    frame = torch.randn(3, 1, 9, 11).to(dtype)
    crop = frame[:, 0, 2:7, 1:10]  # non-contiguous (3, 5, 9)
    out = np.full((4, 5, 9), 7.0, dtype=crop.numpy().dtype)
    returned = to_host(crop, out=out[1:])
    assert returned is not None and np.shares_memory(returned, out)
    np.testing.assert_array_equal(out[1:], crop.numpy())
    assert (out[0] == 7.0).all()  # nothing outside `out` touched


def test_half_on_the_tensor_equals_numpys_float16_rounding() -> None:
    # the feature cache converts to float16 before the copy; numpy did it after
    values = torch.randn(4096) * torch.logspace(-9, 5, 4096)  # subnormals to overflow
    out = np.empty(4096, np.float16)
    to_host(values.half(), out=out)
    with np.errstate(over="ignore"):  # the largest values overflow to inf in both
        expected = values.numpy().astype(np.float16)
    np.testing.assert_array_equal(out, expected)


def test_cuda_without_a_gpu_is_an_input_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(InputError, match="no CUDA device"):
        resolve_device("cuda")
