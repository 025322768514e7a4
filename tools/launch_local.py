"""Start N local processes of one command as a multi-process JAX run — multi-host, on one machine.

  python tools/launch_local.py --processes 2 -- python experiments/md17.py \
      --config experiments/configs/md17.py:water --config.backend.cpu_devices=2

Each process gets QPT_COORDINATOR_ADDRESS (127.0.0.1 and a free port), QPT_NUM_PROCESSES and
QPT_PROCESS_ID, which `qpt.backends.create` passes to `jax.distributed.initialize` (CPU processes
then exchange gradients through gloo). Process 0's output is shown as is; the others' is prefixed
with their index. SIGINT/SIGTERM are passed on to every process (they checkpoint and stop at the
same step); if one process fails, the others are stopped. Exits with the first non-zero exit code.
"""

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _relay(stream, prefix: str) -> None:
  for line in iter(stream.readline, b""):
    sys.stdout.buffer.write(prefix.encode() + line)
    sys.stdout.flush()


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--processes", type=int, required=True, help="number of processes (≥ 1)")
  parser.add_argument("--port", type=int, default=0, help="coordinator port (default: a free one)")
  parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
  args = parser.parse_args(argv)
  command = args.command[1:] if args.command[:1] == ["--"] else args.command
  if args.processes < 1 or not command:
    parser.error("give --processes N (≥ 1) and a command after --")
  if shutil.which(command[0]) is None:  # before any process starts, not as N tracebacks
    parser.error(f"{command[0]}: no such command")
  address = f"127.0.0.1:{args.port or free_port()}"
  processes, relays = [], []
  for index in range(args.processes):
    env = dict(os.environ, QPT_COORDINATOR_ADDRESS=address,
               QPT_NUM_PROCESSES=str(args.processes), QPT_PROCESS_ID=str(index))
    quiet = index > 0
    processes.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE if quiet else None,
                                      stderr=subprocess.STDOUT if quiet else None))
    if quiet:
      relays.append(threading.Thread(target=_relay, args=(processes[-1].stdout, f"[{index}] "),
                                     daemon=True))
      relays[-1].start()

  def forward(signum, frame):
    del frame
    for p in processes:
      if p.poll() is None:
        p.send_signal(signum)

  signal.signal(signal.SIGINT, forward)
  signal.signal(signal.SIGTERM, forward)
  code = _wait(processes)
  for relay in relays:  # the others' last lines (often why one failed) reach the terminal too
    relay.join(timeout=5)
  return code


def _wait(processes: list[subprocess.Popen]) -> int:
  """The first non-zero exit code (the others then stopped), or 0 once every process succeeded."""
  while True:
    codes = [p.poll() for p in processes]
    failed = [c for c in codes if c not in (None, 0)]
    if failed:  # a process died: the others would wait for it in a collective forever
      for p in processes:
        if p.poll() is None:
          p.terminate()
      for p in processes:
        p.wait()
      return failed[0]
    if all(c == 0 for c in codes):
      return 0
    time.sleep(0.1)


if __name__ == "__main__":
  sys.exit(main())
