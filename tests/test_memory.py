"""utils.memory.peak_memory_mib measures what a call keeps alive, not what it returns or what existed before."""

import pytest
import torch

from utils.memory import peak_memory_mib


def test_peak_counts_live_tensors_and_ignores_existing_ones():
    big = torch.zeros(1024, 1024)  # 4 MiB, allocated before the call: not counted

    def two_alive():
        a = torch.ones(512, 1024)   # 2 MiB
        b = torch.ones(512, 1024)   # 2 MiB more while a is alive
        return a.sum() + b.sum()

    def one_at_a_time():
        for _ in range(2):
            torch.ones(512, 1024).sum()   # 2 MiB, released before the next
    assert big.numel()
    assert 3.9 < peak_memory_mib(two_alive) < 4.5
    assert 1.9 < peak_memory_mib(one_at_a_time) < 2.5


def test_quadratic_growth_is_measured():
    sizes = [peak_memory_mib(lambda n=n: torch.ones(n, n) @ torch.ones(n, n)) for n in (256, 512)]
    assert 3.5 < sizes[1] / sizes[0] < 4.5


def test_bad_device():
    with pytest.raises(ValueError, match="cpu"):
        peak_memory_mib(lambda: None, "meta")
