"""Fake measures for the cluster tests (a module of its own: task processes import it, and it
imports no torch). Each records the GPU it saw and when it ran; with VITTT_TEST_DIR set, it also
logs each run there (runs.txt, `<model>.pid`) and leaves a `<model>.done` marker when it ends."""

import os
import signal
import time
from pathlib import Path

from bench import cluster
from helpers import fake_point


def fake_measure(point):
    """Counts, then a note "cvd=... start=... end=...". `killed` kills the task process running it
    (the point's parent); `slow` holds its GPU until VITTT_TEST_OTHERS other points are done (at
    most 30 s); any other point sleeps VITTT_TEST_SLEEP seconds (default 0.3)."""
    start = time.time()
    shared = os.environ.get("VITTT_TEST_DIR")
    if shared:
        Path(shared, point.model + ".pid").write_text(str(os.getpid()))
        with open(Path(shared, "runs.txt"), "a") as f:
            f.write(point.model + "\n")
    yield {"params": 10, "flops": 1000, "backend": "fake"}
    if point.model == "killed":
        os.kill(os.getppid(), signal.SIGKILL)
        os._exit(0)
    if point.model == "slow":
        deadline = time.time() + 30
        while len(list(Path(shared).glob("*.done"))) < int(os.environ["VITTT_TEST_OTHERS"]) and time.time() < deadline:
            time.sleep(0.05)
    else:
        time.sleep(float(os.environ.get("VITTT_TEST_SLEEP", "0.3")))
    if shared:
        Path(shared, point.model + ".done").touch()
    yield {"note": f"cvd={os.environ.get('CUDA_VISIBLE_DEVICES')} start={start:.3f} end={time.time():.3f}"}


def tasks_for(*models, measure=fake_measure):
    """One task per model at 224 px, named "<model>-224"."""
    points = [fake_point(m, metrics=("flops",)) for m in models]
    return [(f"{p.model}-{p.resolution}", cluster.task_spec(p, measure)) for p in points]


def ran(row):
    """(GPU, start, end) of a fake row."""
    fields = dict(part.split("=") for part in row["note"].split())
    return fields["cvd"], float(fields["start"]), float(fields["end"])


def alive(pid):
    """Whether a process runs (a zombie, ended but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def runs(shared):
    """The models run so far, sorted (one entry per run)."""
    path = Path(shared, "runs.txt")
    return sorted(path.read_text().split()) if path.exists() else []
