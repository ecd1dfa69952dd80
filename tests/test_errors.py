"""bench.errors.is_oom: every way a GPU run reports running out of memory is an oom, nothing else is."""
import pytest
import torch

from bench.errors import describe, is_oom

OOM = [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),  # caching allocator
    RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported"),  # runtime
    RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1099511627776 bytes"),
    RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
    RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"),
    RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED"),  # cuDNN 9's name
    RuntimeError("cuFFT error: CUFFT_ALLOC_FAILED"),
]
NOT_OOM = [
    RuntimeError("CUDA error: an illegal memory access was encountered"),
    RuntimeError("CUDA error: CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasGemmEx(...)`"),
    RuntimeError("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED"),
    RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 4x3)"),
    ValueError("out of memory"),  # not from torch or a CUDA library: a message, not a failed allocation
    KeyError("ALLOC_FAILED"),
]


@pytest.mark.parametrize("exc", OOM, ids=lambda e: str(e)[:40])
def test_oom(exc):
    assert is_oom(exc)


@pytest.mark.parametrize("exc", NOT_OOM, ids=lambda e: str(e)[:40])
def test_not_oom(exc):
    assert not is_oom(exc)


def test_describe_is_one_short_line():
    assert describe(OOM[1]) == "RuntimeError: CUDA error: out of memory"
    assert describe(ValueError()) == "ValueError"
    assert len(describe(RuntimeError("x" * 1000), limit=50)) == 50
