"""The report of a results CSV, made without measuring anything: the Fig. 6 reproduction, the FLOPs
plot, and a markdown page that holds every efficiency claim of the paper (DESIGN.md s.7) against
the measured number, with a verdict, and says where the Vittt and DeiT speed curves cross.

Speed and memory claims are judged only on GPU rows at the paper's batch size (64); CPU numbers
are shown for information with the verdict "not measured". FLOP claims hold on any device (the
counts are per image, on the meta device).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd

from bench import csvio

PAPER_BATCH = 64
SIZES = ("t", "s", "b")
CLAIM_RES = 1280  # the resolution of the paper's headline numbers
# Verdict criteria (stated in the report next to the claims).
FLOPS_TOL_POINTS = 1.5  # -79.4% +- 1.5 percentage points
MEMORY_TOL_POINTS = 5.0  # -88.9% +- 5 percentage points (hardware and allocator differ)
SPEEDUP_TOL = 0.20  # within 20% of 4.38x or of 4.72x
SLIGHTLY_MORE = 0.10  # "slightly more FLOPs": more, by at most 10%
LINEAR_EXP = (0.85, 1.15)  # fitted exponent on tokens, top resolutions
QUADRATIC_EXP = 1.5  # "approaching 2": at least this at the top resolutions
TAIL = 3  # resolutions in the "high-res" fit

REPRODUCED, NOT_REPRODUCED, NOT_MEASURED = "reproduced", "not reproduced", "not measured"


# ---- selecting rows -------------------------------------------------------------------------

@dataclass(frozen=True)
class Setting:
    """One measured (device, batch size, dtype) and its rows."""

    device: str
    batch_size: int
    dtype: str
    gpu_name: str
    rows: pd.DataFrame  # every row of this setting, any status

    @property
    def judged(self) -> bool:
        """Speed/memory claims are judged on a GPU at the paper's batch size only."""
        return self.device == "cuda" and self.batch_size == PAPER_BATCH

    @property
    def label(self) -> str:
        device = f"cuda ({self.gpu_name})" if self.device == "cuda" and self.gpu_name else self.device
        return f"{device}, batch {self.batch_size}, {self.dtype}"

    def values(self, model: str, column: str) -> pd.Series:
        """resolution -> value of `column` for `model`, ok rows only, sorted."""
        rows = self.rows[(self.rows["model"] == model) & (self.rows["status"] == "ok")].dropna(subset=[column])
        return rows.groupby("resolution")[column].first().sort_index()

    def oom(self, model: str) -> list[int]:
        return sorted(int(r) for r in self.rows.loc[(self.rows["model"] == model) & (self.rows["status"] == "oom"), "resolution"])


def settings(df: pd.DataFrame) -> list[Setting]:
    """Settings with speed or memory measured (or out of memory), most useful first: GPU at batch
    64 (fp32 before half types), then any other, by number of measured rows."""
    measured = df[df[["fps", "peak_mem_mib", "rss_peak_mib"]].notna().any(axis=1) | (df["status"] == "oom")]
    out = []
    for (device, batch, dtype), _ in measured.groupby(["device", "batch_size", "dtype"]):
        rows = df[(df["device"] == device) & (df["batch_size"] == batch) & (df["dtype"] == dtype)]
        names = rows["gpu_name"].dropna().unique()
        out.append(Setting(str(device), int(batch), str(dtype), ", ".join(map(str, names)), rows))
    return sorted(out, key=lambda s: (not s.judged, s.dtype != "fp32", -len(s.rows)))


def flop_table(df: pd.DataFrame) -> pd.DataFrame:
    """model x resolution -> FLOPs per image (identical on every setting: the first is taken)."""
    return df.dropna(subset=["flops"]).groupby(["model", "resolution"])["flops"].first().unstack("resolution").sort_index(axis=1)


# ---- claims ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Verdict:
    claim: str
    paper: str
    measured: str
    device: str
    verdict: str


def _pct(x: float) -> str:
    return f"{x:+.1f}%"


def _range(values: list[float], fmt: str) -> str:
    lo, hi = min(values), max(values)
    return format(lo, fmt) if math.isclose(lo, hi, rel_tol=1e-3) else f"{format(lo, fmt)} to {format(hi, fmt)}"


def _claim_flops_1280(flops: pd.DataFrame) -> tuple[str, str]:
    try:
        v, d = flops.loc["vittt_t", CLAIM_RES], flops.loc["deit_t", CLAIM_RES]
    except KeyError:
        return f"needs vittt_t and deit_t at {CLAIM_RES}", NOT_MEASURED
    if pd.isna(v) or pd.isna(d):
        return f"needs vittt_t and deit_t at {CLAIM_RES}", NOT_MEASURED
    change = 100 * (v / d - 1)
    ok = abs(change - -79.4) <= FLOPS_TOL_POINTS
    return f"{_pct(change)} ({v / 1e9:.2f} G vs {d / 1e9:.2f} G)", REPRODUCED if ok else NOT_REPRODUCED


def _flops_ratios(flops: pd.DataFrame, size: str) -> Optional[pd.Series]:
    if f"vittt_{size}" not in flops.index or f"vim_{size}" not in flops.index:
        return None
    ratio = (flops.loc[f"vittt_{size}"] / flops.loc[f"vim_{size}"]).dropna()
    return ratio if len(ratio) else None


def _claim_flops_vs_vim(flops: pd.DataFrame, sizes: tuple[str, ...], holds: Callable[[float], bool]) -> tuple[str, str]:
    parts, ok = [], True
    for size in sizes:
        ratio = _flops_ratios(flops, size)
        if ratio is None:
            return f"needs vittt_{size} and vim_{size} FLOPs", NOT_MEASURED
        parts.append(f"{size.upper()}: {_range([100 * (r - 1) for r in ratio], '+.1f')}% over {int(ratio.index.min())}-{int(ratio.index.max())} px")
        ok &= all(holds(r) for r in ratio)
    return "; ".join(parts), REPRODUCED if ok else NOT_REPRODUCED


def _ratio_at(s: Setting, a: str, b: str, column: str, res: int) -> Optional[float]:
    va, vb = s.values(a, column), s.values(b, column)
    return va[res] / vb[res] if res in va.index and res in vb.index else None


def _claim_ratio_1280(s: Setting, column: str, describe: Callable[[float], str], holds: Callable[[float], bool]) -> tuple[str, str]:
    ratio = _ratio_at(s, "vittt_t", "deit_t", column, CLAIM_RES)
    if ratio is None:
        oom = [m for m in ("vittt_t", "deit_t") if CLAIM_RES in s.oom(m)]
        why = f"{', '.join(oom)} out of memory at {CLAIM_RES}" if oom else f"needs vittt_t and deit_t {column} at {CLAIM_RES}"
        return why, NOT_MEASURED
    return describe(ratio), REPRODUCED if holds(ratio) else NOT_REPRODUCED


def _claim_vittt_vs_vim(s: Setting, column: str, sizes: tuple[str, ...], better: Callable[[float, float], bool], min_res: int = 0) -> tuple[str, str]:
    """Vittt beats Vim on `column` at every resolution > min_res where either was measured (an
    out-of-memory Vim against a measured Vittt counts for Vittt, the reverse against it)."""
    parts, ok, seen = [], True, False
    for size in sizes:
        v, m = s.values(f"vittt_{size}", column), s.values(f"vim_{size}", column)
        common = [r for r in v.index if r in m.index and r > min_res]
        vim_oom = [r for r in s.oom(f"vim_{size}") if r in v.index and r > min_res]
        vittt_oom = [r for r in s.oom(f"vittt_{size}") if r > min_res and r not in s.oom(f"vim_{size}")]
        if not common and not vim_oom and not vittt_oom:
            continue
        seen = True
        ratios = [v[r] / m[r] for r in common]
        ok &= all(better(v[r], m[r]) for r in common) and not vittt_oom
        text = f"{size.upper()}: Vittt/Vim {_range(ratios, '.2f')}x" if ratios else f"{size.upper()}:"
        text += f" at {len(common)} resolutions" if common else ""
        text += f"; Vim OOM at {vim_oom}" if vim_oom else ""
        text += f"; Vittt OOM at {vittt_oom}" if vittt_oom else ""
        parts.append(text)
    if not seen:
        where = f" above {min_res} px" if min_res else ""
        return f"needs vittt and vim {column}{where} ({', '.join(sizes)})", NOT_MEASURED
    return "; ".join(parts), REPRODUCED if ok else NOT_REPRODUCED


def power_law_exponent(tokens: np.ndarray, values: np.ndarray) -> float:
    """Slope of log(value) against log(tokens), least squares."""
    return float(np.polyfit(np.log(tokens), np.log(values), 1)[0])


def _exponents(series: pd.Series) -> Optional[tuple[float, float]]:
    """(full-range exponent, exponent over the top TAIL resolutions) of a resolution -> value series."""
    if len(series) < 2:
        return None
    tokens = (series.index.to_numpy(dtype=float) / 16) ** 2
    values = series.to_numpy(dtype=float)
    return power_law_exponent(tokens, values), power_law_exponent(tokens[-TAIL:], values[-TAIL:])


def _claim_scaling(series_of: Callable[[str], pd.Series], models: list[str]) -> tuple[str, str]:
    """Vittt and Vim linear, DeiT quadratic in tokens, judged on the high-res exponent."""
    parts, ok, seen = [], True, set()
    for model in models:
        exps = _exponents(series_of(model))
        if exps is None:
            continue
        family = model.split("_")[0]
        seen.add(family)
        full, tail = exps
        ok &= tail >= QUADRATIC_EXP if family == "deit" else LINEAR_EXP[0] <= tail <= LINEAR_EXP[1]
        parts.append(f"{model} {full:.2f} (top {TAIL} res: {tail:.2f})")
    if "deit" not in seen or not seen & {"vittt", "vim"}:
        return "needs DeiT and Vittt or Vim at 2+ resolutions", NOT_MEASURED
    return "exponents: " + ", ".join(parts), REPRODUCED if ok else NOT_REPRODUCED


def _ratio_series(s: Setting, column: str, describe: Callable[[float], str]) -> str:
    """vittt_t / deit_t of `column` at every resolution both were measured (information only)."""
    v, d = s.values("vittt_t", column), s.values("deit_t", column)
    common = [r for r in v.index if r in d.index]
    if not common:
        return f"no vittt_t and deit_t {column} at a common resolution"
    return "Vittt-T vs DeiT-T " + ", ".join(f"{r} px: {describe(v[r] / d[r])}" for r in common)


def evaluate_claims(df: pd.DataFrame) -> list[Verdict]:
    """Every claim of DESIGN.md s.7 against the rows: one Verdict each (speed/memory on the first
    judged setting; without one, the best other setting's numbers with "not measured")."""
    flops = flop_table(df)
    main_models = [f"{f}_{s}" for f in ("deit", "vim", "vittt") for s in SIZES]
    flop_device = "any (counted per image on the meta device)"
    flop_claims = [
        (f"{CLAIM_RES} px: Vittt-T FLOPs vs DeiT-T", "-79.4%", _claim_flops_1280(flops)),
        ("Vittt-T fewer FLOPs than Vim-T", "fewer", _claim_flops_vs_vim(flops, ("t",), lambda r: r < 1)),
        ("Vittt-S/B slightly more FLOPs than Vim-S/B", "slightly more",
         _claim_flops_vs_vim(flops, ("s", "b"), lambda r: 1 < r <= 1 + SLIGHTLY_MORE)),
        ("FLOPs grow linearly with tokens for Vittt/Vim, quadratically for DeiT", "exponent ~1 / ~2",
         _claim_scaling(lambda m: flops.loc[m].dropna() if m in flops.index else pd.Series(dtype=float), main_models)),
    ]
    verdicts = [Verdict(claim, paper, measured, flop_device, verdict) for claim, paper, (measured, verdict) in flop_claims]

    speedup, mem_change = (lambda r: f"{r:.2f}x"), (lambda r: _pct(100 * (r - 1)))
    # (claim, paper, judge(setting) -> (measured, verdict), information(setting) -> measured)
    gpu_claims = [
        (f"{CLAIM_RES} px: Vittt-T speed vs DeiT-T", "4.38x (v2: 4.72x)",
         lambda s: _claim_ratio_1280(s, "fps", speedup, lambda r: any(abs(r / p - 1) <= SPEEDUP_TOL for p in (4.38, 4.72))),
         lambda s: _ratio_series(s, "fps", speedup)),
        (f"{CLAIM_RES} px: Vittt-T memory vs DeiT-T", "-88.9%",
         lambda s: _claim_ratio_1280(s, "peak_mem_mib", mem_change, lambda r: abs(100 * (r - 1) - -88.9) <= MEMORY_TOL_POINTS),
         lambda s: _ratio_series(s, "peak_mem_mib", mem_change)),
        ("Vittt faster than Vim at every size and resolution", "faster everywhere",
         lambda s: _claim_vittt_vs_vim(s, "fps", SIZES, lambda a, b: a > b), None),
        ("Vittt-S/B less memory than Vim-S/B beyond 1024 px", "less",
         lambda s: _claim_vittt_vs_vim(s, "peak_mem_mib", ("s", "b"), lambda a, b: a < b, min_res=1024), None),
        ("Memory grows linearly with tokens for Vittt/Vim, quadratically for DeiT", "exponent ~1 / ~2",
         lambda s: _claim_scaling(lambda m: s.values(m, "peak_mem_mib"), main_models), None),
    ]
    found = settings(df)
    setting = found[0] if found else None
    for claim, paper, judge, information in gpu_claims:
        if setting is None:
            verdicts.append(Verdict(claim, paper, "no speed/memory rows", "-", NOT_MEASURED))
        elif setting.judged:
            verdicts.append(Verdict(claim, paper, *_measured_on(judge(setting), setting.label)))
        else:
            shown = _for_information(setting)
            text = information(shown) if information else judge(shown)[0]
            rss = setting.device == "cpu" and "memory" in claim.lower()
            note = "for information, memory = process peak RSS" if rss else "for information"
            verdicts.append(Verdict(claim, paper, f"({note}) {text}", setting.label, _not_judged(setting)))
    return verdicts


def _measured_on(result: tuple[str, str], device: str) -> tuple[str, str, str]:
    measured, verdict = result
    return measured, device, verdict


def _for_information(s: Setting) -> Setting:
    """A setting that is not judged, as shown: on the CPU, memory is the process's peak RSS."""
    if s.device != "cpu":
        return s
    return Setting(s.device, s.batch_size, s.dtype, s.gpu_name, s.rows.assign(peak_mem_mib=s.rows["rss_peak_mib"]))


def _not_judged(s: Setting) -> str:
    if s.device == "cpu":
        return f"{NOT_MEASURED} (CPU run: the claim is about a GPU at batch {PAPER_BATCH})"
    return f"{NOT_MEASURED} (GPU rows at batch {s.batch_size}; the paper uses {PAPER_BATCH})"


# ---- crossover ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Crossover:
    size: str
    baseline: str  # the DeiT model compared with vittt_<size>
    setting: str
    text: str  # "at ~NNN px (...)" or "no crossing in the measured range (...)"


def crossing(vittt_fps: pd.Series, deit_fps: pd.Series) -> tuple[Optional[float], list[int]]:
    """Resolution where log(vittt/deit FPS) changes sign, interpolated linearly in resolution
    between the two measured resolutions around it (the first crossing); and the common resolutions."""
    common = sorted(set(vittt_fps.index) & set(deit_fps.index))
    log_ratio = [math.log(vittt_fps[r] / deit_fps[r]) for r in common]
    for (r0, y0), (r1, y1) in zip(zip(common, log_ratio), zip(common[1:], log_ratio[1:])):
        if y0 == 0:
            return float(r0), common
        if y0 * y1 < 0:
            return r0 + (r1 - r0) * y0 / (y0 - y1), common
    if log_ratio and log_ratio[-1] == 0:
        return float(common[-1]), common
    return None, common


def crossovers(df: pd.DataFrame) -> list[Crossover]:
    """Where vittt_<size> overtakes (or falls behind) each DeiT variant in FPS, per measured setting."""
    out = []
    for s in settings(df):
        for size in SIZES:
            vittt = s.values(f"vittt_{size}", "fps")
            for baseline in (f"deit_{size}", f"deit_{size}_sdpa"):
                deit = s.values(baseline, "fps")
                if vittt.empty or deit.empty:
                    continue
                at, common = crossing(vittt, deit)
                if at is not None:
                    lo = max(r for r in common if r <= at)
                    before = "faster" if vittt[lo] > deit[lo] else "slower"
                    text = f"at ~{at:.0f} px (Vittt {before} below it; interpolated between measured resolutions)"
                elif common:
                    faster = "faster" if vittt[common[0]] > deit[common[0]] else "slower"
                    text = f"no crossing in the measured range (Vittt {faster} at every common resolution, {common[0]}-{common[-1]} px)"
                else:
                    text = "no crossing in the measured range (no common resolution)"
                oom = [r for r in s.oom(baseline) if r in vittt.index]
                text += f"; {baseline} out of memory at {oom} where Vittt ran" if oom else ""
                out.append(Crossover(size, baseline, s.label, text))
    return out


# ---- the page -------------------------------------------------------------------------------

def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _fmt(v, fmt: str) -> str:
    return "" if pd.isna(v) else format(v, fmt)


def _points_table(df: pd.DataFrame) -> str:
    rows = []
    for _, r in df.sort_values(["device", "batch_size", "dtype", "model", "resolution"]).iterrows():
        mem = r["peak_mem_mib"] if pd.notna(r["peak_mem_mib"]) else r["rss_peak_mib"]
        mem_text = _fmt(mem, ".0f") + (" (RSS)" if pd.isna(r["peak_mem_mib"]) and pd.notna(mem) else "")
        rows.append([r["model"], int(r["resolution"]), f"{r['device']} b{int(r['batch_size'])} {r['dtype']}", r["backend"] if pd.notna(r["backend"]) else "",
                     _fmt(r["params"] / 1e6 if pd.notna(r["params"]) else np.nan, ".2f"), _fmt(r["flops"] / 1e9 if pd.notna(r["flops"]) else np.nan, ".2f"),
                     _fmt(r["fps"], ".3g"), _fmt(r["fps_spread"], ".2f"), mem_text, r["status"], r["note"] if pd.notna(r["note"]) else ""])
    header = ["model", "res", "setting", "backend", "params (M)", "GFLOPs", "FPS", "spread", "memory (MiB)", "status", "note"]
    return _md_table(header, rows)


def render_markdown(df: pd.DataFrame, name: str, source: Path, figures: dict[str, str]) -> str:
    """The report page of a results frame; `figures` maps a caption to a relative path or to
    "not drawn: <reason>"."""
    verdicts, cross, found = evaluate_claims(df), crossovers(df), settings(df)
    env = df.dropna(subset=["torch"]).iloc[0] if df["torch"].notna().any() else None
    env_text = "" if env is None else ", ".join(
        f"{k} {env[k]}" for k in ("gpu_name", "driver", "cuda", "torch", "triton", "mamba_ssm", "git_commit") if pd.notna(env[k]))
    lines = [
        f"# Efficiency report: {name}",
        "",
        f"Made from `{source}` ({len(df)} rows) on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, without measuring anything.",
        f"Settings measured: {'; '.join(s.label for s in found) or 'none (FLOPs only)'}." + (f" Environment: {env_text}." if env_text else ""),
        "",
    ]
    for caption, target in figures.items():
        lines += [f"- {caption}: {target}" if target.startswith("not drawn") else f"![{caption}]({target})"]
    if found and found[0].judged:
        basis = f"Speed and memory claims are judged on {found[0].label}."
    elif found:
        basis = f"No GPU rows at batch {PAPER_BATCH}: speed and memory claims are not judged; {found[0].label} numbers are shown for information."
    else:
        basis = "No speed or memory rows: only the FLOP claims can be judged."
    lines += ["", "## Paper claims (DESIGN.md s.7)", "", basis, ""]
    lines += [_md_table(["claim", "paper", "measured", "device", "verdict"], [[v.claim, v.paper, v.measured, v.device, v.verdict] for v in verdicts])]
    lines += [
        "",
        f"Criteria: FLOPs at {CLAIM_RES} px within +-{FLOPS_TOL_POINTS} points of -79.4%; speed-up within {SPEEDUP_TOL:.0%} of 4.38x or 4.72x; "
        f"memory within +-{MEMORY_TOL_POINTS} points of -88.9%; \"slightly more\" FLOPs = more by at most {SLIGHTLY_MORE:.0%} at every resolution; "
        f"scaling = power-law exponent of the value on tokens (log-log least squares), judged over the top {TAIL} resolutions: "
        f"linear if in [{LINEAR_EXP[0]}, {LINEAR_EXP[1]}], quadratic if >= {QUADRATIC_EXP} (full-range exponent shown first). "
        f"Speed and memory claims are judged only on GPU rows at batch {PAPER_BATCH} (the paper: L40S, batch 64).",
        "",
        "## Where the Vittt and DeiT speed curves cross",
        "",
    ]
    lines += [_md_table(["size", "Vittt vs", "setting", "crossing"], [[c.size.upper(), c.baseline, c.setting, c.text] for c in cross])] if cross else ["No setting has FPS of both Vittt and DeiT: not measured."]
    lines += ["", "## Measured points", "", _points_table(df), ""]
    return "\n".join(lines)


def figure_rows(df: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The rows of one setting for Fig. 6 (the plot refuses mixed settings: the first of `settings`),
    and a caption note; on the CPU the memory panel shows the process's peak RSS."""
    found = settings(df)
    if not found:
        return df, ""
    shown = _for_information(found[0])
    return shown.rows, " (CPU: memory = process peak RSS)" if shown.device == "cpu" else ""


def write_report(csv_path: str | Path, reports_dir: str | Path | None = None) -> dict[str, Path]:
    """Write `<run>-fig6.png`, `<run>-flops.png` and `<run>.md` (run = the CSV's stem) into
    `reports_dir` (default: a `reports/` folder beside the CSV's folder). Returns the paths written."""
    from bench import plots

    csv_path = Path(csv_path)
    reports = Path(reports_dir) if reports_dir is not None else csv_path.resolve().parent.parent / "reports"
    df = csvio.read_frame(csv_path)
    if df.empty:
        raise ValueError(f"{csv_path} has no rows")
    name = csv_path.stem
    reports.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    figures: dict[str, str] = {}
    fig6_rows, fig6_note = figure_rows(df)
    for key, caption, draw, rows in (
        ("fig6", f"Fig. 6 reproduction (FLOPs / FPS / memory against resolution){fig6_note}", plots.plot_efficiency_grid, fig6_rows),
        ("flops", "FLOPs against resolution (fvcore vs analytic)", plots.plot_flops, df),
    ):
        path = reports / f"{name}-{key}.png"
        try:
            written[key] = draw(rows, path)
            figures[caption] = path.name
        except (ValueError, KeyError) as exc:
            figures[caption] = f"not drawn: {exc}"
    md = reports / f"{name}.md"
    md.write_text(render_markdown(df, name, csv_path, figures))
    written["markdown"] = md
    return written
