"""Figures from the results frame (bench/schema.py columns): FLOPs against resolution, and the
paper's efficiency grid (Fig. 6: rows T/S/B, columns FLOPs / FPS / memory).

Every model is drawn, each with its own style: the family spec's (bench/families/) for the main
models and named variants, the next free colour and marker of AUTO_* for any other (a user's model,
a ladder variant). A model with a size (T/S/B) goes to that row; one without is drawn in every row.
Nothing is left as an empty axis: a point not measured is a hollow marker at the bottom of its
panel, an out-of-memory point an "x" at the top, and a range where no model was measured is shaded
with the reason. Figures are drawn on a bare Agg canvas, so no display is needed.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import matplotlib
import pandas as pd
from matplotlib import ticker
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from bench import families
from bench.report import verdicts
from bench.families import Style
from vittt.registry import SIZES

AUTO_COLORS = ("#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#ff7f0e", "#17becf", "#393b79", "#637939", "#843c39")
AUTO_MARKERS = ("v", "P", "X", "*", "h", "<", ">", "p", "d", "8")
OOM_MARKER = {"marker": "x", "markersize": 8, "markeredgewidth": 2, "linestyle": "none"}
UNMEASURED_MARKER = {"markersize": 5, "markerfacecolor": "none", "linestyle": "none", "alpha": 0.7}
PREDICTED_LINESTYLE = ":"
RC = {
    "font.family": "serif", "font.size": 9, "axes.titlesize": 10, "axes.grid": True, "grid.alpha": 0.3,
    "grid.linestyle": ":", "axes.spines.top": False, "axes.spines.right": False, "legend.frameon": False,
    "legend.fontsize": 8, "lines.linewidth": 1.6, "lines.markersize": 5, "xtick.labelsize": 6.5, "ytick.labelsize": 8,
    "savefig.dpi": 150,
}
PANEL_SIZE = (4.4, 3.0)  # inches per panel


# ---- who is drawn how ----------------------------------------------------------------------

def styles(models: Sequence[str]) -> dict[str, Style]:
    """A style per model: the spec's where it has one, else the next unused auto colour and marker."""
    out, taken = {}, set()
    for m in models:
        style = families.style_for(m)
        if style is not None:
            out[m] = style
            taken.add((style.color, style.marker))
    free = [(c, mk) for i, c in enumerate(AUTO_COLORS) for mk in (AUTO_MARKERS[i],) if (c, mk) not in taken]
    for i, m in enumerate(sorted(m for m in models if m not in out)):
        color, marker = free[i % len(free)]
        out[m] = Style(m.rsplit("/", 1)[-1], color, marker, "-")
    return out


def _sizes(df: pd.DataFrame) -> pd.Series:
    """model -> size letter ("" when the model has none)."""
    import vittt

    return pd.Series({m: vittt.get_config(m).size if m in vittt.list_models() else "" for m in df["model"].unique()})


def _rows_of_figure(df: pd.DataFrame) -> list[tuple[str, list[str]]]:
    """(row title, models) per figure row: a row per size present, sized models in theirs and
    unsized ones in every row; one row of every model when none has a size."""
    size_of = _sizes(df)
    unsized = sorted(size_of[size_of == ""].index)
    rows = [(f"{SIZES[s]} (-{s.upper()})", sorted(size_of[size_of == s].index) + unsized) for s in SIZES if (size_of == s).any()]
    return rows or [("models", unsized)]


# ---- axes ------------------------------------------------------------------------------------

def _tokens_label(n: float) -> str:
    """Compact token count for a tick label: 196, 576, 1.0k, 6.4k, 16k."""
    if pd.isna(n):
        return ""
    return f"{int(n)}" if n < 1000 else f"{n / 1000:.1f}k" if n < 10_000 else f"{n / 1000:.0f}k"


def _log_y(ax: Axes) -> None:
    """Log y axis labelled in plain numbers at 1-2-5 steps; a range too narrow for two of those
    (56 to 128, say) gets labelled minor ticks at 1.5, 3, 4 and 7 too."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_locator(ticker.LogLocator(subs=(1.5, 3.0, 4.0, 7.0)))
    narrow = lambda: ax.get_ylim()[1] < 4 * ax.get_ylim()[0]  # noqa: E731
    ax.yaxis.set_minor_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}" if narrow() else ""))


def _resolution_axis(ax: Axes, rows: pd.DataFrame) -> None:
    """x = resolution (log2 spaced, ticks at the swept ones, a label where it has room); token counts
    as a second line."""
    ticks = rows.groupby("resolution", as_index=False)["tokens"].max()  # a model without a token count has NaN
    labels, last = [], None
    for r, n in zip(ticks["resolution"], ticks["tokens"]):
        room = last is None or math.log2(r / last) > 0.15  # 1248 beside 1280 would overprint it
        labels.append(f"{int(r)}\n{_tokens_label(n)}" if room else "")
        last = r if room else last
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks["resolution"].tolist())
    ax.set_xticklabels(labels)
    ax.minorticks_off()
    ax.set_xlim(ticks["resolution"].min() / 2**0.25, ticks["resolution"].max() * 2**0.25)  # also where nothing is drawn
    ax.set_xlabel("resolution (px) / tokens")


def _figure(nrows: int, ncols: int) -> tuple[Figure, list[list[Axes]]]:
    fig = Figure(figsize=(PANEL_SIZE[0] * ncols, PANEL_SIZE[1] * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _legend(fig: Figure, extra: Sequence[Line2D] = (), columns: int = 3) -> None:
    """One legend for the whole figure, below the panels (labels deduplicated across panels), two
    entries wide per panel column so that a narrow figure wraps it."""
    entries = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    for handle in extra:
        entries.setdefault(handle.get_label(), handle)
    if entries:
        fig.legend(entries.values(), entries.keys(), loc="outside lower center", ncol=min(len(entries), 4, 2 * columns))


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


# ---- the FLOPs figure --------------------------------------------------------------------------

def plot_flops(df: pd.DataFrame, path: str | Path) -> Path:
    """`flops_figure` saved as a PNG."""
    return _save(flops_figure(df), path)


def flops_figure(df: pd.DataFrame) -> Figure:
    """FLOPs against resolution, a panel per figure row: counted FLOPs as markers, the analytic
    formula (where the family has one) as a line (log y, GFLOPs)."""
    counted = df.dropna(subset=["flops"])
    if counted.empty:
        raise ValueError("no FLOPs in the rows")
    with matplotlib.rc_context(RC):
        layout = _rows_of_figure(counted)
        look = styles(sorted(counted["model"].unique()))
        fig, axes = _figure(1, len(layout))
        for ax, (title, models) in zip(axes[0], layout):
            panel = counted[counted["model"].isin(models)]
            for model, line in panel.sort_values("resolution").groupby("model"):
                s = look[model]
                points = line.groupby("resolution")[["flops", "flops_analytic"]].first()
                analytic = points["flops_analytic"].dropna()
                ax.plot(analytic.index, analytic.values * 1e-9, color=s.color, linestyle=s.linestyle, linewidth=s.linewidth)
                ax.plot(points.index, points["flops"].values * 1e-9, color=s.color, marker=s.marker, linestyle="none", label=s.label,
                        markersize=5 if s.linewidth >= 1.6 else 3.5)
            _log_y(ax)
            ax.set_title(title)
            ax.set_ylabel("FLOPs per image (G)")
            _resolution_axis(ax, panel)
        _legend(fig, [Line2D([], [], color="0.4", label="line: analytic formula"),
                      Line2D([], [], color="0.4", marker="o", linestyle="none", label="markers: fvcore count")],
                columns=len(layout))
        fig.suptitle("FLOPs against resolution" + (" (1 multiply-add = 1 FLOP)" if len(layout) > 1 else ""))
        return fig


# ---- the Fig. 6 grid -----------------------------------------------------------------------------

def _pick(df: pd.DataFrame) -> tuple[Optional[verdicts.Group], str]:
    """The one measured setting drawn in the FPS and measured-memory columns (the first of
    verdicts.groups: GPU first), and the memory column it fills: peak_mem_mib, or rss_peak_mib on
    a CPU run."""
    for column in ("fps", "peak_mem_mib", "rss_peak_mib"):
        found = verdicts.groups(df, column)
        if found:
            g = found[0]
            mem = "peak_mem_mib" if g.rows["peak_mem_mib"].notna().any() else "rss_peak_mib"
            return g, mem
    return None, "peak_mem_mib"


def _capacity_mib(profile: str) -> Optional[float]:
    try:
        from bench.memory.predict import profile as gpu_profile

        return gpu_profile(profile).capacity_bytes / 2**20
    except Exception:  # no such profile: no line
        return None


class _Panel:
    """One cell of the grid: a line per model, the unmeasured and OOM points marked."""

    def __init__(self, ax: Axes, look: dict[str, Style], label: str):
        self.ax, self.look, self.label = ax, look, label
        self.values: dict[str, pd.Series] = {}  # measured (or counted), per model
        self.predicted: dict[str, pd.Series] = {}
        self.log = True

    def line(self, model: str, values: pd.Series, *, errors: Optional[pd.Series] = None, predicted: bool = False) -> None:
        if values.empty:
            return
        s = self.look[model]
        style = dict(color=s.color, marker=s.marker, linestyle=PREDICTED_LINESTYLE if predicted else s.linestyle,
                     linewidth=s.linewidth, markersize=5 if s.linewidth >= 1.6 else 3.5)
        if predicted:
            style.update(markerfacecolor="none", label=s.label)
            self.predicted[model] = values
        else:
            style["label"] = s.label
            self.values[model] = values
        if errors is not None and errors.notna().any():
            self.ax.errorbar(values.index, values.values, yerr=(errors.fillna(0) * values / 2).values, capsize=2, **style)
        else:
            self.ax.plot(values.index, values.values, **style)

    def finish(self, rows: pd.DataFrame, models: list[str]) -> tuple[bool, bool]:
        """Mark what was not measured; returns (any OOM marker, any unmeasured marker)."""
        ax = self.ax
        any_oom = any_missing = False
        for m in models:
            mine = rows[rows["model"] == m]
            have = {r for v in (self.values.get(m), self.predicted.get(m)) if v is not None for r in v.index}
            oom = sorted(set(mine.loc[mine["status"] == "oom", "resolution"]))
            missing = sorted(set(mine["resolution"]) - have - set(oom))
            s = self.look[m]
            if oom:
                ax.plot(oom, [0.97] * len(oom), color=s.color, transform=ax.get_xaxis_transform(), clip_on=False, **OOM_MARKER)
                any_oom = True
            if missing and (self.values or self.predicted):  # an empty panel says "not measured" as a whole
                ax.plot(missing, [0.0] * len(missing), color=s.color, marker=s.marker, transform=ax.get_xaxis_transform(),
                        clip_on=False, **UNMEASURED_MARKER)
                any_missing = True
        measured_res = {r for v in self.values.values() for r in v.index}
        unmeasured = sorted(set(rows["resolution"]) - measured_res)
        if unmeasured and measured_res:
            lo = min(r for r in unmeasured if r > max(measured_res)) if any(r > max(measured_res) for r in unmeasured) else None
            if lo is not None:
                ax.axvspan(lo / 2**0.25, max(rows["resolution"]) * 2**0.25, color="0.92", zorder=0)
                ax.text(0.98, 0.5, f"not measured\nfrom {lo} px", transform=ax.transAxes, ha="right", va="center", color="0.45", fontsize=7)
        if not measured_res and not self.predicted:
            ax.text(0.5, 0.5, f"{self.label.split(' (')[0]}:\nnot measured", transform=ax.transAxes, ha="center", va="center", color="0.5")
            ax.set_yticks([])
        elif self.log:
            _log_y(ax)
        ax.set_ylabel(self.label)
        _resolution_axis(ax, rows)
        return any_oom, any_missing


def plot_efficiency_grid(df: pd.DataFrame, path: str | Path) -> Path:
    """`efficiency_grid` saved as a PNG."""
    return _save(efficiency_grid(df), path)


def efficiency_grid(df: pd.DataFrame) -> Figure:
    """The paper's Fig. 6: a row per model size, columns FLOPs (G) / FPS / memory (MiB) against
    resolution. FPS and measured memory come from one setting (GPU first), FPS with its
    interquartile range as error bars; memory also shows the predicted GPU memory (dotted, hollow
    markers) of the same batch and dtype, with the profile's capacity as a line."""
    if df.empty:
        raise ValueError("no rows")
    with matplotlib.rc_context(RC):
        group, mem_column = _pick(df)
        rows_all = group.rows if group is not None else df
        pred = df.dropna(subset=["pred_peak_mem_mib"])
        shown = group or next(iter(verdicts.groups(df, "pred_peak_mem_mib")), None)  # one batch and dtype, as measured
        if shown is not None:
            pred = pred[(pred["batch_size"] == shown.batch_size) & (pred["dtype"] == shown.dtype)]
        profiles = sorted(set(pred["pred_gpu"].dropna()))
        layout = _rows_of_figure(df)
        look = styles(sorted(df["model"].unique()))
        rss = mem_column == "rss_peak_mib"
        mem_label = "process RSS (MiB), CPU" if rss and pred.empty else "GPU memory (MiB)"
        fig, axes = _figure(len(layout), 3)
        flags = set()
        capacity = _capacity_mib(profiles[0]) if len(profiles) == 1 else None
        for ax_row, (title, models) in zip(axes, layout):
            flops_p = _Panel(ax_row[0], look, "FLOPs (G)")
            fps_p = _Panel(ax_row[1], look, "FPS (images/s)")
            mem_p = _Panel(ax_row[2], look, mem_label)
            for m in models:
                counted = df[(df["model"] == m)].dropna(subset=["flops"]).groupby("resolution")["flops"].first()
                flops_p.line(m, counted * 1e-9)
                mine = rows_all[(rows_all["model"] == m) & (rows_all["status"] == "ok")]
                fps = mine.dropna(subset=["fps"]).groupby("resolution")[["fps", "fps_iqr"]].first()
                fps_p.line(m, fps["fps"], errors=fps["fps_iqr"])
                if not (rss and not pred.empty):
                    mem_p.line(m, mine.dropna(subset=[mem_column]).groupby("resolution")[mem_column].first())
                mem_p.line(m, pred[pred["model"] == m].groupby("resolution")["pred_peak_mem_mib"].first(), predicted=True)
            if rss and pred.empty:
                mem_p.log = False
                mem_p.ax.set_ylim(bottom=0)
            if capacity and not pred.empty and pred["pred_peak_mem_mib"].max() > capacity / 10:  # else it only squashes the lines
                mem_p.ax.axhline(capacity, color="0.3", linewidth=0.8, linestyle="--")
                mem_p.ax.text(0.02, capacity, f" {profiles[0]} capacity", transform=mem_p.ax.get_yaxis_transform(),
                              va="bottom", fontsize=7, color="0.3")
            unfit = pred[(pred["model"].isin(models)) & (pred["pred_fits"] == 0)]
            for _, r in unfit.iterrows():
                mem_p.ax.plot(r["resolution"], r["pred_peak_mem_mib"], marker="o", markersize=10, markerfacecolor="none",
                              markeredgecolor="red", linestyle="none")
                flags.add("unfit")
            for p, name in ((flops_p, "FLOPs"), (fps_p, "FPS"), (mem_p, "memory")):
                p.ax.set_title(f"{title}: {name}")
                oom, missing = p.finish(df[df["model"].isin(models)] if p is flops_p else rows_all[rows_all["model"].isin(models)], models)
                flags |= {"oom"} if oom else set()
                flags |= {"missing"} if missing else set()
        extra = []
        if "oom" in flags:
            extra.append(Line2D([], [], color="0.4", label="x: out of memory", **OOM_MARKER))
        if "missing" in flags:
            extra.append(Line2D([], [], color="0.4", marker="o", label="hollow on the axis: not measured (see the row's note)", **UNMEASURED_MARKER))
        if not pred.empty:
            extra.append(Line2D([], [], color="0.4", marker="o", markerfacecolor="none", linestyle=PREDICTED_LINESTYLE,
                                label=f"dotted: predicted GPU memory ({', '.join(profiles)} profile), a prediction"))
        if "unfit" in flags:
            extra.append(Line2D([], [], color="red", marker="o", markerfacecolor="none", markersize=10, linestyle="none",
                                label="red ring: predicted not to fit"))
        if group is not None and group.rows["fps_iqr"].notna().any():
            extra.append(Line2D([], [], color="0.4", label="error bars: FPS interquartile range"))
        _legend(fig, extra)
        if group is not None:
            setting = group.label
        elif not pred.empty:
            setting = f"predicted GPU memory, {profiles[0] if len(profiles) == 1 else ', '.join(profiles)} profile, batch {int(pred['batch_size'].iloc[0])}, {pred['dtype'].iloc[0]}"
        else:
            setting = "FLOPs only"
        fig.suptitle(f"Efficiency against resolution ({setting})" + (" - memory: process RSS" if rss and pred.empty else ""))
        return fig
