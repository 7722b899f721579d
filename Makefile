# podbrief: `make run` starts the service on the embedded default; `make test` runs the whole suite.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed
# The demo feed is served by the app itself on 127.0.0.1:8000: the only private host make run may fetch.
RUN_ENV := PODBRIEF_DEMO=1 PODBRIEF_FETCH_ALLOW_HOSTS=$${PODBRIEF_FETCH_ALLOW_HOSTS:-127.0.0.1:8000}

.PHONY: install run test lint typecheck unit clean-var clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (Python 3.11)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip wheel setuptools
	# torch first and pinned: a bare `torch` requirement would pull a CUDA build of several GB.
	$(PIP) install --quiet -c constraints.txt torch
	$(PIP) install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

run: install
	$(RUN_ENV) $(VENV)/bin/podbrief run

lint: install
	$(VENV)/bin/ruff check app workers tests
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

test: install lint
	$(VENV)/bin/python -m pytest -q

unit: install
	$(VENV)/bin/python -m pytest -q -m "not slow and not integration"

clean-var:
	rm -rf var/

clean: clean-var
	rm -rf $(VENV)
