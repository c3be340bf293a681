"""What the engine does for speed without changing a number: freed memory kept for the next segment."""

from __future__ import annotations

import resource
import sys

import pytest
import torch

from helpers import separate_tensor
from oracle import model_pair
from reference_configs import SMALL_KWARGS
from stemsplit.bag import mixed_bag

BLOCK_MIB = 64  # over glibc's largest mmap threshold (32 MiB), so unmapped on free by default


def page_faults_of_large_blocks(count: int) -> int:
    """Minor page faults while a 64 MiB tensor is made, written and freed `count` times."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(count):
        block = torch.empty(BLOCK_MIB << 18)
        block.fill_(1.0)
        del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_separating_on_cpu_keeps_freed_memory_for_the_next_segment():
    _, ours = model_pair(SMALL_KWARGS, seed=1)
    stems = separate_tensor(mixed_bag("small", [ours], [None], identity=""), 0.1 * torch.randn(2, 4410))
    assert torch.isfinite(stems).all()
    page_faults_of_large_blocks(1)  # the first block may still grow the heap
    # Unmapped on every free, each of 8 blocks would fault in again: 8 x 16384 pages of 4 KiB; kept, at
    # most one block's pages are new.
    pages = BLOCK_MIB << 8
    assert page_faults_of_large_blocks(8) < 2 * pages
