"""What a failed measurement was: out of memory (a result: the point does not fit) or an error.

One classifier for every place that measures on a device (the sweep, the kernel benchmark), so a
point that runs out of memory inside a library (cuBLAS creating its handle, a cuDNN workspace) is
an `oom` row like one the caching allocator refuses, never an `error`.
"""
import re
import sys

# Messages of allocation failures: the CUDA runtime ("CUDA error: out of memory"), torch's CPU
# allocator ("can't allocate memory"), the CUDA libraries' status names (CUBLAS_STATUS_ALLOC_FAILED,
# CUDNN_STATUS_ALLOC_FAILED, CUFFT_ALLOC_FAILED, CUSOLVER/CUSPARSE_STATUS_ALLOC_FAILED, cuDNN 9's
# CUDNN_STATUS_INTERNAL_ERROR_{HOST,DEVICE}_ALLOCATION_FAILED) and the runtime's cudaErrorMemoryAllocation.
_OOM_TEXT = re.compile(r"out of memory|can't allocate memory|ALLOC_FAILED|ALLOCATION_FAILED|cudaErrorMemoryAllocation",
                       re.IGNORECASE)


def is_oom(exc: BaseException) -> bool:
    """True when `exc` says that memory ran out: torch.OutOfMemoryError (the CUDA caching allocator),
    or a RuntimeError (torch's wrapper of CUDA and library errors) with an allocation-failure message."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and _OOM_TEXT.search(str(exc)) is not None


# Messages of CUDA errors after which the process's CUDA context is unusable: every later call fails too.
_STICKY_TEXT = re.compile(r"illegal memory access|device-side assert|unspecified launch failure|misaligned address|"
                          r"illegal instruction|cudaErrorLaunchFailure", re.IGNORECASE)


def is_sticky_cuda_error(exc: BaseException) -> bool:
    """True for a CUDA error that leaves the context unusable (a sweep sharing the process must stop)."""
    return isinstance(exc, RuntimeError) and _STICKY_TEXT.search(str(exc)) is not None


def describe(exc: BaseException, limit: int = 300) -> str:
    """`Type: first line of the message`, at most `limit` characters: a row's note."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
