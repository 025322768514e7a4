# Two entry points for a fresh machine; each bootstraps .venv itself (idempotent).
#   make run   - the main job on its built-in default
#   make test  - the test suite
VENV   := .venv
PYTHON := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test clean

# Reinstall only when the pinned set or the package metadata changes. qm9pack (QM9's data,
# pyproject's `qm9` extra) goes in without the pandas it declares and QPT never imports.
$(STAMP): requirements.lock pyproject.toml Makefile
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --no-deps qm9pack==1.0.3
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

run: $(STAMP)
	$(PYTHON) experiments/md17.py --config experiments/configs/md17.py:water

# Two workers (pytest-xdist): CI's two cores. A test file stays on one worker, so its
# module-scoped fixtures (e.g. the multi-device runs) are computed once.
test: $(STAMP)
	$(PYTHON) -m pytest -q -n 2 --dist loadfile tests

clean:
	rm -rf $(VENV) .jax_cache
