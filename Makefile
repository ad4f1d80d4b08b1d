# moderate — batch moderation with gpt-oss-safeguard.
#   make demo   set up .venv, run the sample job against the built-in simulator
#   make test   set up .venv, run the test suite
#   make test-fast  the test suite without the slow (subprocess, signal, fault-mix) tests
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint bench bench-long clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev,ray]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/moderate run configs/demo.toml
	@echo "HTML report: out/demo/report.html"

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check pipeline tests bench data/sample

bench: $(STAMP)
	$(BIN)/python -m bench

bench-long: $(STAMP)
	$(BIN)/python -m bench --long

clean:
	rm -rf $(VENV) out bench/out .pytest_cache .ruff_cache .hypothesis
