"""Models of the allocators whose peaks the sweep reports, fed with a trace's allocations.

`CachingAllocator` follows PyTorch's CUDA caching allocator (c10/cuda/CUDACachingAllocator.cpp,
default settings: one stream, no expandable segments, no max_split_size):
- a request rounds up to a multiple of 512 B (512 B at least);
- up to 1 MiB it comes from the small pool, whose segments are 2 MiB; larger requests come from the
  large pool, whose new segments are 20 MiB for requests under 10 MiB, else the request rounded up
  to 2 MiB;
- the free block chosen is the smallest that fits (ties: the older segment, then the lower offset);
  it is split when the rest is at least 512 B (small pool) or more than 1 MiB (large pool), else
  the whole block is handed out and counted;
- a freed block merges with free neighbours in its segment; segments stay reserved (cached) until
  `empty_cache`, which the allocator also runs itself when a new segment would not fit the device
  (then, if it still does not fit, the request is out of memory).
`allocated` counts block sizes (`max_memory_allocated`), `requested` the unrounded requests
(`requested_bytes`), `reserved` the segments (`max_memory_reserved`; an estimate, as the device's
real addresses, which break ties, are not known). `ExactAllocator` is the CPU's: every request
counted as asked, nothing cached.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Optional

MiB = 1024**2
MIN_BLOCK = 512
SMALL_SIZE = 1 * MiB  # largest request served by the small pool
SMALL_BUFFER = 2 * MiB  # small-pool segment
LARGE_BUFFER = 20 * MiB  # large-pool segment for requests under MIN_LARGE_ALLOC
MIN_LARGE_ALLOC = 10 * MiB
ROUND_LARGE = 2 * MiB


class OutOfMemory(Exception):
    """A request that fits neither a cached block nor the device's remaining memory."""


def round_size(nbytes: int) -> int:
    """The block size a request of `nbytes` asks the pools for."""
    return MIN_BLOCK * max(1, -(-nbytes // MIN_BLOCK))


def segment_size(size: int) -> int:
    """The segment (cudaMalloc) made for a rounded request that no cached block fits."""
    if size <= SMALL_SIZE:
        return SMALL_BUFFER
    if size < MIN_LARGE_ALLOC:
        return LARGE_BUFFER
    return ROUND_LARGE * -(-size // ROUND_LARGE)


@dataclass(eq=False)
class Block:
    segment: int  # creation index of its segment
    offset: int
    size: int
    small: bool
    free: bool = True
    requested: int = 0
    prev: Optional["Block"] = field(default=None, repr=False)
    next: Optional["Block"] = field(default=None, repr=False)

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.size, self.segment, self.offset)


class _Pool:
    """Free blocks ordered by (size, segment, offset): best fit is a bisection."""

    def __init__(self) -> None:
        self.keys: list[tuple[int, int, int]] = []
        self.blocks: dict[tuple[int, int, int], Block] = {}

    def add(self, block: Block) -> None:
        bisect.insort(self.keys, block.key)
        self.blocks[block.key] = block

    def remove(self, block: Block) -> None:
        del self.keys[bisect.bisect_left(self.keys, block.key)]
        del self.blocks[block.key]

    def best_fit(self, size: int) -> Optional[Block]:
        i = bisect.bisect_left(self.keys, (size, -1, -1))
        return self.blocks[self.keys[i]] if i < len(self.keys) else None


@dataclass
class Stats:
    """Current value and peak (since the last reset) of one counter, in bytes."""

    current: int = 0
    peak: int = 0

    def add(self, n: int) -> None:
        self.current += n
        self.peak = max(self.peak, self.current)

    def reset_peak(self) -> None:
        self.peak = self.current


class CachingAllocator:
    """PyTorch's CUDA caching allocator (see the module docstring); `capacity`: the bytes the
    device can hold in segments (None: unlimited)."""

    def __init__(self, capacity: Optional[int] = None):
        self.capacity = capacity
        self.allocated, self.requested, self.reserved = Stats(), Stats(), Stats()
        self._pools = {True: _Pool(), False: _Pool()}  # small?, pool
        self._segments: dict[int, Block] = {}  # creation index -> first block
        self._made = 0

    def malloc(self, nbytes: int) -> Optional[Block]:
        """A block for a request of `nbytes` (None for 0 bytes, which allocates nothing)."""
        if nbytes == 0:
            return None
        size = round_size(nbytes)
        small = size <= SMALL_SIZE
        pool = self._pools[small]
        block = pool.best_fit(size)
        if block is None:
            block = self._new_segment(size, small)
        else:
            pool.remove(block)
        rest = block.size - size
        if (rest >= MIN_BLOCK) if small else (rest > SMALL_SIZE):
            tail = Block(block.segment, block.offset + size, rest, small, prev=block, next=block.next)
            if block.next is not None:
                block.next.prev = tail
            block.next, block.size = tail, size
            pool.add(tail)
        block.free, block.requested = False, nbytes
        self.allocated.add(block.size)
        self.requested.add(nbytes)
        return block

    def _new_segment(self, size: int, small: bool) -> Block:
        seg = segment_size(size)
        if self.capacity is not None and self.reserved.current + seg > self.capacity:
            self.empty_cache()
            if self.reserved.current + seg > self.capacity:
                raise OutOfMemory(f"a {seg / MiB:.0f} MiB segment does not fit: {self.reserved.current / MiB:.0f} MiB "
                                  f"reserved of {self.capacity / MiB:.0f} MiB")
        block = Block(self._made, 0, seg, small)
        self._segments[self._made] = block
        self._made += 1
        self.reserved.add(seg)
        return block

    def free(self, block: Optional[Block]) -> None:
        if block is None:
            return
        self.allocated.add(-block.size)
        self.requested.add(-block.requested)
        block.free, block.requested = True, 0
        pool = self._pools[block.small]
        for neighbour in (block.prev, block.next):
            if neighbour is not None and neighbour.free:
                pool.remove(neighbour)
                self._merge(block, neighbour)
        pool.add(block)

    def _merge(self, block: Block, other: Block) -> None:
        """Fold the free neighbour `other` into `block`."""
        if other is block.prev:
            block.offset, block.prev = other.offset, other.prev
            if other.prev is not None:
                other.prev.next = block
            else:
                self._segments[block.segment] = block
        else:
            block.next = other.next
            if other.next is not None:
                other.next.prev = block
        block.size += other.size

    def empty_cache(self) -> None:
        """Release every segment that is one free block."""
        for index, first in list(self._segments.items()):
            if first.free and first.next is None:
                self._pools[first.small].remove(first)
                del self._segments[index]
                self.reserved.add(-first.size)

    def reset_peak(self) -> None:
        for stat in (self.allocated, self.requested, self.reserved):
            stat.reset_peak()

    def state(self) -> tuple:
        """The layout (segments, their blocks and which are free): equal states behave alike."""
        layout = []
        for index, block in self._segments.items():
            blocks = []
            while block is not None:
                blocks.append((block.size, block.free))
                block = block.next
            layout.append((index, tuple(blocks)))
        return tuple(layout)


class ExactAllocator:
    """The CPU's allocator as the profiler counts it: every request as asked, nothing cached."""

    def __init__(self) -> None:
        self.allocated, self.requested, self.reserved = Stats(), Stats(), Stats()

    def malloc(self, nbytes: int) -> Optional[int]:
        if nbytes == 0:
            return None
        for stat in (self.allocated, self.requested, self.reserved):
            stat.add(nbytes)
        return nbytes

    def free(self, nbytes: Optional[int]) -> None:
        for stat in (self.allocated, self.requested, self.reserved):
            stat.add(-(nbytes or 0))

    def reset_peak(self) -> None:
        for stat in (self.allocated, self.requested, self.reserved):
            stat.reset_peak()

    def state(self) -> tuple:
        return (self.allocated.current,)
