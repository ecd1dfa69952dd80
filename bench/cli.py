"""Command line of `run_bench.py` / `vittt-bench`: the sweep (default), `report CSV` and `compare BASE CUR`.

Exit status: 0 when every point has a result (ok, oom and skipped are results), 1 when a point
ended in error or timeout (or the suite itself failed: one line names the log with the traceback),
2 for bad input (one line on stderr, checked before anything is measured or written), 130 on Ctrl-C.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from bench import argtypes, env, timing
from bench.argtypes import PATCH, OneLineParser
from bench.point import METRICS
from bench.schema import DEFAULT_RESOLUTIONS

PROG = "run_bench.py"
# Per device: batch, timing policy, resolution cap of fps/memory, CPU threads. On the CPU one thread
# (two OpenMP threads on a shared 2-core machine made timings swing by 30x) and batch 1, so the main
# job times DeiT-T and Vittt-T up to 1280 px in a few of its 10 minutes.
DEFAULTS = {
    "cuda": {"batch_size": 64, "policy": timing.GPU_POLICY, "speed_max_res": None, "threads": None},
    "cpu": {"batch_size": 1, "policy": timing.CPU_POLICY, "speed_max_res": 1280, "threads": 1},
}
EXIT_OK, EXIT_FAILED_POINTS, EXIT_INTERRUPTED = 0, 1, 130  # bad input: 2, from the parser

DESCRIPTION = """\
Efficiency sweep of vision backbones over input resolution: FLOPs and parameters (fvcore, on the
meta device), throughput (median FPS of time-based repeats) and peak memory (measured on a GPU,
predicted on any machine), one CSV row per point, then the report (Fig. 6 reproduction, FLOPs
plot, paper claims). Subcommands: `report CSV`, `compare BASE CUR` (see their --help).
"""


def _epilog() -> str:
    g, c = DEFAULTS["cuda"], DEFAULTS["cpu"]
    gp, cp = g["policy"], c["policy"]
    return f"""\
defaults: on a GPU batch {g['batch_size']}, warm-up {gp.warmup_s:g} s, then timed forwards until {gp.min_repeats} calls and {gp.min_time_s:g} s
(at most {gp.max_repeats}), every resolution, each point in its own process. On the CPU batch {c['batch_size']}, {c['threads']} thread,
warm-up {cp.warmup_s:g} s, then until {cp.min_repeats} calls and {cp.min_time_s:g} s (at most {cp.max_repeats}), fps/memory up to {c['speed_max_res']} px
(FLOPs beyond). Memory on the CPU: the process's RSS, and GPU memory predicted (mem_pred).
Re-running the same command resumes: points with a result in the CSV measured in the same setting
are skipped; a CSV measured in another setting (threads, timing, versions, ...) is left alone and
the run goes to a file of its own (with --run NAME: refused).
Exit status: 0 every point has a result (ok, oom, skipped), 1 a point ended in error or timeout,
2 bad input, 130 interrupted. Example (the main job): {PROG} --models vittt_t deit_t
"""


class UsageError(ValueError):
    """A bad input found after parsing: reported like an argparse error."""


def build_parser(prog: str = PROG) -> OneLineParser:
    parser = OneLineParser(prog=prog, description=DESCRIPTION, epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_argument_group("what to measure")
    what.add_argument("--models", nargs="+", metavar="MODEL",
                      help="registered names (see --list-models; 'all' = every one), or your own: pkg.module:factory, "
                           "path/to/file.py:factory, timm:<name> (default: the paper's Fig. 6 models)")
    what.add_argument("--preset", choices=("fig6",),
                      help="fig6: the paper's figure (DeiT, DeiT-SDPA, Vim, Vittt at T/S/B), T size first; combine with --budget")
    what.add_argument("--resolutions", nargs="+", type=argtypes.resolution, metavar="PX",
                      help=f"input resolutions, multiples of {PATCH} (default: {' '.join(map(str, DEFAULT_RESOLUTIONS))})")
    what.add_argument("--metrics", nargs="+", choices=METRICS, metavar="METRIC",
                      help="flops (and params, meta device), fps, memory (measured), mem_pred (predicted GPU memory, "
                           "no GPU needed) (default: all; flops needs fvcore)")
    what.add_argument("--batch-size", type=argtypes.int_at_least(1), metavar="N",
                      help=f"images per forward (default: {DEFAULTS['cuda']['batch_size']} on a GPU, {DEFAULTS['cpu']['batch_size']} on the CPU)")
    what.add_argument("--dtype", choices=timing.DTYPES, default="fp32",
                      help="fp32, or autocast to fp16/bf16 (weights stay fp32); fp16 is refused on the CPU (default: fp32)")
    what.add_argument("--device", choices=env.DEVICES, default="auto", help="auto = cuda if available, else cpu")
    what.add_argument("--gpu-model", metavar="NAME",
                      help="GPU profile of mem_pred, e.g. h100 h200 a100 l40s (default: the measuring GPU's, else h100)")
    how = parser.add_argument_group("how to time")
    how.add_argument("--warmup-time", type=argtypes.seconds(False), metavar="S", help="warm-up seconds (at least one untimed forward; default: 1 GPU, 0.5 CPU)")
    how.add_argument("--min-time", type=argtypes.seconds(False), metavar="S", help="timed forwards last at least this long (default: 2 GPU, 3 CPU)")
    how.add_argument("--repeats", type=argtypes.int_at_least(1), metavar="N", help="fewest timed forwards (default: 10 GPU, 3 CPU)")
    how.add_argument("--max-repeats", type=argtypes.int_at_least(1), metavar="N", help="most timed forwards (default: 1000 GPU, 100 CPU)")
    how.add_argument("--noise-threshold", type=argtypes.fraction_below_one, default=timing.NOISY, metavar="F",
                     help=f"flag a point noisy when its fps interquartile range exceeds this fraction of the median (default {timing.NOISY:g})")
    how.add_argument("--speed-max-res", type=argtypes.int_at_least(1), metavar="PX",
                     help=f"measure fps/memory only up to this resolution, count FLOPs beyond (default: none on a GPU, {DEFAULTS['cpu']['speed_max_res']} on the CPU)")
    how.add_argument("--threads", type=argtypes.int_at_least(1), metavar="N", help="CPU threads for torch while timing (default 1; ignored on a GPU)")
    how.add_argument("--tf32", choices=("on", "off"), default="off", help="TF32 for float32 matmuls and cuDNN (default off: true fp32)")
    how.add_argument("--cuda-graphs", action="store_true", help="time replays of a captured CUDA graph (no launch overhead)")
    how.add_argument("--lock-clocks", action="store_true", help="lock the GPU's SM clock at its maximum while timing (needs root; a line says when it cannot)")
    how.add_argument("--allow-reference", action="store_true",
                     help="on a GPU, also time models whose mixer would run a reference kernel (e.g. Vim without a fast scan)")
    how.add_argument("--budget", type=argtypes.seconds(True), metavar="S",
                     help="time budget: points predicted not to fit in what is left are skipped, with the reason in their row")
    where = parser.add_argument_group("where results go")
    where.add_argument("--out", default="results", metavar="DIR", help="results folder (default: results)")
    where.add_argument("--reports", metavar="DIR", help="reports folder (default: reports/ beside the results folder)")
    where.add_argument("--run", type=argtypes.run_name, metavar="NAME", help="run name: OUT/NAME.csv (default: from the device, models, dtype and metrics)")
    run = parser.add_argument_group("how to run")
    run.add_argument("--jobs", type=argtypes.int_at_least(1), default=os.cpu_count() or 1, metavar="N",
                     help="processes that count FLOPs of count-only points in parallel (default: the CPU count)")
    run.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=None,
                     help="each point in its own process, so a crash or hang loses only that point (default: on for cuda, off for cpu)")
    run.add_argument("--timeout", type=argtypes.seconds(True), metavar="S", help="per-point time limit in seconds (status timeout); implies --isolate")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--list-models", action="store_true", help="print the registered models and exit")
    from bench import cluster

    cluster.add_arguments(parser)

    sub = parser.add_subparsers(dest="command", metavar="{report,compare}")
    report = sub.add_parser("report", help="report CSV: the figures and markdown report of a results CSV (measures nothing)")
    report.add_argument("csv", type=Path, help="results CSV, e.g. results/<run>.csv")
    report.add_argument("--reports", dest="report_dir", metavar="DIR",
                        help="reports folder (default: results/X/run.csv -> reports/X/, else reports/ beside the CSV's folder)")
    compare = sub.add_parser("compare", help="compare BASE CUR: regression check of CUR against BASE (exit 1 on a regression)")
    from bench import compare as compare_module  # lazily: only when the parser is built

    compare_module.configure_parser(compare)
    return parser


# ---- planning: everything is checked before anything is measured or written ------------------

def shown(path: Path) -> str:
    """A path as printed: relative to the working directory when below it, else absolute."""
    path = Path(path).absolute()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def check_writable_dir(path: Path, option: str) -> None:
    """UsageError unless `path` is a directory that can be written or can be created."""
    path = Path(path).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise UsageError(f"{option} {shown(path)}: {shown(existing)} is a file, not a directory")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".vittt-write-test-"):
            pass
    except OSError as exc:
        raise UsageError(f"{option} {shown(path)}: {shown(existing)} cannot be written ({exc.strerror or exc})")


def _models(args: argparse.Namespace) -> list:
    """The requested models as bench.models.ModelRef; timm models are skipped (with a line) where
    timm does not import."""
    from bench import families, models
    import vittt

    if args.preset and args.models:
        raise UsageError("--preset fig6 chooses the models: give --models or --preset, not both")
    if args.preset or not args.models:
        names = list(families.preset_models() if args.preset else families.paper_models())
    else:
        names = [n.strip() for item in args.models for n in item.split(",") if n.strip()]
        if not names:
            raise UsageError(f"--models: empty model list (available: all, {', '.join(vittt.list_models())})")
        names = [m for n in names for m in (vittt.list_models() if n == "all" else [n])]
    refs = []
    for name in dict.fromkeys(names):
        try:
            refs.append(models.parse(name))
        except ImportError as exc:
            print(f"skipping {name}: {exc}")
        except ValueError as exc:
            raise UsageError(f"--models: {exc}")
    if not refs:
        raise UsageError("--models: no model left to measure")
    return refs


def _fvcore_imports() -> bool:
    try:
        import fvcore  # noqa: F401
    except ImportError:
        return False
    return True


def _metrics(args: argparse.Namespace) -> list[str]:
    have_fvcore = _fvcore_imports()
    if args.metrics:
        if "flops" in args.metrics and not have_fvcore:
            raise UsageError("--metrics flops needs fvcore, which is not installed (pip install fvcore; or leave flops out)")
        return list(dict.fromkeys(args.metrics))
    if not have_fvcore:
        print("fvcore is not installed: FLOPs are not counted (pip install fvcore to count them)")
    return [m for m in METRICS if m != "flops" or have_fvcore]


def default_run_name(device: str, models: Sequence[str], dtype: str, metrics: Sequence[str]) -> str:
    """A name from the device, the models, the dtype and the metrics, so the same command resumes."""
    from bench import families
    import vittt

    if list(models) == list(families.paper_models()):
        tag = "fig6"
    elif list(models) == list(families.preset_models()):
        tag = "fig6-preset"
    elif sorted(models) == vittt.list_models():
        tag = "all"
    else:
        tag = "-".join(sorted(re.sub(r"[^A-Za-z0-9._-]+", "_", m.rsplit("/", 1)[-1]) for m in models))
        if len(tag) > 60:
            tag = f"{len(models)}models-{hashlib.sha1(tag.encode()).hexdigest()[:8]}"
    dtype_part = "" if dtype == "fp32" else f"-{dtype}"
    only = "" if set(metrics) == set(METRICS) else "-" + "-".join(m for m in METRICS if m in metrics)
    return f"{device}-{tag}{dtype_part}{only}"


@dataclass
class Plan:
    points: list
    csv_path: Path
    reports: Path
    isolate: bool
    budget: Optional[float]
    runner: object
    done: int  # points the CSV holds already in this setting (a resumed run skips them)


def _gpu_profile(args: argparse.Namespace, device: str, metrics: list[str]) -> str:
    if "mem_pred" not in metrics:
        return ""
    from bench.memory import predict as memory_model

    try:
        return memory_model.profile_name(args.gpu_model or (env.device_name(device) if device == "cuda" else "h100"))
    except ValueError as exc:
        if args.gpu_model:
            raise UsageError(f"--gpu-model: {exc}")
        return memory_model.profile_name("h100")


def plan(args: argparse.Namespace) -> Plan:
    """Validate the sweep arguments and build its points; raises UsageError, writes nothing."""
    from bench import cluster, point, sweep
    from bench.csvio import check_appendable

    try:
        device = env.resolve_device(args.device)
    except ValueError as exc:
        raise UsageError(str(exc))
    if device == "cpu" and args.dtype == "fp16":
        raise UsageError("--dtype fp16 is not supported on the CPU (allowed there: fp32, bf16)")
    if device == "cpu" and (args.cuda_graphs or args.lock_clocks or args.gpus):
        flag = "--cuda-graphs" if args.cuda_graphs else "--lock-clocks" if args.lock_clocks else "--gpus"
        raise UsageError(f"{flag} needs --device cuda (this run is on the cpu)")
    if args.gpus and max(map(int, args.gpus)) >= env.gpu_count():
        raise UsageError(f"--gpus {','.join(args.gpus)}: this machine has {env.gpu_count()} GPU(s) (indices 0-{env.gpu_count() - 1})")
    refs = _models(args)
    metrics = _metrics(args)
    d = DEFAULTS[device]
    policy = d["policy"]
    try:
        policy = timing.TimingPolicy(
            warmup_s=policy.warmup_s if args.warmup_time is None else args.warmup_time,
            min_time_s=policy.min_time_s if args.min_time is None else args.min_time,
            min_repeats=args.repeats or policy.min_repeats,
            max_repeats=args.max_repeats or max(policy.max_repeats, args.repeats or 0))
    except ValueError:
        raise UsageError(f"--repeats {args.repeats} is more than --max-repeats {args.max_repeats}")
    setting = point.make_setting(
        device, policy, threads=(args.threads or d["threads"]) if device == "cpu" else None, cuda_graphs=args.cuda_graphs,
        tf32=args.tf32 == "on", lock_clocks=args.lock_clocks, pred_gpu=_gpu_profile(args, device, metrics),
        noise_threshold=args.noise_threshold)
    resolutions = list(dict.fromkeys(args.resolutions or DEFAULT_RESOLUTIONS))
    try:
        points = point.make_points(refs, resolutions, batch_size=args.batch_size or d["batch_size"], dtype=args.dtype,
                                   setting=setting, metrics=metrics,
                                   speed_max_res=d["speed_max_res"] if args.speed_max_res is None else args.speed_max_res,
                                   allow_reference=args.allow_reference)
    except Exception as exc:  # a user's model that does not build on meta, or a bad config
        raise UsageError(f"--models: {type(exc).__name__}: {' '.join(str(exc).split())}")
    if args.preset:
        from vittt.registry import SIZES

        points = point.size_major(points, SIZES)
    out = Path(args.out)
    reports = Path(args.reports) if args.reports else out.absolute().parent / "reports"
    check_writable_dir(out, "--out")
    check_writable_dir(reports, "--reports")
    run = args.run or default_run_name(device, [r.name for r in refs], args.dtype, metrics)
    csv_path = out / f"{run}.csv"
    try:
        check_appendable(csv_path)
        conflicts = sweep.plan_resume(points, csv_path).conflicts
    except ValueError as exc:
        if args.run:
            raise UsageError(str(exc))
        conflicts = [("", str(exc))]
    if conflicts:
        what, diff = conflicts[0]
        held = f"{what} measured in another setting ({diff})" if what else diff
        if args.run:
            raise UsageError(f"{shown(csv_path)} holds {held}: give another --run, or move the file")
        setting = json.dumps(points[0].setting.columns(), sort_keys=True, default=str)  # the run's, not its points'
        alt = out / f"{run}-{hashlib.sha1(setting.encode()).hexdigest()[:6]}.csv"
        print(f"{shown(csv_path)} holds {held}: this run goes to {shown(alt)}")
        csv_path = alt
    resume = sweep.plan_resume(points, csv_path)
    isolate = args.isolate if args.isolate is not None else device == "cuda"
    isolate = isolate or args.timeout is not None
    try:
        runner = cluster.runner_from_args(args, job_dir=csv_path.with_suffix(".jobs"),
                                          progress=lambda line: print(line, file=sys.stderr))
    except ValueError as exc:
        raise UsageError(str(exc))
    if runner and args.budget:
        raise UsageError("--budget applies to a sweep on this machine, not to --slurm, --gpus or --collect")
    return Plan(points, csv_path, reports, isolate, args.budget, runner and cluster.sweep_runner(runner, args.timeout),
                len(resume.done))


def _print_skipped(points) -> None:
    by_reason: dict[str, list[str]] = {}
    for p in points:
        if p.skip_speed:
            by_reason.setdefault(p.skip_speed, []).append(f"{p.model}@{p.resolution}")
    for reason, where in by_reason.items():
        print(f"skipping fps/memory at {len(where)} points ({', '.join(where)}): {reason}; their other metrics are still measured")


def run_sweep_command(args: argparse.Namespace) -> int:
    from bench import budget, csvio, sweep
    from bench.report import page as report

    p = plan(args)
    first = p.points[0]
    s = first.setting
    print(f"sweep: {len(p.points)} points ({len({q.model for q in p.points})} models x {len({q.resolution for q in p.points})} resolutions) "
          f"on {first.device} ({s.device_name}), batch {first.batch_size}, {first.dtype}, metrics {' '.join(dict.fromkeys(m for q in p.points for m in q.metrics))}"
          + (", each point in its own process" if p.isolate else "") + (f", timeout {args.timeout:g} s" if args.timeout else "")
          + (f", budget {p.budget:g} s" if p.budget else ""))
    _print_skipped(p.points)
    if p.done:
        print(f"resuming {shown(p.csv_path)}: {p.done} points already measured in this setting are skipped")
    start = time.perf_counter()
    try:
        counts = sweep.run_sweep(p.points, p.csv_path, isolate=p.isolate, timeout=args.timeout, progress=not args.no_progress,
                                 workers=args.jobs, budget=budget.Budget(p.budget) if p.budget else None, runner=p.runner)
    except KeyboardInterrupt:
        print(f"\ninterrupted: the rows measured so far are in {shown(p.csv_path)}; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except sweep.StickyCudaError as exc:
        print(f"{PROG}: stopped: a CUDA error left this process's GPU context unusable at {exc}; rows so far are in "
              f"{shown(p.csv_path)}; run with --isolate (each point in its own process) to go on past it", file=sys.stderr)
        return EXIT_FAILED_POINTS
    except (RuntimeError, ValueError) as exc:
        if p.runner is None:  # not a cluster's refusal: a bug, reported by main
            raise
        # the cluster runner's: sbatch refused the array, the job folder is locked, accounting went away
        print(f"{PROG}: stopped: {sweep.one_line(exc)}; rows so far are in {shown(p.csv_path)}", file=sys.stderr)
        return EXIT_FAILED_POINTS
    measured = sum(n for k, n in counts.items() if k != "resumed")
    statuses = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()) if k != "resumed" and n)
    print(f"measured {measured} points in {time.perf_counter() - start:.0f} s ({statuses or 'none new'})")
    if not csvio.read_rows(p.csv_path):
        print(f"no rows in {shown(p.csv_path)} yet: nothing to report")
        return EXIT_OK
    print(f"results: {shown(p.csv_path)}")
    for path in report.write_report(p.csv_path, p.reports, measured=measured).values():
        print(f"report:  {shown(path)}")
    failed = counts["error"] + counts["timeout"]
    if failed:
        print(f"{failed} point(s) ended in error or timeout (see their notes in {shown(p.csv_path)}); exit status 1", file=sys.stderr)
        return EXIT_FAILED_POINTS
    return EXIT_OK


def list_models_command() -> int:
    import vittt

    for name in vittt.list_models():
        cfg = vittt.get_config(name)
        print(f"{name:20s} family {cfg.family:6s} size {cfg.size}  dim {cfg.dim}  depth {cfg.depth}")
    print("your own models: pkg.module:factory, path/to/file.py:factory or timm:<name> (see README, 'Profile your own model')")
    return EXIT_OK


def report_command(args: argparse.Namespace) -> int:
    from bench.report import page as report

    if not args.csv.is_file():
        raise UsageError(f"report: {shown(args.csv)} is not a file (give a results CSV, e.g. results/<run>.csv)")
    try:
        written = report.write_report(args.csv, args.report_dir)
    except ValueError as exc:
        raise UsageError(f"report: {exc}")
    for path in written.values():
        print(f"report: {shown(path)}")
    return EXIT_OK


def _crash(exc: BaseException) -> int:
    """A bug: one line on stderr naming a log that holds the traceback."""
    fd, log = tempfile.mkstemp(prefix="vittt-bench-error-", suffix=".log")
    with os.fdopen(fd, "w") as f:
        traceback.print_exception(exc, file=f)
    print(f"{PROG}: internal error: {type(exc).__name__}: {' '.join(str(exc).split())[:300]} (traceback in {log})", file=sys.stderr)
    return EXIT_FAILED_POINTS


class _DropWhenReaderGone(io.TextIOWrapper):
    """stdout that, once its reader has gone (`run_bench.py ... | head`), drops what is printed
    instead of failing the run: the sweep's rows and report are worth more than its log."""

    def write(self, text: str) -> int:
        try:
            return super().write(text)
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), self.fileno())  # later writes and the final flush go nowhere
            return len(text)

    def flush(self) -> None:
        try:
            super().flush()
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), self.fileno())


def main(argv: Optional[Sequence[str]] = None, prog: str = PROG) -> int:
    if sys.stdout is sys.__stdout__ and isinstance(sys.stdout, io.TextIOWrapper):  # the process's own stdout, once
        sys.stdout.flush()
        sys.stdout = _DropWhenReaderGone(sys.stdout.detach(), encoding=sys.stdout.encoding, line_buffering=True)
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        if args.command == "compare":
            from bench import compare

            return compare.run(args)
        if args.command == "report":
            return report_command(args)
        if args.list_models:
            return list_models_command()
        return run_sweep_command(args)
    except UsageError as exc:
        parser.error(str(exc))
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # no traceback reaches the user
        return _crash(exc)


def console() -> int:
    """The `vittt-bench` console script: the same as `python run_bench.py`."""
    return main(prog="vittt-bench")
