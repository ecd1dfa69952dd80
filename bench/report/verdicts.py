"""Judging claims (bench/report/claims.py) against a results frame: one verdict per claim, with the
measured number and the basis it was judged on.

- FLOP claims hold on any device: counts are per image, on the meta device.
- Speed claims are judged on GPU rows at the table's batch size (any batch when the paper does not
  state one); without such rows the best other rows are shown "for information", never judged.
- Memory claims are judged on measured GPU memory at that batch; without it, on predicted GPU
  memory (mem_pred) at that batch, and the verdict says "predicted (<profile> profile)".
- GPU rows whose mixer ran a reference kernel are "not comparable" for speed and memory; a point
  flagged noisy is named beside any conclusion drawn from it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import pandas as pd

from bench.report.claims import LINEAR_EXP, QUADRATIC_EXP, TAIL, Claim, ClaimsTable
from bench.point import REFERENCE_BACKENDS

REPRODUCED, NOT_REPRODUCED, NOT_MEASURED = "reproduced", "not reproduced", "not measured"
MEASURED_COLUMN = {"flops": "flops", "fps": "fps", "memory": "peak_mem_mib"}
PREDICTED = "pred_peak_mem_mib"


@dataclass(frozen=True)
class Group:
    """The rows of one measured setting: device (and its name), batch size, dtype."""

    device: str
    device_name: str
    batch_size: int
    dtype: str
    rows: pd.DataFrame

    @property
    def label(self) -> str:
        name = f"{self.device} ({self.device_name})" if self.device_name else self.device
        return f"{name}, batch {self.batch_size}, {self.dtype}"

    def values(self, model: str, column: str) -> pd.Series:
        """resolution -> value of `column` for `model`, ok rows only, sorted."""
        rows = self.rows[(self.rows["model"] == model) & (self.rows["status"] == "ok")].dropna(subset=[column])
        return rows.groupby("resolution")[column].first().sort_index()

    def oom(self, model: str) -> list[int]:
        return sorted(int(r) for r in self.rows.loc[(self.rows["model"] == model) & (self.rows["status"] == "oom"), "resolution"])

    def reference_backend(self, models) -> Optional[str]:
        """On a GPU, the first of `models` whose rows ran a reference kernel, with it, else None."""
        if self.device != "cuda":
            return None
        for m in models:
            backends = set(self.rows.loc[self.rows["model"] == m, "backend"].dropna())
            ref = sorted(backends & set(REFERENCE_BACKENDS))
            if ref:
                return f"{m} ran the {ref[0]} reference kernel"
        return None

    def noisy(self, model: str, resolutions) -> list[str]:
        rows = self.rows[(self.rows["model"] == model) & self.rows["resolution"].isin(list(resolutions))]
        flagged = rows[rows["note"].fillna("").str.contains("noisy")]
        return [f"{model}@{int(r)}" for r in flagged["resolution"]]


def groups(df: pd.DataFrame, column: str) -> list[Group]:
    """Settings with `column` measured (or out of memory), GPU first, then by number of rows."""
    measured = df[df[column].notna() | (df["status"] == "oom")] if column in df else df.iloc[0:0]
    out = []
    for (device, name, batch, dtype), rows in measured.groupby(["device", df["device_name"].fillna(""), "batch_size", "dtype"]):
        every = df[(df["device"] == device) & (df["device_name"].fillna("") == name) & (df["batch_size"] == batch) & (df["dtype"] == dtype)]
        out.append(Group(str(device), str(name), int(batch), str(dtype), every))
    return sorted(out, key=lambda g: (g.device != "cuda", g.dtype != "fp32", -len(g.rows)))


def flop_group(df: pd.DataFrame) -> Group:
    """Every counted row as one group for FLOP claims: counts depend on neither the device nor
    how the rest of the point went (an out-of-memory point was counted all the same)."""
    counted = df.dropna(subset=["flops"]).drop_duplicates(["model", "resolution"])
    return Group("any", "", 0, "", counted.assign(status="ok"))


@dataclass(frozen=True)
class Verdict:
    claim: Claim
    measured: str
    basis: str
    verdict: str


def _pct(x: float) -> str:
    return f"{x:+.1f}%"


def _range(values: list[float], fmt: str) -> str:
    lo, hi = format(min(values), fmt), format(max(values), fmt)
    return lo if lo == hi else f"{lo} to {hi}"


def _span(resolutions: list) -> str:
    """'224-1280 px', or '224 px' for one resolution."""
    return f"{resolutions[0]} px" if resolutions[0] == resolutions[-1] else f"{resolutions[0]}-{resolutions[-1]} px"


def power_law_exponent(tokens: np.ndarray, values: np.ndarray) -> float:
    """Slope of log(value) against log(tokens), least squares."""
    return float(np.polyfit(np.log(tokens), np.log(values), 1)[0])


def _better(metric: str) -> Callable[[float, float], bool]:
    return (lambda a, b: a > b) if metric == "fps" else (lambda a, b: a < b)


# ---- one function per kind of claim: (group, column) -> (measured text, verdict, points used) ---

def _pair_at(g: Group, claim: Claim, column: str) -> tuple[Optional[float], Optional[float], str]:
    (a, b), res = claim.pairs[0], claim.resolution
    va, vb = g.values(a, column), g.values(b, column)
    if res in va.index and res in vb.index:
        return va[res], vb[res], ""
    oom = [m for m in (a, b) if res in g.oom(m)]
    return None, None, f"{', '.join(oom)} out of memory at {res} px" if oom else f"needs {a} and {b} at {res} px"


def judge_change(g: Group, claim: Claim, column: str) -> tuple[str, str]:
    a, b, why = _pair_at(g, claim, column)
    if a is None:
        return why, NOT_MEASURED
    change = 100 * (a / b - 1)
    value = (lambda x: f"{x / 1e9:.4g} G") if claim.metric == "flops" else (lambda x: f"{x:,.0f} MiB") if claim.metric == "memory" else (lambda x: f"{x:.4g}")
    text = f"{_pct(change)} ({value(a)} vs {value(b)})"
    return text, REPRODUCED if abs(change - claim.target) <= claim.tolerance else NOT_REPRODUCED


def judge_ratio(g: Group, claim: Claim, column: str) -> tuple[str, str]:
    a, b, why = _pair_at(g, claim, column)
    if a is None:
        return why, NOT_MEASURED
    r = a / b
    return f"{r:.2f}x", REPRODUCED if any(abs(r / t - 1) <= claim.tolerance for t in claim.targets) else NOT_REPRODUCED


def judge_beats(g: Group, claim: Claim, column: str) -> tuple[str, str]:
    better = _better(claim.metric)
    parts, ok, seen = [], True, False
    for a, b in claim.pairs:
        va, vb = g.values(a, column), g.values(b, column)
        common = [r for r in va.index if r in vb.index and r > claim.min_res]
        b_oom = [r for r in g.oom(b) if r in va.index and r > claim.min_res]
        a_oom = [r for r in g.oom(a) if r > claim.min_res and r not in g.oom(b)]
        if not common and not b_oom and not a_oom:
            continue
        seen = True
        ratios = [va[r] / vb[r] for r in common]
        if claim.at_most is not None:  # "slightly more": worse, by at most at_most
            ok &= all(1 < q <= 1 + claim.at_most for q in ratios)
            text = f"{a}/{b} {_range([100 * (q - 1) for q in ratios], '+.1f')}%" if ratios else f"{a}/{b}:"
        else:
            ok &= all(better(va[r], vb[r]) for r in common) and not a_oom
            text = f"{a}/{b} {_range(ratios, '.2f')}x" if ratios else f"{a}/{b}:"
        text += f" at {len(common)} resolutions ({_span(common)})" if common else ""
        text += f"; {b} OOM at {b_oom}" if b_oom else ""
        text += f"; {a} OOM at {a_oom}" if a_oom else ""
        parts.append(text)
    if not seen:
        where = f" above {claim.min_res} px" if claim.min_res else ""
        return f"needs {' and '.join(f'{a}, {b}' for a, b in claim.pairs)}{where}", NOT_MEASURED
    return "; ".join(parts), REPRODUCED if ok else NOT_REPRODUCED


def judge_scaling(g: Group, claim: Claim, column: str) -> tuple[str, str]:
    parts, ok, seen = [], True, {"linear": False, "quadratic": False}
    for kind, models in (("linear", claim.linear), ("quadratic", claim.quadratic)):
        for model in models:
            rows = g.rows[(g.rows["model"] == model) & (g.rows["status"] == "ok")].dropna(subset=[column, "tokens"])
            series = rows.groupby("tokens")[column].first().sort_index()
            if len(series) < TAIL:
                continue
            seen[kind] = True
            tokens, values = series.index.to_numpy(dtype=float), series.to_numpy(dtype=float)
            full, tail = power_law_exponent(tokens, values), power_law_exponent(tokens[-TAIL:], values[-TAIL:])
            ok &= LINEAR_EXP[0] <= tail <= LINEAR_EXP[1] if kind == "linear" else tail >= QUADRATIC_EXP
            parts.append(f"{model} {full:.2f} (top {TAIL} res: {tail:.2f})")
    if not all(seen.values()):
        return f"needs a linear and a quadratic model at {TAIL}+ resolutions", NOT_MEASURED
    return "exponents: " + ", ".join(parts), REPRODUCED if ok else NOT_REPRODUCED


JUDGES = {"change": judge_change, "ratio": judge_ratio, "beats": judge_beats, "scaling": judge_scaling}


def _models(claim: Claim) -> list[str]:
    return [m for pair in claim.pairs for m in pair] + list(claim.linear) + list(claim.quadratic)


def _judge(g: Group, claim: Claim, column: str) -> tuple[str, str]:
    measured, verdict = JUDGES[claim.kind](g, claim, column)
    if claim.metric == "fps" and verdict in (REPRODUCED, NOT_REPRODUCED):
        noisy = [p for m in _models(claim) for p in g.noisy(m, g.values(m, column).index)]
        if noisy:
            measured += f" (noisy points: {', '.join(noisy[:6])}{'...' if len(noisy) > 6 else ''})"
    return measured, verdict


def _at_batch(g: Group, table: ClaimsTable) -> bool:
    return table.batch is None or g.batch_size == table.batch


def judge_claim(df: pd.DataFrame, table: ClaimsTable, claim: Claim) -> Verdict:
    """The verdict of one claim on the rows (see the module docstring for the basis chosen)."""
    if claim.metric == "flops":
        measured, verdict = _judge(flop_group(df), claim, "flops")
        return Verdict(claim, measured, "any device (counted per image on the meta device)", verdict)
    column = MEASURED_COLUMN[claim.metric]
    found = groups(df, column)
    judged = [g for g in found if g.device == "cuda" and _at_batch(g, table)]
    if judged:
        g = judged[0]
        reference = g.reference_backend(_models(claim))
        if reference:
            return Verdict(claim, _judge(g, claim, column)[0], g.label, f"not comparable: {reference}")
        measured, verdict = _judge(g, claim, column)
        return Verdict(claim, measured, g.label, verdict)
    if claim.metric == "memory":
        predicted = [g for g in groups(df, PREDICTED) if _at_batch(g, table)]
        if predicted:
            g = predicted[0]
            profile = ", ".join(sorted(set(g.rows["pred_gpu"].dropna()))) or "unknown"
            measured, verdict = _judge(g, claim, PREDICTED)
            unfit = g.rows[g.rows["model"].isin(_models(claim)) & (g.rows["pred_fits"] == 0)]
            if claim.resolution is not None:
                unfit = unfit[unfit["resolution"] == claim.resolution]
            label = f"predicted ({profile} profile), batch {g.batch_size}, {g.dtype}"
            shown = f"predicted ({profile} profile): {verdict}" if verdict in (REPRODUCED, NOT_REPRODUCED) else verdict
            where = ", ".join(f"{m}@{int(r)}" for m, r in zip(unfit["model"], unfit["resolution"]))
            if where and claim.resolution is not None and verdict in (REPRODUCED, NOT_REPRODUCED):
                # the ratio rests on a point this GPU could not have measured
                shown = f"predicted ({profile} profile): inconclusive ({where} would not fit this GPU)"
            elif where:
                measured += f"; predicted not to fit the profile: {where}"
            return Verdict(claim, measured, label, shown)
    batch = f"batch {table.batch}" if table.batch else "a GPU"
    found = found or (groups(df, "rss_peak_mib") if claim.metric == "memory" else [])
    if not found:
        return Verdict(claim, f"no {claim.metric} rows", "-", NOT_MEASURED)
    g = found[0]
    what = "process RSS" if claim.metric == "memory" and g.device == "cpu" else claim.metric
    info = _information(g, claim, "rss_peak_mib" if what == "process RSS" else column)
    why = f"{g.device} rows at batch {g.batch_size}; the claim is about {batch}"
    return Verdict(claim, f"(for information, {what}) {info}", g.label, f"{NOT_MEASURED} ({why})")


def _information(g: Group, claim: Claim, column: str) -> str:
    """A pair's ratio at every resolution both were measured, or the judge's text for other kinds."""
    if claim.kind not in ("change", "ratio"):
        return _judge(g, claim, column)[0]
    a, b = claim.pairs[0]
    va, vb = g.values(a, column), g.values(b, column)
    common = [r for r in va.index if r in vb.index]
    if not common:
        return f"no {a} and {b} {column} at a common resolution"
    fmt = (lambda q: f"{q:.2f}x") if claim.kind == "ratio" else (lambda q: _pct(100 * (q - 1)))
    return f"{a} vs {b} " + ", ".join(f"{r} px: {fmt(va[r] / vb[r])}" for r in common)


def judge_table(df: pd.DataFrame, table: ClaimsTable) -> list[Verdict]:
    return [judge_claim(df, table, c) for c in table.claims]


# ---- where two speed curves cross ----------------------------------------------------------

def crossing(a_fps: pd.Series, b_fps: pd.Series) -> tuple[Optional[float], list[int]]:
    """Resolution where log(a/b FPS) changes sign, interpolated linearly in resolution between the
    two measured resolutions around it (the first crossing); and the common resolutions."""
    common = sorted(set(a_fps.index) & set(b_fps.index))
    log_ratio = [math.log(a_fps[r] / b_fps[r]) for r in common]
    for (r0, y0), (r1, y1) in zip(zip(common, log_ratio), zip(common[1:], log_ratio[1:])):
        if y0 == 0:
            return float(r0), common
        if y0 * y1 < 0:
            return r0 + (r1 - r0) * y0 / (y0 - y1), common
    if log_ratio and log_ratio[-1] == 0:
        return float(common[-1]), common
    return None, common


@dataclass(frozen=True)
class Crossover:
    model: str
    baseline: str
    setting: str
    text: str


def crossovers(df: pd.DataFrame, pairs: list[tuple[str, str]]) -> list[Crossover]:
    """Where `model` overtakes (or falls behind) `baseline` in FPS, for each (model, baseline) pair
    and each measured setting."""
    out = []
    for g in groups(df, "fps"):
        for model, baseline in pairs:
            a, b = g.values(model, "fps"), g.values(baseline, "fps")
            if a.empty or b.empty:
                continue
            at, common = crossing(a, b)
            if at is not None:
                lo = max(r for r in common if r <= at)
                before = "faster" if a[lo] > b[lo] else "slower"
                text = f"at ~{at:.0f} px ({model} {before} below it; interpolated between measured resolutions)"
            elif common:
                faster = "faster" if a[common[0]] > b[common[0]] else "slower"
                text = f"no crossing in the measured range ({model} {faster} at every common resolution, {_span(common)})"
            else:
                text = "no crossing in the measured range (no common resolution)"
            oom = [r for r in g.oom(baseline) if r in a.index]
            text += f"; {baseline} out of memory at {oom} where {model} ran" if oom else ""
            noisy = g.noisy(model, common) + g.noisy(baseline, common)
            text += f" (noisy points: {', '.join(noisy)})" if noisy else ""
            out.append(Crossover(model, baseline, g.label, text))
    return out
