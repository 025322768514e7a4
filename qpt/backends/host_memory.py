"""Freed host memory kept for reuse while training steps run, so a step does not page in its
buffers anew.

XLA:CPU allocates a compiled program's buffers with malloc when the program runs and frees them
when it ends, on its own threads. With glibc's defaults a buffer over 32 MB is a fresh mmap each
time, and a thread's heap is trimmed back when its top is free, so each step's buffers return to
the kernel and the next step touches them as new pages: a page fault and a zero-filled page for
every 4 KB, at every step. make run's water step (tiny model, 4 conformers) has one temporary
buffer of tens of MB per device, so on 4 fake devices a third of the process's CPU time went to
the kernel (docs/results.md §9).

Why only while steps run: kept process-wide for good (an earlier version, set at import), the same
settings made the PySCF SCFs of QM9's final evaluation much slower in CPU time, although one SCF
alone in a fresh process was faster with them (docs/results.md §9). A likely cause, not tested:
numpy asks the kernel for huge pages for every array of 4 MB or more, which a fresh mmap gets and
memory reused from a heap does not. So the settings are scoped to the loop of steps, and glibc's
are put back after it.

Left as they are: a buffer of 64 MB or more made on one of XLA's threads is still mmapped and
unmapped at every use (glibc's per-thread heaps are at most 64 MB, and past that it maps the
memory whatever it is told).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import platform
from typing import Iterator

# mallopt's parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -2, -3, -4
# Why each: no request is served by its own mmap (whose pages go back to the kernel at free); no
# heap is trimmed until 2 GiB sit free at its top (mallopt takes a C int); a heap grows by 64 MB
# beyond the request. The last is needed too, measured though not explained: with the first two
# alone the water step on 4 devices still faulted in most of its pages (docs/results.md §13).
_KEEP = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2 ** 31 - 1), (_M_TOP_PAD, 64 << 20))
# Put back after: glibc's defaults (mallopt(3)), except that once any setting is made glibc no
# longer raises its mmap threshold by itself as large blocks are freed (from 128 KiB up to 32 MB,
# with the trim threshold at twice it). So both go where that adjustment ends, once blocks of
# 32 MB have been freed.
_USUAL = ((_M_MMAP_MAX, 65536), (_M_MMAP_THRESHOLD, 32 << 20), (_M_TRIM_THRESHOLD, 64 << 20),
          (_M_TOP_PAD, 128 << 10))

_depth = 0  # nested uses keep the settings until the outermost ends


def _libc() -> ctypes.CDLL | None:
  """glibc, or None where malloc is another library's (macOS, musl): left as it is."""
  if platform.libc_ver()[0] != "glibc":
    return None
  return ctypes.CDLL(ctypes.util.find_library("c"))


def _set(libc: ctypes.CDLL, settings: tuple) -> None:
  for parameter, value in settings:
    if libc.mallopt(parameter, value) != 1:
      raise RuntimeError(f"glibc refused mallopt({parameter}, {value})")


@contextlib.contextmanager
def freed_memory_kept() -> Iterator[bool]:
  """Within: glibc's malloc keeps freed memory for reuse (see above); yields whether it does. On
  leaving: glibc's usual settings again, and the memory kept returned to the system
  (`malloc_trim`), so what runs next (an evaluation's PySCF) finds the process as before."""
  global _depth
  libc = _libc()
  if libc is None:
    yield False
    return
  if _depth == 0:
    _set(libc, _KEEP)
  _depth += 1
  try:
    yield True
  finally:
    _depth -= 1
    if _depth == 0:
      _set(libc, _USUAL)
      libc.malloc_trim(0)
