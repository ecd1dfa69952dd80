"""FLOP count of the selective scan, and the convention behind it.

Convention. fvcore counts one FLOP per multiply-add of a contraction (matmul, einsum, conv)
and counts no elementwise op. A selective scan is made only of elementwise work plus one
small contraction per token, so fvcore's rule would call it nearly free. For this op we
therefore count the reference (`naive.selective_scan_ref`) op by op:
  * one FLOP per output element of every elementwise arithmetic op (mul, add, exp, softplus,
    silu, addcmul, ...); a fused multiply-add (`addcmul`) is one op, so one multiply-add is
    one FLOP here as in fvcore;
  * fvcore's MAC rule for the readout C_t . h_t (a matmul): one FLOP per multiply-add.
Per (batch, channel, token, state) that is 5 FLOPs: delta*A, exp, (delta*u)*B, the state
update dA*h + dBu, and the readout MAC; per (batch, channel, token) 1 for delta*u, plus 1 each
for delta + delta_bias, softplus and D*u + y, plus 2 for the gate y * silu(z):
    5*Bt*E*L*N + Bt*E*L * (1 + has_delta_bias + delta_softplus + has_D + 2*has_z).
`selective_scan_flops` equals fvcore's count of the reference traced with `elementwise_handles()`
(tested). Mamba papers and code use another common estimate, 9*Bt*L*E*N (+Bt*E*L for D, for z);
`selective_scan_flops_mamba` returns it for comparison only.
"""
from math import prod
from typing import Any, Callable

Handle = Callable[[list[Any], list[Any]], int]

# aten ops counted at one FLOP per output element (reference ops plus their common kin).
ELEMENTWISE_OPS = (
    "aten::add", "aten::add_", "aten::sub", "aten::sub_", "aten::rsub", "aten::mul", "aten::mul_",
    "aten::div", "aten::div_", "aten::neg", "aten::exp", "aten::log", "aten::log1p",
    "aten::sigmoid", "aten::softplus", "aten::silu", "aten::addcmul", "aten::addcmul_",
)


def _output_elements(inputs: list[Any], outputs: list[Any]) -> int:
    """Elements of the op's output; `outputs` are torch.jit graph values with complete tensor types
    (read directly, so that this module, imported with the kernels, needs no fvcore)."""
    return prod(outputs[0].type().sizes())


def elementwise_handles() -> dict[str, Handle]:
    """fvcore handles for ELEMENTWISE_OPS: `FlopCountAnalysis(...).set_op_handle(**elementwise_handles())`."""
    return {name: _output_elements for name in ELEMENTWISE_OPS}


def selective_scan_flops(Bt: int, E: int, L: int, N: int, *, has_D: bool, has_z: bool,
                         has_delta_bias: bool, delta_softplus: bool) -> int:
    """FLOPs of one selective scan under this module's convention (see the module docstring)."""
    per_token = 1 + has_delta_bias + delta_softplus + has_D + 2 * has_z
    return Bt * E * L * (5 * N + per_token)


def selective_scan_flops_mamba(Bt: int, E: int, L: int, N: int, *, has_D: bool, has_z: bool) -> int:
    """Mamba's usual estimate, 9*Bt*L*E*N (+Bt*E*L for D, +Bt*E*L for z); for comparison only."""
    return Bt * E * L * (9 * N + has_D + has_z)
