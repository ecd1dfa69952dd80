"""The FLOP plot and the Fig. 6 efficiency grid render from small frames shaped like the results CSV."""

import pandas as pd
import pytest

from bench.plots import plot_efficiency_grid, plot_flops
from bench.schema import COLUMNS

RESOLUTIONS = (224, 512, 1024)


def _frame(measured: bool) -> pd.DataFrame:
    """Main models of T and S (plus an SDPA twin and a ladder variant), DeiT eager OOM at 1024."""
    rows = []
    for model in ("deit_t", "deit_t_sdpa", "vim_t", "vittt_t", "vittt_t_dual", "deit_s", "vittt_s"):
        scale = 4 if model.split("_")[1] == "s" else 1
        for res in RESOLUTIONS:
            tokens = (res // 16) ** 2
            flops = scale * (6e6 * tokens + (2e3 * tokens**2 if model.startswith("deit") else 0))
            oom = measured and model == "deit_t" and res == 1024
            row = dict.fromkeys(COLUMNS)
            row.update(model=model, family=model.split("_")[0], resolution=res, tokens=tokens, params=5e6 * scale,
                       flops=flops, flops_analytic=flops * 1.01, status="oom" if oom else "ok")
            if measured:
                row.update(batch_size=64, device="cuda", dtype="float16", gpu_name="NVIDIA H100 80GB HBM3")
                if not oom:
                    row.update(fps=1e12 / flops, peak_mem_mib=flops / 1e7)
            rows.append(row)
    return pd.DataFrame(rows, columns=list(COLUMNS))


@pytest.mark.parametrize(("plot", "measured"), [(plot_flops, False), (plot_efficiency_grid, True), (plot_efficiency_grid, False)],
                         ids=["flops", "grid", "grid_flops_only"])
def test_plot_writes_png(tmp_path, plot, measured):
    df = _frame(measured)
    csv = tmp_path / "results.csv"
    df.to_csv(csv, index=False)  # through CSV, so empty cells are NaN as the plots will see them
    path = plot(pd.read_csv(csv), tmp_path / "sub" / "fig.png")
    assert path.exists()
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 20_000  # several panels of lines, not a blank canvas


def test_grid_rejects_mixed_settings(tmp_path):
    df = _frame(True)
    df.loc[df["model"] == "vim_t", "batch_size"] = 32
    with pytest.raises(ValueError, match="several device/batch/dtype"):
        plot_efficiency_grid(df, tmp_path / "fig.png")


def test_plots_need_main_models(tmp_path):
    df = _frame(False)
    with pytest.raises(ValueError, match="main models"):
        plot_flops(df[df["model"] == "vittt_t_dual"], tmp_path / "fig.png")
