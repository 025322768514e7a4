"""The one exception type users see for bad input, and the checks every entry point shares."""

import errno
import os

# Failures of the file system that no code of QPT causes: a full disk, a quota, a read-only mount,
# an I/O error. Entry points print them as one line, not as a traceback from wherever they hit.
MACHINE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO)


def machine_refusal(error: OSError, where: str) -> str:
  """"<file>: <the system's reason>" for an error of `MACHINE_ERRNOS` (`where` names the place
  when the error names no file: one written through an open file); any other is re-raised, a bug
  to see whole."""
  if error.errno not in MACHINE_ERRNOS:
    raise error
  return f"{error.filename or where}: {error.strerror}"


class InputError(ValueError):
  """Bad user input: an unknown element, a malformed file, an unsupported option.

  The message is one line that names the offending atom, field or value, so a
  command-line tool can print it as is and exit with code 2.
  """


class TrainingError(RuntimeError):
  """Training cannot go on (e.g. too many non-finite steps in a row); the message says why."""


class Stopped(TrainingError):
  """A signal (SIGTERM from a scheduler, Ctrl-C) stopped training early, after a checkpoint: the
  run is not finished, and re-running its command resumes it. `signum` is the signal's number."""

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.signum = signum


def check_writable(path: str | os.PathLike) -> None:
  """InputError unless a file can be created at `path`: checked before hours of work, not after."""
  if not os.fspath(path).strip():  # an unset shell variable; the rename failed after the work
    raise InputError("an empty file name: name the file to write")
  if os.path.isdir(path):
    raise InputError(f"{path}: a directory; give the name of a file to write")
  directory = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(directory) or not os.access(directory, os.W_OK):
    raise InputError(f"{path}: cannot write there ({directory} is not a writable directory)")


def make_directory(path: str | os.PathLike) -> None:
  """`os.makedirs(path, exist_ok=True)`, or an InputError naming `path` (a file in the way, no
  permission)."""
  if not os.fspath(path).strip():
    raise InputError("an empty directory name: name the directory to write in")
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise InputError(f"{path}: cannot make this directory ({e.strerror})") from None
