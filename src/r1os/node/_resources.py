"""What a node can offer, as reported in its heartbeats (used later for placement)."""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

import psutil
from pydantic import BaseModel


class GpuInfo(BaseModel):
    name: str
    memory_mb: int


class Resources(BaseModel):
    cpu_cores: int
    cpu_load: float  # 1-minute load average divided by cores
    memory_total_mb: int
    memory_available_mb: int
    disk_total_gb: float
    disk_free_gb: float
    gpus: list[GpuInfo] = []


@lru_cache(maxsize=1)
def _gpus() -> tuple[GpuInfo, ...]:
    """GPUs seen by nvidia-smi, if the tool exists (probed once: it is slow)."""
    if not shutil.which("nvidia-smi"):
        return ()
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    gpus = []
    for line in out.strip().splitlines():
        name, _, mem = line.rpartition(",")
        if name and mem.strip().isdigit():
            gpus.append(GpuInfo(name=name.strip(), memory_mb=int(mem)))
    return tuple(gpus)


def collect_resources(data_dir: Path) -> Resources:
    cores = os.cpu_count() or 1
    vm = psutil.virtual_memory()
    disk = psutil.disk_usage(str(data_dir))
    return Resources(
        cpu_cores=cores,
        cpu_load=round(os.getloadavg()[0] / cores, 3),
        memory_total_mb=vm.total // 2**20,
        memory_available_mb=vm.available // 2**20,
        disk_total_gb=round(disk.total / 2**30, 2),
        disk_free_gb=round(disk.free / 2**30, 2),
        gpus=list(_gpus()),
    )
