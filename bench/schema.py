"""The results CSV: one row per model x resolution x batch x dtype x device (DESIGN.md s.6).

Empty cells mean "not measured in this run"; the `note` column says why.
"""

# Identity of a point: two rows with the same key measure the same thing.
KEY = ("model", "resolution", "batch_size", "dtype", "device")

COLUMNS = (
    # what was measured
    "model", "family", "resolution", "tokens", "batch_size", "device", "dtype", "backend",
    # counts (deterministic)
    "params", "flops", "flops_analytic", "flops_rel_diff", "unsupported_ops",
    # speed (median over timed repeats; spread = (max - min) / median of per-repeat FPS)
    "fps", "fps_spread", "latency_ms", "repeats",
    # memory, MiB
    "peak_mem_mib", "reserved_mem_mib", "nvml_used_mib", "rss_peak_mib",
    # outcome: ok | oom | error | timeout | skipped
    "status", "note",
    # environment
    "gpu_name", "driver", "cuda", "torch", "triton", "mamba_ssm", "git_commit", "timestamp",
)

# The default sweep: the paper's Fig. 6 range (224 -> 1280) and beyond.
DEFAULT_RESOLUTIONS = (224, 384, 512, 640, 768, 1024, 1280, 1536, 2048)
