"""The regression gate (bench/compare.py): exact counts, noise-aware tolerances, missing points, status."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import compare
from bench.csvio import append_row
from bench.schema import COLUMNS
from vittt import create_model

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "results" / "baselines" / "cpu-flops.csv"


def _point(model="deit_t", resolution=224, **cells) -> dict:
    """A measured GPU-like row; cells override."""
    row = dict(model=model, family=model.split("_")[0], resolution=resolution, tokens=(resolution // 16) ** 2,
               batch_size=64, device="cuda", dtype="fp16", backend="eager", params=5717416,
               flops=1_258_291_200 * (resolution // 224) ** 2, fps=1000.0, fps_iqr=0.01, repeats=5,
               peak_mem_mib=800.0, reserved_mem_mib=900.0, nvml_used_mib=1500.0, status="ok", device_name="NVIDIA H100",
               threads=None, min_repeats=10, torch="2.11.0")
    row.update(cells)
    return row


def _csv(path: Path, rows: list[dict]) -> Path:
    for row in rows:
        append_row(path, row)
    return path


def _gate(tmp_path: Path, base_rows: list[dict], cur_rows: list[dict], *flags: str, capsys) -> tuple[int, str]:
    """Run `compare BASE CUR FLAGS` through its argument parser; (exit status, stdout)."""
    base = _csv(tmp_path / "base.csv", base_rows)
    cur = _csv(tmp_path / "cur.csv", cur_rows)
    status = compare.main([str(base), str(cur), *flags])
    return status, capsys.readouterr().out


def _result(tmp_path: Path) -> compare.CompareResult:
    """The comparison of the files the last `_gate` wrote in tmp_path."""
    return compare.compare_frames(*(compare.load_results(tmp_path / f) for f in ("base.csv", "cur.csv")))


def test_exact_match_passes(tmp_path, capsys):
    rows = [_point(resolution=r) for r in (224, 448)] + [_point("vittt_t", fps=2000.0, peak_mem_mib=None)]
    status, out = _gate(tmp_path, rows, rows, capsys=capsys)
    assert status == 0, out
    assert "REGRESSION" not in out
    # every metric filled in both files is compared: 3 x (params, flops) equal; fps and memory within tolerance
    assert "PASS: no regression (3 points; 6 equal, 11 within)" in out


def test_model_gaining_a_layer_fails_with_named_change(tmp_path, capsys):
    """Counts of the real deit_t at depth 12 vs 13: params and flops changed -> exit 1, messages say by how much."""
    where = {"model": "deit_t", "resolution": 224, "batch_size": 1, "device": "cpu", "dtype": "fp32", "status": "ok"}
    count_point = pytest.importorskip("bench.flops", reason="FLOP counting needs fvcore").count_point
    base = {**count_point("deit_t", 224), **where}
    cur = {**count_point("deit_t", 224, depth=13), **where}
    with torch.device("meta"):
        block = create_model("deit_t").blocks[0]
    assert cur["params"] - base["params"] == sum(p.numel() for p in block.parameters())  # exactly one layer more
    assert cur["flops"] > base["flops"]
    status, out = _gate(tmp_path, [base], [cur], capsys=capsys)
    assert status == 1
    for metric in ("params", "flops"):
        b, c = base[metric], cur[metric]
        assert f"REGRESSION deit_t @ 224: {metric} {b} -> {c} (+{(c - b) / b:.2%})" in out
    # and the reverse (a layer removed) is a change too: counts must be equal, not merely not larger
    status, out = _gate(tmp_path / "rev", [cur], [base], capsys=capsys)
    assert status == 1 and f"flops {cur['flops']} -> {base['flops']} (-" in out


@pytest.mark.parametrize("drop, spread, expected", [
    (0.07, 0.08, 0),  # 7% slower, each run spread 8%: allowance hypot(8%, 8%) = 11.3% -> noise
    (0.07, 0.0, 1),   # same drop, runs without measured noise: beyond the 5% tolerance
    (0.15, 0.08, 1),  # 15% slower is beyond the runs' spread
    (0.03, 0.0, 0),   # within the tolerance
])
def test_fps_allowance_is_the_larger_of_tolerance_and_measured_spread(tmp_path, capsys, drop, spread, expected):
    base = [_point(fps=1000.0, fps_iqr=spread)]
    cur = [_point(fps=1000.0 * (1 - drop), fps_iqr=spread)]
    status, out = _gate(tmp_path, base, cur, capsys=capsys)
    assert status == expected, out
    if expected:
        assert f"deit_t @ 224: fps 1000 -> {1000 * (1 - drop):g} (-{drop:.2%}" in out


def test_faster_and_smaller_is_an_improvement_not_a_failure(tmp_path, capsys):
    status, out = _gate(tmp_path, [_point()], [_point(fps=1500.0, peak_mem_mib=400.0)], capsys=capsys)
    assert status == 0
    assert "(1 point; 2 equal, 2 improved, 2 within)" in out


def test_per_metric_tolerance_flags(tmp_path, capsys):
    base, cur = [_point()], [_point(fps=920.0, peak_mem_mib=824.0)]  # fps -8%, peak memory +3%
    status, out = _gate(tmp_path, base, cur, capsys=capsys)
    assert status == 1 and "fps 1000 -> 920" in out and "peak_mem_mib" not in out.split("REGRESSION", 1)[1]
    status, out = _gate(tmp_path / "a", base, cur, "--tol", "fps=0.1", capsys=capsys)
    assert status == 0, out
    status, out = _gate(tmp_path / "b", base, cur, "--tol", "fps=10%", "--tol", "peak_mem_mib=0.02", capsys=capsys)
    assert status == 1 and "REGRESSION deit_t @ 224: peak_mem_mib 800 -> 824 (+3.00%, allowed +2.00%)" in out
    status, out = _gate(tmp_path / "c", base, cur, "--tol", "0.1", capsys=capsys)  # a bare value: every tolerant metric
    assert status == 0, out


def test_tolerance_on_a_counted_metric_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        _gate(tmp_path, [_point()], [_point()], "--tol", "flops=0.1", capsys=capsys)
    assert e.value.code == 2
    assert "no tolerance for 'flops'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="counted metrics must be equal"):
        compare.compare_frames(compare.load_results(tmp_path / "base.csv"), compare.load_results(tmp_path / "cur.csv"),
                               params=0.1)


def test_missing_and_new_points(tmp_path, capsys):
    base = [_point(resolution=224), _point(resolution=448)]
    cur = [_point(resolution=224), _point(resolution=896)]
    status, out = _gate(tmp_path, base, cur, capsys=capsys)
    assert status == 1
    assert "REGRESSION deit_t @ 448: missing in current [bs 64, fp16, cuda]" in out
    assert "deit_t @ 896" not in out.split("REGRESSION", 1)[1]  # listed in the table, not a failure
    assert "new" in out
    status, out = _gate(tmp_path / "allow", base, cur, "--allow-missing", capsys=capsys)
    assert status == 0 and "1 missing" in out and "1 new" in out


def test_a_value_new_in_current_is_listed_and_one_missing_in_current_fails(tmp_path, capsys):
    status, out = _gate(tmp_path, [_point(nvml_used_mib=None)], [_point(fps=None, nvml_used_mib=9999.0)], capsys=capsys)
    assert status == 1, out
    assert {f.message for f in _result(tmp_path).findings if f.verdict in ("new", "missing")} == {
        "deit_t @ 224: fps 1000 in the baseline, missing in current [bs 64, fp16, cuda]",
        "deit_t @ 224: nvml_used_mib new in current (9999) [bs 64, fp16, cuda]",
    }
    status, out = _gate(tmp_path / "allow", [_point(nvml_used_mib=None)], [_point(fps=None, nvml_used_mib=9999.0)],
                        "--allow-missing", capsys=capsys)
    assert status == 0, out


@pytest.mark.parametrize("blank", ["flops", "params", "both"])
def test_the_gate_is_exact_a_blank_count_fails_naming_the_point(tmp_path, capsys, blank):
    cur = _point(**({"flops": None, "params": None} if blank == "both" else {blank: None}))
    status, out = _gate(tmp_path, [_point()], [cur], capsys=capsys)
    assert status == 1, out
    named = ("flops", "params") if blank == "both" else (blank,)
    for metric in named:
        assert f"REGRESSION deit_t @ 224: {metric}" in out and "missing in current" in out


def test_the_gate_is_exact_a_file_without_a_flops_column_fails(tmp_path, capsys):
    base = _csv(tmp_path / "base.csv", [_point()])
    cur = tmp_path / "cur.csv"
    cur.write_text("model,family,resolution,tokens,batch_size,device,dtype,params,status\n"
                   "deit_t,deit,224,196,64,cuda,fp16,5717416,ok\n")
    status = compare.main([str(base), str(cur), "--allow-missing"])
    out = capsys.readouterr().out
    assert status == 0, out  # --allow-missing is the only way to accept it
    status = compare.main([str(base), str(cur)])
    out = capsys.readouterr().out
    assert status == 1 and "REGRESSION deit_t @ 224: flops 1258291200 in the baseline, missing in current" in out
    assert "has no" in out and "read as unknown" in out  # the older file's identity is unknown, and said so


def test_different_devices_are_refused_unless_asked(tmp_path, capsys):
    base, cur = [_point()], [_point(device_name="NVIDIA L40S", fps=400.0)]
    assert compare.main([str(_csv(tmp_path / "b.csv", base)), str(_csv(tmp_path / "c.csv", cur))]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "different devices (NVIDIA H100 -> NVIDIA L40S)" in err
    status, out = _gate(tmp_path / "across", base, cur, "--across-devices", capsys=capsys)
    assert status == 1 and "note: compared across devices: NVIDIA H100 -> NVIDIA L40S" in out
    # counts alone (a FLOP gate) do not depend on the device
    counts = dict(fps=None, fps_iqr=None, peak_mem_mib=None, reserved_mem_mib=None, nvml_used_mib=None)
    status, out = _gate(tmp_path / "counts", [_point(**counts)], [_point(device_name="AMD EPYC", **counts)], capsys=capsys)
    assert status == 0, out


def test_measurements_of_another_setting_are_not_comparable(tmp_path, capsys):
    status, out = _gate(tmp_path, [_point()], [_point(min_repeats=3, backend="sdpa")], capsys=capsys)
    assert status == 1
    assert "REGRESSION deit_t @ 224: measured in another setting (backend eager -> sdpa, min_repeats 10 -> 3)" in out


def test_predicted_memory_is_compared_exactly(tmp_path, capsys):
    base = [_point(pred_peak_mem_mib=1234.5, pred_gpu="h100")]
    status, out = _gate(tmp_path, base, [_point(pred_peak_mem_mib=1240.0, pred_gpu="h100")], capsys=capsys)
    assert status == 1 and "REGRESSION deit_t @ 224: pred_peak_mem_mib 1234.5 -> 1240" in out
    status, out = _gate(tmp_path / "gpu", base, [_point(pred_peak_mem_mib=1234.5, pred_gpu="l40s")], capsys=capsys)
    assert status == 1 and "pred_gpu h100 -> l40s" in out


def _unmeasured(status: str) -> dict:
    """A point that did not end ok has no measurements (its counts are still there)."""
    cols = ("fps", "fps_iqr", "peak_mem_mib", "reserved_mem_mib", "nvml_used_mib")
    return {} if status == "ok" else dict.fromkeys(cols)


@pytest.mark.parametrize("before, after, expected, verdict", [
    ("ok", "oom", 1, "regressed"),
    ("ok", "error", 1, "regressed"),
    ("ok", "timeout", 1, "regressed"),
    ("ok", "skipped", 1, "missing"),
    ("oom", "oom", 0, "equal"),
    ("oom", "ok", 0, "fixed"),
    ("oom", "timeout", 0, "status changed"),
])
def test_status_regressions(tmp_path, capsys, before, after, expected, verdict):
    base = [_point(resolution=1280, status=before, **_unmeasured(before))]
    cur = [_point(resolution=1280, status=after, **_unmeasured(after))]
    status, out = _gate(tmp_path, base, cur, capsys=capsys)
    assert status == expected, out
    assert [f.verdict for f in _result(tmp_path).findings if f.metric == "status"] == [verdict]
    if expected:
        assert f"deit_t @ 1280: status {before} -> {after}" in out
    if before == "oom" and after == "ok":
        assert " fps " not in out  # nothing measured before: nothing to compare


def test_markdown_for_a_pull_request(tmp_path, capsys):
    base, cur = [_point(), _point(resolution=448)], [_point(flops=1_260_000_000), _point(resolution=448)]
    status, out = _gate(tmp_path, base, cur, "--format", "markdown", capsys=capsys)
    assert status == 1
    assert out.startswith("### Benchmark regression check")
    assert "- :x: deit_t @ 224: flops 1258291200 -> 1260000000 (+0.14%) [bs 64, fp16, cuda]" in out
    table = [x for x in out.splitlines() if x.startswith("|")]
    assert table[0].startswith("| model | res | bs |") and set(table[1]) == {"|", "-"}
    assert len(table) == 2 + 2 * 6  # 2 points x (params, flops, fps, 3 memory columns)
    assert all(x.count("|") == table[0].count("|") for x in table)


def test_environment_differences_are_noted(tmp_path, capsys):
    status, out = _gate(tmp_path, [_point()], [_point(torch="2.13.0")], capsys=capsys)
    assert status == 0 and "note: torch differs: 2.11.0 -> 2.13.0" in out


def test_unreadable_input_is_exit_2(tmp_path, capsys):
    dup = _csv(tmp_path / "dup.csv", [_point(), _point(fps=1.0)])
    assert compare.main([str(dup), str(dup)]) == 2
    assert "more than one row for deit_t @ 224" in capsys.readouterr().err
    assert compare.main([str(dup), str(tmp_path / "absent.csv")]) == 2


def test_cli_subcommand(tmp_path):
    """`python run_bench.py compare` is wired to this module and passes its exit status through."""
    base = _csv(tmp_path / "base.csv", [_point()])
    cur = _csv(tmp_path / "cur.csv", [_point(params=5717417)])
    ran = subprocess.run([sys.executable, str(ROOT / "run_bench.py"), "compare", str(base), str(cur)],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert ran.returncode == 1, ran.stderr
    assert "deit_t @ 224: params 5717416 -> 5717417 (+0.00%)" in ran.stdout


def test_committed_cpu_baseline_is_schema_shaped_and_current():
    """The baseline CI gates on: schema columns, one row per point, and its deit_t @ 224 row equal to a fresh count."""
    frame = compare.load_results(BASELINE)
    assert tuple(frame.columns) == COLUMNS and not frame.attrs["missing_columns"]
    assert compare.compare_frames(frame, frame).failed is False
    row = frame[(frame.model == "deit_t") & (frame.resolution == 224)].iloc[0]
    count_point = pytest.importorskip("bench.flops", reason="FLOP counting needs fvcore").count_point
    fresh = count_point("deit_t", 224)
    assert (int(row.params), int(row.flops)) == (fresh["params"], fresh["flops"])


def test_an_activation_kept_alive_fails_the_memory_gate_naming_the_model(tmp_path, capsys, monkeypatch):
    """The CI memory gate: deit_t's block keeps its MLP's hidden activation past its use; the predicted
    peak rises and `compare` against the committed baseline fails, naming the model and the change."""
    from bench.memory import predict as memory_model
    from bench.models import parse
    from vittt import deit

    baseline = [r for r in compare.load_results(ROOT / "results" / "baselines" / "cpu-mem-pred.csv").to_dict("records")
                if (r["model"], r["resolution"], r["dtype"]) == ("deit_t", 224, "fp32")]
    assert len(baseline) == 1
    kept = []

    def leaky(self, x):  # the block, as before, but its MLP's input stays alive until the forward ends
        x = x + self.attn(self.norm1(x))
        kept.append(self.norm2(x))
        return x + self.mlp(kept[-1])

    monkeypatch.setattr(deit.Block, "forward", leaky)
    fields = memory_model.predict_fields(parse("deit_t"), 224, 64, "fp32", "h100")
    cur = {**{k: v for k, v in baseline[0].items() if isinstance(v, str) or v == v}, **fields}
    status, out = _gate(tmp_path, [baseline[0]], [cur], capsys=capsys)
    assert status == 1
    assert "REGRESSION deit_t @ 224: pred_peak_mem_mib" in out and "(+" in out


def test_a_gate_over_an_empty_baseline_is_refused(tmp_path, capsys):
    empty = tmp_path / "empty.csv"
    empty.write_text(",".join(COLUMNS) + "\n")
    cur = _csv(tmp_path / "cur.csv", [_point()])
    assert compare.main([str(empty), str(cur)]) == 2
    assert "baseline has no rows" in capsys.readouterr().err


def test_predictions_only_in_the_current_run_are_new_not_a_setting_change(tmp_path, capsys):
    """A counts-only baseline against a run that also predicted memory: no pred_gpu conflict."""
    counts = dict(fps=None, fps_iqr=None, peak_mem_mib=None, reserved_mem_mib=None, nvml_used_mib=None)
    status, out = _gate(tmp_path, [_point(**counts)], [_point(**counts, pred_gpu="h100", pred_peak_mem_mib=100.0)], capsys=capsys)
    assert status == 0, out
