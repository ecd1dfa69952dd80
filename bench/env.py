"""Where a measurement runs: the device to use, its name, the versions, the commit.

Nothing here creates a CUDA context: the sweep's parent process reads GPU facts through NVML
(`PYTORCH_NVML_BASED_CUDA_CHECK=1` makes torch.cuda.is_available() ask NVML too), so NVML's
used memory of later points never counts a context of the parent. torch is imported lazily.
"""
from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

DEVICES = ("auto", "cpu", "cuda")
REPO_ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")


def child_pythonpath() -> str:
    """PYTHONPATH for a child process: this checkout first, then this process's path, so the child
    imports the same code (and measuring functions defined in test modules) as its parent."""
    import sys

    return os.pathsep.join([str(REPO_ROOT), *filter(None, sys.path)])


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_device(name: str) -> str:
    """"auto" -> "cuda" when a CUDA device exists, else "cpu". Asking for "cuda" without one is a
    ValueError (the CLI turns it into one line and exit status 2)."""
    if name not in DEVICES:
        raise ValueError(f"unknown device {name!r} (allowed: {', '.join(DEVICES)})")
    if name == "auto":
        return "cuda" if cuda_available() else "cpu"
    if name == "cuda" and not cuda_available():
        raise ValueError("--device cuda: no CUDA device is available on this machine (allowed here: cpu, auto)")
    return name


def package_version(dist: str) -> str:
    """Installed version of a distribution, or "" (read from metadata: mamba_ssm's import may
    fail or be slow, its version must not)."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return ""


@functools.lru_cache(maxsize=None)
def git_commit(repo: Path = REPO_ROOT) -> str:
    """Short commit of the checkout, with "-dirty" when tracked files differ from it; "" outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        return commit + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return ""


@functools.lru_cache(maxsize=None)
def cpu_name() -> str:
    """The CPU model string (/proc/cpuinfo's "model name"), or what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _nvml_handle(nvml, cuda_index: int):
    """The NVML handle of the GPU that CUDA calls `cuda_index`, honouring CUDA_VISIBLE_DEVICES
    (NVML itself ignores it)."""
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if cuda_index < len(visible):
        entry = visible[cuda_index]
        return nvml.nvmlDeviceGetHandleByIndex(int(entry)) if entry.isdigit() else nvml.nvmlDeviceGetHandleByUUID(entry)
    return nvml.nvmlDeviceGetHandleByIndex(cuda_index)


@functools.lru_cache(maxsize=None)
def gpu_facts(cuda_index: int = 0) -> dict[str, str]:
    """{"name", "driver"} of a GPU from NVML (no CUDA context); empty strings where NVML fails."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = _nvml_handle(pynvml, cuda_index)
        name, driver = pynvml.nvmlDeviceGetName(handle), pynvml.nvmlSystemGetDriverVersion()
        return {k: v.decode() if isinstance(v, bytes) else str(v) for k, v in (("name", name), ("driver", driver))}
    except Exception:  # no driver, no library, no permission
        return {"name": "", "driver": ""}


def gpu_count() -> int:
    """GPUs NVML sees (0 without a driver); no CUDA context is created."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return int(pynvml.nvmlDeviceGetCount())
    except Exception:
        return 0


def device_name(device: str) -> str:
    """The model of the device a run measures on: the GPU's name, or the CPU's."""
    if device == "cuda":
        return gpu_facts().get("name") or "unknown GPU (NVML unavailable)"
    return cpu_name()


@functools.lru_cache(maxsize=None)
def versions(device: str) -> dict[str, str]:
    """The version columns of a row's setting."""
    import torch

    return {
        "torch": torch.__version__,
        "triton": package_version("triton"),
        "mamba_ssm": package_version("mamba_ssm") or package_version("mamba-ssm"),
        "cuda": torch.version.cuda or "",
        "driver": gpu_facts()["driver"] if device == "cuda" else "",
    }


def environment(device: str) -> dict[str, str]:
    """Versions, GPU name and driver and commit, for result files other than the sweep's (the kernel benchmark)."""
    return {**versions(device), "gpu_name": device_name(device) if device == "cuda" else "", "git_commit": git_commit()}


def timestamp() -> str:
    """UTC time of a measurement, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
