"""Dispatch of independent tasks to a Slurm cluster (through submitit) or to the GPUs of one
machine, with nothing lost when a task or the driver dies.

A task is `(task_id, spec)`: a name that is unique and stable across re-runs (the caller derives it
from what the task measures) and a JSON-serialisable dict for the node-side function `run(spec) -> row`
(a dict of CSV columns). This module knows nothing of measuring; `run_task` is the sweep's node side.

- The node side of every task (`execute`) writes its row to `JOB_DIR/rows/<task_id>.json`
  atomically, then returns it. Only the driver, which yields `(task_id, row)` as tasks finish,
  appends rows to a CSV: no two processes ever write one file.
- A task that dies without writing its row (killed, node failure, preemption, time limit) becomes
  an `error` row (`timeout` past the Slurm time limit) naming the Slurm state and job id; the
  driver writes that row file itself, so the job folder is a complete record.
- Row files are read first: a task with a row that is a result (not error/timeout) is never run
  again. A driver killed mid-sweep loses nothing: `collect(JOB_DIR)` reads what the tasks wrote, and
  running the same tasks again re-attaches to Slurm tasks still in flight and submits only the rest.
- Slurm reports a task killed by a signal only through accounting (sacct): without slurmdbd such a
  task would look "still running" forever, so `run_slurm` refuses to start without it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

from bench import env, sweep
from bench.argtypes import int_at_least
from bench.point import Point
from bench.schema import RESULTS

Task = tuple[str, dict]  # (task_id, spec)
Run = Callable[[dict], dict]  # node side: spec -> row
Runner = Callable[[Sequence[Task]], Iterator[tuple[str, dict]]]
Progress = Optional[Callable[[str], None]]  # called with a one-line status when it changes

TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+=-]*")


# ---- row files -----------------------------------------------------------------------------

def row_path(job_dir: str | Path, task_id: str) -> Path:
    return Path(job_dir) / "rows" / f"{task_id}.json"


def write_row(job_dir: str | Path, task_id: str, row: dict) -> None:
    """Write a task's row file atomically (a reader sees the old file or the whole new one)."""
    path = row_path(job_dir, task_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(row))
    os.replace(tmp, path)


def read_row(job_dir: str | Path, task_id: str) -> Optional[dict]:
    try:
        return json.loads(row_path(job_dir, task_id).read_text())
    except FileNotFoundError:
        return None


def collect(job_dir: str | Path) -> dict[str, dict]:
    """Every row the tasks of a job folder wrote, by task id."""
    return {path.stem: json.loads(path.read_text()) for path in sorted((Path(job_dir) / "rows").glob("*.json"))}


def rows_in(tasks: Sequence[Task], job_dir: str | Path) -> Iterator[tuple[str, dict]]:
    """`--collect`: the rows already written for these tasks (whatever their status); runs nothing."""
    found = collect(job_dir)
    for task_id, _ in tasks:
        if task_id in found:
            yield task_id, found[task_id]


def _check_ids(tasks: Sequence[Task]) -> None:
    ids = [task_id for task_id, _ in tasks]
    bad = [i for i in ids if not TASK_ID.fullmatch(i)]
    if bad:
        raise ValueError(f"task id {bad[0]!r} is not a file name (allowed: letters, digits and ._@+=-)")
    if len(set(ids)) < len(ids):
        raise ValueError(f"task ids are not unique: {sorted(i for i in set(ids) if ids.count(i) > 1)[0]!r}")


def _rows_first(tasks: Sequence[Task], job_dir: Path) -> Iterator[tuple[str, dict]]:
    """Yield the tasks whose row file holds a result; return (generator value) the others: no row,
    or an error/timeout row, measured again as a resumed sweep does."""
    _check_ids(tasks)
    pending = []
    for task_id, spec in tasks:
        row = read_row(job_dir, task_id)
        if row is not None and row.get("status") in RESULTS:
            yield task_id, row
        else:
            pending.append((task_id, spec))
    return pending


def _forget(job_dir: Path, tasks: Sequence[Task]) -> None:
    """Remove the stale (error/timeout) row files of tasks about to run again: their new row is the one to read."""
    for task_id, _ in tasks:
        row_path(job_dir, task_id).unlink(missing_ok=True)


@contextlib.contextmanager
def _driver_lock(job_dir: Path) -> Iterator[None]:
    """One driver per job folder: a second one would submit the same tasks again. The lock goes
    with the process, so a killed driver does not leave it behind."""
    import fcntl

    job_dir.mkdir(parents=True, exist_ok=True)
    with open(job_dir / "driver.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another driver is running on {job_dir}; wait for it, or --collect {job_dir}") from None
        yield


# ---- node side -------------------------------------------------------------------------------

def run_task(spec: dict) -> dict:
    """The sweep's node side: measure one point in its own child process (a crashing or hung kernel
    gives a row), so this process never initialises CUDA. spec = {"point": Point.to_dict(),
    "measure": "module:qualname", "timeout": seconds or None}, as `task_spec` builds it."""
    point = Point.from_dict(spec["point"])
    return sweep.measure_isolated(point, sweep.resolve_measure(spec["measure"]), spec.get("timeout"))


def task_spec(point: Point, measure, timeout: Optional[float] = None) -> dict:
    """The spec `run_task` takes for `point`; `measure` must be importable."""
    return {"point": point.to_dict(), "measure": sweep.qualified_name(measure), "timeout": timeout}


def sweep_runner(run_tasks: Runner, timeout: Optional[float] = None) -> sweep.Runner:
    """A runner for `sweep.run_sweep` from a task runner of this module: each point is a task named
    by its id (unique per key and setting, so a re-run finds the rows it wrote)."""

    def run(todo: list[Point], measure, announce) -> Iterator[tuple[Point, dict]]:
        by_id = {p.id: p for p in todo}
        for task_id, row in run_tasks([(task_id, task_spec(p, measure, timeout)) for task_id, p in by_id.items()]):
            announce(by_id[task_id])
            yield by_id[task_id], row

    return run


def execute(run: Run, task_id: str, spec: dict, job_dir: str) -> dict:
    """Node side of every task: run it, write its row file, return the row."""
    row = run(spec)
    write_row(job_dir, task_id, row)
    return row


# ---- the GPUs of one machine ---------------------------------------------------------------

def run_local_gpus(tasks: Sequence[Task], gpus: Sequence[str], job_dir: str | Path, *, run: Run = run_task,
                   progress: Progress = None) -> Iterator[tuple[str, dict]]:
    """(task_id, row) as tasks finish, one task at a time per listed GPU: each task is a process
    (`python -m bench.cluster JOB_DIR TASK_ID DRIVER_PID`) that sees only its GPU
    (CUDA_VISIBLE_DEVICES); a GPU takes the next task as soon as its task ends. When the driver stops
    (or is killed) its tasks stop too: no orphaned task shares a GPU with the next run."""
    job_dir = Path(job_dir).resolve()
    with _driver_lock(job_dir):
        pending = yield from _rows_first(tasks, job_dir)
        if not pending:
            return
        _forget(job_dir, pending)
        run_name = sweep.qualified_name(run)
        for task_id, spec in pending:
            path = job_dir / "tasks" / f"{task_id}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"run": run_name, "spec": spec}))
        todo: queue.Queue[str] = queue.Queue()
        for task_id, _ in pending:
            todo.put(task_id)
        finished: queue.Queue[tuple[str, dict]] = queue.Queue()
        stop = threading.Event()
        procs: dict[str, subprocess.Popen] = {}  # gpu -> its running task process

        def lane(gpu: str) -> None:
            while not stop.is_set():
                try:
                    task_id = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    row = _run_on_gpu(task_id, gpu, job_dir, procs, stop)
                except Exception as exc:  # the driver must not wait for a row that never comes
                    row = {"status": "error", "note": f"task on GPU {gpu} did not start: {type(exc).__name__}: {exc}"}
                if row is not None:
                    finished.put((task_id, row))

        threads = [threading.Thread(target=lane, args=(gpu,), daemon=True) for gpu in gpus]
        for thread in threads:
            thread.start()
        try:
            for n in range(1, len(pending) + 1):
                task_id, row = finished.get()
                yield task_id, row
                if progress:
                    progress(f"GPUs {','.join(gpus)}: {n}/{len(pending)} tasks done")
        finally:  # also when the consumer stops early (KeyboardInterrupt): SIGTERM, then SIGKILL after 10 s
            stop.set()
            for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, None)):
                for proc in list(procs.values()):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, sig)
                deadline = time.monotonic() + (wait_s or 0)
                for thread in threads:
                    thread.join(None if wait_s is None else max(0.0, deadline - time.monotonic()))


def _run_on_gpu(task_id: str, gpu: str, job_dir: Path, procs: dict, stop: threading.Event) -> Optional[dict]:
    """Run one task's process on one GPU; its row, or an error row when it died without one
    (None when the driver stopped it: no outcome, so a re-run runs it again)."""
    log = job_dir / "logs" / f"{task_id}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    child_env = dict(os.environ, CUDA_VISIBLE_DEVICES=gpu, PYTHONPATH=env.child_pythonpath())
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bench.cluster", str(job_dir), task_id, str(os.getpid())], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=child_env, start_new_session=True)
        procs[gpu] = proc
        if stop.is_set():  # the driver stopped while this task was starting
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        del procs[gpu]
    row = read_row(job_dir, task_id)
    if row is None and not stop.is_set():
        reason = f"{sweep.exit_reason(proc.returncode)}; last output: {sweep.tail(log)}"
        row = {"status": "error", "note": f"task on GPU {gpu}: {reason}"}
        write_row(job_dir, task_id, row)
    return row


def _task_process(job_dir: str, task_id: str, driver_pid: str) -> None:
    """`python -m bench.cluster JOB_DIR TASK_ID DRIVER_PID`: one task of `run_local_gpus`. SIGTERM,
    sent by the driver when it stops or by Linux when it dies, ends the task through an exception,
    so that the point's own child process is killed too (measure_isolated's cleanup)."""
    def terminate(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(driver_pid):  # the driver died before the line above
        raise SystemExit(128 + signal.SIGTERM)
    task = json.loads((Path(job_dir) / "tasks" / f"{task_id}.json").read_text())
    execute(sweep.resolve_measure(task["run"]), task_id, task["spec"], job_dir)


# ---- Slurm ---------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SlurmOptions:
    """How the tasks become a Slurm job array: one task per array element, one GPU each."""

    partition: Optional[str] = None
    time_min: int = 60  # per task
    max_parallel: Optional[int] = None  # array elements running at once (None: as many as fit)
    cpus_per_task: int = 2  # a --slurm-opt cpus_per_task replaces it
    extra: tuple[tuple[str, str], ...] = ()  # --slurm-opt KEY=VALUE: more sbatch options, verbatim
    poll_s: float = 1.0  # one sacct call for all tasks per poll
    grace_s: float = 15.0  # how long a COMPLETED/PREEMPTED task may take to show its row (file system delay, requeue)
    job_name: str = "vittt-bench"


# sacct states after which a task runs no more; any other state (or none yet) is in flight.
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED",
         "REVOKED"}
LATE = {"COMPLETED", "PREEMPTED"}  # ended, but the row may still come (see SlurmOptions.grace_s)
GPU_REQUESTS = {"gres", "gpus", "gpus_per_node", "gpus_per_task", "gpus_per_socket"}  # given: no default one-GPU request
RESERVED = {  # set by run_slurm itself (or by its own flag): not allowed in --slurm-opt
    "partition": "--partition", "time": "--slurm-time", "array": "--max-parallel", "nodes": "--nodes/--max-parallel",
    "job_name": None, "output": None, "error": None, "open_mode": None, "signal": None, "ntasks": None, "ntasks_per_node": None,
}


def check_accounting() -> None:
    """Fail early where sacct does not answer: submitit (and this driver) read a task's end from
    Slurm accounting, and without it a killed task would be waited for forever."""
    try:
        proc = subprocess.run(["sacct", "-n", "-X", "-o", "JobID", "-S", "now"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"--slurm needs Slurm accounting, and sacct did not answer: {exc}") from None
    if proc.returncode:
        said = sweep.one_line(proc.stderr or proc.stdout)
        raise RuntimeError(f"--slurm needs Slurm accounting (slurmdbd), and sacct failed: {said}")


def _task_options(options: SlurmOptions) -> dict[str, Any]:
    """The sbatch options of every task that submitit knows by name (sbatch's long option, _ for -)."""
    opts: dict[str, Any] = {"job_name": options.job_name, "time": options.time_min, "nodes": 1, "ntasks_per_node": 1,
                            "cpus_per_task": options.cpus_per_task}
    if options.partition:
        opts["partition"] = options.partition
    if not GPU_REQUESTS & {key for key, _ in options.extra}:
        opts["gpus_per_node"] = 1
    return opts


def check_sbatch(options: SlurmOptions) -> None:
    """`sbatch --test-only` with the tasks' options: a bad partition, account or option is one
    clear ValueError before anything is written or submitted."""
    flags = [f"--{key.replace('_', '-')}={value}" for key, value in {**_task_options(options), **dict(options.extra)}.items()]
    proc = subprocess.run(["sbatch", "--test-only", *flags, "--wrap=true"], capture_output=True, text=True, timeout=60)
    if proc.returncode:
        raise ValueError(f"sbatch refuses the job options: {sweep.one_line(proc.stderr or proc.stdout)}")


def _executor(folder: Path, options: SlurmOptions, n_tasks: int):
    import submitit

    executor = submitit.SlurmExecutor(folder=folder)
    executor.update_parameters(
        **_task_options(options),
        array_parallelism=options.max_parallel or n_tasks,
        # submitit's warning signal (USR2) comes this long before the time limit; 90 s would hit a short job at once
        signal_delay_s=min(90, options.time_min * 6),
        setup=[f"export PYTHONPATH={shlex.quote(env.child_pythonpath())}"],
        additional_parameters=dict(options.extra),  # written as they are: #SBATCH --key=value
    )
    return executor


def _ended_row(job, state: str) -> dict:
    """The row of a task that ended without writing one: `timeout` for a time limit (Slurm's, or
    submitit's warning before it), else `error`; the note names the Slurm state, job id and log."""
    detail = ""
    if job.paths.result_pickle.exists():  # the task raised: submitit saved the traceback
        from submitit.core.utils import pickle_load

        with contextlib.suppress(Exception):
            outcome, value = pickle_load(job.paths.result_pickle)
            if outcome == "error":
                detail = next((line.strip() for line in reversed(str(value).splitlines()) if line.strip()), "")
    timed_out = state == "TIMEOUT" or "timed-out" in detail
    note = f"Slurm job {job.job_id} ended {state} without writing its row" + (f": {detail}" if detail else "")
    return {"status": "timeout" if timed_out else "error", "note": f"{note} (log: {job.paths.stderr})"}


def _submitted(job_dir: Path) -> dict[str, str]:
    """task_id -> the Slurm job id it was last submitted as (JOB_DIR/submitted.json)."""
    path = job_dir / "submitted.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _record_submitted(job_dir: Path, job_ids: dict[str, str]) -> None:
    path = job_dir / "submitted.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**_submitted(job_dir), **job_ids}, indent=1))
    os.replace(tmp, path)


def run_slurm(tasks: Sequence[Task], job_dir: str | Path, options: SlurmOptions = SlurmOptions(), *,
              run: Run = run_task, progress: Progress = None) -> Iterator[tuple[str, dict]]:
    """(task_id, row) as tasks finish: tasks with a result row are yielded first; the ones a killed
    driver left running in Slurm are waited for again; the rest become one submitit job array.
    Raises ValueError when sbatch refuses the array (bad partition or option), RuntimeError when
    Slurm accounting is missing or another driver holds the job folder."""
    import submitit

    job_dir = Path(job_dir).resolve()  # the tasks may not start in this directory
    with _driver_lock(job_dir):
        recorded = _submitted(job_dir)
        queued = _queued() if recorded else set()  # before the rows are read: a task ending in between leaves its row
        pending = yield from _rows_first(tasks, job_dir)
        if not pending:
            return
        check_accounting()
        folder = job_dir / "slurm" / "%j"
        # what an earlier (killed) driver submitted and Slurm still runs or queues is waited for again
        jobs = {task_id: submitit.SlurmJob(folder=folder, job_id=recorded[task_id])
                for task_id, _ in pending if recorded.get(task_id) in queued}
        todo = [(task_id, spec) for task_id, spec in pending if task_id not in jobs]
        if todo:
            _forget(job_dir, todo)
            executor = _executor(folder, options, len(todo))
            ids, specs = [t for t, _ in todo], [s for _, s in todo]
            try:
                submitted = executor.map_array(execute, [run] * len(todo), ids, specs, [str(job_dir)] * len(todo))
            except submitit.core.utils.FailedJobError as exc:
                raise ValueError(f"sbatch refused the job array: {sweep.one_line(str(exc))}") from None
            jobs.update(zip(ids, submitted))
            _record_submitted(job_dir, {task_id: job.job_id for task_id, job in zip(ids, submitted)})
            if progress:
                array = submitted[0].job_id.split("_")[0]
                progress(f"submitted {len(todo)} tasks as Slurm job {array} (job folder {job_dir})")
        yield from _watch(jobs, job_dir, options, progress)


def _queued() -> set[str]:
    """Job ids (array elements one by one) that Slurm still runs or queues for this user. squeue,
    not sacct: sacct can miss an array element for a moment as it starts."""
    proc = subprocess.run(["squeue", "--noheader", "--array", "--format=%i", "--me"], capture_output=True, text=True, timeout=60)
    if proc.returncode:
        raise RuntimeError(f"squeue failed: {sweep.one_line(proc.stderr or proc.stdout)}")
    return set(proc.stdout.split())


def _watch(jobs: dict, job_dir: Path, options: SlurmOptions, progress: Progress) -> Iterator[tuple[str, dict]]:
    """Poll the row files and (one sacct call per poll, through submitit's watcher: its own polling
    slows down to minutes) the tasks' states until every task has a row."""
    import submitit

    watcher = submitit.SlurmJob.watcher
    waiting = dict(jobs)
    late_since: dict[str, float] = {}
    shown = ""
    n = len(jobs)
    while waiting:
        for task_id in list(waiting):
            row = read_row(job_dir, task_id)
            if row is not None:
                del waiting[task_id]
                yield task_id, row
        if not waiting:
            break
        watcher.update()
        # "CANCELLED by 0" -> CANCELLED; no state yet (sacct lags behind sbatch) -> UNKNOWN, in flight
        states = {task_id: (watcher.get_state(job.job_id, mode="cache") or "UNKNOWN").split()[0] for task_id, job in waiting.items()}
        for task_id, state in states.items():
            if state not in ENDED:
                late_since.pop(task_id, None)
                continue
            if state in LATE and time.monotonic() - late_since.setdefault(task_id, time.monotonic()) < options.grace_s:
                continue
            row = read_row(job_dir, task_id)  # it may have come since the row files were read
            if row is None:
                row = _ended_row(waiting[task_id], state)
                write_row(job_dir, task_id, row)
            del waiting[task_id]
            yield task_id, row
        if progress:
            running = sum(s == "RUNNING" for t, s in states.items() if t in waiting)
            text = f"Slurm: {n - len(waiting)}/{n} tasks done, {running} running, {len(waiting) - running} queued"
            if text != shown:
                progress(text)
                shown = text
        if waiting:
            time.sleep(options.poll_s)


# ---- command line --------------------------------------------------------------------------

def _slurm_opt(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    key = key.strip().lstrip("-").replace("-", "_")
    if not sep or not re.fullmatch(r"[a-z][a-z0-9_]*", key) or not value.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE with an sbatch option as KEY (e.g. account=abc, qos=high)")
    if key in RESERVED:
        instead = f" (use {RESERVED[key]})" if RESERVED[key] else ""
        raise argparse.ArgumentTypeError(f"{key} is set by the sweep itself and cannot be passed through{instead}")
    return key, value.strip()


def _gpu_list(text: str) -> list[str]:
    gpus = [g.strip() for g in text.split(",")]
    if not all(g.isdigit() for g in gpus):
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of GPU indices (e.g. 0,1,2,3)")
    if len(set(gpus)) < len(gpus):
        raise argparse.ArgumentTypeError(f"{text!r} names a GPU twice")
    return gpus


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The cluster options: --slurm (with its job options), --gpus, --job-dir, --collect."""
    group = parser.add_argument_group(
        "cluster", "spread the points over Slurm jobs or over this machine's GPUs, one point per GPU; every "
        "point's row is also written to JOB_DIR/rows/, so a killed driver loses nothing (--collect, or re-run)")
    add = group.add_argument
    add("--slurm", action="store_true",
        help="submit the points as one Slurm job array through submitit (SLURM_CONF from the environment)")
    add("--partition", metavar="NAME", help="Slurm partition (default: the cluster's default)")
    add("--gpus-per-node", type=int_at_least(1), metavar="N", help="with --nodes: GPUs per node, to run nodes x N points at once")
    add("--nodes", type=int_at_least(1), metavar="N", help="with --gpus-per-node: run at most N nodes' worth of points at once")
    add("--max-parallel", type=int_at_least(1), metavar="N", help="run at most N points at once (default: as many as Slurm fits)")
    add("--slurm-time", type=int_at_least(1), metavar="MIN",
        help=f"time limit of each point's job, minutes (default: {SlurmOptions.time_min}); past it the row says timeout")
    add("--slurm-opt", type=_slurm_opt, action="append", default=[], metavar="KEY=VALUE",
        help="another sbatch option, repeatable: account, qos, constraint, comment, exclude, "
             f"cpus_per_task (default {SlurmOptions.cpus_per_task}), gres (replaces the one GPU per point), ...")
    add("--job-dir", type=Path, metavar="DIR",
        help="where the tasks write rows, logs and submitit files (the same DIR again resumes)")
    add("--collect", type=Path, metavar="JOB_DIR", help="merge the rows a job folder holds into the CSV; submits nothing")
    add("--gpus", type=_gpu_list, metavar="0,1,2,3", help="without Slurm: one point at a time on each listed GPU of this machine")


SLURM_ONLY = ("partition", "gpus_per_node", "nodes", "max_parallel", "slurm_time", "slurm_opt")


def runner_from_args(args: argparse.Namespace, job_dir: Optional[Path] = None, progress: Progress = None) -> Optional[Runner]:
    """The runner that the cluster options ask for (`runner(tasks)` yields (task_id, row)), or None
    for a plain local run. `job_dir` is the default job folder. Raises ValueError (one line) on
    inconsistent options, on options that sbatch refuses, or without Slurm, its accounting or
    submitit, before anything is written."""
    given = [name for name in SLURM_ONLY if getattr(args, name)]
    flag = lambda name: "--" + name.replace("_", "-")  # noqa: E731
    if args.collect and (args.slurm or args.gpus):
        raise ValueError("--collect only merges rows already written; it takes no --slurm or --gpus")
    if args.slurm and args.gpus:
        raise ValueError("--slurm and --gpus exclude each other (Slurm gives each point its GPU)")
    if given and not args.slurm:
        raise ValueError(f"{flag(given[0])} needs --slurm")
    if args.job_dir and not (args.slurm or args.gpus):
        raise ValueError("--job-dir needs --slurm or --gpus (to collect a job folder: --collect JOB_DIR)")
    if bool(args.nodes) != bool(args.gpus_per_node):
        raise ValueError("--nodes and --gpus-per-node go together (points at once = nodes x GPUs per node)")
    if args.nodes and args.max_parallel:
        raise ValueError("give --max-parallel or --nodes with --gpus-per-node, not both")
    if args.collect:
        if not (args.collect / "rows").is_dir():
            raise ValueError(f"--collect: {args.collect} is not a job folder (it has no rows/)")
        return lambda tasks: rows_in(tasks, args.collect)
    if not (args.slurm or args.gpus):
        return None
    job_dir = args.job_dir or job_dir
    if job_dir is None:
        raise ValueError(f"{'--slurm' if args.slurm else '--gpus'} needs --job-dir DIR")
    if args.gpus:
        return lambda tasks: run_local_gpus(tasks, args.gpus, job_dir, progress=progress)
    if shutil.which("sbatch") is None:
        raise ValueError("--slurm: sbatch is not on PATH (run on a Slurm login node)")
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise ValueError("--slurm needs submitit: pip install 'vittt-bench[cluster]'") from None
    options = slurm_options(args)
    check_sbatch(options)
    try:
        check_accounting()
    except RuntimeError as exc:
        raise ValueError(str(exc)) from None
    return lambda tasks: run_slurm(tasks, job_dir, options, progress=progress)


def slurm_options(args: argparse.Namespace) -> SlurmOptions:
    """The SlurmOptions that the --slurm flags give."""
    return SlurmOptions(partition=args.partition, time_min=args.slurm_time or SlurmOptions.time_min,
                        max_parallel=args.max_parallel or (args.nodes * args.gpus_per_node if args.nodes else None),
                        extra=tuple(dict(args.slurm_opt).items()))


if __name__ == "__main__":
    _task_process(*sys.argv[1:])
