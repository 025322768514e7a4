"""Train (or evaluate) QPT on an MD17 molecule. See experiments/configs/md17.py for the commands.

  python experiments/md17.py --config experiments/configs/md17.py:water
  python experiments/md17.py --config experiments/configs/md17.py:water --config.train.steps=200

A wrong config key, type or molecule name, a mismatched checkpoint or any other bad input prints
one line on stderr and exits with code 2. SIGTERM or Ctrl-C stops training after the current step
and a checkpoint, with one line on stderr and the exit code of that signal (143, 130); outside
training's steps (labelling, the final evaluation, mode=eval) they end the run at once, likewise.
"""

import functools
import os
import signal
import sys

from absl import app, flags, logging
from ml_collections import config_flags

flags.DEFINE_bool("quiet", False, "no progress bar")
_CONFIG = config_flags.DEFINE_config_file("config", None, "an experiments/configs file:molecule",
                                          lock_config=True)


def parse_flags(argv):
  """absl flag parsing, but a bad flag or config is one line and exit code 2, not a traceback."""
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # absl and ml_collections wrap config errors in each other variously
    print(f"error: {one_line(e, config_file(argv))}", file=sys.stderr)
    sys.exit(2)


def config_file(argv) -> str:
  """The file `--config` names in argv ("" if none), without its ":argument"."""
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      return arg.partition("=")[2].partition(":")[0]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1].partition(":")[0]
  return ""


def one_line(error: BaseException, path: str = "") -> str:
  """The line to print for an error of flag parsing; `path` is the config file."""
  while error.args and isinstance(error.args[0], BaseException):  # unwrap AttributeError(KeyError)
    error = error.args[0]
  if isinstance(error, SyntaxError):  # its message alone does not say where
    return f"{error.filename}, line {error.lineno}: {error.msg}"
  if isinstance(error, AttributeError) and "attribute 'get_config'" in str(error):  # a temp module
    return f"{path}: a config file must define get_config()"
  text = str(error.args[0]) if error.args else type(error).__name__
  # A config file that raised, or that could not be read: its last line says what went wrong.
  if "Traceback" in text or isinstance(error, OSError):
    text = text.strip().splitlines()[-1]
  # ml_collections puts its suggestion on a line of its own: "'stepz'\nDid you mean ...?"
  text = "; ".join(" ".join(line.split()) for line in text.splitlines() if line.strip())
  return f"unknown config key {text}" if isinstance(error, KeyError) else text


# The shell leaves "~" alone after "--config.workdir=": the run wrote into a directory named "~"
# in the current one, which `rm -rf ~` would then remove together with the home directory.
PATH_FIELDS = ("workdir", "init_from", "data.md17_file", "data.molecule_set")


def expand_home(config) -> None:
  """A path field's leading "~" is the home directory, as the shell would have it."""
  for key in PATH_FIELDS:
    section, _, name = key.rpartition(".")
    fields = config[section] if section else config
    if isinstance(fields[name], str) and fields[name].startswith("~"):
      fields[name] = os.path.expanduser(fields[name])


def main(argv):
  del argv
  config = _CONFIG.value
  if config is None:
    print("error: --config is required", file=sys.stderr)
    sys.exit(2)
  try:
    config.get("mode")  # ml_collections defers a config file it could not read to its first use
  except OSError as e:
    print(f"error: {one_line(e)}", file=sys.stderr)
    sys.exit(2)
  expand_home(config)
  # Orbax and JAX narrate every save at INFO, and matplotlib its first font cache in a new home.
  logging.set_verbosity(logging.WARNING)
  exit_on_signal = functools.partial(_exit_on_signal, os.path.abspath(config.workdir))
  for signum in (signal.SIGTERM, signal.SIGINT):
    if signal.getsignal(signum) is not signal.SIG_IGN:  # a background job's SIGINT stays ignored
      signal.signal(signum, exit_on_signal)
  sys.exit(run(config))


def run(config) -> int:
  """The run `config` asks for; its exit code (bad input: one line on stderr and 2)."""
  import qpt  # the run's modules, once the config is known to be readable
  from qpt import experiment
  from qpt.errors import Stopped, TrainingError, machine_refusal

  try:
    experiment.run(config, progress=not flags.FLAGS.quiet)
  except qpt.InputError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except Stopped as e:  # not finished: a shell's `&&` or a workflow must not go on as if it were
    print(f"stopped: {e}", file=sys.stderr)
    return 128 + e.signum  # the code of a process that a signal ended
  except TrainingError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  except OSError as e:  # the machine's, not the run's: a full disk, a quota, a read-only mount
    print(f"error: {machine_refusal(e, os.path.abspath(config.workdir))}; make room and run the "
          "same command again to resume from the last checkpoint", file=sys.stderr)
    return 1
  return 0


def _exit_on_signal(workdir: str, signum: int, frame) -> None:
  """SIGTERM or SIGINT outside training's steps (which stop after a step and a checkpoint,
  `experiment`): exit at once, with one line. What is on disk is whole at any moment (files are
  renamed into place; a SIGKILLed run resumes bit for bit, tests/test_md17_cli.py), so nothing
  needs undoing. Ctrl-C in the final evaluation was a traceback of 68 lines and SIGTERM there
  ended the run without a word; an exception raised from here can be lost in a weakref callback."""
  del frame
  try:
    sys.stdout.flush()
  except Exception:  # the signal came in the middle of a print: that line is lost
    pass
  os.write(2, f"stopped: {signal.Signals(signum).name} outside the training steps; {workdir} "
              f"keeps what was finished: run the same command again to go on\n".encode())
  os._exit(128 + signum)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
