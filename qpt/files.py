"""Files written whole or not at all, and a workdir one training run at a time.

`written_whole`: a killed process, a full disk or a lost machine can stop a write halfway;
whatever reads the file next (a resumed run, a plot, a label cache) would then meet half a file.
Written to a temporary file beside it and renamed over it in one step (`os.replace`, atomic on
POSIX), the file is either the old one or the new one.

Two runs in one workdir (the same command started twice, a job submitted twice) would resume from
the same checkpoint and then interleave their metrics and checkpoints, each deleting the other's;
`one_run_at_a_time` refuses the second at once.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import os
import socket
from typing import Iterator

from qpt.errors import InputError

LOCK_NAME = ".lock"


@contextlib.contextmanager
def written_whole(path: str | os.PathLike) -> Iterator[str]:
  """Yields a temporary path beside `path` to write to; on leaving, it replaces `path` in one step,
  or is removed if the block raised. The process id keeps concurrent writers apart. It keeps
  `path`'s extension, but numpy's `save` and `savez` add ".npy" / ".npz" to a name that lacks it
  (a label file named without one): write through an open file, as QPT's writers do."""
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


@contextlib.contextmanager
def one_run_at_a_time(workdir: str | os.PathLike) -> Iterator[None]:
  """Holds `workdir`'s lock while the block runs; a one-line InputError naming the holder if
  another process (or another block of this one) holds it.

  An advisory `flock` on `workdir/.lock`: the kernel drops it when the holder exits, a SIGKILL
  included, so there is never a stale lock to clean up; NFS has it too (Linux maps it onto NFS's
  byte-range locks). A file system without locks (some Lustre mounts) is run on unlocked.
  """
  path = os.path.join(os.fspath(workdir), LOCK_NAME)
  with open(path, "a+") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
      locked = True
    except BlockingIOError:
      f.seek(0)
      holder = f.read().strip() or "another process"
      raise InputError(f"workdir {os.fspath(workdir)} is in use by another training run "
                       f"({holder}): wait for it to end, or give another workdir") from None
    except OSError as e:
      if e.errno not in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP):
        raise
      locked = False
    if locked:  # who holds it, for the message a second run gets
      f.seek(0)
      f.truncate()
      since = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
      f.write(f"pid {os.getpid()} on {socket.gethostname()}, since {since}")
      f.flush()
    try:
      yield
    finally:
      if locked:
        fcntl.flock(f, fcntl.LOCK_UN)
