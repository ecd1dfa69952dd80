"""Regression gate: compare two results CSVs point by point.

Points are matched on `schema.KEY`. Counted metrics (params, FLOPs, predicted and analytic memory)
are deterministic, so any change in either direction fails, and so does a count the baseline has
and the current run lacks: a baseline is refreshed on purpose, never drifted into. Measured
metrics are compared only between rows measured in the same setting (kernel backend, threads,
timing policy, precision: a difference there fails as "not comparable") on the same device model
(a different one is refused unless `across_devices`); they get a relative tolerance, and fps's is
widened to the noise both runs measured (`fps_iqr`), so noise alone never fails the gate.
A setting column an older file lacks reads as unknown: it matches anything, and a note says so.
`python run_bench.py compare BASE.csv CUR.csv` exits 1 on a regression, 2 on unreadable input.
"""
from __future__ import annotations

import argparse
import math
import numbers
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench import csvio
from bench.schema import KEY

# Counted (meta device) or predicted (deterministic): must be equal.
EXACT = ("params", "flops", "flops_analytic", "pred_peak_mem_mib", "pred_requested_mib", "pred_reserved_mib", "mem_analytic_mib")
PREDICTED = ("pred_peak_mem_mib", "pred_requested_mib", "pred_reserved_mib")
# Measured: relative tolerance, in the direction that hurts.
HIGHER_IS_BETTER = ("fps",)
LOWER_IS_BETTER = ("peak_mem_mib", "requested_mem_mib", "reserved_mem_mib", "nvml_used_mib", "rss_peak_mib", "energy_j_per_img")
TOLERANT = HIGHER_IS_BETTER + LOWER_IS_BETTER
# Measured run-to-run noise of a metric: the interquartile range over the median (older files: max-min spread).
SPREAD_OF = {"fps": ("fps_iqr", "fps_spread")}
DEFAULT_TOL = 0.05
# Setting columns under which measured values are like for like (device_name is checked on its own).
MEASURING = ("backend", "threads", "warmup_s", "min_time_s", "min_repeats", "max_repeats", "cuda_graphs", "tf32", "lock_clocks")
# Columns whose difference between the two files is worth a note.
ENV_COLUMNS = ("torch", "triton", "mamba_ssm", "cuda", "driver")


class DeviceMismatch(ValueError):
    """Measured rows of two different device models: refused unless across_devices."""


@dataclass(frozen=True)
class Finding:
    """One compared metric (or the status, the setting, or the presence) of one point."""

    point: tuple[str, ...]  # KEY values, as strings
    metric: str  # a metric column, "status", "setting", or "point" (present in one file only)
    base: Any
    cur: Any
    verdict: str  # equal|within|improved|regressed|changed|missing|new|fixed|status changed|not comparable
    fails: bool = False
    change: float | None = None  # (cur - base) / base
    limit: float | None = None  # allowed relative change, signed the way that hurts: max(tolerance, noise)

    @property
    def message(self) -> str:
        """E.g. 'deit_t @ 224: flops 1258291200 -> 1260000000 (+0.14%) [bs 1, float32, cpu]'."""
        label, context = _label(self.point), _context(self.point)
        if self.metric == "point":
            where = "missing in current" if self.verdict == "missing" else "new in current"
            return f"{label}: {where} {context}"
        if self.verdict == "missing" and self.cur is None:
            return f"{label}: {self.metric} {_fmt(self.base)} in the baseline, missing in current {context}"
        if self.verdict == "new":
            return f"{label}: {self.metric} new in current ({_fmt(self.cur)}) {context}"
        if self.verdict == "not comparable":
            return f"{label}: measured in another setting ({self.cur}): its measurements are not comparable {context}"
        text = f"{label}: {self.metric} {_fmt(self.base)} -> {_fmt(self.cur)}"
        if self.change is not None:
            allowed = f", allowed {_pct(self.limit)}" if self.limit is not None else ""
            text += f" ({_pct(self.change)}{allowed})"
        return f"{text} {context}"


def _label(point: tuple[str, ...]) -> str:
    p = dict(zip(KEY, point))
    return f"{p['model']} @ {p['resolution']}"


def _context(point: tuple[str, ...]) -> str:
    p = dict(zip(KEY, point))
    return f"[bs {p['batch_size'] or '-'}, {p['dtype'] or '-'}, {p['device'] or '-'}]"


@dataclass
class CompareResult:
    findings: list[Finding]
    notes: list[str] = field(default_factory=list)  # e.g. the two runs used different torch versions

    @property
    def regressions(self) -> list[Finding]:
        return [f for f in self.findings if f.fails]

    @property
    def failed(self) -> bool:
        return bool(self.regressions)

    def points(self) -> int:
        return len({f.point for f in self.findings})


def compare_frames(
    base: pd.DataFrame,
    cur: pd.DataFrame,
    *,
    default_tol: float = DEFAULT_TOL,
    spread_k: float = 1.0,
    allow_missing: bool = False,
    across_devices: bool = False,
    **tolerances: float,
) -> CompareResult:
    """Compare every point of `cur` with the same KEY in `base` (frames from `load_results`).

    tolerances: relative, per metric of TOLERANT (e.g. fps=0.1, peak_mem_mib=0.02); others get
    `default_tol`. The fps allowance is max(tol, spread_k * hypot(iqr_base, iqr_cur)): the noise of
    a difference of two independent runs adds in quadrature. Raises DeviceMismatch when a point was
    measured on different device models in the two files, unless `across_devices`.
    """
    for name, value in tolerances.items():
        if name not in TOLERANT:
            raise ValueError(f"no tolerance for {name!r}: tolerances apply to {', '.join(TOLERANT)}"
                             + (" (counted metrics must be equal)" if name in EXACT else ""))
        if not value >= 0:
            raise ValueError(f"tolerance for {name} must be >= 0, got {value}")
    tol = {m: tolerances.get(m, default_tol) for m in TOLERANT}
    base_rows, cur_rows = _index(base, "baseline"), _index(cur, "current")
    if not base_rows:
        raise ValueError("the baseline has no rows: a gate over nothing would pass anything")
    notes = _env_notes(base, cur) + _unknown_notes(base, "baseline") + _unknown_notes(cur, "current")

    findings: list[Finding] = []
    devices: set[tuple[str, str]] = set()
    for point, b in base_rows.items():
        c = cur_rows.get(point)
        if c is None:
            findings.append(Finding(point, "point", "present", "absent", "missing", fails=not allow_missing))
        else:
            findings += _compare_point(point, b, c, tol, spread_k, allow_missing, devices)
    findings += [Finding(p, "point", "absent", "present", "new") for p in cur_rows if p not in base_rows]
    findings.sort(key=lambda f: _order(f.point))
    if devices and not across_devices:
        b, c = sorted(devices)[0]
        raise DeviceMismatch(f"the files were measured on different devices ({b} -> {c}); compare them with --across-devices "
                             "if that is what you want")
    notes += [f"compared across devices: {b} -> {c}" for b, c in sorted(devices)]
    return CompareResult(findings, notes)


def _setting_diff(b: dict, c: dict, columns) -> str:
    """'threads 1 -> 2, ...' over the columns both rows know (an unknown one matches anything)."""
    diff = []
    for col in columns:
        vb, vc = _text(b.get(col)), _text(c.get(col))
        if vb != vc and csvio.UNKNOWN not in (vb, vc):
            diff.append(f"{col} {vb or '-'} -> {vc or '-'}")
    return ", ".join(diff)


def _compare_point(point, b: dict, c: dict, tol: dict, spread_k: float, allow_missing: bool,
                   devices: set) -> list[Finding]:
    """Counts are compared whatever the status; measurements only when both runs are ok and were
    measured alike."""
    sb, sc = _status(b), _status(c)
    both_predicted = all(any(_number(r.get(m)) is not None for m in PREDICTED) for r in (b, c))
    predicted_alike = not (both_predicted and _setting_diff(b, c, ("pred_gpu",)))
    out = [f for m in EXACT if (m not in PREDICTED or predicted_alike)
           and (f := _compare_metric(point, m, b, c, None, spread_k, allow_missing))]
    if not predicted_alike:
        out.append(Finding(point, "setting", None, _setting_diff(b, c, ("pred_gpu",)), "not comparable", fails=True))
    if sb == sc == "ok" and any(_number(b.get(m)) is not None and _number(c.get(m)) is not None for m in TOLERANT):
        if _setting_diff(b, c, ("device_name",)):
            devices.add((_text(b.get("device_name")), _text(c.get("device_name"))))
        diff = _setting_diff(b, c, MEASURING)
        if diff:
            out.append(Finding(point, "setting", None, diff, "not comparable", fails=True))
        else:
            out += [f for m in TOLERANT if (f := _compare_metric(point, m, b, c, tol.get(m), spread_k, allow_missing))]
    elif sb == sc == "ok":
        out += [f for m in TOLERANT if (f := _compare_metric(point, m, b, c, tol.get(m), spread_k, allow_missing))]
    if sb == "ok" != sc:  # it ran before: skipped now is a missing point, anything else a regression
        missing = sc == "skipped"
        out.append(Finding(point, "status", sb, sc, "missing" if missing else "regressed",
                           fails=not (missing and allow_missing)))
    elif sb != "ok":  # it failed before: report the change, never fail on it
        verdict = "fixed" if sc == "ok" else "equal" if sb == sc else "status changed"
        out.append(Finding(point, "status", sb, sc, verdict))
    return out


def _spread(row: dict, metric: str) -> float:
    for column in SPREAD_OF.get(metric, ()):
        value = _number(row.get(column))
        if value is not None:
            return value
    return 0.0


def _compare_metric(point, metric: str, brow: dict, crow: dict, tol: float | None, spread_k: float,
                    allow_missing: bool) -> Finding | None:
    """EXACT metrics must be equal; TOLERANT ones may move by `tol` (fps: or by the measured noise).
    A value the baseline has and the current run lacks fails (unless allow_missing)."""
    b, c = _number(brow.get(metric)), _number(crow.get(metric))
    if b is None and c is None:
        return None
    if c is None:
        return Finding(point, metric, b, None, "missing", fails=not allow_missing)
    if b is None:
        return Finding(point, metric, None, c, "new")
    change = _rel(b, c)
    if metric in EXACT:
        return Finding(point, metric, b, c, "equal" if b == c else "changed", fails=b != c, change=change)
    limit = tol
    if metric in SPREAD_OF:
        limit = max(tol, spread_k * math.hypot(_spread(brow, metric), _spread(crow, metric)))
    worse = -change if metric in HIGHER_IS_BETTER else change  # > 0: got worse
    verdict = "regressed" if worse > limit else "improved" if worse < -limit else "within"
    signed_limit = -limit if metric in HIGHER_IS_BETTER else limit
    return Finding(point, metric, b, c, verdict, fails=verdict == "regressed", change=change, limit=signed_limit)


def _index(df: pd.DataFrame, which: str) -> dict[tuple[str, ...], dict]:
    """Rows by normalised KEY; a KEY column missing or a KEY seen twice is an error."""
    missing = [k for k in KEY if k not in df.columns]
    if missing:
        raise ValueError(f"{which} has no column {', '.join(missing)} (a results CSV needs {', '.join(KEY)})")
    rows: dict[tuple[str, ...], dict] = {}
    for row in df.to_dict("records"):
        point = tuple(_key_part(row[k]) for k in KEY)
        if point in rows:
            raise ValueError(f"{which} has more than one row for {_label(point)} {_context(point)}")
        rows[point] = row
    return rows


def _order(point: tuple[str, ...]) -> tuple:
    """Findings in order of model, then resolution as a number, then the rest of the key."""
    try:
        resolution = float(point[1])
    except ValueError:
        resolution = math.inf
    return point[0], resolution, point[2:]


def _text(v) -> str:
    return "" if _empty(v) else str(v).strip()


def _env_notes(base: pd.DataFrame, cur: pd.DataFrame) -> list[str]:
    notes = []
    for col in ENV_COLUMNS:
        b, c = (sorted({_text(v) for v in df.get(col, pd.Series(dtype=object)) if not _empty(v)}) for df in (base, cur))
        if b != c:
            notes.append(f"{col} differs: {', '.join(b) or '-'} -> {', '.join(c) or '-'}")
    return notes


def _unknown_notes(frame: pd.DataFrame, which: str) -> list[str]:
    missing = frame.attrs.get("missing_columns") or []
    return [f"{which} has no {', '.join(missing)} column(s) (an older file): read as unknown, matching anything"] if missing else []


def _status(row: dict) -> str:
    """Empty status (a hand-written CSV) counts as ok."""
    s = row.get("status")
    return "ok" if _empty(s) else str(s).strip().lower()


def _empty(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip()) or v is pd.NA


def _number(v) -> int | float | None:
    """A cell as a number (int when integral, so large counts compare exactly), None when empty."""
    if _empty(v):
        return None
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():
        return int(v)
    x = float(v)  # ValueError for text
    if math.isnan(x):
        return None
    return int(x) if x.is_integer() and abs(x) < 2**53 else x


def _key_part(v) -> str:
    """224, 224.0 and '224' are the same resolution (pandas reads a column with gaps as float)."""
    if _empty(v):
        return ""
    try:
        return str(_number(v))
    except ValueError:
        return str(v).strip()


def _rel(b, c) -> float:
    if b == 0:
        return 0.0 if c == 0 else math.copysign(math.inf, c)
    return (c - b) / abs(b)


def _fmt(v) -> str:
    if v is None:
        return "-"
    return str(v) if isinstance(v, (int, str)) else f"{v:.6g}"


def _pct(x: float | None) -> str:
    return "" if x is None else f"{x:+.2%}" if math.isfinite(x) else ("+inf" if x > 0 else "-inf")


# ---- output -------------------------------------------------------------------------------

_COLUMNS = ("model", "res", "bs", "dtype", "device", "metric", "baseline", "current", "change", "allowed", "verdict")


def _table_rows(result: CompareResult) -> list[tuple[str, ...]]:
    rows = []
    for f in result.findings:
        model, res, bs, dtype, device = f.point
        verdict = f"{f.verdict} (FAIL)" if f.fails else f.verdict
        rows.append((model, res, bs, dtype, device, f.metric, _fmt(f.base), _fmt(f.cur),
                     _pct(f.change), "exact" if f.metric in EXACT else _pct(f.limit), verdict))
    return rows


def _summary(result: CompareResult) -> str:
    n = len(result.regressions)
    head = f"FAIL: {n} regression{'s' * (n != 1)}" if n else "PASS: no regression"
    counts: dict[str, int] = {}
    for f in result.findings:
        counts[f.verdict] = counts.get(f.verdict, 0) + 1
    detail = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    n = result.points()
    return f"{head} ({n} point{'s' * (n != 1)}; {detail or 'nothing compared'})"


def format_table(result: CompareResult, fmt: str = "text") -> str:
    """The change per metric of every point, then the regressions; fmt: text | markdown."""
    rows = _table_rows(result)
    if fmt == "markdown":
        items = [f"- :x: {f.message}" for f in result.regressions] + [f"- note: {n}" for n in result.notes]
        lines = ["### Benchmark regression check", "", f"**{_summary(result)}**"] + ([""] + items if items else [])
        lines += ["", "<details><summary>All compared metrics</summary>", "",
                  "| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        lines += ["", "</details>"]
        return "\n".join(lines) + "\n"
    if fmt != "text":
        raise ValueError(f"unknown format {fmt!r}: use text or markdown")
    widths = [max(len(x) for x in col) for col in zip(_COLUMNS, *rows)]
    lines = ["  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip() for r in (_COLUMNS, *rows)]
    lines += [f"note: {n}" for n in result.notes]
    lines += [f"REGRESSION {f.message}" for f in result.regressions]
    lines.append(_summary(result))
    return "\n".join(lines) + "\n"


# ---- command line -------------------------------------------------------------------------

def load_results(path: str | Path) -> pd.DataFrame:
    """A results CSV (any version of the suite's) as csvio reads it; missing identity columns read
    as "unknown"."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    frame = csvio.read_frame(path)
    for column in frame.attrs["missing_columns"]:
        frame[column] = csvio.UNKNOWN
    return frame


def _tolerance(text: str) -> tuple[str | None, float]:
    """'fps=0.1', 'fps=10%' or '0.1' (all tolerant metrics)."""
    name, _, value = text.rpartition("=")
    try:
        frac = float(value[:-1]) / 100 if value.endswith("%") else float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad tolerance {text!r}: use METRIC=FRACTION, e.g. fps=0.1 or fps=10%")
    if name and name not in TOLERANT:
        raise argparse.ArgumentTypeError(f"no tolerance for {name!r}: choose from {', '.join(TOLERANT)}")
    if not frac >= 0:
        raise argparse.ArgumentTypeError(f"tolerance must be >= 0, got {text!r}")
    return name or None, frac


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of `run_bench.py compare`."""
    parser.add_argument("baseline", type=Path,
                        help="results CSV to compare against (e.g. results/baselines/cpu-flops.csv)")
    parser.add_argument("current", type=Path, help="results CSV of the run under test")
    parser.add_argument("--tol", type=_tolerance, action="append", default=[], metavar="[METRIC=]FRAC",
                        help=f"relative tolerance, repeatable: fps=0.1, peak_mem_mib=2%%, or a bare value for all of "
                             f"{', '.join(TOLERANT)} (default {DEFAULT_TOL:g}); {', '.join(EXACT)} must be equal")
    parser.add_argument("--spread-k", type=float, default=1.0, metavar="K",
                        help="fps may drop by K x the combined measured fps_spread of both runs when that exceeds "
                             "the tolerance (default 1)")
    parser.add_argument("--allow-missing", action="store_true",
                        help="points (and values) of the baseline absent in the current run do not fail")
    parser.add_argument("--across-devices", action="store_true",
                        help="compare measurements made on different device models (refused otherwise); the output says so")
    parser.add_argument("--format", choices=("text", "markdown"), default="text",
                        help="markdown: for a pull-request comment")


def run(args: argparse.Namespace) -> int:
    """Exit status: 0 no regression, 1 regression, 2 unreadable input."""
    default_tol, per_metric = DEFAULT_TOL, {}
    for name, frac in args.tol:
        if name is None:
            default_tol = frac
        else:
            per_metric[name] = frac
    try:
        base, cur = load_results(args.baseline), load_results(args.current)
        result = compare_frames(base, cur, default_tol=default_tol, spread_k=args.spread_k,
                                allow_missing=args.allow_missing, across_devices=args.across_devices, **per_metric)
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        print(f"compare: {e}", file=sys.stderr)
        return 2
    sys.stdout.write(format_table(result, args.format))
    return 1 if result.failed else 0


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.compare BASE CUR` (same as `run_bench.py compare`)."""
    parser = argparse.ArgumentParser(prog="compare", description=__doc__.splitlines()[0])
    configure_parser(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
