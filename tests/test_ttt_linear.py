"""TTT-Linear: dual form vs the primal loop, op plumbing (reverse, bidir, meta, trace), FLOPs, input checks."""
import re

import pytest
import torch

from kernels.testing import rel_err
from kernels.ttt import resolve_backend, ttt_linear, ttt_linear_bidir, ttt_linear_flops
from kernels.ttt.dual import ttt_linear_dual
from kernels.ttt.naive import ttt_linear_loop

ARGS = ("q", "k", "v", "lr", "tok", "W0", "b0", "ln_w", "ln_b")


def make_inputs(B=2, H=3, L=33, d=16, mini_batch=16, dtype=torch.float32, seed=0, dirs=()):
    """Realistic scales: lr = sigmoid(.)/d, tok = 1/i + small offset, W0 ~ N(0, 0.02); dirs=(2,) stacks directions."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda *s: torch.randn(*dirs, *s, generator=g)  # noqa: E731
    x = {"q": rand(B, H, L, d), "k": rand(B, H, L, d), "v": rand(B, H, L, d),
         "lr": torch.sigmoid(rand(B, H, L)) / d,
         "tok": 1 / torch.arange(1, mini_batch + 1) + 0.01 * rand(mini_batch),
         "W0": 0.02 * rand(H, d, d), "b0": 0.02 * rand(H, d), "ln_w": 1 + 0.1 * rand(H, d), "ln_b": 0.1 * rand(H, d)}
    return [x[n].to(dtype) for n in ARGS]


def flip_seq(args):
    """Flip q, k, v, lr along the sequence (dim 2); the parameters stay."""
    return [x.flip(2) if n in ("q", "k", "v", "lr") else x for n, x in zip(ARGS, args)]


def loop64(args, mini_batch=16):
    """The float64 oracle on the exact values of `args` (which may be half precision)."""
    return ttt_linear_loop(*(x.double() for x in args), mini_batch)


@pytest.mark.parametrize("L,d,mini_batch", [(1, 16, 16), (15, 16, 16), (17, 16, 16), (64, 32, 16), (196, 32, 16),
                                            (17, 16, 5), (9, 16, 1)])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_dual_matches_loop(L, d, mini_batch, dtype, tol):
    args = make_inputs(L=L, d=d, mini_batch=mini_batch, dtype=dtype)
    out = ttt_linear_dual(*args, mini_batch)
    ref = loop64(args, mini_batch)
    assert out.dtype == dtype and out.shape == args[0].shape
    assert rel_err(out, ref) < tol
    # the test-time update matters: without it (tok = 0) the output is far from the oracle
    frozen = [torch.zeros_like(x) if n == "tok" else x for n, x in zip(ARGS, args)]
    assert rel_err(ttt_linear_dual(*frozen, mini_batch), ref) > 1e-2


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 1e-3), (torch.bfloat16, 8e-3)])
def test_half_precision(dtype, tol):
    args = make_inputs(L=37, d=32, dtype=dtype)
    out = ttt_linear(*args, backend="torch")
    assert out.dtype == dtype
    assert rel_err(out, loop64(args)) < tol  # fp32 inside: only the output rounding remains


def test_reverse_is_flip_op_flip():
    args = make_inputs(L=37)
    out = ttt_linear(*args, reverse=True)
    torch.testing.assert_close(out, ttt_linear(*flip_seq(args)).flip(2), rtol=0, atol=0)
    assert rel_err(out, loop64(flip_seq(args)).flip(2)) < 1e-5
    assert rel_err(out, ttt_linear(*args)) > 1e-2  # and it is not the forward direction


def test_bidir_is_stack_of_singles():
    args = make_inputs(L=37, dirs=(2,))
    out = ttt_linear_bidir(*args)
    fwd = ttt_linear(*(x[0] for x in args))
    rev = ttt_linear(*(x[1] for x in args), reverse=True)
    assert out.shape == (2, *args[0].shape[1:])
    torch.testing.assert_close(out, torch.stack([fwd, rev]), rtol=0, atol=0)


def test_fake_impl_on_meta():
    meta = [torch.empty_like(x, device="meta") for x in make_inputs(B=4, H=2, L=196, d=8)]
    out = ttt_linear(*meta, reverse=True)
    assert out.device.type == "meta" and out.shape == (4, 2, 196, 8)
    meta2 = [torch.empty_like(x, device="meta") for x in make_inputs(B=4, H=2, L=196, d=8, dirs=(2,))]
    out2 = ttt_linear_bidir(*meta2)
    assert out2.device.type == "meta" and out2.shape == (2, 4, 2, 196, 8)


def test_fakes_match_real_ops_on_strided_inputs():
    """torch.library.opcheck: the fakes report the real ops' shape, dtype and strides, also for the
    permuted views the Vittt mixer passes ([n,B,L,H,d] memory seen as [n,B,H,L,d])."""
    x = make_inputs(B=2, H=3, L=21, d=8, dirs=(2,))
    x[:3] = [t.permute(0, 1, 3, 2, 4).contiguous().permute(0, 1, 3, 2, 4) for t in x[:3]]  # q, k, v strided
    checks = ("test_schema", "test_faketensor")
    torch.library.opcheck(torch.ops.vittt_bench.ttt_linear_bidir, (*x, 16, "torch"), test_utils=checks)
    torch.library.opcheck(torch.ops.vittt_bench.ttt_linear, (*(t[1] for t in x), 16, True, "torch"), test_utils=checks)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_trace_has_one_node_per_call(device):
    args = [x.to(device) for x in make_inputs(L=20)]
    args2 = [x.to(device) for x in make_inputs(L=20, dirs=(2,))]

    def f(args, args2):
        return ttt_linear(*args) + ttt_linear(*args, reverse=True) + ttt_linear_bidir(*args2).sum(0)

    kinds = [n.kind() for n in torch.jit.trace(f, (args, args2)).graph.nodes()]
    assert kinds.count("vittt_bench::ttt_linear") == 2
    assert kinds.count("vittt_bench::ttt_linear_bidir") == 1
    assert not [k for k in kinds if k.startswith("aten::") and k not in ("aten::add", "aten::sum")]


class _Dual(torch.nn.Module):
    def __init__(self, mini_batch, reverse):
        super().__init__()
        self.mini_batch, self.reverse = mini_batch, reverse

    def forward(self, *args):
        return ttt_linear_dual(*args, mini_batch=self.mini_batch, reverse=self.reverse)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("L,mini_batch,reverse", [(1, 16, False), (16, 16, False), (33, 16, False), (40, 16, False),
                                                  (40, 16, True), (17, 5, False), (7, 1, False)])
def test_flops_formula_equals_fvcore(L, mini_batch, reverse):
    FlopCountAnalysis = pytest.importorskip("fvcore.nn", reason="FLOP counting needs fvcore").FlopCountAnalysis
    B, H, d = 2, 3, 8
    args = make_inputs(B=B, H=H, L=L, d=d, mini_batch=mini_batch)
    fca = FlopCountAnalysis(_Dual(mini_batch, reverse), tuple(args))
    fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    assert set(fca.by_operator()) == {"matmul", "layer_norm"}
    assert ttt_linear_flops(B, H, L, d, mini_batch) == fca.total()


def test_flops_formula_scale():
    # 196 tokens = 12 full mini-batches + 4: 2*196 + 192 token-matmuls of d^2, m^2 sums 12*256 + 16
    assert ttt_linear_flops(1, 1, 196, 64, 16) == (2 * 196 + 192) * 64**2 + 2 * (12 * 256 + 16) * 64 + 8 * 196 * 64
    assert ttt_linear_flops(2, 3, 196, 64, 16) == 6 * ttt_linear_flops(1, 1, 196, 64, 16)


def _replace(args, name, value):
    return [value if n == name else x for n, x in zip(ARGS, args)]


@pytest.mark.parametrize("name,shape,message", [
    ("k", (2, 3, 32, 16), "k must have shape"),
    ("v", (2, 3, 33, 8), "v must have shape"),
    ("lr", (2, 3, 33, 1), "lr must have shape"),
    ("tok", (15,), "tok must have shape"),
    ("W0", (3, 16, 8), "W0 must have shape"),
    ("b0", (2, 16), "b0 must have shape"),
    ("ln_w", (3, 8), "ln_w must have shape"),
    ("ln_b", (3, 16, 1), "ln_b must have shape"),
    ("q", (2, 3, 0, 16), "L must be >= 1"),
    ("q", (3, 33, 16), "q must be [B, H, L, d]"),
])
def test_bad_shapes_raise(name, shape, message):
    args = make_inputs()
    if name == "q" and shape[-2] == 0:  # L = 0 everywhere, so only the length check can fire
        args = make_inputs(L=0)
    else:
        args = _replace(args, name, torch.zeros(shape))
    with pytest.raises(ValueError, match=re.escape(message)):
        ttt_linear(*args)
    with pytest.raises(ValueError, match=re.escape(message)):
        ttt_linear_bidir(*(torch.stack([x, x]) for x in args))


def test_bad_arguments_raise():
    args = make_inputs()
    with pytest.raises(ValueError, match="leading direction dim of 2"):
        ttt_linear_bidir(*args)
    with pytest.raises(ValueError, match="mini_batch must be >= 1"):
        ttt_linear(*args, mini_batch=0)
    with pytest.raises(ValueError, match="tok must have shape"):
        ttt_linear(*args, mini_batch=8)
    with pytest.raises(ValueError, match="allowed: torch, triton, auto"):
        ttt_linear(*args, backend="cuda")
    with pytest.raises(ValueError, match="is on meta"):
        ttt_linear(*_replace(args, "W0", args[5].to("meta")))


def test_resolve_backend():
    assert resolve_backend("auto", torch.device("cpu")) == "torch"
    assert resolve_backend("auto", torch.device("cuda")) == "triton"
    assert resolve_backend("triton", torch.device("cpu")) == "triton"
    assert resolve_backend("torch", torch.device("cuda")) == "torch"
    with pytest.raises(ValueError, match="'tilelang'.*allowed: torch, triton, auto"):
        resolve_backend("tilelang", torch.device("cpu"))


def test_triton_backend_dispatch(monkeypatch):
    """backend="triton" calls kernels.ttt.triton_fwd with the contract's positional arguments."""
    from kernels.ttt import triton_fwd

    calls = []

    def fake(name):
        return lambda *a: calls.append((name, a[9:])) or torch.zeros_like(a[0])

    monkeypatch.setattr(triton_fwd, "ttt_linear_triton", fake("single"))
    monkeypatch.setattr(triton_fwd, "ttt_linear_bidir_triton", fake("bidir"))
    ttt_linear(*make_inputs(mini_batch=32), mini_batch=32, reverse=True, backend="triton")
    ttt_linear_bidir(*make_inputs(dirs=(2,)), backend="triton")
    assert calls == [("single", (32, True)), ("bidir", (16,))]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_auto_dispatches_to_triton_on_cuda():
    args = make_inputs(L=196, d=32)
    ref = ttt_linear_dual(*args, 16)
    out = ttt_linear(*(x.cuda() for x in args))  # auto -> triton
    assert rel_err(out.cpu(), ref) < 1e-4
    args2 = make_inputs(L=196, d=32, dirs=(2,))
    out2 = ttt_linear_bidir(*(x.cuda() for x in args2))
    assert rel_err(out2.cpu(), ttt_linear_bidir(*args2, backend="torch")) < 1e-4


def test_auto_picks_triton_only_for_shapes_the_kernel_takes():
    cuda = torch.device("cuda")  # resolving needs no GPU: it only reads the device type
    assert resolve_backend("auto", cuda, head_dim=64, mini_batch=16) == "triton"
    assert resolve_backend("auto", cuda, head_dim=48, mini_batch=16) == "torch"
    assert resolve_backend("auto", cuda, head_dim=64, mini_batch=8) == "torch"
    assert resolve_backend("triton", cuda, head_dim=128, mini_batch=32) == "triton"
    with pytest.raises(ValueError, match="head dim 48, mini_batch 16"):  # asked for, but the kernel cannot
        resolve_backend("triton", cuda, head_dim=48, mini_batch=16)
    with pytest.raises(ValueError, match="mini_batch 8"):
        resolve_backend("triton", torch.device("cpu"), head_dim=64, mini_batch=8)
