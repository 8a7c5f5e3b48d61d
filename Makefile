# The commands the README gives. Each sets up what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint typecheck pytest bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

$(BIN)/.bench-installed: $(BIN)/.installed
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $@

## demo: the whole job once, on a throwaway local PostgreSQL
demo: $(BIN)/.installed
	$(BIN)/pyaccess demo

## test: lint, type check, then every Python and pgTAP test against real PostgreSQL
test: lint typecheck pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check pyaccess tests bench migrations
	$(BIN)/ruff format --check pyaccess tests bench migrations

typecheck: $(BIN)/.installed
	$(BIN)/mypy --strict pyaccess tests bench

# pytest exits 5 when it collected nothing: that is a failure, not a pass.
pytest: $(BIN)/.installed
	@status=0; $(BIN)/pytest $(PYTEST_ARGS) || status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; \
	exit $$status

## bench: the side-by-side benchmark (make test runs it only with tiny sizes, tests/test_bench_smoke.py)
bench: $(BIN)/.bench-installed
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
