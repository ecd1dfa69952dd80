"""Cluster dispatch without Slurm: row files and their merge, the runner over this machine's GPUs
(fake GPU indices: the fake measures only record CUDA_VISIBLE_DEVICES), the failure rows, and the
command-line checks. Fakes are module level (the task processes import them); no torch at the top."""

import argparse
import json
import os
import subprocess
import sys
import time

import pytest

from bench import cluster
from cluster_fakes import alive, ran, runs, tasks_for


def test_local_gpus_one_task_per_gpu_taken_as_each_ends(tmp_path, shared, monkeypatch):
    monkeypatch.setenv("VITTT_TEST_OTHERS", "3")
    rows = dict(cluster.run_local_gpus(tasks_for("slow", "a", "b", "c"), ["3", "5"], tmp_path / "job"))
    assert set(rows) == {"slow-224", "a-224", "b-224", "c-224"}
    assert all(r["status"] == "ok" and r["flops"] == 1000 for r in rows.values())
    gpu = {task_id: ran(row)[0] for task_id, row in rows.items()}
    # the slow task holds one GPU until the others are done: the other GPU takes them one after another
    assert gpu["slow-224"] in ("3", "5")
    assert {gpu["a-224"], gpu["b-224"], gpu["c-224"]} == {"3", "5"} - {gpu["slow-224"]}
    quick = sorted(ran(rows[t])[1:] for t in ("a-224", "b-224", "c-224"))
    assert all(end <= start for (_, end), (start, _) in zip(quick, quick[1:]))  # never two at once on one GPU
    # every row is also in its row file, and each task ran once
    assert cluster.collect(tmp_path / "job") == rows
    assert runs(shared) == ["a", "b", "c", "slow"]


def test_local_task_killed_is_an_error_row_and_the_others_finish(tmp_path):
    rows = dict(cluster.run_local_gpus(tasks_for("a", "killed", "b"), ["0"], tmp_path / "job"))
    assert [rows[t]["status"] for t in ("a-224", "killed-224", "b-224")] == ["ok", "error", "ok"]
    assert rows["killed-224"]["note"].startswith("task on GPU 0: worker killed by SIGKILL")
    assert cluster.read_row(tmp_path / "job", "killed-224") == rows["killed-224"]


def test_rows_already_written_are_not_run_again_but_errors_are(tmp_path, shared):
    job = tmp_path / "job"
    done = {"params": 1, "status": "ok"}
    cluster.write_row(job, "a-224", done)
    cluster.write_row(job, "b-224", {"status": "error", "note": "Slurm job 9_1 ended NODE_FAIL without writing its row"})
    rows = list(cluster.run_local_gpus(tasks_for("a", "b", "c"), ["0", "1"], job))
    assert rows[0] == ("a-224", done)  # read first, not run
    assert {t: r["status"] for t, r in rows} == {"a-224": "ok", "b-224": "ok", "c-224": "ok"}
    assert runs(shared) == ["b", "c"]
    assert cluster.collect(job)["b-224"]["status"] == "ok"  # the error row was replaced
    # --collect reads rows and runs nothing
    assert dict(cluster.rows_in(tasks_for("a", "c", "d"), job)) == {"a-224": done, "c-224": dict(rows)["c-224"]}
    assert runs(shared) == ["b", "c"]


def _wait_for(path, seconds=30):
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return int(path.read_text())


def test_stopping_the_driver_stops_its_tasks_and_their_points(tmp_path, shared, monkeypatch):
    monkeypatch.setenv("VITTT_TEST_OTHERS", "5")  # never reached: "slow" would hold on for 30 s
    runner = cluster.run_local_gpus(tasks_for("a", "slow"), ["0", "1"], tmp_path / "job")
    start = time.perf_counter()
    assert next(runner)[0] == "a-224"
    point = _wait_for(shared / "slow.pid")  # the point's own process, under its task's process
    runner.close()
    assert time.perf_counter() - start < 20
    assert not alive(point)
    assert set(cluster.collect(tmp_path / "job")) == {"a-224"}  # no outcome for the stopped task: a re-run measures it


LOCAL_DRIVER = ("import sys; from bench import cluster; from cluster_fakes import tasks_for; "
                "list(cluster.run_local_gpus(tasks_for('slow'), ['0'], sys.argv[1]))")


def test_a_killed_driver_takes_its_tasks_with_it(tmp_path, shared, monkeypatch):
    """Linux ends a task whose driver died (even by SIGKILL), so no orphan keeps measuring on a GPU
    that the next run will use."""
    monkeypatch.setenv("VITTT_TEST_OTHERS", "5")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, sys.path)))
    driver = subprocess.Popen([sys.executable, "-c", LOCAL_DRIVER, str(tmp_path / "job")], env=env)
    point = _wait_for(shared / "slow.pid")
    driver.kill()
    driver.wait()
    deadline = time.monotonic() + 10
    while alive(point) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(point)
    assert cluster.collect(tmp_path / "job") == {}


def test_one_driver_per_job_folder(tmp_path):
    first = cluster.run_local_gpus(tasks_for("a"), ["0"], tmp_path / "job")
    next(first)
    with pytest.raises(RuntimeError, match="another driver is running"):
        next(cluster.run_local_gpus(tasks_for("b"), ["0"], tmp_path / "job"))
    first.close()


def test_bad_task_ids_are_refused(tmp_path):
    with pytest.raises(ValueError, match="not a file name"):
        next(cluster.run_local_gpus([("a/b", {})], ["0"], tmp_path))
    with pytest.raises(ValueError, match="not unique"):
        next(cluster.run_local_gpus([("a", {}), ("a", {})], ["0"], tmp_path))


def test_the_task_process_never_imports_torch(tmp_path):
    """The node side measures in a child process: the task's own process loads no torch (so it
    never holds a CUDA context that the measured point's memory would count)."""
    (task_id, spec), = tasks_for("a")
    code = ("import sys, json; from bench import cluster; "
            f"row = cluster.execute(cluster.run_task, {task_id!r}, json.loads(sys.argv[1]), sys.argv[2]); "
            "print(row['status'], 'torch' in sys.modules)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, sys.path)))
    out = subprocess.run([sys.executable, "-c", code, json.dumps(spec), str(tmp_path)], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["ok", "False"]
    assert cluster.read_row(tmp_path, task_id)["status"] == "ok"


class _FakeJob:
    def __init__(self, tmp_path):
        self.job_id = "12_3"
        self.paths = argparse.Namespace(result_pickle=tmp_path / "result.pkl", stderr=tmp_path / "12_3_0_log.err")


@pytest.mark.parametrize("state, status", [("FAILED", "error"), ("NODE_FAIL", "error"), ("CANCELLED", "error"), ("TIMEOUT", "timeout")])
def test_a_task_that_ended_without_a_row_names_its_slurm_state(tmp_path, state, status):
    row = cluster._ended_row(_FakeJob(tmp_path), state)
    assert row["status"] == status
    assert row["note"] == f"Slurm job 12_3 ended {state} without writing its row (log: {tmp_path / '12_3_0_log.err'})"


def test_submitit_time_limit_warning_is_a_timeout_row(tmp_path):
    utils = pytest.importorskip("submitit.core.utils")
    job = _FakeJob(tmp_path)
    trace = "Traceback (most recent call last):\n  ...\nsubmitit.core.utils.UncompletedJobError: Job not requeued because: timed-out and not checkpointable.\n"
    utils.cloudpickle_dump(("error", trace), job.paths.result_pickle)
    row = cluster._ended_row(job, "FAILED")
    assert row["status"] == "timeout"
    assert "ended FAILED without writing its row: submitit.core.utils.UncompletedJobError: Job not requeued because: timed-out" in row["note"]


# ---- command line ----------------------------------------------------------------------------

def _parse(argv):
    parser = argparse.ArgumentParser()
    cluster.add_arguments(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize("argv, message", [
    (["--gpus", "0,x"], "not a comma-separated list of GPU indices"),
    (["--gpus", "1,1"], "names a GPU twice"),
    (["--slurm-opt", "account"], "is not KEY=VALUE"),
    (["--slurm-opt", "partition=gpu"], "partition is set by the sweep itself and cannot be passed through (use --partition)"),
    (["--slurm-opt=--time=5"], "time is set by the sweep itself and cannot be passed through (use --slurm-time)"),
    (["--max-parallel", "0"], "0 is not allowed (must be at least 1)"),
    (["--slurm-time", "ten"], "'ten' is not an integer"),
])
def test_bad_values_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _parse(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--partition", "gpu"], "--partition needs --slurm"),
    (["--slurm-time", "5", "--gpus", "0"], "--slurm-time needs --slurm"),
    (["--slurm", "--gpus", "0,1"], "--slurm and --gpus exclude each other"),
    (["--job-dir", "j"], "--job-dir needs --slurm or --gpus"),
    (["--slurm", "--nodes", "2"], "--nodes and --gpus-per-node go together"),
    (["--slurm", "--nodes", "2", "--gpus-per-node", "4", "--max-parallel", "3"], "not both"),
    (["--collect", "j", "--gpus", "0"], "--collect only merges rows already written"),
    (["--gpus", "0"], "--gpus needs --job-dir DIR"),
])
def test_inconsistent_options_are_one_line_errors(argv, message):
    with pytest.raises(ValueError) as error:
        cluster.runner_from_args(_parse(argv))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_collect_needs_a_job_folder(tmp_path):
    with pytest.raises(ValueError, match="is not a job folder"):
        cluster.runner_from_args(_parse(["--collect", str(tmp_path)]))
    assert not list(tmp_path.iterdir())  # nothing written


def test_slurm_needs_sbatch(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ValueError, match="sbatch is not on PATH"):
        cluster.runner_from_args(_parse(["--slurm", "--job-dir", str(tmp_path / "j")]))
    assert not (tmp_path / "j").exists()


def _fake_slurm(tmp_path, monkeypatch, **commands):
    """Put stand-in Slurm commands (name -> shell script body) first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in commands.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_runner_choice_and_slurm_options(tmp_path, monkeypatch):
    assert cluster.runner_from_args(_parse([])) is None
    assert cluster.runner_from_args(_parse(["--gpus", "0,1"]), job_dir=tmp_path / "default") is not None
    pytest.importorskip("submitit")
    _fake_slurm(tmp_path, monkeypatch, sbatch=f'echo "$@" > {tmp_path}/sbatch-args', sacct="true")  # sbatch records its question
    args = _parse(["--slurm", "--job-dir", str(tmp_path / "j"), "--nodes", "2", "--gpus-per-node", "4", "--partition", "gpu",
                   "--slurm-time", "30", "--slurm-opt", "account=abc", "--slurm-opt", "cpus-per-task=8"])
    assert cluster.runner_from_args(args) is not None
    assert cluster.slurm_options(args) == cluster.SlurmOptions(partition="gpu", time_min=30, max_parallel=8,
                                                               extra=(("account", "abc"), ("cpus_per_task", "8")))
    # the options were checked with sbatch --test-only: ours, then the ones passed through
    assert (tmp_path / "sbatch-args").read_text().split() == [
        "--test-only", "--job-name=vittt-bench", "--time=30", "--nodes=1", "--ntasks-per-node=1", "--cpus-per-task=8",
        "--partition=gpu", "--gpus-per-node=1", "--account=abc", "--wrap=true"]
    assert cluster.slurm_options(_parse(["--slurm"])) == cluster.SlurmOptions()
    assert not (tmp_path / "j").exists()  # nothing written before the run


@pytest.mark.parametrize("sbatch, sacct, message", [
    ("echo 'sbatch: error: invalid partition specified: gpu' >&2; exit 1", "true",
     "sbatch refuses the job options: sbatch: error: invalid partition specified: gpu"),
    ("true", "echo 'Slurm accounting storage is disabled' >&2; exit 1",
     "--slurm needs Slurm accounting (slurmdbd), and sacct failed: Slurm accounting storage is disabled"),
])
def test_slurm_that_refuses_is_one_line_before_anything_is_written(tmp_path, monkeypatch, sbatch, sacct, message):
    pytest.importorskip("submitit")
    _fake_slurm(tmp_path, monkeypatch, sbatch=sbatch, sacct=sacct)
    with pytest.raises(ValueError) as error:
        cluster.runner_from_args(_parse(["--slurm", "--partition", "gpu", "--job-dir", str(tmp_path / "j")]))
    assert str(error.value) == message
    assert not (tmp_path / "j").exists()
