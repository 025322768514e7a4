"""The checks every entry point shares: output paths are checked before the work."""

import pytest

import qpt
from qpt import errors


def test_an_output_path_is_checked_before_the_work(tmp_path):
  errors.check_writable(tmp_path / "report.json")  # a directory that exists: fine
  with pytest.raises(qpt.InputError, match="missing/report.json: cannot write there"):
    errors.check_writable(tmp_path / "missing" / "report.json")
  with pytest.raises(qpt.InputError, match="a directory; give the name of a file"):
    errors.check_writable(tmp_path)  # tools/label.py --out DIR: a traceback after PySCF's work
  with pytest.raises(qpt.InputError, match="an empty file name"):
    errors.check_writable("")  # tools/label.py --out "$OUT", OUT unset: the same, at its rename


def test_a_directory_that_cannot_be_made_is_one_input_error(tmp_path):
  errors.make_directory(tmp_path / "a" / "b")
  errors.make_directory(tmp_path / "a" / "b")  # already there: fine
  (tmp_path / "file").write_text("")
  # The workdir or --out under a file: md17.py and benchmark.py raised NotADirectoryError.
  with pytest.raises(qpt.InputError, match=r"file/run: cannot make this directory \(Not a dir"):
    errors.make_directory(tmp_path / "file" / "run")
  with pytest.raises(qpt.InputError, match="an empty directory name"):
    errors.make_directory(" ")  # was ": cannot make this directory (No such file or directory)"
