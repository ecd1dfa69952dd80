"""The sweep loses nothing: failures are rows, a killed sweep resumes, isolated points crash or hang
alone, and a row is reused only for a point of the same identity. Measuring functions are cheap
fakes (module level, so an isolated child can import them)."""

import csv
import os
import signal
import time

import pytest

from bench import budget, csvio, sweep, timing
from bench.point import Point
from bench.schema import COLUMNS
from helpers import fake_point, setting


def _points(*models, **kw):
    return [fake_point(m, **kw) for m in models]


def fake_measure(point):
    """Counts first, then a speed stage whose outcome the model name chooses."""
    yield {"params": 10, "flops": 1000}
    if point.model == "oom":
        import torch

        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    if point.model == "oom_text":
        raise RuntimeError("CUDA error: out of memory")
    if point.model == "cublas":
        raise RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`")
    if point.model == "bad":
        raise ValueError("shapes do not match\nsecond line")
    if point.model == "sticky":
        raise RuntimeError("CUDA error: an illegal memory access was encountered")
    if point.model == "interrupt":
        raise KeyboardInterrupt
    if point.model == "crash":
        os._exit(3)
    if point.model == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    if point.model == "hang":
        time.sleep(60)
    yield {"fps": 123.0, "fps_iqr": 0.01, "latency_ms": 8.1, "repeats": 2, "note": "fake"}


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_failures_become_rows_and_the_sweep_goes_on(tmp_path):
    out = tmp_path / "r.csv"
    counts = sweep.run_sweep(_points("a", "oom", "oom_text", "cublas", "bad", "b"), out, measure=fake_measure, progress=False)
    rows = {r["model"]: r for r in _rows(out)}
    assert [r["model"] for r in _rows(out)] == ["a", "oom", "oom_text", "cublas", "bad", "b"]
    assert {m: r["status"] for m, r in rows.items()} == {"a": "ok", "oom": "oom", "oom_text": "oom", "cublas": "oom",
                                                          "bad": "error", "b": "ok"}
    assert counts["ok"] == 2 and counts["oom"] == 3 and counts["error"] == 1
    # what was measured before the failure stays; the message is in the note, on one line
    assert rows["oom"]["flops"] == "1000" and rows["oom"]["fps"] == ""
    assert rows["bad"]["note"] == "ValueError: shapes do not match | second line"
    assert rows["b"]["fps"] == "123" and rows["b"]["note"] == "fake"
    # every row carries its identity
    assert rows["a"]["device_name"] == "Test CPU" and rows["a"]["threads"] == "1" and rows["a"]["metrics"] == "flops fps"
    assert rows["a"]["min_repeats"] == "1" and rows["a"]["backend"] == "fake" and rows["a"]["tf32"] == "off"
    with open(out) as f:
        assert f.readline().rstrip("\n").split(",") == list(COLUMNS)
        assert len(f.read().splitlines()) == 6  # one physical line per row


def test_a_sticky_cuda_error_stops_a_shared_process_sweep(tmp_path):
    gpu = setting(device="cuda", device_name="Test GPU", threads=None)
    points = [fake_point(m, s=gpu) for m in ("a", "sticky", "b")]
    with pytest.raises(sweep.StickyCudaError, match="sticky@224"):
        sweep.run_sweep(points, tmp_path / "r.csv", measure=fake_measure, progress=False)
    assert [(r["model"], r["status"]) for r in _rows(tmp_path / "r.csv")] == [("a", "ok"), ("sticky", "error")]
    # on the CPU (or isolated) the same error is only that point's
    sweep.run_sweep(_points("a", "sticky", "b"), tmp_path / "cpu.csv", measure=fake_measure, progress=False)
    assert len(_rows(tmp_path / "cpu.csv")) == 3


def test_count_only_points_in_parallel_workers(tmp_path):
    """workers > 1: count-only points go to worker processes, failures there are still rows,
    and points that time the model run afterwards in this process; each point exactly once."""
    out = tmp_path / "r.csv"
    counting = [fake_point(m, metrics=("flops",)) for m in ("a", "bad", "c")]
    counts = sweep.run_sweep(counting + _points("d"), out, measure=fake_measure, progress=False, workers=2)
    rows = {r["model"]: r for r in _rows(out)}
    assert len(_rows(out)) == 4 and _rows(out)[-1]["model"] == "d"
    assert {m: r["status"] for m, r in rows.items()} == {"a": "ok", "bad": "error", "c": "ok", "d": "ok"}
    assert rows["bad"]["flops"] == "1000" and counts["ok"] == 3


def measure_all_ok(point):
    yield {"params": 10, "flops": 1000, "fps": 50.0}


def test_killed_sweep_resumes_with_every_point_once(tmp_path):
    out = tmp_path / "r.csv"
    points = _points("a", "b", "interrupt", "c", "d")
    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(points, out, measure=fake_measure, progress=False)
    first = _rows(out)
    assert [r["model"] for r in first] == ["a", "b"]
    # a kill in the middle of a write leaves a cut line: it is dropped, not kept as a row
    with open(out, "a") as f:
        f.write("interrupt,fake,224,196,1,fp3")
    counts = sweep.run_sweep(points, out, measure=measure_all_ok, progress=False)
    rows = _rows(out)
    assert [r["model"] for r in rows] == ["a", "b", "interrupt", "c", "d"]
    assert rows[:2] == first  # the rows measured before the kill are untouched
    assert counts["resumed"] == 2 and counts["ok"] == 3
    assert sweep.run_sweep(points, out, measure=fake_measure, progress=False)["resumed"] == 5
    assert len(_rows(out)) == 5


def test_resume_reuses_only_rows_of_the_same_setting(tmp_path):
    out = tmp_path / "r.csv"
    sweep.run_sweep(_points("a", "b"), out, measure=measure_all_ok, progress=False)
    assert sweep.plan_resume(_points("a", "b"), out).done == _points("a", "b")
    # another thread count or timing policy: not the same measurement, a conflict that names it
    for changed, named in ((setting(threads=2), "threads 1 -> 2"),
                           (setting(policy=timing.TimingPolicy(0.0, 0.0, 5, 5)), "min_repeats 1 -> 5"),
                           (setting(device_name="Other CPU"), "device_name Test CPU -> Other CPU")):
        plan = sweep.plan_resume(_points("a", "b", s=changed), out)
        assert not plan.done and plan.conflicts and named in plan.conflicts[0][1]
        with pytest.raises(ValueError, match="another setting"):
            sweep.run_sweep(_points("a", s=changed), out, measure=measure_all_ok, progress=False)
    assert len(_rows(out)) == 2


def test_a_file_holds_one_setting_even_for_points_it_does_not_have(tmp_path):
    """Another thread count at a resolution the file lacks is still another run: a conflict."""
    out = tmp_path / "r.csv"
    sweep.run_sweep(_points("a", resolution=224), out, measure=measure_all_ok, progress=False)
    plan = sweep.plan_resume(_points("a", resolution=768, s=setting(threads=2)), out)
    assert plan.conflicts == [("a@224 b1 fp32 cpu", "threads 1 -> 2")]
    assert not sweep.plan_resume(_points("a", resolution=768), out).conflicts  # the same setting: fine


def test_a_point_asking_for_more_metrics_is_measured_again_and_replaces_its_row(tmp_path):
    """Count-only rows (above the speed cap) are not results for a run that times the point."""
    out = tmp_path / "r.csv"
    sweep.run_sweep([fake_point("a", metrics=("flops",))], out, measure=measure_all_ok, progress=False)
    plan = sweep.plan_resume([fake_point("a")], out)
    assert plan.todo == [fake_point("a")] and plan.replace == {fake_point("a").key: [0]}
    sweep.run_sweep([fake_point("a")], out, measure=measure_all_ok, progress=False)
    assert [(r["metrics"], r["fps"]) for r in _rows(out)] == [("flops fps", "50")]
    # and a run asking for less finds it done
    assert sweep.plan_resume([fake_point("a", metrics=("flops",))], out).done


def test_isolated_crash_and_hang_are_rows(tmp_path):
    out = tmp_path / "r.csv"
    start = time.perf_counter()
    # the children import neither torch nor the models (the fake measure needs neither): they start in
    # well under a second even on a busy 2-core machine, so a 3 s limit only catches the hang
    sweep.run_sweep(_points("a", "crash", "segfault", "hang", "b"), out, measure=fake_measure, isolate=True, timeout=3,
                    progress=False)
    assert time.perf_counter() - start < 40  # the hang (60 s) was cut short
    rows = {r["model"]: r for r in _rows(out)}
    assert {m: r["status"] for m, r in rows.items()} == {"a": "ok", "crash": "error", "segfault": "error", "hang": "timeout", "b": "ok"}
    assert "exited with status 3" in rows["crash"]["note"]
    assert "SIGSEGV" in rows["segfault"]["note"]
    assert "--timeout 3" in rows["hang"]["note"]
    # the stages a child finished before dying are kept
    assert rows["hang"]["flops"] == rows["crash"]["flops"] == "1000"
    assert rows["a"]["fps"] == "123"


def test_isolate_needs_an_importable_function(tmp_path):
    with pytest.raises(ValueError, match="importable"):
        sweep.run_sweep(_points("a"), tmp_path / "r.csv", measure=lambda p: iter(()), isolate=True, progress=False)
    assert not (tmp_path / "r.csv").exists()


def test_nothing_measured_is_skipped_with_the_reason(tmp_path):
    def counts_off(point):
        yield {"note": "fps/memory not measured: above the limit"}

    out = tmp_path / "r.csv"
    sweep.run_sweep(_points("a"), out, measure=counts_off, progress=False)
    (row,) = _rows(out)
    assert row["status"] == "skipped" and "above the limit" in row["note"]


def test_resume_measures_error_rows_again_and_replaces_them(tmp_path):
    out = tmp_path / "r.csv"
    points = _points("a", "b")
    sweep.run_sweep(points, out, measure=measure_fails_once, progress=False)
    assert [r["status"] for r in _rows(out)] == ["error", "error"]
    counts = sweep.run_sweep(points, out, measure=measure_fails_once, progress=False)
    assert [(r["model"], r["status"]) for r in _rows(out)] == [("a", "ok"), ("b", "ok")]
    assert counts["ok"] == 2 and counts["resumed"] == 0


def measure_fails_once(point):
    """An error the first time a point is seen in this process, a result after that."""
    if point.model not in _SEEN:
        _SEEN.add(point.model)
        raise RuntimeError("transient failure")
    yield {"params": 10, "flops": 1000}


_SEEN: set = set()


# ---- the budget ---------------------------------------------------------------------------

class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_budget_predicts_from_timed_points_and_refuses_what_does_not_fit():
    clock = FakeClock()
    b = budget.Budget(60, clock=clock)
    policy = timing.TimingPolicy(warmup_s=0.5, min_time_s=3.0, min_repeats=3, max_repeats=100)
    s = setting(policy=policy)
    p224, p448, p896 = (Point("deit_t", "deit_t", "deit", "t", r, (r // 16) ** 2, 1, "fp32", "eager", s, ("fps",))
                        for r in (224, 448, 896))
    assert b.predict(p224) is None and b.refuse(p224) == ""  # nothing timed yet: the first point runs
    clock.now = 5.0
    b.record(p224, wall_s=5.0, fields={"latency_ms": 100.0})  # 0.1 s per forward; 3.5 s of it predicted by the policy
    assert b.overhead["deit_t"] == pytest.approx(1.5)
    # deit_t's work at 448 px: its closed form, ~4.6x the 224 px FLOPs -> ~0.46 s a forward
    from bench.families import analytic_flops
    from vittt import get_config

    ratio = analytic_flops(get_config("deit_t", 448)) / analytic_flops(get_config("deit_t", 224))
    call = 0.1 * ratio
    assert b.predict(p448) == pytest.approx(1.5 + policy.predicted_seconds(call))
    clock.now = 58.0  # 2 s left
    assert "predicted" in b.refuse(p448) and "2 s left of 60 s" in b.refuse(p448)
    clock.now = 61.0
    assert "spent" in b.refuse(p896)


def measure_sleeps(point):
    yield {"params": 1, "flops": 1, "fps": 10.0, "latency_ms": 100.0}


def test_budgeted_sweep_skips_with_the_reason_and_resumes(tmp_path):
    """A spent budget: the points it refuses become rows that say why, and a later run measures them."""
    out = tmp_path / "r.csv"
    b = budget.Budget(0.0)  # spent before the first point
    counts = sweep.run_sweep(_points("a", "b"), out, measure=measure_sleeps, progress=False, budget=b)
    rows = _rows(out)
    assert counts["skipped"] == 2 and all(r["status"] == "skipped" and "--budget 0 s spent" in r["note"] for r in rows)
    assert all(r["metrics"] == "" for r in rows)  # nothing measured: a re-run measures them
    counts = sweep.run_sweep(_points("a", "b"), out, measure=measure_sleeps, progress=False)
    assert counts["ok"] == 2 and [r["status"] for r in _rows(out)] == ["ok", "ok"]


def test_csv_refuses_to_append_to_a_file_with_other_columns(tmp_path):
    out = tmp_path / "r.csv"
    out.write_text("model,resolution\nx,224\n")
    with pytest.raises(ValueError, match="other columns"):
        csvio.append_row(out, {"model": "a", "resolution": 224, "batch_size": 1, "dtype": "fp32", "device": "cpu"})
    with pytest.raises(KeyError):
        csvio.append_row(tmp_path / "new.csv", {"model": "a", "speed": 1})


def test_old_files_read_with_unknown_identity(tmp_path):
    old = tmp_path / "old.csv"
    old.write_text("model,family,resolution,tokens,batch_size,device,dtype,flops,fps,fps_spread,status,gpu_name\n"
                   "deit_t,deit,224,196,64,cuda,fp16,1258411200,3000,0.02,ok,NVIDIA H100\n")
    (row,) = csvio.read_rows(old)
    assert row["device_name"] == "NVIDIA H100" and row["fps_spread"] == "0.02" and row["threads"] == ""
    assert "threads" in csvio.missing_columns(old) and "device_name" not in csvio.missing_columns(old)
    frame = csvio.read_frame(old)
    assert frame["flops"].iloc[0] == 1258411200 and "threads" in frame.attrs["missing_columns"]
    binary = tmp_path / "x.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match="x.csv is not a results CSV"):
        csvio.read_rows(binary)
    garbage = tmp_path / "g.csv"
    garbage.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="g.csv is not a results CSV"):
        csvio.read_rows(garbage)


def test_point_travels_as_json_and_keeps_its_identity():
    import json

    p = fake_point("a", s=setting(cuda_graphs=True, tf32=True))
    back = Point.from_dict(json.loads(json.dumps(p.to_dict())))
    assert back == p and back.identity() == p.identity() and back.id == p.id
    assert p.identity()["cuda_graphs"] == "1" and p.identity()["tf32"] == "on"
    assert fake_point("a", s=setting(threads=2)).id != p.id


def test_sticky_cuda_errors():
    from bench.errors import is_sticky_cuda_error

    assert is_sticky_cuda_error(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert is_sticky_cuda_error(RuntimeError("CUDA error: device-side assert triggered"))
    assert not is_sticky_cuda_error(RuntimeError("CUDA error: out of memory"))
    assert not is_sticky_cuda_error(ValueError("illegal memory access"))
