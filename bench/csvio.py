"""The results CSV on disk: one physical line per row, columns exactly `schema.COLUMNS`.

Rows are appended (and flushed to disk) one at a time, so a sweep that is killed loses at most
the point it was measuring; a line cut short by the kill is dropped on the next append. The set
of `schema.KEY`s already present is what a re-run skips.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any, Mapping

from bench.schema import COLUMNS, KEY

Key = tuple[str, int, int, str, str]

# Columns read back as numbers; every other column is text (a CUDA version "12.4" is not a float).
NUMERIC = (
    "resolution", "tokens", "batch_size", "params", "flops", "flops_analytic", "flops_rel_diff", "fps", "fps_spread",
    "latency_ms", "repeats", "peak_mem_mib", "reserved_mem_mib", "nvml_used_mib", "rss_peak_mib",
)


def format_cell(value: Any) -> str:
    """A CSV cell: None/NaN -> "" (not measured), floats to 6 significant digits, ints exact,
    text on one line (so each row is exactly one line of the file)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if value != value else format(value, ".6g")
    return " | ".join(str(value).splitlines())


def key_of(row: Mapping[str, Any]) -> Key:
    """The identity of a row (schema.KEY), normalised so "224" and 224 compare equal."""
    model, resolution, batch, dtype, device = (row[k] for k in KEY)
    return (str(model), int(float(resolution)), int(float(batch)), str(dtype), str(device))


def check_header(path: str | Path) -> None:
    """Raise ValueError when an existing file does not have the schema's columns in order
    (an older schema, or not a results file): appending to it would corrupt it."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open(newline="") as f:
        header = next(csv.reader(f), [])
    if tuple(header) != COLUMNS:
        raise ValueError(f"{path} exists with other columns than bench/schema.py COLUMNS; choose another --run or move it")


def _drop_partial_last_line(f: io.BufferedRandom) -> None:
    """Truncate a last line that has no newline (a write cut short by a kill)."""
    size = f.seek(0, os.SEEK_END)
    if size == 0:
        return
    f.seek(size - 1)
    if f.read(1) == b"\n":
        return
    f.seek(0)
    data = f.read()
    f.truncate(data.rfind(b"\n") + 1)


def append_row(path: str | Path, row: Mapping[str, Any]) -> None:
    """Append one row (missing columns empty; unknown keys are an error), writing the header if
    the file is new, and flush it to disk before returning."""
    unknown = set(row) - set(COLUMNS)
    if unknown:
        raise KeyError(f"not schema columns: {sorted(unknown)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    check_header(path)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    with open(path, "a+b") as f:
        _drop_partial_last_line(f)
        if f.seek(0, os.SEEK_END) == 0:
            writer.writerow(COLUMNS)
        writer.writerow([format_cell(row.get(c)) for c in COLUMNS])
        f.write(buf.getvalue().encode())
        f.flush()
        os.fsync(f.fileno())


def read_rows(path: str | Path) -> list[dict[str, str]]:
    """All complete rows as dicts of strings ("" = empty cell)."""
    path = Path(path)
    if not path.exists():
        return []
    check_header(path)
    with path.open(newline="") as f:
        text = f.read()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    return list(csv.DictReader(io.StringIO(text)))


RETRIED = ("error", "timeout")  # outcomes a resumed sweep measures again; ok, oom and skipped are results


def done_keys(path: str | Path) -> set[Key]:
    """Keys of the points already in the file with a result: what a resumed sweep skips."""
    return {key_of(r) for r in read_rows(path) if r["status"] not in RETRIED}


def drop_retried(path: str | Path, keys: set[Key]) -> int:
    """Remove the error/timeout rows of `keys` (about to be measured again), rewriting the file
    atomically; returns how many rows went."""
    rows = read_rows(path)
    keep = [r for r in rows if not (r["status"] in RETRIED and key_of(r) in keys)]
    if len(keep) < len(rows):
        tmp = Path(path).with_suffix(".tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(keep)
        os.replace(tmp, path)
    return len(rows) - len(keep)


def read_frame(path: str | Path):
    """The file as a pandas DataFrame in schema column order: NUMERIC columns parsed, empty cells NaN."""
    import pandas as pd

    frame = pd.DataFrame(read_rows(path), columns=list(COLUMNS), dtype=object)
    frame = frame.where(frame != "", None)
    for column in NUMERIC:
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame
