"""The report from hand-made CSVs: every paper claim with a verdict, the crossover, and GPU claims
"not measured" on a CPU-only run (with the CPU numbers shown)."""

import math
import re

import numpy as np
import pandas as pd
import pytest

from bench import csvio
from bench.report import claims, verdicts
from bench.report import page as report

RES = (224, 384, 512, 640, 768, 1024, 1280, 1536, 2048)
DIM = {"t": 192, "s": 384, "b": 768}
# Hand-picked GPU throughput of the tiny models: Vittt-T overtakes DeiT-T between 512 and 640 px,
# and is 219/50 = 4.38x faster at 1280; DeiT-T runs out of memory at 2048.
DEIT_T_FPS = (4000, 1500, 700, 400, 250, 110, 50, 26, None)
VITTT_T_FPS = (2000, 1000, 600, 480, 400, 240, 219, 160, 90)
CROSSING = 512 + 128 * math.log(700 / 600) / (math.log(700 / 600) + math.log(480 / 400))  # ~570.6


def _tokens(res):
    return (res // 16) ** 2


def _deit_flops(size, n):
    d = DIM[size]
    return 12 * (12 * n * d * d + 2 * n * n * d)


def _vittt_flops(size, n):
    """Linear in tokens; Vittt-T is 79.4% below DeiT-T at 1280."""
    return 0.206 * _deit_flops(size, 6400) / 6400 * n if size == "t" else 1.1 * _deit_flops(size, 196) / 196 * n


def _row(model, res, *, device="cuda", batch=64, **values):
    family, size = model.split("_")[:2]
    return {"model": model, "family": family, "resolution": res, "tokens": _tokens(res), "batch_size": batch, "device": device,
            "dtype": "fp32", "device_name": "Fake GPU 80GB" if device == "cuda" else "Fake CPU", "torch": "2.13.0",
            "backend": {"vittt": "triton", "vim": "mamba_ssm", "deit": "eager"}[family] if device == "cuda" else "torch",
            "status": "ok", **values}


def gpu_rows():
    rows = []
    for size in ("t", "s", "b"):
        scale = {"t": 1, "s": 3, "b": 9}[size]
        for i, res in enumerate(RES):
            n = _tokens(res)
            vittt_flops, deit_flops = _vittt_flops(size, n), _deit_flops(size, n)
            vittt_mem, deit_mem = 50 + n * scale, 50 + 0.0014174 * n * n * scale
            vittt_fps = VITTT_T_FPS[i] / scale
            deit_fps = DEIT_T_FPS[i] / scale if DEIT_T_FPS[i] else None
            vim_flops = vittt_flops * 1.02 if size == "t" else vittt_flops / 1.04
            rows.append(_row(f"vittt_{size}", res, flops=vittt_flops, fps=vittt_fps, peak_mem_mib=vittt_mem))
            rows.append(_row(f"vim_{size}", res, flops=vim_flops, fps=0.8 * vittt_fps, peak_mem_mib=1.2 * vittt_mem))
            if deit_fps:
                rows.append(_row(f"deit_{size}", res, flops=deit_flops, fps=deit_fps, peak_mem_mib=deit_mem))
            else:
                rows.append(_row(f"deit_{size}", res, flops=deit_flops, status="oom", note="OutOfMemoryError: CUDA out of memory"))
    return rows


def cpu_rows():
    rows = []
    for model, flops_of in (("deit_t", _deit_flops), ("vittt_t", _vittt_flops)):
        for res in RES:
            measured = res <= 512
            fps = (20 if model == "deit_t" else 10) * (224 / res) ** 2 if measured else None
            rows.append(_row(model, res, device="cpu", batch=2, flops=flops_of("t", _tokens(res)), fps=fps,
                             rss_peak_mib=500.0 + res if measured else None, note=None if measured else "fps/memory not measured: above 512"))
    return rows


def _write(tmp_path, rows, name="run"):
    path = tmp_path / "results" / f"{name}.csv"
    for row in rows:
        csvio.append_row(path, row)
    return path


def _claims(markdown, table="Vision-TTT"):
    """claim -> (measured, basis, verdict) from a claims table."""
    section = markdown.split(f"## Claims: {table}")[1].split("\n## ")[0]
    cells = [line.strip("|").split(" | ") for line in section.splitlines() if line.startswith("| ") and not line.startswith("| claim")]
    return {c[0].strip(): (c[2], c[3], c[4].strip()) for c in cells}


CLAIMS = (
    "1280 px: Vittt-T FLOPs vs DeiT-T", "Vittt-T fewer FLOPs than Vim-T", "Vittt-S/B slightly more FLOPs than Vim-S/B",
    "FLOPs grow linearly with tokens for Vittt/Vim, quadratically for DeiT", "1280 px: Vittt-T speed vs DeiT-T",
    "1280 px: Vittt-T memory vs DeiT-T", "Vittt faster than Vim at every size and resolution",
    "Vittt-S/B less memory than Vim-S/B beyond 1024 px", "Memory grows linearly with tokens for Vittt/Vim, quadratically for DeiT",
)


def test_gpu_report_has_every_claim_with_a_verdict_and_the_crossover(tmp_path):
    written = report.write_report(_write(tmp_path, gpu_rows()))
    assert {k: p.name for k, p in written.items()} == {"fig6": "run-fig6.png", "flops": "run-flops.png", "markdown": "run.md"}
    assert all(p.parent == tmp_path / "reports" and p.stat().st_size > 1000 for p in written.values())
    md = written["markdown"].read_text()
    claims = _claims(md)
    assert set(claims) == set(CLAIMS)
    assert {c: v[2] for c, v in claims.items()} == {c: "reproduced" for c in CLAIMS}
    measured = {c: v[0] for c, v in claims.items()}
    assert measured["1280 px: Vittt-T FLOPs vs DeiT-T"].startswith("-79.4%")
    assert measured["1280 px: Vittt-T speed vs DeiT-T"] == "4.38x"
    assert measured["1280 px: Vittt-T memory vs DeiT-T"].startswith("-88.9%")
    assert "Vim OOM" not in measured["Vittt faster than Vim at every size and resolution"]
    assert all(v[1] == "cuda (Fake GPU 80GB), batch 64, fp32" for c, v in claims.items() if "FLOPs" not in c)
    # the Vim paper's table is there too; it needs rows at 1248 px
    assert set(_claims(md, "Vision Mamba")) == {"1248 px: Vim-T speed vs DeiT-T", "1248 px: Vim-T memory vs DeiT-T"}
    assert all(v[2] == "not measured" for v in _claims(md, "Vision Mamba").values())
    # fitted exponents are stated: Vittt ~1 and DeiT near 2 at the top resolutions
    exps = dict(re.findall(r"(\w+_[tsb]) [\d.]+ \(top 3 res: ([\d.]+)\)", measured["FLOPs grow linearly with tokens for Vittt/Vim, quadratically for DeiT"]))
    assert float(exps["vittt_t"]) == pytest.approx(1.0, abs=1e-6) and 1.85 < float(exps["deit_t"]) < 2
    # the crossover: interpolated between 512 and 640 for every size (the FPS were scaled per size)
    crossing = [line for line in md.splitlines() if line.startswith("| vittt_t | deit_t |")]
    assert len(crossing) == 1 and f"at ~{CROSSING:.0f} px (vittt_t slower below it" in crossing[0]
    assert "deit_t out of memory at [2048] where vittt_t ran" in crossing[0]
    assert md.count(f"at ~{CROSSING:.0f} px") == 3


def test_claims_that_fail_are_not_reproduced(tmp_path):
    rows = [r for r in gpu_rows() if not (r["model"] == "vim_b" and r["resolution"] == 384)]
    for r in rows:
        if r["model"] == "vim_b" and r["resolution"] == 640:
            r["fps"] = 10 * r["fps"]  # Vim-B faster than Vittt-B at one point
        if r["model"] == "vittt_t" and r["resolution"] == 1280:
            r["flops"] *= 1.2
    claims = _claims(report.render_markdown(pd.DataFrame(rows).reindex(columns=list(csvio.COLUMNS)), "x", tmp_path, {}))
    assert claims["Vittt faster than Vim at every size and resolution"][2] == "not reproduced"
    assert claims["1280 px: Vittt-T FLOPs vs DeiT-T"][2] == "not reproduced"
    assert claims["1280 px: Vittt-T FLOPs vs DeiT-T"][0].startswith("-75.3%")


def test_cpu_only_rows_leave_gpu_claims_not_measured_but_show_the_numbers(tmp_path):
    written = report.write_report(_write(tmp_path, cpu_rows(), "cpu-run"))
    claims = _claims(written["markdown"].read_text())
    assert set(claims) == set(CLAIMS)
    for claim in CLAIMS[4:]:
        measured, device, verdict = claims[claim]
        assert verdict.startswith("not measured (cpu rows at batch 2; the claim is about batch 64"), claim
        assert device == "cpu (Fake CPU), batch 2, fp32" and measured.startswith("(for information")
    speed = claims["1280 px: Vittt-T speed vs DeiT-T"][0]
    assert "224 px: 0.50x" in speed and "512 px: 0.50x" in speed
    assert "(for information, process RSS)" in claims["1280 px: Vittt-T memory vs DeiT-T"][0]
    assert "224 px: +0.0%" in claims["1280 px: Vittt-T memory vs DeiT-T"][0]  # RSS of both: 724 MiB
    # counts hold on any device: judged from CPU rows too
    assert claims["1280 px: Vittt-T FLOPs vs DeiT-T"][2] == "reproduced"
    assert claims["Vittt-T fewer FLOPs than Vim-T"][2] == "not measured"
    md = written["markdown"].read_text()
    assert "no crossing in the measured range (vittt_t slower at every common resolution, 224-512 px)" in md
    assert "vittt_t runs at 0.50x the FPS of deit_t at 512 px, the highest resolution both were timed at" in md


def test_crossing_and_power_law_helpers():
    res = [224, 384, 512]
    at, common = verdicts.crossing(pd.Series([10, 10, 10], index=res), pd.Series([20, 12, 5], index=res))
    assert common == res and at == pytest.approx(384 + 128 * math.log(12 / 10) / (math.log(12 / 10) + math.log(2)))
    assert verdicts.crossing(pd.Series([1.0, 2.0], index=[224, 384]), pd.Series([3.0, 4.0], index=[224, 384]))[0] is None
    n = np.array([196.0, 576, 1024, 6400])
    assert verdicts.power_law_exponent(n, 3 * n**2) == pytest.approx(2)
    assert verdicts.power_law_exponent(n, 5 * n) == pytest.approx(1)


def _frame(rows):
    return pd.DataFrame(rows).reindex(columns=list(csvio.COLUMNS))


def test_reference_backends_on_a_gpu_are_not_comparable(tmp_path):
    """A GPU CSV whose Vim rows ran the torch reference scan gets no verdict on Vittt-vs-Vim speed or memory."""
    rows = [dict(r, backend="torch") if r["model"].startswith("vim") else r for r in gpu_rows()]
    claims = _claims(report.render_markdown(_frame(rows), "x", tmp_path, {}))
    for claim in ("Vittt faster than Vim at every size and resolution", "Vittt-S/B less memory than Vim-S/B beyond 1024 px",
                  "Memory grows linearly with tokens for Vittt/Vim, quadratically for DeiT"):
        assert claims[claim][2].startswith("not comparable: vim_") and "torch reference kernel" in claims[claim][2]
    assert claims["1280 px: Vittt-T speed vs DeiT-T"][2] == "reproduced"  # vim is not part of it


def test_memory_claims_judged_on_predictions_say_so(tmp_path):
    """No GPU measurement: memory claims are judged on predicted GPU memory at the paper's batch, labelled."""
    rows = []
    for r in gpu_rows():
        rows.append(dict(r, device="cpu", device_name="Fake CPU", fps=None, pred_peak_mem_mib=r.get("peak_mem_mib"),
                         pred_gpu="h100", peak_mem_mib=None, status="ok" if r["status"] == "ok" else "ok"))
    claims = _claims(report.render_markdown(_frame(rows), "x", tmp_path, {}))
    measured, basis, verdict = claims["1280 px: Vittt-T memory vs DeiT-T"]
    assert verdict == "predicted (h100 profile): reproduced" and basis.startswith("predicted (h100 profile), batch 64")
    assert claims["1280 px: Vittt-T speed vs DeiT-T"][2] == "not measured"


def test_noisy_points_are_named_beside_a_conclusion(tmp_path):
    rows = [dict(r, note="noisy: fps_iqr 14.0% > 10%") if (r["model"], r["resolution"]) == ("vittt_t", 1280) else r
            for r in gpu_rows()]
    md = report.render_markdown(_frame(rows), "x", tmp_path, {})
    assert "4.38x (noisy points: vittt_t@1280)" in _claims(md)["1280 px: Vittt-T speed vs DeiT-T"][0]
    assert "(noisy points: vittt_t@1280)" in [line for line in md.splitlines() if line.startswith("| vittt_t | deit_t |")][0]


def test_claims_are_data_and_any_table_renders(tmp_path):
    """A new claims table needs no rendering code: judge it like the papers'."""
    mine = claims.ClaimsTable("My table", "my paper", 64, "H100", (
        claims.Claim("Vim-S faster than DeiT-S beyond 1024 px", "faster", "beats", "fps", (("vim_s", "deit_s"),), min_res=1024),))
    (v,) = verdicts.judge_table(_frame(gpu_rows()), mine)
    assert v.verdict == "reproduced" and "vim_s/deit_s" in v.measured and "deit_s OOM at [2048]" in v.measured


def test_the_claims_doc_is_generated_from_the_claims():
    from pathlib import Path

    doc = Path(__file__).resolve().parents[1] / "docs" / "claims.md"
    assert doc.read_text() == claims.markdown(), "run: python -m bench.report.claims > docs/claims.md"


def test_reports_go_to_the_mirror_of_the_results_folder(tmp_path):
    from pathlib import Path

    assert report.default_reports_dir(tmp_path / "results" / "published" / "x.csv") == tmp_path / "reports" / "published"
    assert report.default_reports_dir(tmp_path / "results" / "x.csv") == tmp_path / "reports"
    assert report.default_reports_dir(tmp_path / "elsewhere" / "x.csv") == tmp_path / "reports"
    assert report.default_reports_dir(Path("x.csv")) == Path.cwd().parent / "reports"
