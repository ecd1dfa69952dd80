"""A sweep's points and their identity: what is measured (model, resolution, batch, dtype, device)
and how (the setting: device model, kernel backend, threads, timing policy, precision, versions).

A point is a plain frozen dataclass that travels as JSON to an isolated child process or a cluster
node (`to_dict` / `from_dict`). Its `identity()` is what resume and compare match rows on.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Optional

from bench import csvio, env
from bench.schema import SETTING
from bench.timing import NOISY, TimingPolicy

if TYPE_CHECKING:
    from bench.models import ModelRef

METRICS = ("flops", "fps", "memory", "mem_pred")
SPEED_METRICS = ("fps", "memory")  # the metrics that run the model on the device
REFERENCE_BACKENDS = ("torch",)  # kernel backends that are a reference, not a fast path


@dataclass(frozen=True)
class Setting:
    """How every point of a run is measured (the run-wide part of a row's identity)."""

    device: str  # "cpu" or "cuda"
    device_name: str
    policy: TimingPolicy
    threads: Optional[int] = None  # CPU threads while timing (None on a GPU)
    cuda_graphs: bool = False
    tf32: bool = False
    lock_clocks: bool = False
    pred_gpu: str = ""  # GPU profile of mem_pred ("" when not asked)
    versions: tuple[tuple[str, str], ...] = ()  # (name, version) of torch, triton, mamba_ssm, cuda, driver
    noise_threshold: float = NOISY  # flags a point noisy; not part of the identity

    def columns(self) -> dict[str, object]:
        """The setting's row fields (schema.SETTING but `backend`, which is per model)."""
        return {"device_name": self.device_name, "threads": self.threads, **self.policy.as_row(),
                "cuda_graphs": self.cuda_graphs, "tf32": "on" if self.tf32 else "off", "lock_clocks": self.lock_clocks,
                "pred_gpu": self.pred_gpu or None, **dict(self.versions)}


def make_setting(device: str, policy: TimingPolicy, **options) -> Setting:
    """The setting of a run on `device`, with the device's name and the installed versions."""
    return Setting(device, env.device_name(device), policy, versions=tuple(env.versions(device).items()), **options)


@dataclass(frozen=True)
class Point:
    """One measurement: a model at one resolution, batch and dtype, in a setting."""

    model: str  # the CSV's model column
    ref: str  # what a child process resolves (bench.models)
    family: str
    size: str  # "t", "s", "b", or "" when the model has none
    resolution: int
    tokens: Optional[int]
    batch_size: int
    dtype: str
    backend: str  # the kernel backend of the model's mixer on the setting's device
    setting: Setting
    metrics: tuple[str, ...] = METRICS  # what this point measures (speed metrics dropped when skip_speed)
    skip_speed: str = ""  # why fps/memory are not measured here ("" = they are, if asked)

    @property
    def device(self) -> str:
        return self.setting.device

    @property
    def key(self) -> csvio.Key:
        return (self.model, self.resolution, self.batch_size, self.dtype, self.device)

    @property
    def label(self) -> str:
        return f"{self.model}@{self.resolution} b{self.batch_size} {self.dtype} {self.device}"

    @property
    def measures_speed(self) -> bool:
        return any(m in self.metrics for m in SPEED_METRICS)

    def identity(self) -> dict[str, str]:
        """The setting columns as CSV text: a row is this point's result only if it has the same."""
        columns = {**self.setting.columns(), "backend": self.backend}
        return {c: csvio.format_cell(columns.get(c)) for c in SETTING}

    @property
    def id(self) -> str:
        """A file-name-safe id, unique per key and setting (row files of cluster jobs)."""
        text = json.dumps([self.key, self.identity(), self.metrics], sort_keys=True)
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", self.model.rsplit("/", 1)[-1]).lstrip("._-")[:40] or "model"
        return f"{slug}-{self.resolution}-b{self.batch_size}-{self.dtype}-{self.device}-{hashlib.sha1(text.encode()).hexdigest()[:10]}"

    def row_fields(self) -> dict[str, object]:
        """The fields every row of this point starts with."""
        return {"model": self.model, "family": self.family, "resolution": self.resolution, "tokens": self.tokens,
                "batch_size": self.batch_size, "device": self.device, "dtype": self.dtype, "backend": self.backend,
                "metrics": " ".join(self.metrics), **self.setting.columns()}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Point":
        s = dict(data["setting"])
        setting = Setting(**{**s, "policy": TimingPolicy(**s["policy"]), "versions": tuple(map(tuple, s["versions"]))})
        return cls(**{**data, "setting": setting, "metrics": tuple(data["metrics"])})


@dataclass(frozen=True)
class ModelFacts:
    """What planning needs to know of a model, read from one build on the meta device."""

    family: str
    size: str
    backend: str


def model_facts(ref: "ModelRef", device: str, img_size: int) -> ModelFacts:
    """Family, size and kernel backend of a model (built once on meta, which allocates nothing)."""
    import torch

    from bench.models import family_of, kernel_backend, size_of

    with torch.device("meta"):
        model = ref.build(img_size)
    return ModelFacts(family_of(model), size_of(model), kernel_backend(model, device))


def make_points(
    models: Iterable["ModelRef"],
    resolutions: Iterable[int],
    *,
    batch_size: int,
    dtype: str,
    setting: Setting,
    metrics: Iterable[str] = METRICS,
    speed_max_res: Optional[int] = None,
    allow_reference: bool = False,
    facts: Optional[dict[str, ModelFacts]] = None,
) -> list[Point]:
    """The points of a sweep, resolution-major (every model's curve fills from low to high
    resolution). Speed metrics are dropped, with the reason, above `speed_max_res` and, on CUDA,
    for a model whose mixer would run a reference backend (unless `allow_reference`)."""
    models, resolutions = list(models), list(resolutions)
    asked = tuple(m for m in METRICS if m in set(metrics))
    facts = facts if facts is not None else {m.name: model_facts(m, setting.device, resolutions[0]) for m in models}
    points = []
    for res in resolutions:
        for ref in models:
            f = facts[ref.name]
            cfg = ref.config(res)
            skip = ""
            if any(m in asked for m in SPEED_METRICS):
                if speed_max_res is not None and res > speed_max_res:
                    skip = f"above the {setting.device} speed limit of {speed_max_res} px (--speed-max-res)"
                elif setting.device == "cuda" and f.backend in REFERENCE_BACKENDS and not allow_reference:
                    skip = (f"{ref.name} would run the {f.backend} reference kernel on cuda, not a fast path "
                            "(--allow-reference times it anyway)")
            point_metrics = tuple(m for m in asked if not (skip and m in SPEED_METRICS))
            points.append(Point(ref.name, ref.ref, f.family, f.size, res, cfg.num_patches if cfg else None, batch_size,
                                dtype, f.backend, setting, point_metrics, skip))
    return points


def size_major(points: list[Point], sizes: Iterable[str]) -> list[Point]:
    """Points ordered by model size (in `sizes` order, other sizes last), then resolution: the
    paper's figure fills T first."""
    rank = {s: i for i, s in enumerate(sizes)}
    return sorted(points, key=lambda p: rank.get(p.size, len(rank)))  # stable: resolution-major within a size
