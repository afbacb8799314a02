# mxgate: `make run` runs the whole pipeline locally, `make test` runs the whole suite.
# Everything the project needs is installed from here (pip, mvn), on a bare machine too.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup system run test lint unit integration fetch bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]' --config-settings editable_mode=compat
	touch $(STAMP)

# Kafka broker jars and S3Proxy come from Maven into .cache/ (once).
fetch: $(STAMP)
	$(BIN)/python -c "from devstack.kafka import ensure_kafka_jars; ensure_kafka_jars()"
	$(BIN)/python -c "from devstack.s3server import ensure_built; ensure_built()"

# Debian packages (engine daemons, Postfix, DNS) listed in infra/apt-packages.txt.
system:
	bash infra/install-system.sh

setup: system $(STAMP) fetch

run: setup
	$(BIN)/mxgate up

# ruff, ruff's formatter and mypy (strict on mxgate/, schemas/, cli/: pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# pytest exit 5 (no tests collected) is a failure here, never a pass.
test: setup lint
	$(BIN)/python -m pytest -ra --durations=15 tests; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

integration: setup
	$(BIN)/python -m pytest -q tests/integration tests/scenarios

# Every benchmark, each against its peer measured in the same run (bench/README.md).
bench: setup
	$(BIN)/python bench/smtp_accept.py
	$(BIN)/python bench/scan_throughput.py
	$(BIN)/python bench/delivery.py

clean:
	rm -rf var .pytest_cache
