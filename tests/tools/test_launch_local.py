"""tools/launch_local.py: N local processes of one command, their output and exit codes."""

import os
import subprocess
import sys

from tests.processes import ROOT

LAUNCHER = os.path.join(ROOT, "tools", "launch_local.py")
PRINT_ID = "import os, sys; print('process', os.environ['QPT_PROCESS_ID']); sys.exit({code})"


def launch(processes, *command):
  return subprocess.run([sys.executable, LAUNCHER, f"--processes={processes}", "--", *command],
                        capture_output=True, text=True, timeout=60)


def test_every_processs_output_reaches_the_terminal():
  """Processes 1.. are relayed with a prefix by threads; the launcher used to exit before they
  had printed (their last lines, often why a run failed, were lost)."""
  for _ in range(20):  # echo exits at once: the race the launcher used to lose (~1 in 5)
    result = launch(3, "echo", "hi")
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split("\n")) == ["", "[1] hi", "[2] hi", "hi"]


def test_a_failing_process_sets_the_exit_code_and_says_why():
  script = PRINT_ID.format(code="3 if os.environ['QPT_PROCESS_ID'] == '1' else 0")
  result = launch(2, sys.executable, "-c", script)
  assert result.returncode == 3
  assert "[1] process 1" in result.stdout


def test_a_missing_command_is_one_line_before_any_process_starts():
  result = launch(2, "/nonexistent/qpt-command")
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == (
      "launch_local.py: error: /nonexistent/qpt-command: no such command")
