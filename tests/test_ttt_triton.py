"""The Triton TTT-Linear kernel against the torch dual form, and the pure parts of its benchmark.

Runs on the GPU when there is one, else on the CPU under the Triton interpreter. triton.jit
reads TRITON_INTERPRET when a kernel is defined (triton.language's own helpers included, at
`import triton`), so it is set here before the first import of triton in the process.
"""
import os
import subprocess
import sys

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

ON_GPU = torch.cuda.is_available()
if not ON_GPU:
    os.environ["TRITON_INTERPRET"] = "1"

from bench.kernel_inputs import make_ttt_inputs  # noqa: E402
import kernels  # noqa: E402
from kernels.testing import rel_err  # noqa: E402
from kernels.ttt import triton_fwd  # noqa: E402
from kernels.ttt.dual import ttt_linear_dual  # noqa: E402

if not ON_GPU and not triton_fwd.INTERPRETED:
    raise RuntimeError("triton was imported in this process before TRITON_INTERPRET=1 was set (triton.language "
                       "itself then cannot be interpreted); set it in tests/conftest.py or run this file alone")

DEVICE = "cuda" if ON_GPU else "cpu"
TOL = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 5e-3}  # max|a-b| / max|b|


def inputs(L: int, dtype: torch.dtype, n_dir: int = 1, d: int = 64, B: int = 2, H: int = 2, seed: int = 0):
    """Arguments in the mixer's strided layout; one direction drops the leading dim."""
    x = make_ttt_inputs(B, H, L, d, 16, dtype, DEVICE, n_dir=n_dir, seed=seed)
    return [t[0] for t in x] if n_dir == 1 else list(x)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("L", [16, 33, 196])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_matches_dual(dtype, L, reverse):
    x = inputs(L, dtype)
    out = triton_fwd.ttt_linear_triton(*x, mini_batch=16, reverse=reverse)
    ref = ttt_linear_dual(*x, mini_batch=16, reverse=reverse)
    assert out.shape == ref.shape == (2, 2, L, 64) and out.dtype == dtype
    assert rel_err(out, ref) < TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_bidir_one_launch(dtype):
    x = inputs(33, dtype, n_dir=2)  # each direction has its own q, k, v, lr, tok and state
    out = triton_fwd.ttt_linear_bidir_triton(*x, mini_batch=16)
    assert out.shape == (2, 2, 2, 33, 64) and out.dtype == dtype
    for i in (0, 1):
        ref = ttt_linear_dual(*(t[i] for t in x), mini_batch=16, reverse=bool(i))
        assert rel_err(out[i], ref) < TOL[dtype]


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("dtype, d", [(torch.float16, 64), (torch.float32, 32), (torch.float32, 128)],
                         ids=["fp16-d64", "fp32-d32", "fp32-d128"])
def test_other_dtypes_and_head_dims(dtype, d, reverse):
    x = inputs(33, dtype, d=d)
    out = triton_fwd.ttt_linear_triton(*x, mini_batch=16, reverse=reverse)
    assert rel_err(out, ttt_linear_dual(*x, mini_batch=16, reverse=reverse)) < TOL[dtype]


def test_strided_inputs_read_in_place():
    x = inputs(33, torch.bfloat16)
    assert x[0].stride(-1) != 1 and x[2].stride(-1) == 1  # q after the mixer's conv1d; v from its projection
    strided = triton_fwd.ttt_linear_triton(*x, mini_batch=16, reverse=True)
    dense = triton_fwd.ttt_linear_triton(*(t.contiguous() for t in x), mini_batch=16, reverse=True)
    assert torch.equal(strided, dense)


def mixer_ttt_args(monkeypatch, img_size: int = 80) -> list[torch.Tensor]:
    """The arguments a real Vittt mixer (head dim 64, 2 heads, 25 tokens, batch 2) passes to the
    Triton backend, captured from its forward."""
    from vittt import create_model

    captured = []

    def capture(*args):
        captured.extend(args[:9])
        return torch.empty(args[0].shape, dtype=args[0].dtype, device=args[0].device)

    model = create_model("vittt_t", img_size=img_size, depth=1, dim=128, num_heads=2, backend="triton")
    with monkeypatch.context() as m, torch.inference_mode():
        m.setattr(triton_fwd, "ttt_linear_bidir_triton", capture)
        model.to(DEVICE).eval()(torch.randn(2, 3, img_size, img_size, device=DEVICE))
    return captured


def test_bench_inputs_have_the_mixers_layout(monkeypatch):
    mixer = mixer_ttt_args(monkeypatch)
    bench = make_ttt_inputs(2, 2, 25, 64, 16, torch.float32, DEVICE)
    assert [t.shape for t in bench] == [t.shape for t in mixer]
    assert [t.stride() for t in bench] == [t.stride() for t in mixer]


class _AtenLog(TorchDispatchMode):
    """Records every aten op that runs inside it."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def test_launcher_allocates_only_the_output(monkeypatch):
    """On the exact layout the mixer passes (q, k with a strided head dim), the launcher hands the
    kernel the input tensors themselves, and the output is the only tensor it creates."""
    args = mixer_ttt_args(monkeypatch)
    assert args[0].stride(-1) != 1 and args[1].stride(-1) != 1
    launched = []
    monkeypatch.setattr(triton_fwd, "_kernel", {(4, 2): lambda *a, **kw: launched.append(a)})  # grid (B*H, dirs)
    with _AtenLog() as log:
        out = triton_fwd.ttt_linear_bidir_triton(*args, mini_batch=16)
    assert log.ops == ["aten.empty.memory_format"]
    (passed,) = launched
    tensors = [a for a in passed if isinstance(a, torch.Tensor)]  # q, k, v, lr, out, tok, W0, b0, ln_w, ln_b
    assert len(tensors) == 10 and tensors[4] is out
    assert all(t is x for t, x in zip(tensors[:4] + tensors[5:], args))


@pytest.mark.parametrize("change, match", [
    (lambda x: {"mini_batch": 8, "tok": x[4][:8]}, "power of two"),
    (lambda x: {"tok": x[4][:8]}, "tok must have shape"),
    (lambda x: {"lr": x[3][:, :1]}, "lr must have shape"),
], ids=["mini_batch", "tok", "lr"])
def test_public_op_rejects_bad_arguments_for_triton(change, match):
    """The op checks once, before the kernel (whose launcher checks nothing)."""
    x = inputs(16, torch.float32)
    kwargs = {**dict(zip(("q", "k", "v", "lr", "tok", "W0", "b0", "ln_w", "ln_b"), x)), "mini_batch": 16}
    with pytest.raises(ValueError, match=match):
        kernels.ttt_linear(**{**kwargs, **change(x)}, backend="triton")


def test_head_dim_outside_the_kernel_is_rejected():
    x = inputs(16, torch.float32, d=48)
    with pytest.raises(ValueError, match="head dim 48"):
        kernels.ttt_linear(*x, mini_batch=16, backend="triton")


def test_cpu_without_interpreter_fails_clearly():
    """Without TRITON_INTERPRET (and without a GPU) the module imports, and a call says what to do."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    code = "\n".join([
        "import torch",
        "from kernels.ttt import triton_fwd",
        "from bench.kernel_inputs import make_ttt_inputs",
        "assert not triton_fwd.INTERPRETED and not torch.cuda.is_available()",
        "assert triton_fwd._kernel.keys == ['D', 'MB', 'L', 'n_programs']  # the autotuner's key: grid size included",
        "x = [t[0] for t in make_ttt_inputs(1, 1, 16, 64, 16, torch.float32, 'cpu', n_dir=1)]",
        "try:",
        "    triton_fwd.ttt_linear_triton(*x, mini_batch=16, reverse=False)",
        "except RuntimeError as e:",
        "    print(e)",
        "else:",
        "    raise SystemExit('no error raised')",
    ])
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "TRITON_INTERPRET=1" in r.stdout and "CUDA" in r.stdout


def test_autotune_key_carries_the_grid():
    """n_programs = B*H*directions is a kernel argument (the autotune key reads it): one launch over both
    directions and two launches over one each are tuned apart."""
    x = make_ttt_inputs(64, 3, 196, 64, 16, torch.bfloat16, "meta")
    out = torch.empty(x[0].shape, dtype=x[0].dtype, device="meta")
    names = triton_fwd._ttt_linear_fwd_kernel.arg_names
    for n in (1, 2):
        grid, args, _ = triton_fwd.launch_args(*(t[:n] for t in x), out[:n], mini_batch=16, rev0=0)
        assert grid == (64 * 3, n) and args[names.index("n_programs")] == 64 * 3 * n
