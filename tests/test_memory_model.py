"""Peak-memory prediction (bench/memory/predict.py): toy modules with peaks computed by hand, the
CUDA-specific choices, the custom ops' memory models, and one-line errors for bad input."""
import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import vittt
from bench.memory import predict as memory_model
from bench.memory.allocator import MiB
from bench.memory.profiles import PROFILES, profile_name
from bench.kernel_inputs import make_scan_inputs, make_ttt_inputs
from bench.memory.predict import predict_cpu_peak, predict_fields, predict_peak, trace_model
from bench.memory.trace import MissingMemoryModel, TraceError
from kernels import _memory
from kernels._memory import TRACE, Buffer, OpMemory, declare_memory

R, B = 32, 4
IMAGE = 3 * R * R * 4  # bytes of one fp32 input image


class Chain(nn.Module):
    """Two elementwise steps: the second result is made while the first is alive."""

    def forward(self, x):
        x = x * 2
        x = x + 1
        return x.sum()


class Head(nn.Module):
    """Flatten + Linear: one matmul, so the cuBLAS workspace is taken."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * R * R, 10)

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_toy_chain_cpu_peak_by_hand():
    p = predict_cpu_peak(Chain, R, B)
    assert p.baseline == B * IMAGE  # the input; no weights
    assert p.allocated - p.baseline == 2 * B * IMAGE  # x*2 and x*2+1 alive together
    assert p.requested == p.allocated == p.reserved  # the CPU counts requests as asked


def test_toy_chain_gpu_peak_by_hand():
    p = predict_peak(Chain, R, B, "fp32", "h100")
    # 3 blocks of 49152 B (multiples of 512) in one 2 MiB small segment; no matmul, no workspace
    assert (p.baseline, p.allocated, p.reserved) == (B * IMAGE, 3 * B * IMAGE, 2 * MiB)
    assert [part.what for part in p.composition] == ["input", "aten.mul", "aten.add"]


@pytest.mark.parametrize("gpu", ["h100", "a100"])
def test_toy_head_counts_blocks_and_the_cublas_workspace(gpu):
    p = predict_peak(Head, R, B, "fp32", gpu)
    workspace = PROFILES[gpu].cublas_workspace
    weight, bias, out = 3 * R * R * 10 * 4, 512, 512  # bias (40 B) and output (160 B) round up to 512 B
    assert p.baseline == weight + bias + B * IMAGE + workspace
    assert p.allocated == p.baseline + out
    assert p.requested == 3 * R * R * 10 * 4 + 40 + B * IMAGE + workspace + 4 * 10 * B


def test_prediction_is_deterministic_and_its_parts_add_up():
    p, q = predict_peak("deit_t", 224, 64), predict_peak("deit_t", 224, 64)
    assert p == q
    assert sum(part.block for part in p.composition) == p.allocated
    attention = [part for part in p.composition if part.module == "blocks.1.attn"]
    assert any(part.what == "aten._softmax" and part.shape == (64, 3, 197, 197) for part in attention)


def test_cuda_sdpa_never_materialises_the_attention_map():
    for dtype in ("fp32", "bf16"):
        trace = trace_model("deit_t_sdpa", 224, 8, dtype, "cuda")
        assert not any(a.shape[-2:] == (197, 197) for a in trace.allocs)
        lse = [a for a in trace.allocs if a.what == "log-sum-exp"]
        assert len(lse) == (12 if dtype == "bf16" else 0)  # flash returns one; memory-efficient does not here
    cpu = trace_model("deit_t", 224, 8, "fp32", "cpu")
    assert any(a.shape[-2:] == (197, 197) for a in cpu.allocs)  # eager attention does, on any device


def _vim_2(img_size: int = 64):
    """A two-layer vim_t, cheap to trace (the CPU scan reference runs step by step)."""
    return lambda: vittt.create_model("vim_t", img_size=img_size, depth=2)


def test_cuda_rms_norm_is_one_kernel():
    cuda, cpu = trace_model(_vim_2(), 64, 2, "fp32", "cuda"), trace_model(_vim_2(), 64, 2, "fp32", "cpu")
    assert [a.op for a in cuda.allocs if a.module.endswith(".norm")][:2] == ["_fused_rms_norm"] * 2  # output, rstd
    assert "aten.pow" in {a.op for a in cpu.allocs if a.module.endswith(".norm")}


def test_backends_assumed_and_overridden():
    default = predict_peak(_vim_2(224), 224, 64)
    if not torch.cuda.is_available():  # on a CUDA machine: the backend its auto choice resolves to
        assert default.backends["vittt_bench::selective_scan"] == "mamba_ssm"
        assert "selective_scan=mamba_ssm" in default.note
    triton = predict_peak(_vim_2(224), 224, 64, backends={"selective_scan": "triton"})
    assert triton.backends["vittt_bench::selective_scan"] == "triton"
    assert triton.allocated < default.allocated  # no input copies, no extra outputs
    with pytest.raises(ValueError, match="no_such_op.*declared: "):
        predict_peak("vim_t", 224, 64, backends={"no_such_op": "x"})
    with pytest.raises(ValueError, match="selective_scan declares no memory model for backend 'cuda9'"):
        predict_peak("vim_t", 224, 64, backends={"selective_scan": "cuda9"})


def test_fits_against_the_profile_capacity():
    assert predict_peak("deit_t", 1280, 64, "fp32", "h100").fits
    l40s = predict_peak("deit_t", 1280, 64, "fp32", "l40s")
    assert not l40s.fits and l40s.allocated > PROFILES["l40s"].capacity_bytes


def test_sweep_fields():
    fields = predict_fields("vittt_t", 224, 64, "bf16", "a100")
    assert set(fields) == {"pred_peak_mem_mib", "pred_requested_mib", "pred_reserved_mib", "pred_gpu", "pred_fits",
                           "mem_analytic_mib", "note"}
    assert fields["pred_gpu"] == "a100" and fields["pred_fits"] == 1
    assert fields["pred_requested_mib"] <= fields["pred_peak_mem_mib"] <= fields["pred_reserved_mib"]
    assert fields["mem_analytic_mib"] == fields["pred_requested_mib"]  # the closed form, exact
    assert "ttt_linear_bidir=triton" in fields["note"]
    assert predict_fields(lambda: Head(), R, B)["mem_analytic_mib"] is None  # a user's model has no closed form


def test_profiles_by_name_or_device_name():
    assert profile_name("NVIDIA H100 80GB HBM3") == "h100" and profile_name("L40S") == "l40s"
    assert profile_name("NVIDIA A100-SXM4-40GB") == "a100_40gb" and profile_name("NVIDIA L4") == "l4"
    with pytest.raises(ValueError, match="no GPU profile for 'Tesla T4'; known: a100"):
        profile_name("Tesla T4")


# ---- bad input: one clear line each ----------------------------------------------------------------

def _one_line(exc_info) -> str:
    text = str(exc_info.value)
    assert "\n" not in text
    return text


def test_unknown_gpu_profile():
    with pytest.raises(ValueError) as err:
        predict_peak("deit_t", 224, 8, gpu="tpu")
    assert _one_line(err) == f"unknown GPU profile 'tpu'; known: {', '.join(sorted(PROFILES))}"


def test_bad_model_dtype_and_batch():
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        predict_peak("nope", 224, 8)
    with pytest.raises(ValueError, match="unknown dtype 'fp8'"):
        predict_peak("deit_t", 224, 8, "fp8")
    with pytest.raises(ValueError, match="batch must be >= 1"):
        predict_peak("deit_t", 224, 0)
    with pytest.raises(TraceError, match="returned int, not an nn.Module"):
        predict_peak(lambda: 3, 224, 8)


class DataDependent(nn.Module):
    def forward(self, x):
        return x * 2 if x.sum().item() > 0 else x  # a value fake tensors do not have


def test_untraceable_forward():
    with pytest.raises(TraceError) as err:
        predict_peak(DataDependent, R, B)
    assert _one_line(err).startswith("DataDependent: the forward could not be traced on fake cuda tensors: ")


@torch.library.custom_op("memtest::double", mutates_args=())
def _double(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@_double.register_fake
def _(x):
    return torch.empty_like(x)


@torch.library.custom_op("memtest::scratch", mutates_args=())
def _scratch(x: torch.Tensor, backend: str) -> torch.Tensor:
    return x + 1


@_scratch.register_fake
def _(x, backend):
    return torch.empty_like(x)


declare_memory("memtest::scratch", kern=lambda x, **_: OpMemory(before=(Buffer("scratch", (x.shape[0], 256), torch.float32),)),
               torch=TRACE)


class UsesOp(nn.Module):
    def __init__(self, op, *args):
        super().__init__()
        self.op, self.args = op, args

    def forward(self, x):
        return self.op(x, *self.args)


def test_custom_op_without_memory_model():
    with pytest.raises(MissingMemoryModel) as err:
        predict_peak(lambda: UsesOp(torch.ops.memtest.double), R, B)
    assert "custom op memtest::double declares no memory model" in _one_line(err)


def test_custom_op_memory_model_per_backend():
    kern = predict_peak(lambda: UsesOp(torch.ops.memtest.scratch, "kern"), R, B)
    assert kern.allocated == 2 * B * IMAGE + 512 * -(-B * 256 * 4 // 512)  # input, scratch, output
    assert kern.backends == {"memtest::scratch": "kern"}
    traced = predict_peak(lambda: UsesOp(torch.ops.memtest.scratch, "torch"), R, B)
    assert traced.allocated == 2 * B * IMAGE  # the body (x + 1) traced: input and output
    with pytest.raises(MissingMemoryModel) as err:
        predict_peak(lambda: UsesOp(torch.ops.memtest.scratch, "gpu9"), R, B)
    assert _one_line(err).endswith("declares no memory model for backend 'gpu9' (declared: kern, torch)")


def test_importable_names():
    assert set(memory_model.__all__) >= {"predict_peak", "predict_cpu_peak", "predict_fields", "profile", "profile_name"}


class _Allocations(TorchDispatchMode):
    """The byte sizes of the storages the ops under it create (tensors in `known` excluded)."""

    def __init__(self, known):
        super().__init__()
        self.seen, self.sizes = {t.untyped_storage()._cdata for t in known if t is not None}, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage()._cdata not in self.seen and t.untyped_storage().nbytes():
                self.seen.add(t.untyped_storage()._cdata)
                self.sizes.append(t.untyped_storage().nbytes())
        return out


def _launched(launcher, args, *extra) -> list[int]:
    with torch.inference_mode(), _Allocations(args) as recorded:
        launcher(*args, *extra)
    return recorded.sizes


def _declared(op: str, backend: str, names, args, out_bytes: int) -> list[int]:
    memory = _memory.memory_model(op).backends[backend](**dict(zip(names, args)))
    return [b.nbytes for b in memory.before] + [out_bytes] + [b.nbytes for b in memory.after]


def test_triton_ttt_memory_model_is_what_the_launcher_allocates():
    """The declared model of the Triton TTT backend (its output only) against its launcher's
    allocations (Triton's interpreter, CPU tensors), inputs laid out as the Vittt mixer passes them."""
    from kernels.ttt import triton_fwd

    args = make_ttt_inputs(1, 2, 20, 16, 16, torch.float32, "cpu")
    names = ("q", "k", "v", "lr", "tok", "W0", "b0", "ln_w", "ln_b")
    assert _launched(triton_fwd.ttt_linear_bidir_triton, args, 16) == \
        _declared("vittt_bench::ttt_linear_bidir", "triton", names, args, args[0].numel() * 4)


def test_triton_scan_memory_model_is_what_the_launcher_allocates():
    """Likewise for the Triton selective scan, inputs laid out as Vim passes them."""
    from kernels.selective_scan import triton_fwd

    args = make_scan_inputs(1, 8, 5, 4, torch.float32, "cpu", dt_rank=2)
    names = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
    assert _launched(triton_fwd.selective_scan_triton, args, True) == \
        _declared("vittt_bench::selective_scan", "triton", names, args, args[0].numel() * 4)
