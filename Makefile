# Two entry points: `make demo` (the whole flow on the embedded default) and `make test`.
# Both go through `make setup`, which creates .venv and installs the project once; it re-installs
# only when pyproject.toml, constraints.txt or this file (the extras it installs) changed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
OUT ?= runs/demo
TEACHER ?= auto
TEST_ARGS ?=

.PHONY: setup demo test clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,qat,openvino]"
	touch $(STAMP)

# TEACHER=kept|train|auto: the teacher checkpoint kept in recipes/checkpoints/, or trained here (auto: kept
# where it fits the settings)
demo: setup
	$(PY) -m demo --out $(OUT) --teacher $(TEACHER)

test: setup
	$(PY) -m pytest -n 2 -q $(TEST_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
