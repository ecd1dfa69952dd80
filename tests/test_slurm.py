"""Sweeps through a real Slurm: job arrays with a parallelism limit, one GPU per task, FLOP rows
equal to a local run's, a task killed with SIGKILL, a killed driver. Needs a running Slurm with
accounting and fake GPUs (`eval "$(bash scripts/slurm-local.sh up)"`); skipped without one."""

import dataclasses
import itertools
import json
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest

from bench import cluster, sweep, timing
from bench.measure import measure_point
from bench.models import parse
from bench.point import make_points, make_setting
from cluster_fakes import ran, runs, tasks_for

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(not (shutil.which("sbatch") and os.environ.get("SLURM_CONF")),
                       reason='needs a Slurm: sbatch on PATH and SLURM_CONF exported (eval "$(bash scripts/slurm-local.sh up)")'),
]
pytest.importorskip("submitit", reason="--slurm needs submitit (pip install 'vittt-bench[cluster]')")

OPTIONS = cluster.SlurmOptions(max_parallel=2, poll_s=0.5, time_min=5)


def _submitted(job):
    return json.loads((job / "submitted.json").read_text())


def test_array_runs_max_parallel_tasks_at_once_each_on_its_own_gpu(tmp_path, shared, monkeypatch):
    monkeypatch.setenv("VITTT_TEST_SLEEP", "1.5")
    job = tmp_path / "job"
    options = dataclasses.replace(OPTIONS, extra=(("comment", "vittt-test"), ("cpus_per_task", "1")))
    rows = dict(cluster.run_slurm(tasks_for("a", "b", "c", "d"), job, options))
    assert sorted(rows) == ["a-224", "b-224", "c-224", "d-224"]
    assert all(r["status"] == "ok" and r["flops"] == 1000 for r in rows.values())
    spans = [ran(r) for r in rows.values()]  # (CUDA_VISIBLE_DEVICES, start, end)
    assert {gpu for gpu, _, _ in spans} <= {"0", "1", "2", "3"}
    overlapping = [(x, y) for x, y in itertools.combinations(spans, 2) if x[1] < y[2] and y[1] < x[2]]
    assert overlapping  # tasks ran at once...
    assert all(x[0] != y[0] for x, y in overlapping)  # ...each on its own GPU
    assert max(sum(s <= t < e for _, s, e in spans) for _, t, _ in spans) <= 2  # never more than --max-parallel
    # one job array (its sbatch options: ours and those passed through), each task ran once, every row is in the job folder
    (array,) = {job_id.split("_")[0] for job_id in _submitted(job).values()}
    script = (job / "slurm" / array / f"{array}_submission.sh").read_text().splitlines()
    for line in ("--array=0-3%2", "--gpus-per-node=1", "--comment=vittt-test", "--cpus-per-task=1", "--time=5"):
        assert f"#SBATCH {line}" in script
    assert "#SBATCH --cpus-per-task=2" not in script
    assert runs(shared) == ["a", "b", "c", "d"]
    assert cluster.collect(job) == rows


def test_flops_rows_equal_a_local_run(tmp_path):
    setting = make_setting("cpu", timing.CPU_POLICY, threads=1)
    points = make_points([parse("deit_t"), parse("vittt_t")], [224, 256], batch_size=2, dtype="fp32", setting=setting,
                         metrics=["flops"])
    tasks = [(f"{p.model}-{p.resolution}", cluster.task_spec(p, measure_point)) for p in points]
    rows = dict(cluster.run_slurm(tasks, tmp_path / "job", OPTIONS))
    local = {task_id: sweep.measure_in_process(p, measure_point) for (task_id, _), p in zip(tasks, points)}
    assert all(row["status"] == "ok" and row["flops"] > 0 for row in local.values())
    assert rows == local


def test_a_task_killed_by_sigkill_is_an_error_row_and_the_others_finish(tmp_path):
    job = tmp_path / "job"
    rows = dict(cluster.run_slurm(tasks_for("a", "killed", "b"), job, OPTIONS))
    assert {t: r["status"] for t, r in rows.items()} == {"a-224": "ok", "killed-224": "error", "b-224": "ok"}
    job_id = _submitted(job)["killed-224"]
    assert rows["killed-224"]["note"].startswith(f"Slurm job {job_id} ended FAILED without writing its row (log: ")
    assert cluster.read_row(job, "killed-224") == rows["killed-224"]  # the driver wrote it down too


def test_the_time_limit_warning_gives_a_timeout_row(tmp_path, shared, monkeypatch):
    """Slurm warns a job before its time limit (submitit's USR2, sent here at once as submitit's own
    tests do); with a limit of 10 minutes or less submitit then ends the job as timed out."""
    monkeypatch.setenv("VITTT_TEST_OTHERS", "1")  # never comes: "slow" holds on for 30 s
    job = tmp_path / "job"

    def warn_when_running():
        deadline = time.monotonic() + 60
        while not runs(shared) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        subprocess.run(["scancel", "--signal=USR2", _submitted(job)["slow-224"]], check=True)

    warner = threading.Thread(target=warn_when_running)
    warner.start()
    start = time.monotonic()
    rows = dict(cluster.run_slurm(tasks_for("slow"), job, OPTIONS))
    warner.join()
    assert time.monotonic() - start < 25
    assert rows["slow-224"]["status"] == "timeout"
    assert "ended FAILED without writing its row: submitit.core.utils.UncompletedJobError: Job not requeued because: timed-out" in rows["slow-224"]["note"]


DRIVER = ("import sys; from bench import cluster; from cluster_fakes import tasks_for; "
          "list(cluster.run_slurm(tasks_for('a', 'b', 'c', 'd'), sys.argv[1], cluster.SlurmOptions(max_parallel=2, poll_s=0.5)))")


def test_a_killed_driver_loses_nothing_and_nothing_runs_twice(tmp_path, shared, monkeypatch):
    monkeypatch.setenv("VITTT_TEST_SLEEP", "2")
    job = tmp_path / "job"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, sys.path)))
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(job)], env=env)
    deadline = time.monotonic() + 60
    while not list(job.glob("rows/*.json")) and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    driver.kill()  # SIGKILL, while tasks still run or wait in Slurm
    driver.wait()
    submitted = _submitted(job)
    assert len(submitted) == 4 and len(list(job.glob("rows/*.json"))) < 4
    # the same tasks again: the rows written are read, the tasks still in Slurm are waited for
    rows = dict(cluster.run_slurm(tasks_for("a", "b", "c", "d"), job, OPTIONS))
    assert all(r["status"] == "ok" for r in rows.values()) and len(rows) == 4
    assert _submitted(job) == submitted  # nothing submitted again
    assert runs(shared) == ["a", "b", "c", "d"]  # each task ran once
    assert cluster.collect(job) == rows  # the job folder holds every row


def test_a_bad_partition_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="sbatch refused the job array: .*invalid partition"):
        list(cluster.run_slurm(tasks_for("a"), tmp_path / "job", cluster.SlurmOptions(partition="nope")))
    assert not (tmp_path / "job" / "submitted.json").exists()


def test_slurm_without_accounting_is_refused_before_submitting(tmp_path, monkeypatch):
    conf = tmp_path / "slurm.conf"
    text = open(os.environ["SLURM_CONF"]).read()
    conf.write_text("\n".join("AccountingStorageType=accounting_storage/none" if line.startswith("AccountingStorageType=") else line
                              for line in text.splitlines()))
    monkeypatch.setenv("SLURM_CONF", str(conf))
    with pytest.raises(RuntimeError, match="needs Slurm accounting"):
        list(cluster.run_slurm(tasks_for("a"), tmp_path / "job", OPTIONS))
    assert not (tmp_path / "job" / "submitted.json").exists()
