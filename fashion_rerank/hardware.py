"""What this process may use of the machine: CPU quota and native bfloat16 (one place for both checks)."""

from __future__ import annotations

import os
from pathlib import Path


def cpu_quota() -> int:
    """Number of CPUs this process may use: the cgroup CPU quota if set, else the affinity mask size.

    Used for torch/OMP thread counts so a container limited to 2 CPUs on a 64-core host uses 2 threads.
    """
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            return max(1, int(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def cpu_has_bf16() -> bool:
    """True when /proc/cpuinfo lists native bfloat16 instructions (avx512_bf16 or amx_bf16)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False
