# Two entry points for a fresh machine; each bootstraps .venv itself (idempotent).
#   make run   - the main job on its built-in default
#   make test  - the test suite
VENV   := .venv
PYTHON := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test clean

# Reinstall only when the pinned set or the package metadata changes.
$(STAMP): requirements.lock pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

run: $(STAMP)
	$(PYTHON) experiments/md17.py --config experiments/configs/md17.py:water

test: $(STAMP)
	$(PYTHON) -m pytest -q tests

clean:
	rm -rf $(VENV) .jax_cache
