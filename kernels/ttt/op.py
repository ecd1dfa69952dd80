"""TTT-Linear as torch.library custom ops, and the public functions that validate and dispatch.

Each call is one `vittt_bench::ttt_linear(_bidir)` node in a traced graph; the fake (meta)
implementations return shapes only, so models trace on the meta device for FLOP counting.
"""
import torch
from torch import Tensor

from kernels import _autocast
from kernels._checks import shape_checks
from kernels._memory import TRACE, declare_memory, output_only
from kernels.ttt.dual import ttt_linear_dual

BACKENDS = ("torch", "triton", "auto")
_ARGS = ("q", "k", "v", "lr", "tok", "W0", "b0", "ln_w", "ln_b")
TRITON_HEAD_DIMS = (16, 32, 64, 128)


def triton_supports(head_dim: int, mini_batch: int) -> bool:
    """Whether the Triton kernel takes this shape: its tl.dot tiles need a listed head dim and a
    power-of-two mini-batch of at least 16."""
    return head_dim in TRITON_HEAD_DIMS and mini_batch >= 16 and not mini_batch & (mini_batch - 1)


def resolve_backend(backend: str, device: torch.device, head_dim: int | None = None,
                    mini_batch: int | None = None) -> str:
    """Map "auto" to "triton" on CUDA (when the kernel takes head_dim and mini_batch, if given) and
    to "torch" otherwise; reject unknown names, and "triton" for a shape its kernel does not take."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown TTT-Linear backend {backend!r}; allowed: {', '.join(BACKENDS)}")
    fits = head_dim is None or triton_supports(head_dim, mini_batch or 0)
    if backend == "auto":
        return "triton" if torch.device(device).type == "cuda" and fits else "torch"
    if backend == "triton" and not fits:
        raise ValueError(f"the Triton kernel takes head dim in {TRITON_HEAD_DIMS} and mini_batch a power of two "
                         f">= 16 (tl.dot tiles), got head dim {head_dim}, mini_batch {mini_batch}")
    return backend


def check_args(args: tuple[Tensor, ...], mini_batch: int, lead: tuple[int, ...] = ()) -> None:
    """Raise ValueError naming the first argument (in `ttt_linear`'s order) whose shape or device
    breaks the contract; `lead` = (2,) for the stacked directions of `ttt_linear_bidir`."""
    prefix = "ttt_linear_bidir: " if lead else ""
    n = len(lead)
    for name, x in zip(_ARGS, args):
        if tuple(x.shape[:n]) != lead:
            raise ValueError(f"{prefix}{name} needs a leading direction dim of 2, got {tuple(x.shape)}")
    if mini_batch < 1:
        raise ValueError(f"mini_batch must be >= 1, got {mini_batch}")
    q = args[0]
    if q.dim() != n + 4:
        raise ValueError(f"{prefix}q must be [B, H, L, d], got shape {tuple(q.shape[n:])}")
    B, H, L, d = q.shape[n:]
    if L < 1:
        raise ValueError(f"{prefix}sequence length L must be >= 1, got {L}")
    want = ((B, H, L, d), (B, H, L, d), (B, H, L, d), (B, H, L), (mini_batch,), (H, d, d), (H, d), (H, d), (H, d))
    for name, x, shape in zip(_ARGS, args, want):
        if x.shape[n:] != shape:
            raise ValueError(f"{prefix}{name} must have shape {shape} (B={B}, H={H}, L={L}, d={d}, "
                             f"mini_batch={mini_batch}), got {tuple(x.shape[n:])}")
        if x.device != q.device:
            raise ValueError(f"{prefix}{name} is on {x.device} but q is on {q.device}")


def _dispatch(backend: str, bidir: bool):
    """The implementation for (a resolved backend, single or bidirectional); triton is imported lazily."""
    if backend == "triton":
        from kernels.ttt import triton_fwd

        return triton_fwd.ttt_linear_bidir_triton if bidir else triton_fwd.ttt_linear_triton
    return _bidir_dual if bidir else ttt_linear_dual


def _bidir_dual(q: Tensor, k: Tensor, v: Tensor, lr: Tensor, tok: Tensor, W0: Tensor, b0: Tensor, ln_w: Tensor,
                ln_b: Tensor, mini_batch: int) -> Tensor:
    """Both directions with the dual form: direction 0 forward, direction 1 reverse -> [2,B,H,L,d]."""
    args = (q, k, v, lr, tok, W0, b0, ln_w, ln_b)
    return torch.stack([ttt_linear_dual(*(x[i] for x in args), mini_batch, reverse=bool(i)) for i in (0, 1)])


@torch.library.custom_op("vittt_bench::ttt_linear", mutates_args=())
def _ttt_linear_op(q: Tensor, k: Tensor, v: Tensor, lr: Tensor, tok: Tensor, W0: Tensor, b0: Tensor,
                   ln_w: Tensor, ln_b: Tensor, mini_batch: int, reverse: bool, backend: str) -> Tensor:
    return _dispatch(backend, bidir=False)(q, k, v, lr, tok, W0, b0, ln_w, ln_b, mini_batch, reverse)


@torch.library.custom_op("vittt_bench::ttt_linear_bidir", mutates_args=())
def _ttt_linear_bidir_op(q: Tensor, k: Tensor, v: Tensor, lr: Tensor, tok: Tensor, W0: Tensor, b0: Tensor,
                         ln_w: Tensor, ln_b: Tensor, mini_batch: int, backend: str) -> Tensor:
    return _dispatch(backend, bidir=True)(q, k, v, lr, tok, W0, b0, ln_w, ln_b, mini_batch)


@_ttt_linear_op.register_fake
def _(q, k, v, lr, tok, W0, b0, ln_w, ln_b, mini_batch, reverse, backend):
    return q.new_empty(q.shape)  # contiguous, as both backends return


@_ttt_linear_bidir_op.register_fake
def _(q, k, v, lr, tok, W0, b0, ln_w, ln_b, mini_batch, backend):
    return q.new_empty(q.shape)


# Memory per backend: "torch" is the dual form in plain PyTorch (traced); the Triton launcher reads
# every input in place through its strides, so "triton" allocates only its output.
declare_memory("vittt_bench::ttt_linear", torch=TRACE, triton=output_only)
declare_memory("vittt_bench::ttt_linear_bidir", torch=TRACE, triton=output_only)


# Under autocast: float32 inside, output in q's dtype (kernels/_autocast.py).
_autocast.register("ttt_linear", "keep")
_autocast.register("ttt_linear_bidir", "keep")


def ttt_linear(q: Tensor, k: Tensor, v: Tensor, lr: Tensor, tok: Tensor, W0: Tensor, b0: Tensor, ln_w: Tensor,
               ln_b: Tensor, *, mini_batch: int = 16, reverse: bool = False, backend: str = "auto",
               check: bool = True) -> Tensor:
    """TTT-Linear forward (docs/kernels.md): q, k, v [B,H,L,d]; lr [B,H,L]; tok [mini_batch]; W0 [H,d,d];
    b0, ln_w, ln_b [H,d] -> [B,H,L,d] in q's dtype. Computed in float32, also under autocast (the
    Triton kernel feeds its matmuls q's dtype and accumulates in float32; docs/kernels.md).
    reverse=True scans from the end (flip L, op, flip L). check=False skips the argument checks, for
    a caller that ran them once for all its calls (a model at build): nothing else checks them."""
    args = (q, k, v, lr, tok, W0, b0, ln_w, ln_b)
    with shape_checks():
        if check:
            check_args(args, mini_batch)
        backend = resolve_backend(backend, q.device, q.shape[-1], mini_batch)
    return _ttt_linear_op(*args, mini_batch, reverse, backend)


def ttt_linear_bidir(q: Tensor, k: Tensor, v: Tensor, lr: Tensor, tok: Tensor, W0: Tensor, b0: Tensor,
                     ln_w: Tensor, ln_b: Tensor, *, mini_batch: int = 16, backend: str = "auto",
                     check: bool = True) -> Tensor:
    """Both scan directions in one op. Every argument of `ttt_linear` gains a leading dim of 2
    (0 = forward, 1 = reverse); returns [2,B,H,L,d], both in original token order, equal to
    stack(ttt_linear(dir 0), ttt_linear(dir 1, reverse=True)). check as in `ttt_linear`."""
    args = (q, k, v, lr, tok, W0, b0, ln_w, ln_b)
    with shape_checks():
        if check:
            check_args(args, mini_batch, lead=(2,))
        backend = resolve_backend(backend, q.device, q.shape[-1], mini_batch)
    return _ttt_linear_bidir_op(*args, mini_batch, backend)
