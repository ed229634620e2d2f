# The two commands of the README: `make demo` and `make test`. Each does its own set-up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/.tools/bin:$(CURDIR)/$(VENV)/bin:$(PATH)

LINT_PATHS := lensing_core lensing_sources exporter adapter lensing_metrics lensing_harness tests dashboards $(wildcard benchmarks scripts/*.py)

.PHONY: demo test venv tools lint typecheck unit bench clean chart-files chart-docs rules-mutation mutation

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# The demo needs only the runtime and its fallback broker: a fresh machine runs it in well under a minute.
$(VENV)/.demo-installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[demo]'
	touch $@

tools:
	scripts/setup-tools.sh

## demo: a local broker, a real Celery worker, the exporter and the adapter, and a live view (Ctrl-C stops).
demo: $(VENV)/.demo-installed
	$(PY) -m lensing_metrics.demo $(DEMO_ARGS)

lint: venv
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

## chart-files: copy dashboards/ and the rule files of alerts/ into the chart (its one source of truth).
chart-files: venv
	$(PY) scripts/sync_chart_files.py

## chart-docs: regenerate charts/lensing-metrics/README.md from values.yaml's `# --` comments (helm-docs).
chart-docs: tools
	.tools/bin/helm-docs --chart-search-root charts --template-files README.md.gotmpl --output-file README.md

## rules-mutation: change each threshold, `for` and comparison of alerts/ one at a time; the promtool tests must
## catch at least 90% (scripts/mutate-rules.py; about a minute on 2 cores).
rules-mutation: venv tools
	$(PY) scripts/mutate-rules.py --jobs 2 --min-kill 0.9

## test: environment, tools, lint, types, the rule mutation check, and the whole suite (CI=true turns a skip into a failure).
test: venv tools lint chart-files rules-mutation
	$(PY) -m pytest $(PYTEST_ARGS)

unit: venv
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

## mutation: mutmut over the modules whose numbers reach the HPA, against their fast tests; kill rate per
## module (docs/testing.md). Not part of `make test`: several minutes on one core. MUTATION_ARGS=--max-children 2
mutation: venv
	$(PY) scripts/mutation.py $(MUTATION_ARGS)

bench: venv tools
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache mutants
