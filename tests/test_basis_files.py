"""qpt/basis_files.py: PySCF's basis loading memoised, with results identical to PySCF's own."""

import dataclasses

import numpy as np
import pyscf.gto.basis

import qpt
from qpt import basis_files


def test_each_caller_gets_its_own_copy_of_the_parsed_basis():
  assert pyscf.gto.basis.load is basis_files.load  # installed when qpt is imported
  first = pyscf.gto.basis.load("ano", "O")
  assert first == basis_files._parse("ano", "O")
  first[0][1][0] = -1.0  # a caller editing what it got does not reach the next caller
  assert pyscf.gto.basis.load("ano", "O") == basis_files._parse("ano", "O")


def test_a_problem_is_bitwise_the_one_pyscfs_own_loader_builds(monkeypatch):
  molecule = qpt.molecules.get("water")
  level = qpt.Level(grid_level=1, eri="df")  # a Mole, MINAO's ANO basis and the JK-fit basis
  cached = qpt.build_problem(molecule, level)
  monkeypatch.setattr(pyscf.gto.basis, "load", basis_files._parse)
  fresh = qpt.build_problem(molecule, level)
  for field in dataclasses.fields(fresh):
    np.testing.assert_array_equal(getattr(cached, field.name), getattr(fresh, field.name))
