"""Files written whole or not at all: a crash mid-write never leaves a truncated file behind.

A killed process, a full disk or a lost machine can stop a write halfway; whatever reads the file
next (a resumed run, a plot, a label cache) would then meet half a file. Written to a temporary
file beside it and renamed over it in one step (`os.replace`, atomic on POSIX), the file is
either the old one or the new one.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator


@contextlib.contextmanager
def written_whole(path: str | os.PathLike) -> Iterator[str]:
  """Yields a temporary path beside `path` to write to; on leaving, it replaces `path` in one step,
  or is removed if the block raised. It keeps `path`'s extension, so that numpy's `save` and
  `savez` add none of their own; the process id keeps concurrent writers apart."""
  path = os.fspath(path)
  root, extension = os.path.splitext(path)
  temporary = f"{root}.{os.getpid()}.tmp{extension}"
  try:
    yield temporary
    os.replace(temporary, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(temporary)
    raise
