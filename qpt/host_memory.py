"""Freed host memory kept for reuse, so a training step does not page in its buffers anew.

XLA:CPU allocates a compiled program's buffers with malloc when the program runs and frees them
when it ends, on its own threads. With glibc's defaults a buffer over 32 MB is a fresh mmap each
time, and a thread's heap is trimmed back when its top is free, so each step's buffers return to
the kernel and the next step touches them as new pages: a page fault and a zero-filled page for
every 4 KB, at every step. Measured on make run's water step (tiny model, 4 conformers, AMD EPYC
with 2 cores; docs/results.md §9): on 4 fake devices 38,800 minor page faults per step (~150 MB
zeroed) and nearly a third of the process's CPU time in the kernel; with `keep_freed_memory`
300–700 faults, the step 0.15 → 0.09–0.11 s on 4 devices and 0.09 → 0.08 s on 1.

Left as they are: a buffer of 64 MB or more made on one of XLA's threads is still mmapped and
unmapped at every use (glibc's per-thread heaps are at most 64 MB, and past that it maps the
memory whatever it is told). Serving every thread from the main heap (one arena) would keep it
too, but made the water step 0.08 → 0.11 s: the threads then wait on one lock.

numpy's large arrays (PySCF's integrals in the host build) use the same malloc. The cost: memory a
process has freed stays its own until it exits, so its resident size stays near its peak.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

# mallopt's parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
# Why each: no request is served by its own mmap (whose pages go back to the kernel at free; but
# see above); no heap is trimmed until 2 GiB sit free at its top (mallopt takes a C int); a heap
# grows by 64 MB beyond the request. The last is needed too, measured though not explained: with
# the first two alone the water step on 4 devices still took 29,000 faults per step (16 MB: 344).
_SETTINGS = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2 ** 31 - 1), (_M_TOP_PAD, 64 << 20))


def keep_freed_memory() -> bool:
  """Tells glibc's malloc to keep freed memory for reuse (see above); True if it took effect.

  Process-wide and for the rest of the process; called when qpt is imported. A C library other
  than glibc (macOS, musl) is left as it is: False.
  """
  if platform.libc_ver()[0] != "glibc":
    return False
  libc = ctypes.CDLL(ctypes.util.find_library("c"))
  return all(libc.mallopt(parameter, value) == 1 for parameter, value in _SETTINGS)
