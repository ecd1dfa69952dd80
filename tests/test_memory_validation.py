"""The tracer against measurements: on this machine, a real CPU forward measured by torch.profiler's
memory timeline (bench/memory/check.py); on a GPU, torch.cuda.max_memory_allocated."""
import pytest
import torch
from torch import nn

import vittt
from bench.memory.check import check_cpu
from bench.memory.predict import predict_peak, trace_model

TOLERANCE = 0.02  # the required agreement of the forward peak


def _small(name: str, depth: int, img_size: int = 224):
    """`name` with fewer layers: the peak's structure is the same, the CPU scan/TTT references fast."""
    return lambda: vittt.create_model(name, img_size=img_size, depth=depth)


@pytest.mark.parametrize("model, img_size, batch, dtype", [
    (_small("deit_t", 1), 224, 2, "fp32"), (_small("deit_t_sdpa", 1), 224, 2, "fp32"),
    (_small("vittt_t", 1, 64), 64, 2, "fp32"), (_small("vim_t", 1, 64), 64, 2, "fp32"),
    (_small("vittt_t", 1, 64), 64, 8, "bf16"),
], ids=["deit_t", "deit_t_sdpa", "vittt_t", "vim_t", "vittt_t-bf16"])
def test_cpu_forward_peak_matches_the_profiler(model, img_size, batch, dtype):
    """One block each (the CPU references of TTT and of the scan run op by op: vittt_t and vim_t at
    64 px keep this quick; the full models at 224 px are a slow test, and `python -m bench.memory.check`).
    The CPU's oneDNN bf16 GEMMs take scratch buffers, which are not modelled: DeiT's bf16 peak falls
    on one, and at batch 2 so would vittt_t's here (the patch embedding's)."""
    c = check_cpu(model, img_size, batch, dtype)
    assert c.preexisting_predicted == c.preexisting_measured  # weights and input
    assert abs(c.error) <= TOLERANCE, f"{c.model}: predicted {c.predicted} B, measured {c.measured} B"


def test_autocast_in_custom_op_bodies_as_a_real_call():
    """Under autocast a custom op without an autocast kernel of its own runs its body with autocast
    on (the convolutions inside compute in bf16): the traced outputs have the real run's dtypes."""
    factory = _small("vittt_t", 1, 64)
    real: dict[str, torch.dtype] = {}

    def keep_dtype(name: str):
        def hook(module, args, out) -> None:
            real[name] = out.dtype
        return hook

    net = factory().eval()
    for name, module in net.named_modules():
        if name.endswith(("conv2d", "conv_q", "conv_k")):
            module.register_forward_hook(keep_dtype(name))
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
        net(torch.randn(2, 3, 64, 64))
    trace = trace_model(factory, 64, 2, "bf16", "cpu")
    traced = {a.module: a.dtype for a in trace.allocs if a.op == "convolution"}
    assert set(real) == set(traced) and real == traced


class Mixed(nn.Module):
    """bf16 + fp32: the CPU casts the bf16 operand into a float32 temporary first (CUDA does not)."""

    def forward(self, x):
        return x.to(torch.bfloat16) * 2 + x


def test_cpu_casts_mixed_dtype_inputs():
    assert check_cpu(Mixed, 32, 4).error == 0
    cuda = trace_model(Mixed, 32, 4, "fp32", "cuda")
    assert not any(a.what == "input cast (CPU)" for a in cuda.allocs)


class StridedLinear(nn.Module):
    """A Linear with a bias on a non-contiguous input: matmul, then the bias added in place."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(96, 128)

    def forward(self, x):  # [B, 3, 32, 32]
        return self.fc(x.reshape(x.shape[0], 96, 32).transpose(1, 2))


def test_linear_adds_its_bias_in_place_as_a_real_run_does():
    c = check_cpu(StridedLinear, 32, 4)
    assert c.predicted == c.measured


@pytest.mark.slow  # the CPU references at 224 px and the profiler's analysis of them: ~40 s on 2 cores
@pytest.mark.parametrize("model", ["deit_t", "deit_t_sdpa", "vittt_t", _small("vim_t", 4)],
                         ids=["deit_t", "deit_t_sdpa", "vittt_t", "vim_t-depth4"])
def test_cpu_forward_peak_at_224(model):
    """The T models at 224 px (Vim with 4 of its 24 layers: its peak falls in the third layer on,
    and its scan reference steps token by token; `python -m bench.memory.check` runs all 24)."""
    c = check_cpu(model, 224, 2)
    assert abs(c.error) <= TOLERANCE, f"{c.model}: predicted {c.predicted} B, measured {c.measured} B"


@pytest.mark.gpu
@pytest.mark.parametrize("img_size", [224, 1024])
@pytest.mark.parametrize("name", ["deit_t", "deit_t_sdpa", "vittt_t", "vim_t"])
def test_gpu_prediction_matches_max_memory_allocated(name, img_size):
    """The sweep's own memory pass against the prediction for this GPU's profile."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from bench import timing
    from bench.measure import measure_point
    from bench.memory.predict import profile_name
    from bench.models import parse
    from bench.point import make_points, make_setting

    try:
        gpu = profile_name(torch.cuda.get_device_name())
    except ValueError as exc:
        pytest.skip(str(exc))
    quick = timing.TimingPolicy(warmup_s=0.1, min_time_s=0.1, min_repeats=2, max_repeats=5)
    (point,) = make_points([parse(name)], [img_size], batch_size=64, dtype="fp32",
                           setting=make_setting("cuda", quick), metrics=("memory",))
    predicted = predict_peak(name, img_size, 64, "fp32", gpu)
    if not predicted.fits:
        pytest.skip(f"{name}@{img_size} is predicted not to fit the {gpu} profile")
    measured = next(part for part in measure_point(point) if "peak_mem_mib" in part)["peak_mem_mib"] * 2**20
    assert abs(predicted.allocated - measured) <= max(2 * 2**20, 0.01 * measured), \
        f"{name}@{img_size}: predicted {predicted.allocated} B, measured {measured:.0f} B"
