"""Everything but FLOP counting imports and runs without fvcore (GPU images often lack it): the
models, kernels and predictor, and a speed-only sweep from the command line; asking for FLOPs is one
line and exit status 2."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Runs in a fresh interpreter where `import fvcore` fails as if it were not installed.
CODE = """
import sys
sys.modules["fvcore"] = None  # every `import fvcore...` now raises ModuleNotFoundError

import torch
import bench.kernel_bench, bench.memory.measured, bench.memory.predict, bench.sweep, bench.timing, kernels, vittt
from kernels.ttt import triton_fwd

assert bench.memory.predict.predict_fields("vittt_t", 32, 1)["pred_fits"] == 1  # the predictor too

torch.manual_seed(0)
with torch.inference_mode():
    for name in ("vittt_t", "deit_t", "vim_t"):
        model = vittt.create_model(name, img_size=32, depth=1).eval()
        out = model(torch.randn(1, 3, 32, 32))
        assert out.shape == (1, 1000) and bool(out.isfinite().all()), name
try:
    import bench.flops
except ModuleNotFoundError:
    print("ok: bench.flops alone needs fvcore")

from bench.cli import main

out = sys.argv[1]
common = ["--models", "vittt_t", "deit_t", "--resolutions", "64", "--out", out + "/results", "--reports", out + "/reports",
          "--no-progress", "--min-time", "0", "--warmup-time", "0", "--repeats", "1", "--device", "cpu"]
assert main(common + ["--metrics", "fps", "memory"]) == 0
try:
    main(common + ["--metrics", "flops"])
except SystemExit as e:
    print("flops refused with status", e.code)
"""


def test_models_kernels_and_measuring_import_and_run_without_fvcore(tmp_path):
    from bench import csvio

    ran = subprocess.run([sys.executable, "-c", CODE, str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "ok: bench.flops alone needs fvcore" in ran.stdout and "flops refused with status 2" in ran.stdout
    assert "--metrics flops needs fvcore" in ran.stderr
    rows = csvio.read_rows(tmp_path / "results" / "cpu-deit_t-vittt_t-fps-memory.csv")
    assert len(rows) == 2 and all(float(r["fps"]) > 0 and r["flops"] == "" for r in rows)
