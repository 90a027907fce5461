"""Peak memory of one call, on a CPU (PyTorch's profiler) or a GPU (the CUDA allocator).

Introduced in 02_transformers/03_attention.ipynb, to measure that naive attention's memory grows as T².
`tracemalloc` cannot see PyTorch's tensors (they are allocated in C++); the profiler records every allocation
and release, and the running sum of those is the memory alive at each moment.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

import torch


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null: the profiler's C++ library logs each start and stop there."""
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def peak_memory_mib(fn: Callable[[], object], device: torch.device | str = "cpu") -> float:
    """Peak memory allocated while fn() runs without gradients, beyond what was allocated before, in MiB."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        with torch.no_grad():
            fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    if device.type != "cpu":
        raise ValueError(f"peak_memory_mib measures 'cpu' or 'cuda' devices; got {device.type!r}.")
    activities = [torch.profiler.ProfilerActivity.CPU]
    with _quiet_stderr(), torch.no_grad(), torch.profiler.profile(activities=activities, profile_memory=True) as prof:
        fn()
    live = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):  # allocations (+) and releases (-)
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    return peak / 2**20
