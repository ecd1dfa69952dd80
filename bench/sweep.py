"""The sweep runner: measure points (model x resolution at one batch/dtype/device) and append one
row per point to the results CSV as soon as it is done, so nothing measured is ever lost.

- A measuring function is a generator `measure(point) -> Iterator[dict]` that yields partial rows
  stage by stage (counts, then speed/memory): when a later stage fails, what came before stays.
- Out of memory is a result (status `oom`), any other exception a row with status `error`; the
  sweep goes on. KeyboardInterrupt stops it; re-running skips the points already in the CSV.
- `isolate=True` measures every point in a child process (`python -m bench.sweep SPEC RESULT`,
  this same code), so a crashing kernel gives an `error` row and a hung one, killed after
  `timeout` seconds, a `timeout` row, and the other points are unaffected.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

from bench import csvio, env, timing
from bench.schema import COLUMNS

METRICS = ("flops", "fps", "memory")
SPEED_METRICS = ("fps", "memory")  # the metrics that run the model on the device


@dataclass(frozen=True)
class Point:
    """One measurement: the schema KEY fields, what to measure, and how."""

    model: str
    family: str
    resolution: int
    tokens: int
    batch_size: int
    dtype: str
    device: str  # "cpu" or "cuda"
    metrics: tuple[str, ...] = METRICS
    repeats: int = 10
    warmup: int = 3
    skip_speed: str = ""  # why fps/memory are not measured at this point ("" = measure them)
    threads: Optional[int] = None  # CPU intra-op threads (None: torch's default)

    @property
    def key(self) -> csvio.Key:
        return (self.model, self.resolution, self.batch_size, self.dtype, self.device)

    @property
    def label(self) -> str:
        return f"{self.model}@{self.resolution} b{self.batch_size} {self.dtype} {self.device}"

    @property
    def measures_speed(self) -> bool:
        return not self.skip_speed and any(m in self.metrics for m in SPEED_METRICS)


Measure = Callable[[Point], Iterator[dict]]


def make_points(
    models: Iterable[str],
    resolutions: Iterable[int],
    *,
    batch_size: int,
    dtype: str,
    device: str,
    metrics: Iterable[str] = METRICS,
    repeats: int = 10,
    warmup: int = 3,
    speed_max_res: Optional[int] = None,
    threads: Optional[int] = None,
) -> list[Point]:
    """The points of a sweep, model-major. Above `speed_max_res` (if given) only the counts are
    taken and the point says why. Unknown model names raise ValueError (from vittt)."""
    import vittt

    metrics = tuple(m for m in METRICS if m in set(metrics))
    points = []
    for model in models:
        for res in resolutions:
            cfg = vittt.get_config(model, img_size=res)
            skip = ""
            if speed_max_res is not None and res > speed_max_res and any(m in metrics for m in SPEED_METRICS):
                skip = f"above the {device} speed limit of {speed_max_res} px (--speed-max-res)"
            points.append(Point(model, cfg.family, res, cfg.num_patches, batch_size, dtype, device, metrics, repeats, warmup, skip, threads))
    return points


# ---- measuring one point ---------------------------------------------------------------------

def measure_point(point: Point) -> Iterator[dict]:
    """The real measuring function: kernel backend and parameters (meta device), FLOPs if asked
    (bench.flops on meta), then throughput and memory on the device if asked and affordable."""
    import torch

    import vittt

    with torch.device("meta"):
        meta_model = vittt.create_model(point.model, img_size=point.resolution)
    yield {"backend": meta_model.kernel_backend(torch.device(point.device)), "params": sum(p.numel() for p in meta_model.parameters())}
    if "flops" in point.metrics:
        from bench.flops import count_model

        yield count_model(meta_model, point.resolution)
    del meta_model
    if point.skip_speed:  # make_points sets it only when fps/memory were asked for
        yield {"note": f"fps/memory not measured: {point.skip_speed}"}
    elif point.measures_speed:
        yield measure_speed(point)


def measure_speed(point: Point) -> dict[str, Any]:
    """Throughput and peak memory of the model's forward at this point: eval, inference_mode,
    autocast for half types, warm-up, timed repeats with memory samplers running."""
    import torch

    import vittt
    from bench import memory

    device = torch.device(point.device)
    on_gpu = device.type == "cuda"
    _free_memory()  # blocks cached by earlier points would count in this point's reserved and NVML memory
    if point.threads and not on_gpu:
        torch.set_num_threads(point.threads)
    torch.manual_seed(0)
    model = vittt.create_model(point.model, img_size=point.resolution).to(device).eval()
    x = torch.randn(point.batch_size, 3, point.resolution, point.resolution, device=device)  # [B, 3, H, W]
    reader = memory.nvml_reader(device.index or 0) if on_gpu else memory.rss_mib
    sampler = memory.PeakSampler(reader) if reader else None
    with torch.inference_mode(), timing.autocast_for(device.type, point.dtype):
        def forward() -> None:
            model(x)

        for _ in range(point.warmup):
            forward()
        if on_gpu:
            memory.reset_cuda_peaks()
        with sampler or nullcontext():
            seconds = timing.time_repeats(forward, repeats=point.repeats, elapsed=timing.clock_for(device.type))
    row: dict[str, Any] = {"note": "" if on_gpu else f"cpu, threads={torch.get_num_threads()}"}
    if "fps" in point.metrics:
        row.update(timing.summarize(point.batch_size, seconds).as_row())
    if "memory" in point.metrics and on_gpu:
        row.update(memory.cuda_peaks(), nvml_used_mib=sampler.peak if sampler else None)
        row["note"] = "" if sampler else "nvml_used_mib: NVML unavailable"
    elif "memory" in point.metrics:
        row["rss_peak_mib"] = sampler.peak
        row["note"] += "; memory = whole-process peak RSS in rss_peak_mib (peak_mem_mib is GPU-only)"
    return row


# ---- outcome of one point ----------------------------------------------------------------

def is_oom(exc: BaseException) -> bool:
    """torch.OutOfMemoryError, or a RuntimeError that says it ran out of memory (CPU allocator too)."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _one_line(text: str, limit: int = 400) -> str:
    text = " | ".join(line.strip() for line in str(text).splitlines() if line.strip())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _merge(row: dict, part: dict) -> None:
    """Add a partial result to a row; notes accumulate instead of replacing each other."""
    for k, v in part.items():
        if k == "note":
            row["note"] = "; ".join(n for n in (row.get("note"), v) if n)
        else:
            row[k] = v


def _free_memory() -> None:
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


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
        measured = any(row.get(c) not in (None, "") for c in ("flops", "fps", "peak_mem_mib", "rss_peak_mib"))
        row["status"] = "ok" if measured else "skipped"
    except Exception as exc:  # the sweep must go on: the failure is the row's result
        failure = ("oom" if is_oom(exc) else "error", f"{type(exc).__name__}: {_one_line(exc)}")
    if failure:  # outside the except block, so the traceback (and the tensors it holds) is gone
        row["status"] = failure[0]
        _merge(row, {"note": failure[1]})
        _free_memory()
    return row


# ---- isolated points ---------------------------------------------------------------------

def _qualified_name(fn: Callable) -> str:
    if fn.__module__ == "__main__" or "<locals>" in fn.__qualname__:
        raise ValueError(f"--isolate needs an importable measuring function, not {fn.__module__}.{fn.__qualname__}")
    return f"{fn.__module__}:{fn.__qualname__}"


def _resolve(name: str) -> Measure:
    import importlib

    module, qualname = name.split(":")
    obj: Any = importlib.import_module(module)
    for attr in qualname.split("."):
        obj = getattr(obj, attr)
    return obj


def _exit_reason(returncode: int) -> str:
    if returncode < 0:
        name = signal.Signals(-returncode).name
        hint = " (likely the kernel's out-of-memory killer)" if name == "SIGKILL" else ""
        return f"worker killed by {name}{hint}"
    return f"worker exited with status {returncode} before reporting"


def _tail(path: Path, lines: int = 3) -> str:
    text = path.read_text(errors="replace").strip().splitlines()
    return _one_line("\n".join(text[-lines:]), 300)


def measure_isolated(point: Point, measure: Measure, timeout: Optional[float] = None) -> dict:
    """Measure a point in a child process running this module; a crash or a timeout (the child's
    whole process group is killed) becomes the row's status, keeping the stages it had saved."""
    with tempfile.TemporaryDirectory(prefix="vittt-point-") as tmp:
        spec, result, log = Path(tmp, "spec.json"), Path(tmp, "row.json"), Path(tmp, "log.txt")
        spec.write_text(json.dumps({"point": dataclasses.asdict(point), "measure": _qualified_name(measure)}))
        child_env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(env.REPO_ROOT), *filter(None, sys.path)]))
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
        if timed_out:
            row["status"] = "timeout"
            _merge(row, {"note": f"point exceeded --timeout {timeout:g} s and was killed"})
        elif "status" not in row:
            row["status"] = "error"
            _merge(row, {"note": f"{_exit_reason(proc.returncode)}; last output: {_tail(log)}"})
        return row


def _worker(spec_path: str, result_path: str) -> None:
    """Child side of `measure_isolated`: measure the point, saving the row after every stage."""
    spec = json.loads(Path(spec_path).read_text())
    point = Point(**{**spec["point"], "metrics": tuple(spec["point"]["metrics"])})
    result = Path(result_path)

    def save(row: dict) -> None:
        tmp = result.with_suffix(".tmp")
        tmp.write_text(json.dumps(row))
        os.replace(tmp, result)

    # A GPU point's environment is read here, so the parent never opens a CUDA context of its own
    # (NVML's used memory would count it).
    first = env.environment(point.device) if point.device == "cuda" else {}
    save(first)
    save({**first, **measure_in_process(point, _resolve(spec["measure"]), on_part=lambda row: save({**first, **row}))})


# ---- the sweep ---------------------------------------------------------------------------

def _weight(point: Point) -> float:
    """Rough relative cost of a point, for the time-left estimate: counts are cheap; a speed
    measurement grows with the work, linear in tokens plus an attention-like quadratic share."""
    if not point.measures_speed:
        return 1.0
    work = point.batch_size * (point.warmup + point.repeats) * point.tokens * (1 + point.tokens / 1024)
    return 1.0 + work / (2_000 if point.device == "cpu" else 200_000)


def _measure_all(todo: list[Point], measure: Measure, isolate: bool, timeout: Optional[float], workers: int,
                 announce: Callable[[Point], None]) -> Iterator[tuple[Point, dict]]:
    """(point, row fields) as points finish; `announce(point)` names the point being measured. With
    workers > 1, the points that only count (meta device, no timing) go to a pool of worker processes
    first: tracing is single-threaded Python and they do not disturb one another. Points that run
    the model go one at a time after them."""
    counting = {p for p in todo if not p.measures_speed} if workers > 1 and not isolate else set()
    if counting:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        torch = sys.modules.get("torch")  # CUDA does not survive a fork
        start = "spawn" if torch is not None and torch.cuda.is_initialized() else "fork"
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(start)) as pool:
            futures = {pool.submit(measure_in_process, p, measure): p for p in todo if p in counting}
            for future in as_completed(futures):
                try:
                    fields = future.result()
                except Exception as exc:  # a worker died: that point is an error row, the sweep goes on
                    fields = {"status": "error", "note": f"{type(exc).__name__}: {_one_line(exc)}"}
                announce(futures[future])
                yield futures[future], fields
    for point in todo:
        if point not in counting:
            announce(point)
            yield point, measure_isolated(point, measure, timeout) if isolate else measure_in_process(point, measure)


def run_sweep(
    points: Iterable[Point],
    csv_path: str | Path,
    *,
    measure: Measure = measure_point,
    isolate: bool = False,
    timeout: Optional[float] = None,
    progress: bool = True,
    workers: int = 1,
) -> Counter:
    """Measure every point whose KEY has no result yet in `csv_path` (error/timeout rows are measured
    again and replaced), appending its row right away.
    `workers` > 1 counts the count-only points in that many processes (`measure` must then be
    importable). Returns the count of rows written per status (plus "resumed": points found already done)."""
    from tqdm import tqdm

    if timeout is not None and not isolate:
        raise ValueError("a timeout needs isolate=True: only a point in its own process can be stopped")
    if isolate or workers > 1:
        _qualified_name(measure)  # fail before measuring anything
    points = list(points)
    done = csvio.done_keys(csv_path)
    todo = list({p.key: p for p in points if p.key not in done}.values())
    csvio.drop_retried(csv_path, {p.key for p in todo})  # an error/timeout row is replaced by the new result
    counts = Counter(resumed=len({p.key for p in points} & done))
    # disable=None: tqdm draws only on a terminal, so logs (CI) get no carriage-return noise
    bar = tqdm(total=sum(_weight(p) for p in todo), disable=True if not progress or not todo else None, file=sys.stderr, dynamic_ncols=True,
               bar_format="{desc} |{bar}| {percentage:3.0f}% [{elapsed} elapsed, ~{remaining} left]")
    with bar:
        started = iter(range(1, len(todo) + 1))
        announce = lambda point: bar.set_description_str(f"[{next(started)}/{len(todo)}] {point.label}")
        for point, fields in _measure_all(todo, measure, isolate, timeout, workers, announce):
            row = {
                "model": point.model, "family": point.family, "resolution": point.resolution, "tokens": point.tokens,
                "batch_size": point.batch_size, "device": point.device, "dtype": point.dtype,
                **(env.environment(point.device) if "torch" not in fields else {}), **fields, "timestamp": env.timestamp(),
            }
            csvio.append_row(csv_path, row)
            counts[row["status"]] += 1
            bar.update(_weight(point))
    return counts


if __name__ == "__main__":
    _worker(*sys.argv[1:])
