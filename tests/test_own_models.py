"""Profile your own model: a factory in a file or a module, a model registered outside the package,
and timm, through the same sweep, in this process and in isolated children; and the README's
example, run as written."""
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench import cli, csvio, models
from bench.report import plots

ROOT = Path(__file__).resolve().parents[1]


def _timm_imports() -> bool:
    try:
        import timm  # noqa: F401
    except Exception:
        return False
    return True


TIMM = _timm_imports()
FAST = ["--min-time", "0", "--warmup-time", "0", "--repeats", "1", "--device", "cpu", "--no-progress"]

MINE = '''
import torch
from torch import nn


class TinyConvNet(nn.Module):
    """A small convolutional model: a strided conv stem, a global pool, a head."""

    family = "tinyconv"

    def __init__(self, img_size: int, width: int = 16):
        super().__init__()
        self.stem = nn.Conv2d(3, width, kernel_size=4, stride=4)
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        return self.head(self.stem(x).mean((2, 3)))


def build(img_size):
    return TinyConvNet(img_size)
'''

REGISTERED = '''
from dataclasses import replace

from vittt.deit import DeiTConfig
from vittt.registry import register_model


@register_model
def my_deit():
    """DeiT-T with 6 layers: a new config of an existing family."""
    return DeiTConfig(name="my_deit", size="t", dim=192, num_heads=3, depth=6)
'''


@pytest.fixture
def mine(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text(MINE)
    return path


@pytest.mark.parametrize("isolate", [False, True], ids=["in-process", "isolated"])
def test_a_factory_in_a_file_is_measured_and_drawn(tmp_path, mine, isolate, capsys):
    out = tmp_path / "out"
    # isolated: one child process per point, each importing torch (seconds on a busy 2-core machine): one point
    resolutions, others = (["64"], []) if isolate else (["64", "96"], ["deit_t"])
    argv = ["--models", f"{mine}:build", *others, "--resolutions", *resolutions, "--out", str(out / "results"),
            "--reports", str(out / "reports"), *FAST] + (["--isolate"] if isolate else [])
    assert cli.main(argv) == 0, capsys.readouterr().err
    csv_path = next((out / "results").glob("*.csv"))
    rows = {(r["model"], int(r["resolution"])): r for r in csvio.read_rows(csv_path)}
    ref = f"{mine}:build"
    for res in map(int, resolutions):
        r = rows[ref, res]
        assert r["status"] == "ok" and r["family"] == "tinyconv" and r["backend"] == "n/a"
        assert int(r["params"]) == 3 * 16 * 16 + 16 + 16 * 10 + 10
        # counted by fvcore (on the CPU: the conv does not trace on meta), no analytic formula: said so
        assert int(r["flops"]) == (res // 4) ** 2 * 16 * 48 + 16 * 10 and r["flops_analytic"] == ""
        assert "no analytic formula for family 'tinyconv'" in r["note"] and "FLOPs traced on the CPU" in r["note"]
        assert float(r["fps"]) > 0 and float(r["rss_peak_mib"]) > 0 and r["tokens"] == ""
    fig = plots.efficiency_grid(csvio.read_frame(csv_path))
    labels = {t.get_text() for t in fig.legends[0].get_texts()}
    assert "mine.py:build" in labels and ("DeiT" in labels or isolate)


@pytest.fixture
def registry_restored():
    """Models a test registers in this process are gone after it (the registry is global)."""
    from vittt import registry

    before = dict(registry._MODELS)
    yield
    registry._MODELS.clear()
    registry._MODELS.update(before)


def test_a_model_registered_outside_the_package_reaches_an_isolated_child(tmp_path, capsys, registry_restored):
    """A script registers `my_deit` and runs the sweep; the child re-imports the script's file."""
    script = tmp_path / "my_models.py"
    script.write_text(REGISTERED + textwrap.dedent(f'''

        if __name__ == "__main__":
            import sys
            from bench.cli import main
            sys.exit(main(["--models", "my_deit", "--resolutions", "64", "--metrics", "flops", "fps", "--isolate",
                           "--out", r"{tmp_path / 'results'}",
                           "--reports", r"{tmp_path / 'reports'}", *{FAST!r}]))
    '''))
    ran = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert ran.returncode == 0, ran.stderr
    (row,) = csvio.read_rows(tmp_path / "results" / "cpu-my_deit-flops-fps.csv")
    assert row["status"] == "ok" and row["family"] == "deit" and row["flops_analytic"] == row["flops"]
    assert float(row["fps"]) > 0
    # drawn with a style of its own in the tiny row (the reference registers it in this process too)
    assert models.parse(f"{script}:my_deit").name == "my_deit"
    fig = plots.efficiency_grid(csvio.read_frame(tmp_path / "results" / "cpu-my_deit-flops-fps.csv"))
    assert fig.axes[0].get_title().startswith("Tiny") and "my_deit" in {t.get_text() for t in fig.legends[0].get_texts()}


def test_references_resolve_to_registered_models_or_factories(mine):
    assert models.parse("deit_t") == models.ModelRef("deit_t", "deit_t")
    ref = models.parse(f"{mine}:build")
    assert ref.name == ref.ref == f"{mine}:build" and not ref.registered
    assert type(ref.build(64)).__name__ == "TinyConvNet"
    assert models.kernel_backend(ref.build(64), "cpu") == "n/a" and models.family_of(ref.build(64)) == "tinyconv"
    with pytest.raises(ValueError, match="has no attribute 'nope'"):
        models.parse(f"{mine}:nope")
    with pytest.raises(ValueError, match="not callable"):
        models.parse(f"{mine}:torch")


@pytest.mark.skipif(TIMM, reason="timm imports here: the skip path cannot be seen")
def test_timm_models_are_skipped_with_a_line_where_timm_does_not_import(tmp_path, capsys):
    argv = ["--models", "timm:deit_tiny_patch16_224", "deit_t", "--resolutions", "64", "--metrics", "flops",
            "--out", str(tmp_path / "results"), "--reports", str(tmp_path / "reports"), *FAST]
    args = cli.build_parser().parse_args(argv)
    refs = cli._models(args)
    assert [r.name for r in refs] == ["deit_t"]
    assert "skipping timm:deit_tiny_patch16_224: timm is not importable" in capsys.readouterr().out


@pytest.mark.skipif(not TIMM, reason="timm does not import here (it needs a torchvision that loads beside this torch)")
def test_timm_model_counts():
    ref = models.parse("timm:deit_tiny_patch16_224")
    from bench.flops import count_reference

    fields = count_reference(ref, 224)
    assert fields["params"] == 5_717_416 and fields["flops"] > 1e9


def test_the_readme_example_runs_as_written(tmp_path, monkeypatch):
    """The README's "Profile your own model" section: its file and its command as printed there, at one
    small resolution (the test times every model), from the folder that holds the file."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Profile your own model", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    command = re.search(r"```bash\n(.*?)```", section, re.S).group(1).strip()
    (tmp_path / "mymodel.py").write_text(code)
    argv = command.split()
    assert argv[:2] == ["python", "run_bench.py"] and "--resolutions" in argv
    argv = argv[:argv.index("--resolutions")] + ["--resolutions", "64"]
    monkeypatch.chdir(tmp_path)
    assert cli.main([*argv[2:], *FAST, "--max-repeats", "1"]) == 0
    rows = csvio.read_rows(next((tmp_path / "results").glob("*.csv")))
    assert rows and all(r["status"] == "ok" for r in rows)
