"""The papers' efficiency claims, as data: what is claimed, about which models and metric, and the
criterion a measurement must meet. bench/report/verdicts.py judges any table of these; bench/report/page.py
renders them; neither holds a paper's number. A new table is a new ClaimsTable in TABLES.

Kinds of claim (the fields each uses):
  change   metric of a vs b at `resolution`: 100 (a / b - 1) within `tolerance` points of `target` (%)
  ratio    metric of a vs b at `resolution`: a / b within a relative `tolerance` of any of `targets`
  beats    for every pair (a, b) and every resolution above `min_res` where both were measured, a is
           better than b (fps: higher; flops, memory: lower); `at_most` bounds how much worse it may be
           for a claim of "slightly more" (then a must be worse, by at most that fraction)
  scaling  the metric's power-law exponent on tokens over the top resolutions is ~1 for `linear`
           models and >= QUADRATIC_EXP for `quadratic` ones
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

# Criteria shared by every table's scaling claims (stated in the report).
LINEAR_EXP = (0.85, 1.15)  # fitted exponent on tokens at the top resolutions
QUADRATIC_EXP = 1.5  # "approaching 2"
TAIL = 3  # resolutions in the high-resolution fit


@dataclass(frozen=True)
class Claim:
    text: str  # the claim as the report lists it
    paper: str  # the paper's number or words
    kind: str  # change | ratio | beats | scaling
    metric: str  # flops | fps | memory
    pairs: tuple[tuple[str, str], ...] = ()  # (a, b): a is the claimant (change/ratio: one pair)
    resolution: Optional[int] = None
    target: float = 0.0  # change: percent
    targets: tuple[float, ...] = ()  # ratio: any of these
    tolerance: float = 0.0  # change: percentage points; ratio: relative
    min_res: int = 0  # beats: only resolutions above this
    at_most: Optional[float] = None  # beats: a worse than b by at most this fraction ("slightly more")
    linear: tuple[str, ...] = ()  # scaling
    quadratic: tuple[str, ...] = ()

    @property
    def criterion(self) -> str:
        if self.kind == "change":
            return f"within +-{self.tolerance:g} points of {self.target:+g}%"
        if self.kind == "ratio":
            return f"within {self.tolerance:.0%} of {' or '.join(f'{t:g}x' for t in self.targets)}"
        if self.kind == "beats":
            where = f" above {self.min_res} px" if self.min_res else ""
            if self.at_most is not None:
                return f"more, by at most {self.at_most:.0%}, at every measured resolution{where}"
            return f"better at every resolution{where} where both were measured (out of memory counts against)"
        return (f"power-law exponent on tokens over the top {TAIL} resolutions: linear in [{LINEAR_EXP[0]}, {LINEAR_EXP[1]}], "
                f"quadratic >= {QUADRATIC_EXP}")


@dataclass(frozen=True)
class ClaimsTable:
    title: str
    source: str  # where the claims come from, in words
    batch: Optional[int]  # the batch size speed and memory claims were made at (None: not stated)
    device_note: str  # the paper's GPU, as stated
    claims: tuple[Claim, ...]
    crossings: tuple[tuple[str, str], ...] = ()  # (family a, family b): where a's speed curve crosses b's, per size


def _sizes(fmt: str, sizes: str = "tsb") -> tuple[str, ...]:
    return tuple(fmt.format(s) for s in sizes)


VISION_TTT = ClaimsTable(
    title="Vision-TTT (Kong et al., 2026), Sec. 5.3 and Fig. 6",
    source="the Vision-TTT paper's efficiency analysis",
    batch=64,
    device_note="L40S, batch 64",
    claims=(
        Claim("1280 px: Vittt-T FLOPs vs DeiT-T", "-79.4%", "change", "flops", (("vittt_t", "deit_t"),), 1280,
              target=-79.4, tolerance=1.5),
        Claim("Vittt-T fewer FLOPs than Vim-T", "fewer", "beats", "flops", (("vittt_t", "vim_t"),)),
        Claim("Vittt-S/B slightly more FLOPs than Vim-S/B", "slightly more", "beats", "flops",
              (("vittt_s", "vim_s"), ("vittt_b", "vim_b")), at_most=0.10),
        Claim("FLOPs grow linearly with tokens for Vittt/Vim, quadratically for DeiT", "exponent ~1 / ~2", "scaling",
              "flops", linear=_sizes("vittt_{}") + _sizes("vim_{}"), quadratic=_sizes("deit_{}")),
        Claim("1280 px: Vittt-T speed vs DeiT-T", "4.38x (v2: 4.72x)", "ratio", "fps", (("vittt_t", "deit_t"),), 1280,
              targets=(4.38, 4.72), tolerance=0.20),
        Claim("1280 px: Vittt-T memory vs DeiT-T", "-88.9%", "change", "memory", (("vittt_t", "deit_t"),), 1280,
              target=-88.9, tolerance=5.0),
        Claim("Vittt faster than Vim at every size and resolution", "faster everywhere", "beats", "fps",
              tuple(zip(_sizes("vittt_{}"), _sizes("vim_{}")))),
        Claim("Vittt-S/B less memory than Vim-S/B beyond 1024 px", "less", "beats", "memory",
              (("vittt_s", "vim_s"), ("vittt_b", "vim_b")), min_res=1024),
        Claim("Memory grows linearly with tokens for Vittt/Vim, quadratically for DeiT", "exponent ~1 / ~2", "scaling",
              "memory", linear=_sizes("vittt_{}") + _sizes("vim_{}"), quadratic=_sizes("deit_{}")),
    ),
    crossings=(("vittt", "deit"),),
)

VIM = ClaimsTable(
    title="Vision Mamba (Zhu et al., 2024), batch inference at 1248 px",
    source="the Vim paper's efficiency comparison with DeiT (6084 tokens)",
    batch=None,
    device_note="GPU and batch not stated",
    claims=(
        Claim("1248 px: Vim-T speed vs DeiT-T", "2.8x", "ratio", "fps", (("vim_t", "deit_t"),), 1248,
              targets=(2.8,), tolerance=0.20),
        Claim("1248 px: Vim-T memory vs DeiT-T", "-86.8%", "change", "memory", (("vim_t", "deit_t"),), 1248,
              target=-86.8, tolerance=5.0),
    ),
)

TABLES = (VISION_TTT, VIM)


def markdown() -> str:
    """docs/claims.md: every table with its claims and criteria, and how they are judged."""
    lines = ["# The papers' claims and how they are judged", "",
             "Generated by `python -m bench.report.claims > docs/claims.md` from `bench/report/claims.py`; do not edit by hand.", "",
             "- FLOP claims hold on any device: FLOPs are counted per image on the meta device.",
             "- Speed claims are judged only on GPU rows at the table's batch size (any batch where the paper does not",
             "  state one). Without such rows the report shows the best other rows *for information* and says",
             "  \"not measured\": CPU speed at batch 1 says nothing about a GPU at batch 64.",
             "- Memory claims are judged on measured GPU memory at that batch; without it, on predicted GPU memory",
             "  (`mem_pred`) at that batch, and the verdict reads \"predicted (<profile> profile): ...\".",
             "- GPU rows whose mixer ran a reference kernel (the torch TTT or scan) are \"not comparable\" for speed",
             "  and memory claims. A point flagged noisy is named beside any conclusion drawn from it.",
             "- Out of memory counts: a competitor out of memory where the claimant ran counts for the claim.", ""]
    for t in TABLES:
        batch = f"batch {t.batch}" if t.batch else "batch not stated"
        lines += [f"## {t.title}", "", f"From {t.source} ({t.device_note}; judged at {batch}).", "",
                  "| claim | paper | metric | criterion |", "|---|---|---|---|"]
        lines += [f"| {c.text} | {c.paper} | {c.metric} | {c.criterion} |" for c in t.claims]
        if t.crossings:
            lines += ["", "The report also gives where the speed curves of " +
                      ", ".join(f"{a} and {b}" for a, b in t.crossings) + " cross, size by size."]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(), end="")
