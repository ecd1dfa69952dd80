"""run_bench.py: bad input is one line and exit 2 with nothing written; a tiny real CPU run gives
an ok row with schema columns; the same command resumes; subcommands are wired."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import cli, csvio
from bench.schema import COLUMNS

ROOT = Path(__file__).resolve().parents[1]

BAD_INPUTS = {
    "batch size 0": (["--batch-size", "0"], "--batch-size"),
    "negative batch": (["--batch-size", "-3"], "--batch-size"),
    "unknown dtype": (["--dtype", "fp8"], "--dtype"),
    "unknown model": (["--models", "deit_t", "resnet50"], "resnet50"),
    "resolution 230": (["--resolutions", "224", "230"], "230"),
    "resolution 0": (["--resolutions", "0"], "multiple of 16"),
    "empty --models": (["--models"], "--models"),
    "blank model list": (["--models", ","], "empty model list"),
    "unknown metric": (["--metrics", "flops", "speed"], "--metrics"),
    "fp16 on the CPU": (["--device", "cpu", "--dtype", "fp16"], "fp16"),
    "zero timeout": (["--timeout", "0"], "--timeout"),
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


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_gpu_from_the_script(tmp_path):
    """Through the real entry point: exit status 2, one line naming the device, nothing written."""
    proc = subprocess.run([sys.executable, str(ROOT / "run_bench.py"), *_args(tmp_path, ["--models", "deit_t", "--device", "cuda"])],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["run_bench.py: error: --device cuda: no CUDA device is available on this machine (allowed here: cpu, auto)"]
    assert list(tmp_path.iterdir()) == []


def test_tiny_real_cpu_run_then_resume(tmp_path, capsys):
    argv = _args(tmp_path, ["--models", "deit_t", "--resolutions", "224", "--batch-size", "1", "--repeats", "1", "--warmup", "0",
                            "--device", "cpu"])
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    csv_path = tmp_path / "results" / "cpu-deit_t.csv"
    assert f"results: {csv_path}" in out
    with open(csv_path) as f:
        assert f.readline().rstrip("\n").split(",") == list(COLUMNS)
    (row,) = csvio.read_rows(csv_path)
    assert row["status"] == "ok", row["note"]
    assert float(row["fps"]) > 0 and float(row["latency_ms"]) > 0 and row["repeats"] == "1"
    assert int(row["params"]) == 5_717_416  # timm's deit_tiny_patch16_224
    assert int(row["flops"]) > 1e9 and float(row["rss_peak_mib"]) > 0 and row["peak_mem_mib"] == ""
    assert (row["model"], row["resolution"], row["batch_size"], row["dtype"], row["device"]) == ("deit_t", "224", "1", "fp32", "cpu")
    assert row["backend"] == "eager" and row["torch"] == torch.__version__ and row["timestamp"]
    assert "threads=1" in row["note"]
    for name in ("cpu-deit_t.md", "cpu-deit_t-fig6.png", "cpu-deit_t-flops.png"):
        assert (tmp_path / "reports" / name).stat().st_size > 0

    # the same command again measures nothing and keeps one row
    assert cli.main(argv) == 0
    assert "1 points already measured are skipped" in capsys.readouterr().out
    assert len(csvio.read_rows(csv_path)) == 1


def test_cpu_defaults_skip_speed_above_640_and_say_so(tmp_path, capsys):
    """The main job's plan: counts at every resolution, speed only up to 640 px on the CPU."""
    args = cli.build_parser().parse_args(_args(tmp_path, ["--models", "vittt_t", "deit_t", "--device", "cpu"]))
    points, csv_path, reports = cli.plan(args)
    assert csv_path == tmp_path / "results" / "cpu-deit_t-vittt_t.csv" and reports == tmp_path / "reports"
    assert len(points) == 2 * 9 and {p.batch_size for p in points} == {cli.CPU_DEFAULTS["batch_size"]}
    assert [p.resolution for p in points if p.measures_speed] == [224, 384, 512, 640] * 2
    cli._print_skipped(points)
    assert "skipping fps/memory at 10 points (vittt_t@768" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def test_report_and_compare_subcommands(tmp_path, capsys):
    csv_path = tmp_path / "results" / "run.csv"
    row = {"model": "deit_t", "family": "deit", "resolution": 224, "tokens": 196, "batch_size": 64, "device": "cuda", "dtype": "fp32",
           "params": 5717416, "flops": 1258411200, "fps": 3000.0, "fps_spread": 0.02, "status": "ok"}
    csvio.append_row(csv_path, row)
    assert cli.main(["report", str(csv_path)]) == 0
    assert (tmp_path / "reports" / "run.md").is_file() and (tmp_path / "reports" / "run-fig6.png").is_file()
    worse = tmp_path / "worse.csv"
    csvio.append_row(worse, {**row, "flops": 1258411201})
    assert cli.main(["compare", str(csv_path), str(csv_path)]) == 0
    assert cli.main(["compare", str(csv_path), str(worse)]) == 1
    assert "flops" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["report", str(tmp_path / "missing.csv")])
    assert exit_info.value.code == 2
