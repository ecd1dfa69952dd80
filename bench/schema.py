"""The results CSV: one row per point (model x resolution x batch x dtype x device) and setting.

Every column is listed here once, with its meaning; docs/schema.md is generated from this table
(`python -m bench.schema > docs/schema.md`, checked by a test). An empty cell means "not measured
in this run", and the row's `note` says why.
"""

# A point: what is measured.
KEY = ("model", "resolution", "batch_size", "dtype", "device")

# The setting: everything that changes what a measurement means. A row is reused (resume) or
# compared (compare) only with a point of the same key and the same setting.
SETTING = (
    "device_name", "backend", "threads", "warmup_s", "min_time_s", "min_repeats", "max_repeats", "cuda_graphs",
    "tf32", "lock_clocks", "pred_gpu", "torch", "triton", "mamba_ssm", "cuda", "driver",
)

_GROUPS = {
    "The point": {
        "model": "registered model name, or the model's reference (`pkg.module:factory`, `/abs/path/file.py:factory`, `timm:<name>`)",
        "family": "model family (a vittt config's `family`, a model's `family` attribute, else `custom`)",
        "resolution": "input images are resolution x resolution px",
        "tokens": "patch tokens N = (resolution / patch)^2, class token not counted (empty when the model has no vittt config)",
        "batch_size": "images per forward",
        "dtype": "fp32, or bf16 / fp16 under autocast (weights stay fp32)",
        "device": "cpu or cuda",
    },
    "The setting (part of a row's identity)": {
        "device_name": "GPU model (from NVML) or CPU model (from /proc/cpuinfo)",
        "backend": "kernel the model's sequence mixer runs on this device (TTT: torch/triton; scan: torch/triton/mamba_ssm; DeiT: eager/sdpa; n/a: no custom op)",
        "metrics": "what this row attempted, space-separated: flops fps memory mem_pred (a later run that asks for more measures the point again)",
        "threads": "torch CPU threads while timing (empty on a GPU)",
        "warmup_s": "warm-up: untimed forwards (at least one) until this many seconds have passed",
        "min_time_s": "timed forwards continue until both min_repeats and this many seconds are reached",
        "min_repeats": "fewest timed forwards (one batch each)",
        "max_repeats": "most timed forwards",
        "cuda_graphs": "1: the timed forwards are replays of a captured CUDA graph; 0: eager calls",
        "tf32": "TF32 for float32 matmuls and convolutions as requested (--tf32 on|off)",
        "lock_clocks": "1: GPU clocks were asked to be locked for the run (--lock-clocks); see clocks_locked",
        "pred_gpu": "GPU profile of the memory prediction (mem_pred)",
        "torch": "torch version", "triton": "triton version", "mamba_ssm": "mamba-ssm version (empty: not installed)",
        "cuda": "CUDA version torch was built with", "driver": "NVIDIA driver version",
    },
    "Precision in force (read in the measuring process)": {
        "matmul_precision": "torch.get_float32_matmul_precision() (highest = true fp32, high = TF32)",
        "cudnn_tf32": "torch.backends.cudnn.allow_tf32 (1/0)",
        "cudnn_benchmark": "torch.backends.cudnn.benchmark (1/0)",
    },
    "Counts (deterministic, per image; FLOPs in fvcore units: one multiply-add = 1)": {
        "params": "parameters (sum of numel)",
        "flops": "FLOPs per image counted by fvcore (traced on the meta device)",
        "flops_analytic": "FLOPs per image from the family's closed form (empty for a family without a spec)",
        "flops_rel_diff": "(flops - flops_analytic) / flops_analytic",
        "unsupported_ops": "ops fvcore does not count (elementwise), op:calls;...",
    },
    "Speed (time-based repeats, one batch per repeat)": {
        "fps": "images/s: median over the timed repeats",
        "fps_iqr": "interquartile range of the per-repeat FPS over the median (the robust spread)",
        "latency_ms": "median time of one batch",
        "latency_p10_ms": "10th percentile of the batch time",
        "latency_p90_ms": "90th percentile of the batch time",
        "repeats": "timed forwards taken",
        "timed_s": "total seconds of the timed forwards",
    },
    "Memory measured, MiB": {
        "peak_mem_mib": "torch.cuda.max_memory_allocated over one forward after reset_peak_memory_stats (weights, input and cuBLAS workspace included)",
        "requested_mem_mib": "peak of the unrounded requests (memory_stats requested_bytes.all.peak)",
        "reserved_mem_mib": "torch.cuda.max_memory_reserved over the same forward (segments the allocator holds)",
        "nvml_used_mib": "device-wide used memory from NVML, peak sampled over the timed forwards (all processes, CUDA context included)",
        "rss_peak_mib": "CPU runs: peak resident set of the whole measuring process over one forward (interpreter and torch included)",
    },
    "Memory predicted and analytic, MiB": {
        "pred_peak_mem_mib": "predicted max_memory_allocated for this forward on the pred_gpu profile (a prediction, no GPU used)",
        "pred_requested_mib": "predicted peak of the unrounded requests",
        "pred_reserved_mib": "estimated max_memory_reserved",
        "pred_fits": "1 when the predicted reserved memory fits the pred_gpu profile's usable memory, else 0",
        "pred_err": "(peak_mem_mib - pred_peak_mem_mib) / peak_mem_mib, where both exist",
        "mem_analytic_mib": "peak from the family's closed form (paper Eq. 14 style)",
    },
    "Energy": {
        "energy_j_per_img": "energy per image over the timed forwards (J)",
        "energy_window_s": "length of the energy counter's window (s)",
        "energy_source": "nvml-board (GPU board sensor) or rapl-package (CPU package counter)",
    },
    "GPU state over the timed window (NVML)": {
        "gpu_uuid": "the GPU's UUID",
        "sm_clock_mhz_start": "SM clock at the start", "sm_clock_mhz_end": "SM clock at the end",
        "mem_clock_mhz_start": "memory clock at the start", "mem_clock_mhz_end": "memory clock at the end",
        "temp_c_start": "temperature at the start (C)", "temp_c_end": "temperature at the end (C)",
        "power_w_start": "power draw at the start (W)", "power_w_end": "power draw at the end (W)",
        "power_limit_w": "enforced power limit (W)",
        "throttle_start": "clock throttle reasons at the start (names joined by +; none = not throttled)",
        "throttle_end": "clock throttle reasons at the end",
        "persistence": "persistence mode (1/0)",
        "clocks_locked": "1 when clocks were locked for this row",
    },
    "Outcome": {
        "status": "ok | oom | error | timeout | skipped (skipped: nothing asked for was measured; the note says why)",
        "note": "why a cell is empty, what went wrong, and flags such as noisy",
    },
    "Provenance": {
        "git_commit": "commit of the suite (-dirty when tracked files differed)",
        "timestamp": "UTC time the row was written",
    },
}

DOCS: dict[str, str] = {name: text for group in _GROUPS.values() for name, text in group.items()}
COLUMNS: tuple[str, ...] = tuple(DOCS)

# Columns of older files: read (and compared where they mean something), never written.
LEGACY = {"gpu_name": "device_name (GPU rows only)", "fps_spread": "(max - min) / median of the per-repeat FPS; compare uses it when fps_iqr is missing"}

# What a row's status means for a re-run: these are results; error and timeout are measured again.
RESULTS = ("ok", "oom", "skipped")


def markdown() -> str:
    """docs/schema.md: every column with its meaning, grouped."""
    lines = ["# The results CSV", "",
             "One row per point (model, resolution, batch size, dtype, device) and setting. Generated by",
             "`python -m bench.schema > docs/schema.md` from `bench/schema.py`; do not edit by hand.", "",
             f"A row's identity: the point ({', '.join(f'`{c}`' for c in KEY)}) and its setting",
             f"({', '.join(f'`{c}`' for c in SETTING)}), plus `metrics` (a row counts as done for a run that asks",
             "for the same or fewer metrics). A resumed run reuses only rows of the same identity; `compare` matches rows",
             "on the point and compares measurements only between rows of the same setting (device model included;",
             "versions are noted). Empty cells were not measured; the `note` says why.", ""]
    for title, group in _GROUPS.items():
        lines += [f"## {title}", "", "| column | meaning |", "|---|---|"]
        lines += [f"| `{name}` | {text} |" for name, text in group.items()]
        lines.append("")
    lines += ["## Columns of older files", "", "Read, never written:", "", "| column | meaning |", "|---|---|"]
    lines += [f"| `{name}` | {text} |" for name, text in LEGACY.items()]
    return "\n".join(lines) + "\n"


# The default sweep: the paper's Fig. 6 range (224 -> 1280) and beyond.
DEFAULT_RESOLUTIONS = (224, 384, 512, 640, 768, 1024, 1280, 1536, 2048)

if __name__ == "__main__":
    print(markdown(), end="")
