"""The Triton selective-scan kernel against the torch reference and the float64 loop oracle, in the layouts
Vim's block passes, through a whole vim_t forward, and the backend choice.

Runs on the GPU when there is one, else on the CPU under the Triton interpreter (tests/conftest.py sets
TRITON_INTERPRET=1 before triton is imported). The interpreter pays per token step, not per element, so
the sequences here are long only where a length is the point.
"""
import inspect

import pytest
import torch

import vittt
import vittt.vim
from kernels import selective_scan
from kernels.selective_scan import mamba as mamba_mod
from kernels.selective_scan import resolve_backend, selective_scan_loop, selective_scan_ref, triton_fwd

from bench.kernel_inputs import make_scan_inputs
from kernels.testing import rel_err
from selective_scan_inputs import FLAG_IDS, FLAGS, make_inputs, select

ON_GPU = torch.cuda.is_available()
DEVICE = "cuda" if ON_GPU else "cpu"
if not ON_GPU and not triton_fwd.INTERPRETED:
    raise RuntimeError("triton was imported before TRITON_INTERPRET=1 was set; set it in tests/conftest.py")

ALL, NONE = (True, True, True, True), (False, False, False, False)
FP32_TOL = 1e-5  # max|out - ref| / max|ref|
# Half inputs are scanned in float32, as by the reference; what differs is the rounding of the float32 result
# to the half type, at most half an ulp (the unit roundoff u: 2^-8 bf16, 2^-11 fp16) relative to the value.
# The Triton interpreter truncates float32 to bfloat16 (up to one ulp, 2u); the GPU and torch round to nearest.
UNIT_ROUNDOFF = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}
KERNEL_ROUNDING = {torch.bfloat16: 2.0**-8 if ON_GPU else 2.0**-7, torch.float16: 2.0**-11}


def check_fp32(args, kwargs, **launch):
    out = triton_fwd.selective_scan_triton(*args, **kwargs, **launch)
    assert out.shape == args[0].shape and out.dtype == torch.float32 and out.is_contiguous()
    assert rel_err(out, selective_scan_ref(*args, **kwargs)) < FP32_TOL
    assert rel_err(out, selective_scan_loop(*args, **kwargs)) < FP32_TOL


# --- numerics ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("flags", FLAGS, ids=FLAG_IDS)
def test_every_option_fp32(flags):
    """D, z, delta_bias and softplus on and off, at an odd length."""
    check_fp32(*select(make_inputs(1, 5, 37, 3, device=DEVICE, seed=1), flags))


@pytest.mark.parametrize("Bt, L", [(2, 1), (2, 197), (1, 1025)])
def test_lengths_fp32(Bt, L):
    check_fp32(*select(make_inputs(Bt, 5, L, 3, device=DEVICE, seed=L), ALL))


@pytest.mark.parametrize("E, N, block_e", [(40, 16, 16), (40, 5, 64)])
def test_channel_blocks_and_state_sizes(E, N, block_e):
    """A partial last channel block (of several, or one wider than E); N a power of two (no mask) and not."""
    check_fp32(*select(make_inputs(2, E, 9, N, device=DEVICE, seed=E + N), ALL), block_e=block_e)


@pytest.mark.parametrize("flags", [ALL, NONE], ids=["DzbS", "----"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_half_precision(dtype, flags):
    args, kwargs = select(make_inputs(2, 5, 37, 3, dtype, device=DEVICE, seed=7), flags)
    out = triton_fwd.selective_scan_triton(*args, **kwargs)
    assert out.dtype == dtype
    # against the float64 oracle: the kernel's rounding plus 1e-5 for float32 arithmetic; against the torch
    # reference: both roundings
    assert rel_err(out, selective_scan_loop(*args, **kwargs)) < KERNEL_ROUNDING[dtype] + 1e-5
    assert rel_err(out, selective_scan_ref(*args, **kwargs)) < KERNEL_ROUNDING[dtype] + UNIT_ROUNDOFF[dtype] + 1e-5


def test_math_stays_fp32_under_autocast():
    """Triton does its own casts: a bfloat16 autocast region changes nothing, bit for bit."""
    args, kwargs = select(make_inputs(2, 5, 9, 3, device=DEVICE, seed=3), ALL)
    plain = selective_scan(*args, **kwargs, backend="triton")
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        cast = selective_scan(*args, **kwargs, backend="triton")
    assert cast.dtype == torch.float32 and torch.equal(cast, plain)


# --- vim_t: the layouts its blocks pass, and the whole forward --------------------------------------------------

def run_vim_t(depth):
    """vim_t at 224 px, batch 1, with the triton backend (every scan call recorded: the arguments in the layouts
    the block passes, backward scans on flipped inputs, and the output) and the same model with the torch one."""
    calls = []

    def record(*args, **kwargs):
        out = selective_scan(*args, **kwargs)
        calls.append((inspect.signature(selective_scan).bind(*args, **kwargs).arguments, out))
        return out

    torch.manual_seed(0)
    model = vittt.create_model("vim_t", 224, depth=depth, backend="triton").to(DEVICE).eval()
    assert model.kernel_backend(DEVICE) == "triton"
    x = torch.randn(1, 3, 224, 224, device=DEVICE)
    mp = pytest.MonkeyPatch()
    mp.setattr(vittt.vim, "selective_scan", record)
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        mp.undo()
    model.cfg.backend = "torch"
    with torch.no_grad():
        ref = model(x)
    assert len(calls) == 2 * depth and all(call["backend"] == "triton" for call, _ in calls)
    return calls, out, ref


@pytest.fixture(scope="module")
def vim_t_two_blocks():
    return run_vim_t(depth=2)


def test_vim_scans_in_vims_layouts(vim_t_two_blocks):
    """Each scan of two blocks (forward, backward, forward, backward) read in place from the views the block
    passes, against the reference on the same views."""
    calls, _, _ = vim_t_two_blocks
    for call, out in calls:
        args = {k: v for k, v in call.items() if k != "backend"}
        assert not any(args[k].is_contiguous() for k in ("delta", "B", "C", "z"))
        with torch.no_grad():
            assert rel_err(out, selective_scan_ref(**args)) < FP32_TOL


def test_benchmark_and_compile_layout_is_vims(vim_t_two_blocks):
    """The layout the kernel benchmark times and the compile check compiles (`make_scan_inputs`) has the
    strides of Vim's forward-scan arguments."""
    call = vim_t_two_blocks[0][0][0]
    real = [call[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    model = make_scan_inputs(1, 384, 197, 16, torch.float32, "meta")
    assert [(x.shape, x.stride()) for x in model] == [(x.shape, x.stride()) for x in real]


def test_vim_t_forward_matches_torch(vim_t_two_blocks):
    """vim_t at 224 px with two blocks: the triton backend against the torch one."""
    _, out, ref = vim_t_two_blocks
    assert rel_err(out, ref) < FP32_TOL


@pytest.mark.slow  # 48 scans of 197 tokens, one interpreter step per token: ~20 s on a busy 2-core machine
def test_vim_t_full_depth_forward_matches_torch():
    _, out, ref = run_vim_t(depth=24)
    assert rel_err(out, ref) < FP32_TOL


# --- backend choice, errors, compile specs -------------------------------------------------------------------

def test_auto_backend(monkeypatch):
    assert resolve_backend("auto", "cpu") == "torch"
    assert resolve_backend("auto", "meta") == "torch"
    assert resolve_backend("triton", "cpu") == "triton"
    monkeypatch.setattr(mamba_mod, "_load", lambda: (None, "ImportError: no selective_scan_cuda"))
    assert resolve_backend("auto", "cuda") == "triton"
    with torch.device("meta"):
        assert vittt.create_model("vim_t", 224, depth=1).kernel_backend("cuda") == "triton"
    monkeypatch.setattr(mamba_mod, "_load", lambda: (object(), ""))
    assert resolve_backend("auto", "cuda") == "mamba_ssm"


def test_rejects_double_inputs():
    args, kwargs = select(make_inputs(1, 2, 3, 2, torch.float64, device=DEVICE), NONE)
    with pytest.raises(TypeError, match="float32/float16/bfloat16 u"):
        triton_fwd.selective_scan_triton(*args, **kwargs)


def test_cpu_without_interpreter_fails_clearly(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    args, kwargs = select(make_inputs(1, 2, 3, 2), NONE)
    with pytest.raises(RuntimeError, match="needs CUDA tensors.*TRITON_INTERPRET=1"):
        triton_fwd.selective_scan_triton(*args, **kwargs)
