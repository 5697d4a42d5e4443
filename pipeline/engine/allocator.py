"""Keep freed heap memory in the process, so that model forwards on the CPU stop page-faulting.

PyTorch allocates every CPU activation with malloc. glibc serves blocks above its mmap threshold
(128 KiB, rising by itself to at most 32 MiB) with a fresh mmap and unmaps them on free, so each
forward faults its activations in again, page by page: 266,000 minor faults per resnet18 batch of
64 at 224 px (about 1 GiB), 108,000 per demo-CNN batch of 256. Raising the mmap and trim
thresholds makes glibc serve those blocks from the heap and keep them there for the next batch.
One arena for all threads is part of it: Ray Data calls a model actor from a thread other than
the main one, and a thread's own arena grows in heaps of at most 64 MiB, so a larger block
there is mmapped whatever the thresholds say.

Measured on the 2-core build machine, bare forwards/s at 2 threads: resnet18 58.4 -> 73.7 (peak
RSS 1,278 -> 1,326 MiB), demo CNN 1,450-1,770 -> 3,830-3,950; the demo pipeline on 64 images
1,511 -> 2,208 forwards/s.

The job starts its model actors' processes with ``ALLOCATOR_ENV`` (glibc reads it before the
first malloc, so it holds for every thread); ``retain_freed_memory`` does the same from inside a
running process for the threads that have not allocated yet (``scripts/bench.py`` calls it, so
that its limit is measured as the actors run).

jemalloc or tcmalloc through LD_PRELOAD do the same and more, but need a system library that a
pip install does not bring; ``mallopt`` is in every glibc. Elsewhere (musl, macOS) this does
nothing and says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util

# mallopt parameters, from glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
# Larger than any single activation block of the models in use; freed memory beyond it at the
# top of the heap is still returned to the system.
RETAINED_BYTES = 1 << 30

ALLOCATOR_ENV: dict[str, str] = {
    "MALLOC_MMAP_THRESHOLD_": str(RETAINED_BYTES),
    "MALLOC_TRIM_THRESHOLD_": str(RETAINED_BYTES),
    "MALLOC_ARENA_MAX": "1",
}


def retain_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds to 1 GiB and keep every thread on the main arena;
    True if it took."""
    library = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(library).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    settings = (
        (M_MMAP_THRESHOLD, RETAINED_BYTES), (M_TRIM_THRESHOLD, RETAINED_BYTES), (M_ARENA_MAX, 1)
    )
    return all([bool(mallopt(parameter, value)) for parameter, value in settings])
