"""The one exception type users see for bad input."""


class InputError(ValueError):
  """Bad user input: an unknown element, a malformed file, an unsupported option.

  The message is one line that names the offending atom, field or value, so a
  command-line tool can print it as is and exit with code 2.
  """


class TrainingError(RuntimeError):
  """Training cannot go on (e.g. too many non-finite steps in a row); the message says why."""
