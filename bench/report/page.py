"""The report of a results CSV: the Fig. 6 reproduction, the FLOPs plot, and a markdown page with
every claims table of `claims` judged (`verdicts`), where the speed curves cross, and every
measured point. It renders; what is claimed and how it is judged live in those modules.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import pandas as pd

from bench import csvio
from bench.report import claims, verdicts
from bench.report.claims import ClaimsTable


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _fmt(v, fmt: str, scale: float = 1.0) -> str:
    return "" if v is None or pd.isna(v) else format(v / scale, fmt)


def _crossing_pairs(df: pd.DataFrame, table: ClaimsTable) -> list[tuple[str, str]]:
    """(model, baseline) pairs of the table's crossing families, size by size: the main model of
    family a against every model of family b of the same size in the rows."""
    import vittt
    from vittt.registry import SIZES

    present = [m for m in df["model"].dropna().unique() if m in vittt.list_models()]
    cfgs = {m: vittt.get_config(m) for m in present}
    pairs = []
    for fa, fb in table.crossings:
        for size in SIZES:
            if f"{fa}_{size}" in cfgs:
                pairs += [(f"{fa}_{size}", m) for m in sorted(present) if cfgs[m].family == fb and cfgs[m].size == size]
    return pairs


def _claims_section(df: pd.DataFrame, table: ClaimsTable) -> list[str]:
    found = verdicts.judge_table(df, table)
    batch = f"batch {table.batch}" if table.batch else "any batch (the paper does not state it)"
    lines = [f"## Claims: {table.title}", "",
             f"From {table.source} ({table.device_note}). Speed and memory claims are judged only on GPU rows at {batch}; "
             "memory claims without a GPU measurement are judged on predicted GPU memory at that batch, labelled so. "
             "Counts hold on any device.", ""]
    lines.append(_md_table(["claim", "paper", "measured", "basis", "verdict"],
                           [[v.claim.text, v.claim.paper, v.measured, v.basis, v.verdict] for v in found]))
    lines += ["", "Criteria: " + "; ".join(f"*{c.text}*: {c.criterion}" for c in table.claims) + ".", ""]
    return lines


def _crossings_section(df: pd.DataFrame) -> list[str]:
    pairs = [p for t in claims.TABLES for p in _crossing_pairs(df, t)]
    found = verdicts.crossovers(df, pairs)
    lines = ["## Where the speed curves cross", ""]
    if not found:
        return lines + ["No setting has FPS of both models of a pair: not measured.", ""]
    lines.append(_md_table(["model", "vs", "setting", "crossing"], [[c.model, c.baseline, c.setting, c.text] for c in found]))
    cpu = [g for g in verdicts.groups(df, "fps") if g.device == "cpu"]
    for g in cpu:
        for a, b in pairs:
            va, vb = g.values(a, "fps"), g.values(b, "fps")
            common = [r for r in va.index if r in vb.index]
            if common:
                top = common[-1]
                lines += ["", f"Shown for information ({g.label}): {a} runs at {va[top] / vb[top]:.2f}x the "
                              f"FPS of {b} at {top} px, the highest resolution both were timed at."]
    return lines + [""]


def _prediction_section(df: pd.DataFrame) -> list[str]:
    both = df.dropna(subset=["peak_mem_mib", "pred_peak_mem_mib"])
    if both.empty:
        return []
    rows = [[r["model"], int(r["resolution"]), f"{r['device_name']} b{int(r['batch_size'])} {r['dtype']}",
             _fmt(r["peak_mem_mib"], ".1f"), _fmt(r["pred_peak_mem_mib"], ".1f"), r["pred_gpu"] or "",
             _fmt(100 * r["pred_err"], "+.2f") + "%"] for _, r in both.iterrows()]
    return ["## Predicted against measured GPU memory", "",
            _md_table(["model", "res", "setting", "measured (MiB)", "predicted (MiB)", "profile", "error"], rows), ""]


def _points_table(df: pd.DataFrame) -> str:
    rows = []
    for _, r in df.sort_values(["device", "batch_size", "dtype", "model", "resolution"]).iterrows():
        measured = r["peak_mem_mib"] if pd.notna(r["peak_mem_mib"]) else r["rss_peak_mib"]
        mem_text = _fmt(measured, ".0f") + (" (RSS)" if pd.isna(r["peak_mem_mib"]) and pd.notna(measured) else "")
        rows.append([r["model"], int(r["resolution"]), f"{r['device']} b{int(r['batch_size'])} {r['dtype']}", r["backend"] or "",
                     _fmt(r["params"], ".2f", 1e6), _fmt(r["flops"], ".2f", 1e9), _fmt(r["fps"], ".3g"), _fmt(r["fps_iqr"], ".0%"),
                     mem_text, _fmt(r["pred_peak_mem_mib"], ".0f"), r["status"], r["note"] or ""])
    header = ["model", "res", "setting", "backend", "params (M)", "GFLOPs", "FPS", "IQR / FPS", "memory (MiB)", "predicted (MiB)",
              "status", "note"]
    return _md_table(header, rows)


def render_markdown(df: pd.DataFrame, name: str, source: Path, figures: dict[str, str], measured: Optional[int] = None) -> str:
    """The report page of a results frame; `figures` maps a caption to a relative path or to
    "not drawn: <reason>"; `measured` is how many points the run that wrote it measured (None:
    the report was made from the file alone)."""
    how = (f"right after measuring {measured} point{'s' * (measured != 1)}" if measured is not None
           else "without measuring anything")
    names = sorted({f"{g.label}" for c in ("fps", "peak_mem_mib", "rss_peak_mib", "pred_peak_mem_mib") for g in verdicts.groups(df, c)})
    env = df.dropna(subset=["torch"]).iloc[0] if df["torch"].notna().any() else None
    env_text = "" if env is None else ", ".join(
        f"{k} {env[k]}" for k in ("device_name", "driver", "cuda", "torch", "triton", "mamba_ssm", "git_commit") if pd.notna(env.get(k)) and env.get(k))
    lines = [f"# Efficiency report: {name}", "",
             f"Made from `{source}` ({len(df)} rows) on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {how}.",
             f"Settings measured: {'; '.join(names) or 'none (FLOPs only)'}." + (f" Environment: {env_text}." if env_text else "")]
    missing = df.attrs.get("missing_columns") or []
    if missing:
        lines.append(f"This file was written by an older version of the suite: it has no {', '.join(missing)} column(s), "
                     "read as unknown.")
    lines.append("")
    for caption, target in figures.items():
        lines += [f"- {caption}: {target}" if target.startswith("not drawn") else f"![{caption}]({target})"]
    lines.append("")
    for table in claims.TABLES:
        lines += _claims_section(df, table)
    lines += _crossings_section(df)
    lines += _prediction_section(df)
    lines += ["## Measured points", "", _points_table(df), ""]
    return "\n".join(lines)


def default_reports_dir(csv_path: Path) -> Path:
    """Where a CSV's report goes: the `reports/` mirror of its place under a `results/` folder
    (results/published/x.csv -> reports/published/), else a `reports/` folder beside its folder."""
    folder = csv_path.absolute().parent
    for results in (folder, *folder.parents):
        if results.name == "results":
            return results.parent / "reports" / folder.relative_to(results)
    return folder.parent / "reports"


def write_report(csv_path: str | Path, reports_dir: str | Path | None = None, measured: Optional[int] = None) -> dict[str, Path]:
    """Write `<run>-fig6.png`, `<run>-flops.png` and `<run>.md` (run = the CSV's stem) into
    `reports_dir` (default: `default_reports_dir`). Returns the paths written."""
    from bench.report import plots

    csv_path = Path(csv_path)
    reports = Path(reports_dir) if reports_dir is not None else default_reports_dir(csv_path)
    df = csvio.read_frame(csv_path)
    if df.empty:
        raise ValueError(f"{csv_path} has no rows")
    name = csv_path.stem
    reports.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    figures: dict[str, str] = {}
    for key, caption, draw in (
        ("fig6", "Fig. 6 reproduction (FLOPs / FPS / memory against resolution)", plots.plot_efficiency_grid),
        ("flops", "FLOPs against resolution (fvcore vs analytic)", plots.plot_flops),
    ):
        path = reports / f"{name}-{key}.png"
        try:
            written[key] = draw(df, path)
            figures[caption] = path.name
        except (ValueError, KeyError) as exc:
            figures[caption] = f"not drawn: {exc}"
    md = reports / f"{name}.md"
    md.write_text(render_markdown(df, name, csv_path, figures, measured))
    written["markdown"] = md
    return written
