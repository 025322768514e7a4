"""PySCF's basis files, parsed once per process.

PySCF reads and regex-splits a basis file every time it needs one element's basis: every Mole
build (def2-SVP), every MINAO guess (the ANO file, which holds the whole periodic table) and
every density-fitting basis. QPT builds thousands of conformers of a few elements, so
`parse_once` memoises `pyscf.gto.basis.load` by its arguments. Every caller gets its own deep copy,
since PySCF's basis lists are mutable. Training's small problems gain most (docs/results.md
§13).

A basis given as a file path is read once per process too: edit the file, restart the process.
"""

from __future__ import annotations

import copy
import functools

import pyscf.gto.basis

_parse = pyscf.gto.basis.load  # PySCF's own loader


@functools.cache
def _parsed(*args, **kwargs):
  return _parse(*args, **kwargs)


def load(*args, **kwargs):
  """`pyscf.gto.basis.load`, each file parsed once per process."""
  return copy.deepcopy(_parsed(*args, **kwargs))


def parse_once() -> None:
  """Routes PySCF's basis loading through `load` (PySCF looks `gto.basis.load` up at each call)."""
  pyscf.gto.basis.load = load
