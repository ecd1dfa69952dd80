"""The results CSV on disk: one physical line per row; the one reader of results files.

Rows are appended (and flushed to disk) one at a time under an exclusive file lock, so a sweep
that is killed loses at most the point it was measuring, a line cut short by the kill is dropped
on the next append, and two drivers on one results folder never interleave rows. Files of older
versions of the suite are read (missing columns are empty and listed in `missing_columns`), never
appended to.
"""
from __future__ import annotations

import csv
import fcntl
import io
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from bench.schema import COLUMNS, KEY, LEGACY, SETTING

Key = tuple[str, int, int, str, str]
UNKNOWN = "unknown"  # the value of an identity column that a file does not have

# Columns read back as numbers; every other column is text (a CUDA version "12.4" is not a float).
TEXT = {"model", "family", "dtype", "device", "device_name", "backend", "metrics", "tf32", "pred_gpu", "torch", "triton",
        "mamba_ssm", "cuda", "driver", "matmul_precision", "unsupported_ops", "energy_source", "gpu_uuid",
        "throttle_start", "throttle_end", "status", "note", "git_commit", "timestamp", "gpu_name"}
NUMERIC = tuple(c for c in (*COLUMNS, *LEGACY) if c not in TEXT)


def format_cell(value: Any) -> str:
    """A CSV cell: None/NaN -> "" (not measured), bools 1/0, floats to 6 significant digits, ints
    exact, text on one line (so each row is exactly one line of the file)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        return "" if value != value else format(value, ".6g")
    return " | ".join(str(value).splitlines())


def key_of(row: Mapping[str, Any]) -> Key:
    """The point of a row (schema.KEY), normalised so "224" and 224 compare equal."""
    model, resolution, batch, dtype, device = (row[k] for k in KEY)
    return (str(model), int(float(resolution)), int(float(batch)), str(dtype), str(device))


def setting_of(row: Mapping[str, Any]) -> dict[str, str]:
    """The setting columns of a row as CSV text ("unknown" for a column the row does not have)."""
    return {c: format_cell(row[c]) if c in row else UNKNOWN for c in SETTING}


def metrics_of(row: Mapping[str, Any]) -> frozenset[str]:
    return frozenset(str(row.get("metrics") or "").split())


def _header(path: Path) -> list[str]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            return next(csv.reader(f), [])
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a results CSV (not UTF-8 text)")


def check_appendable(path: str | Path) -> None:
    """Raise ValueError when an existing file does not have this version's columns in order
    (an older version's file, or not a results file): appending would corrupt it."""
    path = Path(path)
    if path.exists() and path.stat().st_size and tuple(_header(path)) != COLUMNS:
        raise ValueError(f"{path} was written with other columns (an older version of the suite, or not a results "
                         "file): choose another --run or move it")


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
    """Append one row (missing columns empty; unknown keys are an error) under an exclusive lock,
    writing the header if the file is new, and flush it to disk before returning."""
    unknown = set(row) - set(COLUMNS)
    if unknown:
        raise KeyError(f"not schema columns: {sorted(unknown)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    with open(path, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        check_appendable(path)
        _drop_partial_last_line(f)
        if f.seek(0, os.SEEK_END) == 0:
            writer.writerow(COLUMNS)
        writer.writerow([format_cell(row.get(c)) for c in COLUMNS])
        f.write(buf.getvalue().encode())
        f.flush()
        os.fsync(f.fileno())


def read_rows(path: str | Path) -> list[dict[str, str]]:
    """All complete rows as dicts of strings ("" = empty cell), in this version's columns plus the
    legacy ones the file has; raises ValueError (naming the file) for a file that is not a results CSV."""
    path = Path(path)
    if not path.exists():
        return []
    header = _header(path)
    if not set(KEY) <= set(header):
        raise ValueError(f"{path} is not a results CSV (it has no {', '.join(c for c in KEY if c not in header)} column)")
    with path.open(newline="", encoding="utf-8") as f:
        text = f.read()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    columns = [*COLUMNS, *(c for c in LEGACY if c in header)]
    rows = []
    for raw in csv.DictReader(io.StringIO(text)):
        row = {c: raw.get(c) or "" for c in columns}
        if "gpu_name" in header and "device_name" not in header and raw.get("device") == "cuda":
            row["device_name"] = raw.get("gpu_name") or ""
        rows.append(row)
    return rows


def missing_columns(path: str | Path) -> list[str]:
    """Identity columns (setting, metrics) that an older file lacks: they read as "unknown"."""
    header = set(_header(Path(path)))
    if "gpu_name" in header:
        header.add("device_name")
    return [c for c in (*SETTING, "metrics") if c not in header]


def replace_rows(path: str | Path, drop: Iterable[int]) -> None:
    """Rewrite the file atomically without the rows at the given indexes (of `read_rows`)."""
    drop = set(drop)
    if not drop:
        return
    path = Path(path)
    with open(path, "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        keep = [r for i, r in enumerate(read_rows(path)) if i not in drop]
        tmp = path.with_suffix(".tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n", extrasaction="ignore")
            writer.writeheader()
            writer.writerows(keep)
        os.replace(tmp, path)


def read_frame(path: str | Path):
    """The file as a pandas DataFrame (this version's columns plus legacy ones present): numeric
    columns parsed, empty cells NaN/None. `frame.attrs["missing_columns"]` lists identity columns the
    file lacks."""
    import pandas as pd

    rows = read_rows(path)
    columns = list(rows[0]) if rows else list(COLUMNS)
    frame = pd.DataFrame(rows, columns=columns, dtype=object)
    frame = frame.where(frame != "", None)
    for column in NUMERIC:
        if column in frame:
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame.attrs["missing_columns"] = missing_columns(path) if Path(path).exists() else []
    return frame
