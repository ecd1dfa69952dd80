"""A sweep within a time budget (`--budget SECONDS`): each timed point's cost is predicted before
it runs, and a point predicted not to fit in what is left is skipped with that reason in its row.

A point's cost is predicted from the points timed so far: one forward's time is scaled from the
nearest timed point of the same model (else of the same family, else any) by the ratio of their
work (FLOPs per image from the family's closed form, times the batch; a model without a formula
scales with the token count squared, which over-predicts a linear model: the safe side), and the
timing policy turns it into seconds (warm-up, timed calls, memory pass). What a point cost beyond
its timed calls (building the model, counting FLOPs) is learned as an overhead per model.
The first point has no prediction and runs: points are ordered from low to high resolution.
"""
from __future__ import annotations

import time
from typing import Callable, Optional

from bench.point import Point


def _work(point: Point) -> Optional[float]:
    """FLOPs of one forward at this point (per image x batch), None without a closed form."""
    from bench.families import analytic_flops
    from vittt import get_config, list_models

    if point.model not in list_models():
        return None
    flops = analytic_flops(get_config(point.model, point.resolution))
    return None if flops is None else float(flops) * point.batch_size


class Budget:
    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic):
        self.seconds, self.clock = seconds, clock
        self.start = clock()
        self.timed: list[tuple[Point, float]] = []  # (point, seconds of one forward)
        self.overhead: dict[str, float] = {}  # model -> seconds a point cost beyond its predicted timing

    def left(self) -> float:
        return self.seconds - (self.clock() - self.start)

    def _call_seconds(self, point: Point) -> Optional[float]:
        """One forward's predicted seconds, scaled from the most alike timed point."""
        for alike in (lambda p: p.model == point.model, lambda p: p.family == point.family, lambda p: True):
            known = [(p, s) for p, s in self.timed if alike(p)]
            if known:
                ref, seconds = min(known, key=lambda ps: (abs(ps[0].resolution - point.resolution), -ps[0].resolution))
                w, w_ref = _work(point), _work(ref)
                if w is not None and w_ref:
                    return seconds * w / w_ref
                return seconds * (point.resolution / ref.resolution) ** 4 * point.batch_size / ref.batch_size
        return None

    def predict(self, point: Point) -> Optional[float]:
        """Predicted seconds of the point, or None before anything was timed."""
        call = self._call_seconds(point)
        if call is None:
            return None
        memory_pass = call if point.device == "cuda" else 0.0
        extra = self.overhead.get(point.model, max(self.overhead.values(), default=0.0))
        return extra + point.setting.policy.predicted_seconds(call) + memory_pass

    def refuse(self, point: Point) -> str:
        """"" when the point may run, else why not (its row's note)."""
        left = self.left()
        if left <= 0:
            return f"--budget {self.seconds:g} s spent"
        predicted = self.predict(point)
        if predicted is not None and predicted > left:
            return f"--budget: predicted {predicted:.0f} s, {left:.0f} s left of {self.seconds:g} s"
        return ""

    def record(self, point: Point, wall_s: float, fields: dict) -> None:
        """Learn from a point that ran: its forward time and what it cost beyond the timing."""
        latency = fields.get("latency_ms")
        if not latency:
            return
        call = latency / 1e3
        self.timed.append((point, call))
        memory_pass = call if point.device == "cuda" else 0.0
        beyond = wall_s - point.setting.policy.predicted_seconds(call) - memory_pass
        self.overhead[point.model] = max(self.overhead.get(point.model, 0.0), beyond, 0.0)
