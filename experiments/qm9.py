"""Pre-train QPT on QM9 (or any molecule set). See experiments/configs/qm9.py for the commands.

  python experiments/qm9.py --config experiments/configs/qm9.py

The same run as experiments/md17.py (one training loop, `qpt.experiment`), and the same command
line: any field can be overridden (`--config.data.max_heavy_atoms=4`), re-running resumes, bad
input is one line on stderr and exit code 2.
"""

from absl import app

import md17  # experiments/md17.py, beside this file: its flags and main

if __name__ == "__main__":
  app.run(md17.main, flags_parser=md17.parse_flags)
