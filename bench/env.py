"""Where a measurement ran: the device to use and the environment columns of every CSV row.

Nothing here initialises CUDA at import; torch is imported lazily so a light process (the
`--isolate` worker's parent, the report) does not pay for it unless it asks a device question.
"""

from __future__ import annotations

import functools
import importlib.metadata
import subprocess
from datetime import datetime, timezone
from pathlib import Path

DEVICES = ("auto", "cpu", "cuda")
REPO_ROOT = Path(__file__).resolve().parents[1]


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


def git_commit(repo: Path = REPO_ROOT) -> str:
    """Short commit of the checkout, with "-dirty" when tracked files differ from it; "" outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        return commit + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return ""


def nvml_driver_version() -> str:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            version = pynvml.nvmlSystemGetDriverVersion()
        finally:
            pynvml.nvmlShutdown()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:  # no driver, no library, no permission: the cell stays empty
        return ""


@functools.lru_cache(maxsize=None)
def environment(device: str) -> dict[str, str]:
    """The environment columns (schema) for rows measured on `device` ("cpu" or "cuda"); cached,
    the timestamp is added per row by `timestamp()`."""
    import torch

    env = {
        "gpu_name": "",
        "driver": "",
        "cuda": torch.version.cuda or "",
        "torch": torch.__version__,
        "triton": package_version("triton"),
        "mamba_ssm": package_version("mamba_ssm") or package_version("mamba-ssm"),
        "git_commit": git_commit(),
    }
    if device == "cuda":
        env["gpu_name"] = torch.cuda.get_device_name(torch.cuda.current_device())
        env["driver"] = nvml_driver_version()
    return env


def timestamp() -> str:
    """UTC time of a measurement, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
