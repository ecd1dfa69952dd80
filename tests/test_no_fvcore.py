"""Everything but FLOP counting imports and runs without fvcore (GPU images often lack it)."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Runs in a fresh interpreter where `import fvcore` fails as if it were not installed.
CODE = """
import sys
sys.modules["fvcore"] = None  # every `import fvcore...` now raises ModuleNotFoundError

import torch
import bench.kernel_bench, bench.memory, bench.memory_model, bench.sweep, bench.timing, kernels, vittt
from kernels.ttt import triton_fwd

assert bench.memory_model.predict_fields("vittt_t", 32, 1)["pred_fits"] == 1  # the predictor too

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
"""


def test_models_kernels_and_measuring_import_and_run_without_fvcore():
    ran = subprocess.run([sys.executable, "-c", CODE], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert ran.stdout.strip() == "ok: bench.flops alone needs fvcore"
