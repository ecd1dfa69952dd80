"""Figures from the results frame (bench/schema.py columns): FLOPs against resolution, and the
paper's efficiency grid (Fig. 6: rows T/S/B, columns FLOPs / FPS / memory).

Only the main models are drawn: `<family>_<size>` and its `_sdpa` twin (dashed); the ladder
variants are left out. Empty cells are "not measured" and simply skipped. Figures are drawn on
a bare Agg canvas, so no display is needed and the caller's pyplot backend is left alone.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import matplotlib
import pandas as pd
from matplotlib import ticker
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

# ---- styles: the one place to change how the figures look ------------------------------
FAMILY_STYLE = {
    "deit": {"label": "DeiT", "color": "#1f77b4", "marker": "o"},
    "vim": {"label": "Vim", "color": "#2ca02c", "marker": "s"},
    "vittt": {"label": "Vittt", "color": "#d62728", "marker": "^"},
}
SIZE_LABEL = {"t": "Tiny", "s": "Small", "b": "Base"}
SDPA_LINESTYLE = "--"
OOM_MARKER = {"marker": "x", "markersize": 8, "markeredgewidth": 2, "linestyle": "none"}
RC = {
    "font.family": "serif",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linestyle": ":",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "legend.fontsize": 8,
    "lines.linewidth": 1.6,
    "lines.markersize": 5,
    "xtick.labelsize": 6.5,
    "ytick.labelsize": 8,
    "savefig.dpi": 150,
}
PANEL_SIZE = (4.4, 3.0)  # inches per panel

# Grid columns: (CSV column, axis label, scale applied to the value).
GRID_METRICS = (
    ("flops", "FLOPs (G)", 1e-9),
    ("fps", "FPS (images/s)", 1.0),
    ("peak_mem_mib", "Peak memory (MiB)", 1.0),
)
# Metrics that an out-of-memory point leaves empty (FLOPs are counted regardless).
OOM_METRICS = ("fps", "peak_mem_mib")

_MAIN_NAME = re.compile(rf"^({'|'.join(FAMILY_STYLE)})_([{''.join(SIZE_LABEL)}])(_sdpa)?$")


def _main_models(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of the main models, with `fam`, `size` and `sdpa` parsed from the model name."""
    parts = df["model"].astype(str).str.extract(_MAIN_NAME)
    out = df.assign(fam=parts[0], size=parts[1], sdpa=parts[2].notna())
    out = out[out["fam"].notna()]
    if out.empty:
        raise ValueError("no rows of the main models (deit/vim/vittt _t/_s/_b, optionally _sdpa)")
    return out


def _sizes(rows: pd.DataFrame) -> list[str]:
    return [s for s in SIZE_LABEL if s in set(rows["size"])]


def _tokens_label(n: float) -> str:
    """Compact token count for a tick label: 196, 576, 1.0k, 6.4k, 16k."""
    if pd.isna(n):
        return ""
    return f"{int(n)}" if n < 1000 else f"{n / 1000:.1f}k" if n < 10_000 else f"{n / 1000:.0f}k"


def _log_y(ax: Axes) -> None:
    """Log y axis labelled in plain numbers at 1-2-5 steps, so a range under a decade (memory,
    FPS) still has labelled ticks."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())


def _resolution_axis(ax: Axes, points: pd.DataFrame) -> None:
    """x = resolution (log2 spaced, ticks at the measured ones); token counts as a second line."""
    ticks = points.drop_duplicates("resolution").sort_values("resolution")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks["resolution"].tolist())
    ax.set_xticklabels([f"{int(r)}\n{_tokens_label(n)}" for r, n in zip(ticks["resolution"], ticks["tokens"])])
    ax.minorticks_off()
    ax.set_xlabel("resolution (px) / tokens")


def _legend(fig: Figure, extra: Sequence[Line2D] = ()) -> None:
    """One legend for the whole figure, below the panels (labels deduplicated across panels)."""
    entries = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    for handle in extra:
        entries.setdefault(handle.get_label(), handle)
    ncol = min(len(entries), 2 * len(fig.axes))  # wrap the legend under a narrow (one-panel) figure
    fig.legend(entries.values(), entries.keys(), loc="outside lower center", ncol=ncol)


def _empty(ax: Axes, what: str) -> None:
    ax.set_axis_off()
    ax.text(0.5, 0.5, f"{what}:\nnot measured", transform=ax.transAxes, ha="center", va="center", color="0.5")


def _figure(nrows: int, ncols: int) -> tuple[Figure, list[list[Axes]]]:
    fig = Figure(figsize=(PANEL_SIZE[0] * ncols, PANEL_SIZE[1] * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def plot_flops(df: pd.DataFrame, path: str | Path) -> Path:
    """FLOPs against resolution, a panel per size, a colour per family: counted FLOPs as markers,
    the analytic formula as a line (log y, GFLOPs). The SDPA twin is drawn only when its
    eager model is absent (their FLOPs are equal)."""
    with matplotlib.rc_context(RC):
        rows = _main_models(df).sort_values("sdpa")  # eager model first, so "first" prefers it
        points = rows.groupby(["size", "fam", "resolution"], as_index=False).agg(
            flops=("flops", "first"), flops_analytic=("flops_analytic", "first"), tokens=("tokens", "first")
        )
        sizes = _sizes(points)
        fig, axes = _figure(1, len(sizes))
        for ax, size in zip(axes[0], sizes):
            panel = points[points["size"] == size]
            for fam, line in panel.sort_values("resolution").groupby("fam"):
                style = FAMILY_STYLE[fam]
                analytic, counted = line.dropna(subset=["flops_analytic"]), line.dropna(subset=["flops"])
                ax.plot(analytic["resolution"], analytic["flops_analytic"] * 1e-9, color=style["color"], label=style["label"])
                ax.plot(counted["resolution"], counted["flops"] * 1e-9, color=style["color"], marker=style["marker"],
                        linestyle="none")
            _log_y(ax)
            ax.set_title(f"{SIZE_LABEL[size]} (-{size.upper()})")
            ax.set_ylabel("FLOPs per image (G)")
            _resolution_axis(ax, panel)
        _legend(fig, [Line2D([], [], color="0.4", label="line: analytic"),
                      Line2D([], [], color="0.4", marker="o", linestyle="none", label="markers: fvcore count")])
        fig.suptitle("FLOPs against input resolution")
        return _save(fig, path)


def _single_setting(rows: pd.DataFrame) -> dict[str, str]:
    """The (device, batch size, dtype) of the measured rows; several settings in one grid would be
    conflated, so that is an error (filter the frame first)."""
    measured = rows[rows[list(OOM_METRICS)].notna().any(axis=1) | (rows["status"] == "oom")]
    device = measured["gpu_name"].where(measured["gpu_name"].notna(), measured["device"])
    settings = pd.DataFrame({"device": device, "batch": measured["batch_size"], "dtype": measured["dtype"]})
    settings = settings.dropna(how="all").drop_duplicates()
    if len(settings) > 1:
        raise ValueError(f"rows mix several device/batch/dtype settings, filter first:\n{settings.to_string(index=False)}")
    if settings.empty:
        return {}
    return {k: str(int(v)) if isinstance(v, float) and v.is_integer() else str(v) for k, v in settings.iloc[0].dropna().items()}


def _grid_title(setting: dict[str, str]) -> str:
    parts = [setting["device"]] if "device" in setting else []
    parts += [f"batch {setting['batch']}"] if "batch" in setting else []
    parts += [setting["dtype"]] if "dtype" in setting else []
    return "Efficiency against resolution" + (f" ({', '.join(parts)})" if parts else " (FLOPs only)")


def _grid_panel(ax: Axes, models: pd.DataFrame, column: str, label: str, scale: float) -> bool:
    """One cell of the grid: a line per model (SDPA dashed), OOM points as an "x" at the top.
    Returns whether an OOM marker was drawn."""
    has_values = has_oom = False
    for (fam, sdpa, _), line in models.groupby(["fam", "sdpa", "model"]):
        style = FAMILY_STYLE[fam]
        values = line.dropna(subset=[column]).groupby("resolution")[column].first() * scale
        if not values.empty:
            ax.plot(values.index, values.values, color=style["color"], marker=style["marker"],
                    linestyle=SDPA_LINESTYLE if sdpa else "-", label=style["label"] + ("-SDPA" if sdpa else ""))
            has_values = True
        oom = sorted(set(line.loc[line["status"] == "oom", "resolution"]))
        if column in OOM_METRICS and oom:
            ax.plot(oom, [0.97] * len(oom), color=style["color"], transform=ax.get_xaxis_transform(),
                    clip_on=False, **OOM_MARKER)  # x in data units, y at the top of the panel
            has_oom = True
    if not (has_values or has_oom):
        _empty(ax, label)
        return False
    if has_values:
        _log_y(ax)
    ax.set_ylabel(label)
    _resolution_axis(ax, models)
    return has_oom


def plot_efficiency_grid(df: pd.DataFrame, path: str | Path) -> Path:
    """The paper's Fig. 6: rows T/S/B, columns FLOPs (G) / FPS / peak memory (MiB) against resolution,
    a line per model (SDPA twins dashed); out-of-memory points as an "x" at the top of the panel."""
    with matplotlib.rc_context(RC):
        rows = _main_models(df)
        title = _grid_title(_single_setting(rows))
        sizes = _sizes(rows)
        fig, axes = _figure(len(sizes), len(GRID_METRICS))
        any_oom = False
        for ax_row, size in zip(axes, sizes):
            for ax, (column, label, scale) in zip(ax_row, GRID_METRICS):
                ax.set_title(f"{SIZE_LABEL[size]}: {label.split(' (')[0]}")
                any_oom |= _grid_panel(ax, rows[rows["size"] == size], column, label, scale)
        _legend(fig, [Line2D([], [], color="0.4", label="out of memory", **OOM_MARKER)] if any_oom else [])
        fig.suptitle(title)
        return _save(fig, path)
