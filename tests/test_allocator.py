"""The caching-allocator model against sequences computed by hand from its rules (bench/memory/allocator.py)."""
import pytest

from bench.memory.allocator import (MiB, CachingAllocator, ExactAllocator, OutOfMemory, round_size, segment_size)


def test_request_rounding_and_segment_sizes():
    assert [round_size(n) for n in (1, 511, 512, 513, 1024)] == [512, 512, 512, 1024, 1024]
    assert segment_size(512) == 2 * MiB  # small pool
    assert segment_size(1 * MiB) == 2 * MiB
    assert segment_size(1 * MiB + 512) == 20 * MiB  # large pool, under 10 MiB
    assert segment_size(10 * MiB - 512) == 20 * MiB
    assert segment_size(10 * MiB) == 10 * MiB  # from 10 MiB on: rounded up to 2 MiB
    assert segment_size(11 * MiB + 512) == 12 * MiB


def test_small_requests_share_a_small_segment():
    a = CachingAllocator()
    x, y = a.malloc(100), a.malloc(600)
    assert (x.size, y.size) == (512, 1024)
    assert a.allocated.current == 1536 and a.requested.current == 700
    assert a.reserved.current == 2 * MiB  # one small segment, split twice
    a.free(x)
    assert a.malloc(1).size == 512 and a.reserved.current == 2 * MiB  # the freed block is reused


def test_large_blocks_split_only_above_one_mib():
    a = CachingAllocator()
    x = a.malloc(3 * MiB)  # a 20 MiB segment, split: 3 MiB used, 17 MiB free
    assert x.size == 3 * MiB and a.reserved.current == 20 * MiB
    y = a.malloc(16 * MiB + MiB // 2)  # 17 MiB free block, 0.5 MiB would remain: not split
    assert y.size == 17 * MiB
    assert a.allocated.current == 20 * MiB
    assert a.requested.current == 3 * MiB + 16 * MiB + MiB // 2
    z = a.malloc(11 * MiB + 1)  # rounds to 11 MiB + 512 B; new 12 MiB segment, < 1 MiB left: whole block
    assert z.size == 12 * MiB and a.reserved.current == 32 * MiB
    assert a.allocated.peak == 32 * MiB


def test_freed_neighbours_merge_and_best_fit_picks_the_smallest_block():
    a = CachingAllocator()
    x, y = a.malloc(3 * MiB), a.malloc(3 * MiB)  # both from one 20 MiB segment
    a.free(x)
    a.free(y)  # merges with x and the 14 MiB tail: one free 20 MiB block
    z = a.malloc(19 * MiB)
    assert z.size == 20 * MiB and a.reserved.current == 20 * MiB  # no new segment; 1 MiB rest: unsplit
    big, small = a.malloc(14 * MiB), a.malloc(12 * MiB)  # two more segments of exactly those sizes
    a.free(big)
    a.free(small)
    w = a.malloc(11 * MiB + MiB // 2)  # best fit: the 12 MiB block (0.5 MiB left: unsplit)
    assert w.size == 12 * MiB and a.reserved.current == 46 * MiB


def test_peaks_reset_to_the_current_value():
    a = CachingAllocator()
    x = a.malloc(4 * MiB)
    y = a.malloc(6 * MiB)
    a.free(y)
    assert (a.allocated.peak, a.allocated.current) == (10 * MiB, 4 * MiB)
    a.reset_peak()
    assert a.allocated.peak == 4 * MiB and a.reserved.peak == 20 * MiB
    a.free(x)
    assert a.allocated.peak == 4 * MiB


def test_capacity_frees_the_cache_then_runs_out():
    a = CachingAllocator(capacity=30 * MiB)
    a.free(a.malloc(12 * MiB))  # a cached 12 MiB segment
    x = a.malloc(20 * MiB)  # 12 + 20 > 30: the cache is released first, then it fits
    assert x.size == 20 * MiB and a.reserved.current == 20 * MiB
    with pytest.raises(OutOfMemory, match="does not fit"):
        a.malloc(12 * MiB)


def test_state_tells_equal_layouts_apart():
    a, b = CachingAllocator(), CachingAllocator()
    for alloc in (a, b):
        alloc.free(alloc.malloc(5 * MiB))
    assert a.state() == b.state()
    b.malloc(1 * MiB + 512)
    assert a.state() != b.state()


def test_exact_allocator_counts_requests_as_asked():
    a = ExactAllocator()
    x = a.malloc(100)
    assert a.malloc(0) is None
    a.malloc(50)
    a.free(x)
    assert (a.allocated.current, a.allocated.peak, a.reserved.peak) == (50, 150, 150)
