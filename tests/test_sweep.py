"""The sweep loses nothing: failures are rows, a killed sweep resumes, isolated points crash or hang
alone. Measuring functions are cheap fakes (module level, so an isolated child can import them);
this module imports no torch at the top, to keep those children fast."""

import csv
import os
import signal
import time

import pytest

from bench import csvio, memory, sweep, timing
from bench.schema import COLUMNS


def _points(*models, device="cpu"):
    return [sweep.Point(m, "fake", 224, 196, 1, "fp32", device) for m in models]


def fake_measure(point):
    """Counts first, then a speed stage whose outcome the model name chooses."""
    yield {"params": 10, "flops": 1000, "backend": "fake"}
    if point.model == "oom":
        import torch

        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    if point.model == "oom_text":
        raise RuntimeError("CUDA error: out of memory")
    if point.model == "bad":
        raise ValueError("shapes do not match\nsecond line")
    if point.model == "interrupt":
        raise KeyboardInterrupt
    if point.model == "crash":
        os._exit(3)
    if point.model == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    if point.model == "hang":
        time.sleep(60)
    yield {"fps": 123.0, "fps_spread": 0.01, "latency_ms": 8.1, "repeats": 2, "note": "fake"}


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_failures_become_rows_and_the_sweep_goes_on(tmp_path):
    out = tmp_path / "r.csv"
    counts = sweep.run_sweep(_points("a", "oom", "oom_text", "bad", "b"), out, measure=fake_measure, progress=False)
    rows = {r["model"]: r for r in _rows(out)}
    assert [r["model"] for r in _rows(out)] == ["a", "oom", "oom_text", "bad", "b"]
    assert {m: r["status"] for m, r in rows.items()} == {"a": "ok", "oom": "oom", "oom_text": "oom", "bad": "error", "b": "ok"}
    assert counts["ok"] == 2 and counts["oom"] == 2 and counts["error"] == 1
    # what was measured before the failure stays; the message is in the note, on one line
    assert rows["oom"]["flops"] == "1000" and rows["oom"]["fps"] == ""
    assert rows["bad"]["note"] == "ValueError: shapes do not match | second line"
    assert rows["b"]["fps"] == "123" and rows["b"]["note"] == "fake"
    with open(out) as f:
        assert f.readline().rstrip("\n").split(",") == list(COLUMNS)
        assert len(f.read().splitlines()) == 5  # one physical line per row


def test_count_only_points_in_parallel_workers(tmp_path):
    """workers > 1: count-only points go to worker processes, failures there are still rows,
    and points that time the model run afterwards in this process; each point exactly once."""
    out = tmp_path / "r.csv"
    counting = [sweep.Point(m, "fake", 224, 196, 1, "fp32", "cpu", metrics=("flops",)) for m in ("a", "bad", "c")]
    timed = _points("d")
    counts = sweep.run_sweep(counting + timed, out, measure=fake_measure, progress=False, workers=2)
    rows = {r["model"]: r for r in _rows(out)}
    assert len(_rows(out)) == 4 and _rows(out)[-1]["model"] == "d"
    assert {m: r["status"] for m, r in rows.items()} == {"a": "ok", "bad": "error", "c": "ok", "d": "ok"}
    assert rows["bad"]["flops"] == "1000" and counts["ok"] == 3


def measure_all_ok(point):
    yield {"params": 10, "flops": 1000, "backend": "fake", "fps": 50.0}


def test_killed_sweep_resumes_with_every_point_once(tmp_path):
    out = tmp_path / "r.csv"
    points = _points("a", "b", "interrupt", "c", "d")
    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(points, out, measure=fake_measure, progress=False)
    first = _rows(out)
    assert [r["model"] for r in first] == ["a", "b"]
    # a kill in the middle of a write leaves a cut line: it is dropped, not kept as a row
    with open(out, "a") as f:
        f.write("interrupt,fake,224,196,1,cpu,fp3")
    counts = sweep.run_sweep(points, out, measure=measure_all_ok, progress=False)
    rows = _rows(out)
    assert [r["model"] for r in rows] == ["a", "b", "interrupt", "c", "d"]
    assert len({csvio.key_of(r) for r in rows}) == 5
    assert rows[:2] == first  # the rows measured before the kill are untouched
    assert counts["resumed"] == 2 and counts["ok"] == 3
    # a third run has nothing left to do
    assert sweep.run_sweep(points, out, measure=fake_measure, progress=False)["resumed"] == 5
    assert len(_rows(out)) == 5


def test_isolated_crash_and_hang_are_rows(tmp_path):
    out = tmp_path / "r.csv"
    start = time.perf_counter()
    sweep.run_sweep(_points("a", "crash", "segfault", "hang", "b"), out, measure=fake_measure, isolate=True, timeout=4, progress=False)
    assert time.perf_counter() - start < 50
    rows = {r["model"]: r for r in _rows(out)}
    assert {m: r["status"] for m, r in rows.items()} == {"a": "ok", "crash": "error", "segfault": "error", "hang": "timeout", "b": "ok"}
    assert "exited with status 3" in rows["crash"]["note"]
    assert "SIGSEGV" in rows["segfault"]["note"]
    assert "--timeout 4" in rows["hang"]["note"]
    # the stages a child finished before dying are kept
    assert rows["hang"]["flops"] == rows["crash"]["flops"] == "1000"
    assert rows["a"]["fps"] == "123"


def test_isolate_needs_an_importable_function(tmp_path):
    with pytest.raises(ValueError, match="importable"):
        sweep.run_sweep(_points("a"), tmp_path / "r.csv", measure=lambda p: iter(()), isolate=True, progress=False)
    assert not (tmp_path / "r.csv").exists()


def test_nothing_measured_is_skipped_with_the_reason(tmp_path):
    def counts_off(point):
        yield {"backend": "fake", "note": "fps/memory not measured: above the limit"}

    out = tmp_path / "r.csv"
    sweep.run_sweep(_points("a"), out, measure=counts_off, progress=False)
    (row,) = _rows(out)
    assert row["status"] == "skipped" and "above the limit" in row["note"]


def test_make_points_marks_speed_above_the_limit():
    points = sweep.make_points(["deit_t"], [224, 512, 640], batch_size=2, dtype="fp32", device="cpu", speed_max_res=512)
    assert [p.tokens for p in points] == [196, 1024, 1600]
    assert [bool(p.skip_speed) for p in points] == [False, False, True]
    flops_only = sweep.make_points(["deit_t"], [640], batch_size=2, dtype="fp32", device="cpu", metrics=["flops"], speed_max_res=512)
    assert flops_only[0].skip_speed == "" and not flops_only[0].measures_speed
    with pytest.raises(ValueError, match="unknown model"):
        sweep.make_points(["nope"], [224], batch_size=1, dtype="fp32", device="cpu")


# ---- csv, timing and memory pieces -------------------------------------------------------------

def test_csv_refuses_a_file_with_other_columns(tmp_path):
    out = tmp_path / "r.csv"
    out.write_text("model,resolution\nx,224\n")
    with pytest.raises(ValueError, match="other columns"):
        csvio.append_row(out, {"model": "a", "resolution": 224, "batch_size": 1, "dtype": "fp32", "device": "cpu"})
    with pytest.raises(KeyError):
        csvio.append_row(tmp_path / "new.csv", {"model": "a", "speed": 1})


def test_summarize_median_and_spread():
    t = timing.summarize(4, [0.5, 0.25, 1.0])  # fps 8, 16, 4
    assert t.fps == 8 and t.fps_spread == pytest.approx((16 - 4) / 8) and t.latency_ms == 500 and t.repeats == 3
    with pytest.raises(ValueError):
        timing.summarize(4, [])


def test_host_clock_drains_the_device_around_the_call():
    calls = []
    seconds = timing.host_elapsed(lambda: calls.append("fn"), synchronize=lambda: calls.append("sync"))
    assert calls == ["sync", "fn", "sync"] and seconds >= 0
    runs = []
    assert len(timing.time_repeats(lambda: runs.append(1), repeats=3, elapsed=timing.host_elapsed)) == 3 and len(runs) == 3
    assert timing.clock_for("cuda") is timing.cuda_event_elapsed and timing.clock_for("cpu") is timing.host_elapsed


def test_peak_sampler_keeps_the_maximum_and_survives_a_failing_read():
    values = iter([1.0, 5.0, 3.0])

    def read():
        v = next(values, None)
        if v is None:
            raise RuntimeError("NVML gone")
        return v

    with memory.PeakSampler(read, interval=0.001) as sampler:
        time.sleep(0.05)
    assert sampler.peak == 5.0
    assert memory.rss_mib() > 10


def test_oom_classification():
    import torch

    assert sweep.is_oom(torch.OutOfMemoryError("x"))
    assert sweep.is_oom(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes"))
    assert not sweep.is_oom(RuntimeError("shape mismatch")) and not sweep.is_oom(ValueError("out of memory"))


def test_environment_columns_and_fallbacks_without_a_gpu():
    import torch

    from bench import env

    columns = env.environment("cpu")
    assert list(columns) + ["timestamp"] == list(COLUMNS[COLUMNS.index("gpu_name"):])
    assert columns["torch"] == torch.__version__ and columns["triton"] and columns["gpu_name"] == ""
    assert len(env.timestamp()) == len("2026-01-01T00:00:00+00:00")
    if not torch.cuda.is_available():
        assert env.resolve_device("auto") == "cpu"
        assert memory.nvml_reader(0) is None  # no driver: the NVML column stays empty, nothing raises


def measure_fails_once(point):
    """An error the first time a point is seen in this process, a result after that."""
    if point.model not in _SEEN:
        _SEEN.add(point.model)
        raise RuntimeError("transient failure")
    yield {"params": 10, "flops": 1000, "backend": "fake"}


_SEEN: set = set()


def test_resume_measures_error_rows_again_and_replaces_them(tmp_path):
    out = tmp_path / "r.csv"
    points = _points("a", "b")
    sweep.run_sweep(points, out, measure=measure_fails_once, progress=False)
    assert [r["status"] for r in _rows(out)] == ["error", "error"]
    counts = sweep.run_sweep(points, out, measure=measure_fails_once, progress=False)
    assert [(r["model"], r["status"]) for r in _rows(out)] == [("a", "ok"), ("b", "ok")]
    assert counts["ok"] == 2 and counts["resumed"] == 0
