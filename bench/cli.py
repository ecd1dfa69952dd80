"""Command line of `run_bench.py`: the sweep (default), `report CSV` and `compare BASE CUR`.

Every input is checked before anything is written: a bad one gets one line on stderr naming what
was wrong and what is allowed, and exit status 2.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import time
from pathlib import Path
from typing import NoReturn, Optional, Sequence

from bench import env, timing
from bench.schema import DEFAULT_RESOLUTIONS
from bench.sweep import METRICS

FIG6_MODELS = tuple(f"{family}_{size}" for family in ("deit", "vim", "vittt") for size in ("t", "s", "b"))
# CPU defaults: a small batch, few repeats, speed only up to 640 px (where Vittt-T overtakes DeiT-T
# on the CPU; counts go to 2048), so the main job (`--models vittt_t deit_t`) takes about 1-3 of its
# 10 minutes on a 2-core machine; one thread, because on a shared 2-core machine two OpenMP
# threads made timings swing by 30x (measured).
GPU_DEFAULTS = {"batch_size": 64, "repeats": 10, "warmup": 3, "speed_max_res": None, "threads": None}
CPU_DEFAULTS = {"batch_size": 2, "repeats": 3, "warmup": 1, "speed_max_res": 640, "threads": 1}
PATCH = 16

DESCRIPTION = """\
Efficiency sweep of vision backbones over input resolution: FLOPs and parameters (fvcore, on the
meta device), throughput (median FPS of timed repeats) and peak memory, one CSV row per point,
then the report (Fig. 6 reproduction, FLOPs plot, paper claims). Subcommands: `report CSV`,
`compare BASE CUR` (see `run_bench.py report --help`, `run_bench.py compare --help`).
"""

EPILOG = f"""\
defaults: on a GPU batch {GPU_DEFAULTS['batch_size']}, {GPU_DEFAULTS['repeats']} repeats after {GPU_DEFAULTS['warmup']} warm-up passes, every resolution.
On the CPU batch {CPU_DEFAULTS['batch_size']}, {CPU_DEFAULTS['repeats']} repeats after {CPU_DEFAULTS['warmup']} warm-up, and fps/memory only up to
{CPU_DEFAULTS['speed_max_res']} px (--speed-max-res), with {CPU_DEFAULTS['threads']} thread (--threads); above it only FLOPs/params are counted. CPU dtypes: fp32 and bf16
(autocast); fp16 is refused on the CPU (no fast fp16 kernels there: the number would mean nothing).
Re-running the same command resumes: points already in the CSV (same model, resolution, batch,
dtype, device) are skipped. Example (the main job): python run_bench.py --models vittt_t deit_t
"""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (and exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


class UsageError(ValueError):
    """A bad input found after parsing: reported like an argparse error."""


def _resolution(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer (allowed: multiples of {PATCH}, at least {PATCH}, e.g. 224 384 512)")
    if value < PATCH or value % PATCH:
        raise argparse.ArgumentTypeError(f"{value} is not a multiple of {PATCH} of at least {PATCH} (allowed e.g. 224 384 512)")
    return value


def _int_at_least(lowest: int):
    """An argparse type: an integer of at least `lowest`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer (allowed: a whole number of at least {lowest})")
        if value < lowest:
            raise argparse.ArgumentTypeError(f"{value} is not allowed (must be at least {lowest})")
        return value

    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not allowed (must be more than 0 seconds)")
    return value


def _run_name(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed (letters, digits, '.', '_', '-')")
    return text


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="run_bench.py", description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sweep = parser.add_argument_group("sweep")
    sweep.add_argument("--models", nargs="+", metavar="NAME",
                       help=f"models to sweep (see --list-models); 'all' = every registered model; default: the Fig. 6 set {' '.join(FIG6_MODELS)}")
    sweep.add_argument("--resolutions", nargs="+", type=_resolution, metavar="PX",
                       help=f"input resolutions, multiples of {PATCH} (default: {' '.join(map(str, DEFAULT_RESOLUTIONS))})")
    sweep.add_argument("--metrics", nargs="+", choices=METRICS, default=list(METRICS),
                       help="what to measure: flops (and params, meta device), fps, memory (default: all)")
    sweep.add_argument("--batch-size", type=_int_at_least(1), metavar="N",
                       help=f"images per forward (default: {GPU_DEFAULTS['batch_size']} on a GPU, {CPU_DEFAULTS['batch_size']} on the CPU)")
    sweep.add_argument("--dtype", choices=timing.DTYPES, default="fp32",
                       help="fp32, or autocast to fp16/bf16 (weights stay fp32); fp16 is refused on the CPU (default: fp32)")
    sweep.add_argument("--device", choices=env.DEVICES, default="auto", help="auto = cuda if available, else cpu")
    sweep.add_argument("--repeats", type=_int_at_least(1), metavar="N", help=f"timed repeats per point (default: {GPU_DEFAULTS['repeats']} GPU, {CPU_DEFAULTS['repeats']} CPU)")
    sweep.add_argument("--warmup", type=_int_at_least(0), metavar="N", help=f"untimed forward passes first (default: {GPU_DEFAULTS['warmup']} GPU, {CPU_DEFAULTS['warmup']} CPU)")
    sweep.add_argument("--speed-max-res", type=_int_at_least(1), metavar="PX",
                       help=f"measure fps/memory only up to this resolution, count FLOPs beyond (default: none on a GPU, {CPU_DEFAULTS['speed_max_res']} on the CPU)")
    sweep.add_argument("--threads", type=_int_at_least(1), metavar="N",
                       help=f"CPU threads for torch during fps/memory (default: {CPU_DEFAULTS['threads']}, steady on a shared machine; ignored on a GPU)")
    sweep.add_argument("--out", default="results", metavar="DIR", help="results folder (default: results)")
    sweep.add_argument("--reports", metavar="DIR", help="reports folder (default: reports/ beside the results folder)")
    sweep.add_argument("--run", type=_run_name, metavar="NAME", help="run name: results/NAME.csv (default: from device and models, so a re-run resumes)")
    sweep.add_argument("--jobs", type=_int_at_least(1), default=os.cpu_count() or 1, metavar="N",
                       help="processes that count FLOPs/params of count-only points in parallel; points that time the model run one at a time (default: the CPU count)")
    sweep.add_argument("--isolate", action="store_true", help="measure each point in its own process (a crash or hang loses only that point)")
    sweep.add_argument("--timeout", type=_positive_float, metavar="S", help="per-point time limit in seconds (status timeout); implies --isolate")
    sweep.add_argument("--no-progress", action="store_true", help="no progress bar")
    sweep.add_argument("--list-models", action="store_true", help="print the registered models and exit")

    sub = parser.add_subparsers(dest="command", metavar="{report,compare}")
    report = sub.add_parser("report", help="report CSV: the figures and markdown report of a results CSV (measures nothing)")
    report.add_argument("csv", type=Path, help="results CSV, e.g. results/<run>.csv")
    report.add_argument("--reports", dest="report_dir", metavar="DIR", help="reports folder (default: reports/ beside the CSV's folder)")
    compare = sub.add_parser("compare", help="compare BASE CUR: regression check of CUR against BASE (exit 1 on a regression)")
    from bench import compare as compare_module  # lazily: only when the parser is built

    compare_module.configure_parser(compare)
    return parser


# ---- the sweep ------------------------------------------------------------------------------

def _models(requested: Optional[list[str]]) -> list[str]:
    import vittt

    available = vittt.list_models()
    if requested is None:
        return list(FIG6_MODELS)
    names = [n for item in requested for n in item.split(",") if n.strip()]
    if not names:
        raise UsageError(f"--models: empty model list (available: all, {', '.join(available)})")
    if names == ["all"]:
        return available
    unknown = [n for n in names if n not in available]
    if unknown:
        raise UsageError(f"--models: unknown model {unknown[0]!r} (available: all, {', '.join(available)})")
    return list(dict.fromkeys(names))


def default_run_name(device: str, models: Sequence[str], metrics: Sequence[str] = METRICS) -> str:
    """A name that only depends on the device, the models and the metrics, so the same command
    resumes (and a FLOPs-only run is not taken for a finished full run)."""
    import vittt

    if list(models) == list(FIG6_MODELS):
        tag = "fig6"
    elif sorted(models) == vittt.list_models():
        tag = "all"
    else:
        tag = "-".join(sorted(models))
        if len(tag) > 60:
            tag = f"{len(models)}models-{hashlib.sha1(tag.encode()).hexdigest()[:8]}"
    only = "" if set(metrics) == set(METRICS) else "-" + "-".join(m for m in METRICS if m in metrics)
    return f"{device}-{tag}{only}"


def plan(args: argparse.Namespace):
    """Validate the sweep arguments and build its points; raises UsageError, writes nothing."""
    from bench import csvio, sweep

    models = _models(args.models)
    try:
        device = env.resolve_device(args.device)
    except ValueError as exc:
        raise UsageError(str(exc))
    if device == "cpu" and args.dtype == "fp16" and set(args.metrics) & set(sweep.SPEED_METRICS):
        raise UsageError("--dtype fp16 is not supported on the CPU (allowed there: fp32, bf16)")
    defaults = GPU_DEFAULTS if device == "cuda" else CPU_DEFAULTS
    given = {name: default if getattr(args, name) is None else getattr(args, name) for name, default in defaults.items()}
    resolutions = list(dict.fromkeys(args.resolutions or DEFAULT_RESOLUTIONS))
    points = sweep.make_points(models, resolutions, dtype=args.dtype, device=device, metrics=args.metrics, **given)
    run = args.run or default_run_name(device, models, args.metrics)
    csv_path = Path(args.out) / f"{run}.csv"
    try:
        csvio.check_header(csv_path)
    except ValueError as exc:
        raise UsageError(str(exc))
    reports = Path(args.reports) if args.reports else Path(args.out).resolve().parent / "reports"
    return points, csv_path, reports


def _print_skipped(points) -> None:
    by_reason: dict[str, list[str]] = {}
    for p in points:
        if p.skip_speed:
            by_reason.setdefault(p.skip_speed, []).append(f"{p.model}@{p.resolution}")
    for reason, where in by_reason.items():
        print(f"skipping fps/memory at {len(where)} points ({', '.join(where)}): {reason}; their FLOPs and params are still counted")


def run_sweep_command(args: argparse.Namespace) -> int:
    from bench import csvio, report, sweep

    points, csv_path, reports = plan(args)
    isolate = args.isolate or args.timeout is not None
    first = points[0]
    print(f"sweep: {len(points)} points ({len({p.model for p in points})} models x {len({p.resolution for p in points})} resolutions) "
          f"on {first.device}, batch {first.batch_size}, {first.dtype}, metrics {' '.join(first.metrics)}"
          + (", each point in its own process" if isolate else "") + (f", timeout {args.timeout:g} s" if args.timeout else ""))
    _print_skipped(points)
    done = csvio.done_keys(csv_path)
    resumed = sum(p.key in done for p in points)
    if resumed:
        print(f"resuming {csv_path}: {resumed} points already measured are skipped")
    start = time.perf_counter()
    try:
        counts = sweep.run_sweep(points, csv_path, isolate=isolate, timeout=args.timeout, progress=not args.no_progress,
                                 workers=args.jobs)
    except KeyboardInterrupt:
        print(f"\ninterrupted: the rows measured so far are in {csv_path}; run the same command again to resume", file=sys.stderr)
        return 130
    statuses = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()) if s != "resumed" and n)
    print(f"measured {sum(n for s, n in counts.items() if s != 'resumed')} points in {time.perf_counter() - start:.0f} s ({statuses or 'none new'})")
    print(f"results: {csv_path}")
    for path in report.write_report(csv_path, reports).values():
        print(f"report:  {path}")
    return 0


def list_models_command() -> int:
    import vittt

    for name in vittt.list_models():
        cfg = vittt.get_config(name)
        print(f"{name:20s} family {cfg.family:6s} size {cfg.size}  dim {cfg.dim}  depth {cfg.depth}")
    return 0


def report_command(args: argparse.Namespace) -> int:
    from bench import report

    if not args.csv.is_file():
        raise UsageError(f"report: {args.csv} is not a file (give a results CSV, e.g. results/<run>.csv)")
    try:
        written = report.write_report(args.csv, args.report_dir)
    except ValueError as exc:
        raise UsageError(f"report: {exc}")
    for path in written.values():
        print(f"report: {path}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
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
