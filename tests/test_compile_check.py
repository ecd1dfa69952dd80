"""scripts/compile_check.py: one real ahead-of-time compile (its ptxas report parsed) and the failure rule.

The full check (every target, dtype, head dim and config; 1-2 minutes) runs in .ci/run. It needs
triton imported without TRITON_INTERPRET, which this test process has set, so it runs in a child.
"""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CODE = """
import sys
sys.path.insert(0, "scripts")
import compile_check as cc  # first: it clears TRITON_INTERPRET (inherited from this process) before triton loads

ttt = cc.KERNELS[0]
r = cc.compile_one(ttt, "sm_89", "bf16", 32, ttt.configs[0])
assert not r.error and 0 < r.registers <= 255 and r.spill_stores >= 0 and r.spill_loads >= 0, r
bad = cc.compile_one(ttt, "sm_89", "bf16", 48, ttt.configs[0])  # tl.arange needs a power of two
assert bad.error and bad.registers is None, bad

made_up = [cc.Result("ttt_linear_fwd", "sm_90", "bf16", 64, "w4 s2", 255, 60, 60),  # forbidden spill
           cc.Result("ttt_linear_fwd", "sm_90", "fp32", 64, "w4 s2", 255, 900, 900),  # allowed
           cc.Result("ttt_linear_fwd", "sm_90", "fp16", 64, "w8 s2", 212, 0, 0),
           cc.Result("ttt_linear_fwd", "sm_80", "fp16", 128, "w4 s1", error="PTXASError: boom")]
for line in cc.failures(made_up, cc.KERNELS):
    print(line)
"""


def test_compiles_one_point_and_applies_the_spill_rule():
    ran = subprocess.run([sys.executable, "-c", CODE], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert ran.stdout.splitlines() == [
        "spills: ttt_linear_fwd sm_90 bf16 size 64 [w4 s2]: 60 B stores, 60 B loads",
        "compile failed: ttt_linear_fwd sm_80 fp16 size 128 [w4 s1]: PTXASError: boom",
    ]
