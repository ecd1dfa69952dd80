"""The FLOP plot and the Fig. 6 grid from small frames shaped like the results CSV: every model
drawn with a style of its own, nothing left as an empty axis, memory labelled for what it is."""

import pandas as pd
import pytest

from bench.report import plots
from bench.schema import COLUMNS

RESOLUTIONS = (224, 512, 1024)
MODELS = ("deit_t", "deit_t_sdpa", "vim_t", "vittt_t", "vittt_t_dual", "deit_s", "vittt_s", "mine.py:build")


def _frame(device: str | None, predicted: bool = False) -> pd.DataFrame:
    """T and S models (an SDPA twin, a ladder variant, a user's model without a size); on a GPU,
    DeiT-T eager is out of memory at 1024 and nothing is timed above 512 px on the CPU."""
    rows = []
    for model in MODELS:
        scale = 4 if model.endswith("_s") else 1
        for res in RESOLUTIONS:
            tokens = (res // 16) ** 2
            flops = scale * (6e6 * tokens + (2e3 * tokens**2 if model.startswith("deit") else 0))
            oom = device == "cuda" and model == "deit_t" and res == 1024
            row = dict.fromkeys(COLUMNS)
            row.update(model=model, family=model.split("_")[0] if "_" in model else "custom", resolution=res, tokens=tokens,
                       params=5e6 * scale, flops=flops, flops_analytic=flops * 1.01, status="oom" if oom else "ok", dtype="fp32",
                       batch_size=64 if device == "cuda" else 1, device=device or "cpu", device_name="Test device")
            if device and not oom and (device == "cuda" or res <= 512):
                row.update(fps=1e12 / flops, fps_iqr=0.05)
                row["peak_mem_mib" if device == "cuda" else "rss_peak_mib"] = flops / 1e7 + 400
            if predicted:
                row.update(pred_peak_mem_mib=flops / 1e7, pred_gpu="h100", pred_fits=0 if flops > 1e11 else 1)
            rows.append(row)
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _through_csv(df, tmp_path):
    csv = tmp_path / "results.csv"
    df.to_csv(csv, index=False)  # empty cells come back NaN, as the plots see them
    return pd.read_csv(csv)


@pytest.mark.parametrize(("plot", "device", "predicted"), [
    (plots.plot_flops, None, False), (plots.plot_efficiency_grid, "cuda", False), (plots.plot_efficiency_grid, None, False),
    (plots.plot_efficiency_grid, "cpu", True), (plots.plot_efficiency_grid, "cpu", False)],
    ids=["flops", "grid_gpu", "grid_flops_only", "grid_cpu_predicted", "grid_cpu_rss"])
def test_plot_writes_png(tmp_path, plot, device, predicted):
    path = plot(_through_csv(_frame(device, predicted), tmp_path), tmp_path / "sub" / "fig.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 20_000  # several panels of lines, not a blank canvas


def test_every_model_has_its_own_colour_and_marker():
    looks = plots.styles(list(MODELS))
    tiny = [m for m in MODELS if not m.endswith("_s")]  # the models of one figure row
    assert len({(looks[m].color, looks[m].marker) for m in tiny}) == len(tiny)
    assert looks["deit_s"] == looks["deit_t"]  # a family looks the same in every row, as in the paper
    assert looks["deit_t_sdpa"].label == "DeiT-SDPA" and looks["deit_t"].label == "DeiT"
    assert looks["deit_t_sdpa"].color != looks["deit_t"].color and looks["deit_t_sdpa"].marker != looks["deit_t"].marker
    assert looks["mine.py:build"].label == "mine.py:build"


def test_grid_rows_are_sizes_and_unsized_models_are_in_each():
    fig = plots.efficiency_grid(_frame("cuda"))
    axes = fig.axes
    assert len(axes) == 6  # T and S rows x FLOPs / FPS / memory
    assert [ax.get_title() for ax in axes[::3]] == ["Tiny (-T): FLOPs", "Small (-S): FLOPs"]
    labels = {t.get_text() for t in fig.legends[0].get_texts()}
    assert {"DeiT", "DeiT-SDPA", "Vim", "Vittt", "vittt_t_dual", "mine.py:build", "x: out of memory"} <= labels
    fps_small = axes[4]
    assert [c.get_label() for c in fps_small.containers].count("mine.py:build") == 1  # the user's model in the S row too


def test_cpu_memory_panel_is_process_rss_from_zero_and_unmeasured_points_are_marked():
    fig = plots.efficiency_grid(_frame("cpu"))
    mem = fig.axes[2]
    assert mem.get_ylabel() == "process RSS (MiB), CPU" and mem.get_ylim()[0] == 0 and mem.get_yscale() == "linear"
    assert "process RSS" in fig._suptitle.get_text()
    fps = fig.axes[1]
    assert any("not measured" in t.get_text() and "1024 px" in t.get_text() for t in fps.texts)  # the shaded range says why
    labels = {t.get_text() for t in fig.legends[0].get_texts()}
    assert any(label.startswith("hollow on the axis: not measured") for label in labels)


def test_predicted_memory_is_drawn_dotted_with_the_profile_and_what_does_not_fit():
    fig = plots.efficiency_grid(_frame("cpu", predicted=True))
    mem = fig.axes[2]
    assert mem.get_ylabel() == "GPU memory (MiB)"
    dotted = [ln for ln in mem.get_lines() if ln.get_linestyle() == ":"]
    assert len(dotted) == 6  # deit_t, deit_t_sdpa, vim_t, vittt_t, vittt_t_dual, the user's model
    labels = {t.get_text() for t in fig.legends[0].get_texts()}
    assert any("predicted GPU memory (h100 profile)" in label for label in labels)
    assert "red ring: predicted not to fit" in labels


def test_fps_carries_its_spread_as_error_bars():
    fig = plots.efficiency_grid(_frame("cuda"))
    fps = fig.axes[1]
    assert fps.containers and all(type(c).__name__ == "ErrorbarContainer" for c in fps.containers)
