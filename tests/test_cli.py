"""run_bench.py as a new user meets it: bad input is one line and exit 2 with nothing written; a
tiny real CPU run gives ok rows with their identity; the same command resumes, another setting
goes to a file of its own; exit status tells the truth; subcommands are wired."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import cli, csvio
from bench.schema import COLUMNS

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--min-time", "0", "--warmup-time", "0", "--repeats", "1", "--device", "cpu"]

BAD_INPUTS = {
    "batch size 0": (["--batch-size", "0"], "--batch-size"),
    "negative batch": (["--batch-size", "-3"], "--batch-size"),
    "unknown dtype": (["--dtype", "fp8"], "--dtype"),
    "unknown model": (["--models", "deit_t", "resnet50"], "resnet50"),
    "model file missing": (["--models", "/nonexistent/mine.py:build"], "no file"),
    "module missing": (["--models", "no_such_module_xyz:build"], "cannot import no_such_module_xyz"),
    "resolution 230": (["--resolutions", "224", "230"], "230"),
    "resolution 0": (["--resolutions", "0"], "multiple of 16"),
    "empty --models": (["--models"], "--models"),
    "blank model list": (["--models", ","], "empty model list"),
    "unknown metric": (["--metrics", "flops", "speed"], "--metrics"),
    "fp16 on the CPU": (["--device", "cpu", "--dtype", "fp16"], "fp16"),
    "fp16 flops-only on the CPU": (["--device", "cpu", "--dtype", "fp16", "--metrics", "flops"], "fp16"),
    "cuda graphs on the CPU": (["--device", "cpu", "--cuda-graphs"], "--cuda-graphs needs --device cuda"),
    "gpus on the CPU": (["--device", "cpu", "--gpus", "0"], "--gpus needs --device cuda"),
    "zero timeout": (["--timeout", "0"], "--timeout"),
    "negative budget": (["--budget", "-1"], "--budget"),
    "repeats above max": (["--repeats", "5", "--max-repeats", "2"], "more than --max-repeats"),
    "preset and models": (["--preset", "fig6", "--models", "deit_t"], "not both"),
    "noise threshold 0": (["--noise-threshold", "0"], "--noise-threshold"),
    "noise threshold 2": (["--noise-threshold", "2"], "below 1"),
}


def _args(out: Path, extra: list[str]) -> list[str]:
    return ["--out", str(out / "results"), "--reports", str(out / "reports"), "--no-progress", *extra]


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_nothing_written(case, tmp_path, capsys):
    argv, named = BAD_INPUTS[case]
    argv = ["--models", "deit_t", *argv] if argv[0] != "--models" else argv
    with pytest.raises(SystemExit) as exit_info:
        cli.main(_args(tmp_path, argv))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert named in err and "error" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where, reason", [("file", "is a file, not a directory"), ("below a file", "is a file, not a directory"),
                                           ("unwritable", "cannot be written")])
@pytest.mark.parametrize("option", ["--out", "--reports"])
def test_output_paths_are_checked_before_measuring(where, reason, option, tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    if where == "unwritable":
        if not Path("/sys").is_dir():
            pytest.skip("needs /sys, a directory that even root cannot write")
        target = Path("/sys/vittt-bench-results")
    else:
        target = blocker if where == "file" else blocker / "results"
    argv = ["--models", "deit_t", "--resolutions", "224", "--no-progress", *FAST,
            "--out", str(tmp_path / "results"), "--reports", str(tmp_path / "reports"), option, str(target)]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert option in err and reason in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]  # nothing measured, nothing written


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_gpu_from_the_script(tmp_path):
    """Through the real entry point: exit status 2, one line naming the device, nothing written."""
    proc = subprocess.run([sys.executable, str(ROOT / "run_bench.py"), *_args(tmp_path, ["--models", "deit_t", "--device", "cuda"])],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["run_bench.py: error: --device cuda: no CUDA device is available on this machine (allowed here: cpu, auto)"]
    assert list(tmp_path.iterdir()) == []


def test_tiny_real_cpu_run_then_resume_and_another_setting(tmp_path, capsys):
    argv = _args(tmp_path, ["--models", "deit_t", "--resolutions", "224", *FAST])
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    csv_path = tmp_path / "results" / "cpu-deit_t.csv"
    assert f"results: {csv_path}" in out and "right after" not in out
    with open(csv_path) as f:
        assert f.readline().rstrip("\n").split(",") == list(COLUMNS)
    (row,) = csvio.read_rows(csv_path)
    assert row["status"] == "ok", row["note"]
    assert float(row["fps"]) > 0 and float(row["latency_ms"]) > 0 and row["repeats"] == "1" and float(row["timed_s"]) > 0
    assert int(row["params"]) == 5_717_416  # timm's deit_tiny_patch16_224
    assert int(row["flops"]) > 1e9 and float(row["rss_peak_mib"]) > 0 and row["peak_mem_mib"] == ""
    assert (row["model"], row["resolution"], row["batch_size"], row["dtype"], row["device"]) == ("deit_t", "224", "1", "fp32", "cpu")
    assert row["backend"] == "eager" and row["torch"] == torch.__version__ and row["timestamp"]
    assert row["device_name"] and row["threads"] == "1" and row["matmul_precision"] == "highest" and row["tf32"] == "off"
    assert "threads=1" in row["note"]
    md = (tmp_path / "reports" / "cpu-deit_t.md").read_text()
    assert "right after measuring 1 point" in md
    for name in ("cpu-deit_t-fig6.png", "cpu-deit_t-flops.png"):
        assert (tmp_path / "reports" / name).stat().st_size > 0

    # the same command again measures nothing and keeps one row
    assert cli.main(argv) == 0
    assert "1 points already measured in this setting are skipped" in capsys.readouterr().out
    assert len(csvio.read_rows(csv_path)) == 1

    # another thread count is another measurement: it goes to a file of its own and is measured
    assert cli.main(argv + ["--threads", "2"]) == 0
    out = capsys.readouterr().out
    assert "already measured" not in out and "threads 1 -> 2" in out and "measured 1 points" in out
    others = sorted((tmp_path / "results").glob("cpu-deit_t-*.csv"))
    assert len(others) == 1 and csvio.read_rows(others[0])[0]["threads"] == "2"
    assert len(csvio.read_rows(csv_path)) == 1
    # another setting at a resolution the first file lacks goes to that same file of its own
    assert cli.main(_args(tmp_path, ["--models", "deit_t", "--resolutions", "256", *FAST, "--threads", "2"])) == 0
    assert "this run goes to" in capsys.readouterr().out
    assert sorted(r["resolution"] for r in csvio.read_rows(others[0])) == ["224", "256"]
    # ... and with an explicit --run it is refused, naming the difference
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv + ["--threads", "2", "--run", "cpu-deit_t"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "threads 1 -> 2" in err and "--run" in err


def test_a_larger_speed_cap_measures_the_count_only_points(tmp_path, capsys):
    argv = _args(tmp_path, ["--models", "deit_t", "--resolutions", "224", "256", *FAST])
    assert cli.main(argv + ["--speed-max-res", "224"]) == 0
    rows = csvio.read_rows(tmp_path / "results" / "cpu-deit_t.csv")
    assert sorted((r["resolution"], r["metrics"], r["fps"] != "") for r in rows) == [
        ("224", "flops fps memory mem_pred", True), ("256", "flops mem_pred", False)]
    capsys.readouterr()
    assert cli.main(argv + ["--speed-max-res", "256"]) == 0
    assert "1 points already measured" in capsys.readouterr().out
    rows = csvio.read_rows(tmp_path / "results" / "cpu-deit_t.csv")
    assert sorted((r["resolution"], r["fps"] != "") for r in rows) == [("224", True), ("256", True)]


BROKEN = '''
import torch
from torch import nn


class Broken(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 4)

    def forward(self, x):
        if not x.is_meta:
            raise RuntimeError("this model fails on real data")
        return self.lin(x.mean((2, 3)))


def build(img_size):
    return Broken()
'''


def test_failed_points_make_exit_status_1(tmp_path, capsys):
    model = tmp_path / "broken.py"
    model.write_text(BROKEN)
    status = cli.main(_args(tmp_path, ["--models", f"{model}:build", "--resolutions", "32", *FAST]))
    assert status == 1
    captured = capsys.readouterr()
    assert "1 error" in captured.out and "ended in error or timeout" in captured.err
    (row,) = csvio.read_rows(tmp_path / "results" / "cpu-broken.py_build.csv")
    assert row["status"] == "error" and "fails on real data" in row["note"] and row["flops"]


def test_a_bug_is_one_line_and_a_log(tmp_path, capsys, monkeypatch):
    from bench import sweep

    def explode(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(sweep, "run_sweep", explode)
    assert cli.main(_args(tmp_path, ["--models", "deit_t", "--resolutions", "224", *FAST])) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "internal error: KeyError" in err[0] and "traceback in" in err[0]
    log = Path(err[0].rsplit("traceback in ", 1)[1].rstrip(")"))
    assert "Traceback" in log.read_text() and "a bug" in log.read_text()
    log.unlink()


def test_models_all_with_another_name_and_the_plan(tmp_path):
    args = cli.build_parser().parse_args(_args(tmp_path, ["--models", "all", "deit_t", "--metrics", "flops", "--device", "cpu"]))
    import vittt

    p = cli.plan(args)
    assert sorted({q.model for q in p.points}) == vittt.list_models()
    assert p.csv_path == tmp_path / "results" / "cpu-all-flops.csv"
    # the default models and resolutions; on the CPU speed up to 1280 px
    p = cli.plan(cli.build_parser().parse_args(_args(tmp_path, ["--models", "vittt_t", "deit_t", "--device", "cpu"])))
    assert p.csv_path == tmp_path / "results" / "cpu-deit_t-vittt_t.csv" and p.reports == tmp_path / "reports"
    assert len(p.points) == 2 * 9 and {q.batch_size for q in p.points} == {1}
    assert sorted({q.resolution for q in p.points if q.measures_speed}) == [224, 384, 512, 640, 768, 1024, 1280]
    assert [q.model for q in p.points[:4]] == ["vittt_t", "deit_t", "vittt_t", "deit_t"]  # resolution-major
    # bf16 runs get a name of their own
    p = cli.plan(cli.build_parser().parse_args(_args(tmp_path, ["--models", "deit_t", "--device", "cpu", "--dtype", "bf16"])))
    assert p.csv_path.name == "cpu-deit_t-bf16.csv"
    assert list(tmp_path.iterdir()) == []


def test_fig6_preset_is_t_size_first(tmp_path):
    p = cli.plan(cli.build_parser().parse_args(_args(tmp_path, ["--preset", "fig6", "--device", "cpu", "--metrics", "flops"])))
    sizes = [q.size for q in p.points]
    assert sizes == sorted(sizes, key="tsb".index)
    assert {q.model for q in p.points} >= {"deit_t", "deit_t_sdpa", "vim_t", "vittt_t", "deit_b_sdpa", "vittt_b"}


def test_report_and_compare_subcommands(tmp_path, capsys):
    csv_path = tmp_path / "results" / "run.csv"
    row = {"model": "deit_t", "family": "deit", "resolution": 224, "tokens": 196, "batch_size": 64, "device": "cuda", "dtype": "fp32",
           "device_name": "Fake GPU", "params": 5717416, "flops": 1258411200, "fps": 3000.0, "fps_iqr": 0.02, "status": "ok"}
    csvio.append_row(csv_path, row)
    assert cli.main(["report", str(csv_path)]) == 0
    md = (tmp_path / "reports" / "run.md").read_text()
    assert "without measuring anything" in md and (tmp_path / "reports" / "run-fig6.png").is_file()
    worse = tmp_path / "worse.csv"
    csvio.append_row(worse, {**row, "flops": 1258411201})
    assert cli.main(["compare", str(csv_path), str(csv_path)]) == 0
    assert cli.main(["compare", str(csv_path), str(worse)]) == 1
    assert "flops" in capsys.readouterr().out
    for bad, says in ((tmp_path / "missing.csv", "is not a file"), (tmp_path / "garbage.csv", "garbage.csv is not a results CSV"),
                      (tmp_path / "binary.csv", "binary.csv is not a results CSV (not UTF-8 text)")):
        if bad.name == "garbage.csv":
            bad.write_text("hello,world\n1,2\n")
        if bad.name == "binary.csv":
            bad.write_bytes(b"\x89PNG\r\n\x1a\n\xff\x00")
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["report", str(bad)])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and says in err and "--run" not in err and len(err.strip().splitlines()) == 1


def test_console_script_is_declared():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'vittt-bench = "bench.cli:console"' in text
    assert cli.build_parser("vittt-bench").prog == "vittt-bench"


def test_the_project_cites_nothing_outside_the_repository():
    listed = subprocess.run(["git", "-C", str(ROOT), "grep", "-l", "-E", "DESIGN" + r"\.md|\.\./shared|shared" + "/DESIGN"],
                            capture_output=True, text=True)
    assert listed.stdout.strip() == "", f"files citing outside the repository: {listed.stdout}"


@pytest.mark.slow  # clones the repository and times two models at 224 px: ~20 s on a 2-core machine
def test_fresh_clone_main_job_measures_and_leaves_the_tree_clean(tmp_path):
    """The README's first command on a fresh clone measures its points (nothing committed is taken
    for resume state), writes only ignored files, and records the clean commit."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    env = dict(os.environ, PYTHONPATH=str(clone))
    ran = subprocess.run([sys.executable, "run_bench.py", "--models", "vittt_t", "deit_t", "--resolutions", "224", "--no-progress",
                          "--min-time", "0", "--warmup-time", "0", "--repeats", "1"], cwd=clone, env=env,
                         capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stderr
    assert "already measured" not in ran.stdout and "measured 2 points" in ran.stdout
    head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=clone, capture_output=True, text=True).stdout.strip()
    rows = csvio.read_rows(clone / "results" / "cpu-deit_t-vittt_t.csv")
    assert {r["git_commit"] for r in rows} == {head} and all(r["fps"] for r in rows)
    assert subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True).stdout == ""


def test_the_schema_doc_is_generated_from_the_schema():
    from bench import schema

    assert (ROOT / "docs" / "schema.md").read_text() == schema.markdown(), "run: python -m bench.schema > docs/schema.md"
