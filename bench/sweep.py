"""The sweep runner: measure points and append one row per point to the results CSV as soon as it
is done, so nothing measured is ever lost.

- A measuring function is a generator `measure(point) -> Iterator[dict]` that yields partial rows
  stage by stage (counts, then speed/memory): when a later stage fails, what came before stays.
- Out of memory is a result (status `oom`), any other exception a row with status `error`; the
  sweep goes on. A sticky CUDA error (the context is unusable after it) stops a sweep whose points
  share this process. KeyboardInterrupt stops it; re-running skips the points already measured.
- `isolate=True` measures every point in a child process (`python -m bench.sweep SPEC RESULT`,
  this same code), so a crashing kernel gives an `error` row and a hung one, killed after
  `timeout` seconds, a `timeout` row, and the other points are unaffected.
- Resume: a point is done when the CSV has a row of its key and setting (`Point.identity`) whose
  metrics include the point's, with a result (ok, oom, skipped); error/timeout rows and rows that
  measured less are measured again and replaced. A row of the same key in another setting is a
  conflict (`plan_resume`): the caller picks another file.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Optional

from bench import csvio, env
from bench.errors import is_oom, is_sticky_cuda_error
from bench.point import Point
from bench.schema import RESULTS, SETTING

RUN_SETTING = tuple(c for c in SETTING if c != "backend")  # a run's setting: all but the per-model backend

if TYPE_CHECKING:
    from bench.budget import Budget

Measure = Callable[[Point], Iterator[dict]]
Runner = Callable[[list[Point], Measure, Callable[[Point], None]], Iterator[tuple[Point, dict]]]


class StickyCudaError(RuntimeError):
    """A CUDA error after which this process's CUDA context is unusable: the sweep must stop."""


# ---- outcome of one point ----------------------------------------------------------------

def one_line(text: str, limit: int = 400) -> str:
    text = " | ".join(line.strip() for line in str(text).splitlines() if line.strip())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _merge(row: dict, part: dict) -> None:
    """Add a partial result to a row; notes accumulate instead of replacing each other."""
    for k, v in part.items():
        if k == "note":
            row["note"] = "; ".join(n for n in (row.get("note"), v) if n)
        else:
            row[k] = v


MEASURED = ("flops", "fps", "peak_mem_mib", "rss_peak_mib", "pred_peak_mem_mib")


def measure_in_process(point: Point, measure: Measure, on_part: Callable[[dict], None] = lambda row: None) -> dict:
    """Run `measure` on a point and return its row fields with `status` (and `note` on failure);
    `on_part(row)` is called after each stage, before any status is set (the isolated worker saves
    the row there, so a crash later keeps the stages done)."""
    row: dict[str, Any] = {}
    failure = None
    try:
        for part in measure(point):
            _merge(row, part)
            on_part(row)
        row["status"] = "ok" if any(row.get(c) not in (None, "") for c in MEASURED) else "skipped"
    except Exception as exc:  # the sweep must go on: the failure is the row's result
        failure = ("oom" if is_oom(exc) else "error", f"{type(exc).__name__}: {one_line(exc)}", is_sticky_cuda_error(exc))
    if failure:  # outside the except block, so the traceback (and the tensors it holds) is gone
        row["status"] = failure[0]
        _merge(row, {"note": failure[1]})
        row["_sticky"] = failure[2]
        from bench.measure import free_memory

        free_memory()
    return row


# ---- isolated points ---------------------------------------------------------------------

def qualified_name(fn: Callable) -> str:
    if fn.__module__ == "__main__" or "<locals>" in fn.__qualname__:
        raise ValueError(f"isolated points need an importable measuring function, not {fn.__module__}.{fn.__qualname__}")
    return f"{fn.__module__}:{fn.__qualname__}"


def resolve_measure(name: str) -> Measure:
    import importlib

    module, qualname = name.split(":")
    obj: Any = importlib.import_module(module)
    for attr in qualname.split("."):
        obj = getattr(obj, attr)
    return obj


def exit_reason(returncode: int) -> str:
    if returncode < 0:
        name = signal.Signals(-returncode).name
        hint = " (likely the kernel's out-of-memory killer)" if name == "SIGKILL" else ""
        return f"worker killed by {name}{hint}"
    return f"worker exited with status {returncode} before reporting"


def tail(path: Path, lines: int = 3) -> str:
    text = path.read_text(errors="replace").strip().splitlines()
    return one_line("\n".join(text[-lines:]), 300)


def measure_isolated(point: Point, measure: Measure, timeout: Optional[float] = None) -> dict:
    """Measure a point in a child process running this module; a crash or a timeout (the child's
    whole process group is killed) becomes the row's status, keeping the stages it had saved."""
    with tempfile.TemporaryDirectory(prefix="vittt-point-") as tmp:
        spec, result, log = Path(tmp, "spec.json"), Path(tmp, "row.json"), Path(tmp, "log.txt")
        spec.write_text(json.dumps({"point": point.to_dict(), "measure": qualified_name(measure)}))
        child_env = dict(os.environ, PYTHONPATH=env.child_pythonpath())
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "bench.sweep", str(spec), str(result)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=child_env, start_new_session=True,
            )
            try:
                proc.wait(timeout=timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:  # also on KeyboardInterrupt: never leave the child running
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        row = json.loads(result.read_text()) if result.exists() else {}
        row.pop("_sticky", None)  # the child's context died with it
        if timed_out:
            row["status"] = "timeout"
            _merge(row, {"note": f"point exceeded --timeout {timeout:g} s and was killed"})
        elif "status" not in row:
            row["status"] = "error"
            _merge(row, {"note": f"{exit_reason(proc.returncode)}; last output: {tail(log)}"})
        return row


def _worker(spec_path: str, result_path: str) -> None:
    """Child side of `measure_isolated`: measure the point, saving the row after every stage."""
    spec = json.loads(Path(spec_path).read_text())
    result = Path(result_path)

    def save(row: dict) -> None:
        tmp = result.with_suffix(".tmp")
        tmp.write_text(json.dumps(row))
        os.replace(tmp, result)

    save(measure_in_process(Point.from_dict(spec["point"]), resolve_measure(spec["measure"]), on_part=save))


# ---- resume ------------------------------------------------------------------------------

@dataclass
class Resume:
    """What a sweep does with the rows a CSV holds already."""

    todo: list[Point]
    done: list[Point]
    replace: dict[csvio.Key, list[int]] = field(default_factory=dict)  # point -> indexes of the rows its new result replaces
    conflicts: list[tuple[str, str]] = field(default_factory=list)  # (a row's label, "threads 1 -> 2, ...")


def _label(row: dict) -> str:
    model, res, batch, dtype, device = csvio.key_of(row)
    return f"{model}@{res} b{batch} {dtype} {device}"


def _diff(theirs: dict, mine: dict, columns) -> str:
    return ", ".join(f"{c} {theirs[c] or '-'} -> {mine[c] or '-'}" for c in columns if theirs[c] != mine[c])


def plan_resume(points: Iterable[Point], csv_path: str | Path) -> Resume:
    """Sort the points into done (a row of the same key and setting with a result and at least the
    point's metrics) and to do (replacing error/timeout rows and rows that measured less); and list
    the conflicts: a file holds one run's setting, so a row of any point measured in another setting
    (threads, timing, versions, ...; or, for the same point, another kernel backend) is a conflict."""
    points = list({p.key: p for p in points}.values())
    rows = csvio.read_rows(csv_path)
    out = Resume([], [])
    if points:
        run = points[0].identity()
        for r in rows:
            diff = _diff(csvio.setting_of(r), run, RUN_SETTING)
            if diff:
                out.conflicts.append((_label(r), diff))
    by_key: dict[csvio.Key, list[int]] = {}
    for i, r in enumerate(rows):
        by_key.setdefault(csvio.key_of(r), []).append(i)
    for p in points:
        mine = p.identity()
        same = [i for i in by_key.get(p.key, []) if csvio.setting_of(rows[i]) == mine]
        other = [i for i in by_key.get(p.key, []) if i not in same]
        if other:
            out.conflicts.append((p.label, _diff(csvio.setting_of(rows[other[0]]), mine, SETTING)))
        elif any(rows[i]["status"] in RESULTS and csvio.metrics_of(rows[i]) >= set(p.metrics) for i in same):
            out.done.append(p)
        else:
            out.todo.append(p)
            out.replace[p.key] = same
    return out


# ---- the sweep ---------------------------------------------------------------------------

def _weight(point: Point) -> float:
    """Rough relative cost of a point, for the progress bar: counts are cheap; a timed point costs
    its policy's seconds at least, more with the work (linear in tokens plus an attention-like share)."""
    if not point.measures_speed:
        return 1.0
    tokens = point.tokens or (point.resolution // 16) ** 2
    work = point.batch_size * tokens * (1 + tokens / 1024)
    policy = point.setting.policy
    return 1.0 + policy.warmup_s + policy.min_time_s + work / (20_000 if point.device == "cpu" else 2_000_000)


def _local_runner(isolate: bool, timeout: Optional[float], workers: int, budget: Optional["Budget"]) -> Runner:
    """The default runner: count-only points in a pool of `workers` processes, then the timed ones
    one at a time (in a child process each with `isolate`), each first admitted by the budget."""

    def run(todo: list[Point], measure: Measure, announce: Callable[[Point], None]) -> Iterator[tuple[Point, dict]]:
        counting = [p for p in todo if not p.measures_speed] if workers > 1 and not isolate else []
        if counting:
            yield from _count_in_pool(counting, measure, workers, announce)
        for point in todo:
            if point in counting:
                continue
            announce(point)
            refused = budget.refuse(point) if budget else ""
            if refused:
                yield point, {"status": "skipped", "metrics": "", "note": f"not measured: {refused}"}
                continue
            start = time.monotonic()
            fields = measure_isolated(point, measure, timeout) if isolate else measure_in_process(point, measure)
            if budget:
                budget.record(point, time.monotonic() - start, fields)
            yield point, fields

    return run


def _count_in_pool(points: list[Point], measure: Measure, workers: int,
                   announce: Callable[[Point], None]) -> Iterator[tuple[Point, dict]]:
    """Count-only points (meta device, no timing) in worker processes: tracing is single-threaded
    Python, and the points do not disturb one another."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    torch = sys.modules.get("torch")  # CUDA does not survive a fork
    start = "spawn" if torch is not None and torch.cuda.is_initialized() else "fork"
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(start)) as pool:
        futures = {pool.submit(measure_in_process, p, measure): p for p in points}
        for future in as_completed(futures):
            try:
                fields = future.result()
            except Exception as exc:  # a worker died: that point is an error row, the sweep goes on
                fields = {"status": "error", "note": f"{type(exc).__name__}: {one_line(exc)}"}
            announce(futures[future])
            yield futures[future], fields


def make_row(point: Point, fields: dict) -> dict:
    """The CSV row of a measured point: its identity, what was measured, and the provenance."""
    row = {**point.row_fields(), **{k: v for k, v in fields.items() if not k.startswith("_")}}
    peak, pred = row.get("peak_mem_mib"), row.get("pred_peak_mem_mib")
    if peak and pred is not None:
        row["pred_err"] = (peak - pred) / peak
    return {**row, "git_commit": env.git_commit(), "timestamp": env.timestamp()}


def run_sweep(
    points: Iterable[Point],
    csv_path: str | Path,
    *,
    measure: Optional[Measure] = None,
    isolate: bool = False,
    timeout: Optional[float] = None,
    progress: bool = True,
    workers: int = 1,
    budget: Optional["Budget"] = None,
    runner: Optional[Runner] = None,
) -> Counter:
    """Measure every point that `plan_resume` leaves to do, appending its row right away (and then
    dropping the rows it replaces). Returns the count of rows written per status (plus "resumed":
    points found already done). `runner` replaces the local one (a cluster's); `workers` > 1 counts
    the count-only points in that many processes (`measure` must then be importable)."""
    from tqdm import tqdm

    if measure is None:
        from bench.measure import measure_point as measure
    if timeout is not None and not isolate:
        raise ValueError("a timeout needs isolate=True: only a point in its own process can be stopped")
    if isolate or workers > 1 or runner:
        qualified_name(measure)  # fail before measuring anything
    points = list(points)
    plan = plan_resume(points, csv_path)
    if plan.conflicts:
        what, diff = plan.conflicts[0]
        raise ValueError(f"{csv_path} holds {what} measured in another setting ({diff})")
    counts = Counter(resumed=len(plan.done))
    todo = plan.todo
    runner = runner or _local_runner(isolate, timeout, workers, budget)
    # disable=None: tqdm draws only on a terminal, so logs (CI) get no carriage-return noise
    bar = tqdm(total=sum(_weight(p) for p in todo), disable=True if not progress or not todo else None, file=sys.stderr,
               dynamic_ncols=True, bar_format="{desc} |{bar}| {percentage:3.0f}% [{elapsed} elapsed, ~{remaining} left]")
    replaced: list[int] = []
    try:
        with bar:
            started = iter(range(1, len(todo) + 1))
            announce = lambda point: bar.set_description_str(f"[{next(started)}/{len(todo)}] {point.label}")
            for point, fields in runner(todo, measure, announce):
                csvio.append_row(csv_path, make_row(point, fields))
                replaced += plan.replace.get(point.key, [])
                counts[fields["status"]] += 1
                bar.update(_weight(point))
                if fields.get("_sticky") and point.device == "cuda":
                    raise StickyCudaError(f"{point.label}: {fields.get('note')}")
    finally:
        csvio.replace_rows(csv_path, replaced)  # the rows that new results replace go, also after a stop
    return counts


if __name__ == "__main__":
    _worker(*sys.argv[1:])
