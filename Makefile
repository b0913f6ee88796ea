# Two entry points on a fresh machine:  `make demo` (main job)  and  `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNS := runs

.PHONY: setup demo test clean

setup: $(VENV)/.installed

# A pinned torch and torchvision first: on this project's machines they install from local files
# (pyproject only asks torch>=2.2); an unpinned torch could pull a multi-GB build from the registry.
TORCH := torch==2.14.1 torchvision==0.29.1

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

# Train the baseline and the MDN model on the shipped synthetic data, then compare them.
demo: setup
	rm -rf $(RUNS)/baseline $(RUNS)/mdn
	$(BIN)/mdn train sample_data/synthetic/baseline.yaml -o $(RUNS)/baseline --quiet --format json > /dev/null
	$(BIN)/mdn train sample_data/synthetic/mdn.yaml -o $(RUNS)/mdn --quiet --format json > /dev/null
	$(BIN)/mdn report $(RUNS)/baseline $(RUNS)/mdn

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(RUNS)
