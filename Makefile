# The two set-up commands of the README: `make install` then `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: install test test-fast lint quickstart benchmarks clean

install: $(VENV)/.installed

# pip (not uv/poetry): the pinned torch/torchvision builds are found on this machine's local disk by pip.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[dev]'
	touch $@

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .

test-fast: install
	$(PY) -m pytest -q -m "not slow"

quickstart: install
	$(PY) -m sr_lightning train experiment=quickstart

benchmarks: install
	$(PY) benchmarks/train_step.py
	$(PY) benchmarks/data.py
	$(PY) benchmarks/upscale.py

clean:
	rm -rf $(VENV) .pytest_cache
