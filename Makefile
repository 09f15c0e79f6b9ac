# The two commands a newcomer needs: `make demo` (set up, materialize the demo lake, open the UI) and
# `make test` (set up, lint, type-check, run the tests). Both start from nothing but python3 and Java 17.
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.data/dagster_home
export BATCH_PLATFORM_DATA_DIR ?= $(CURDIR)/.data
PII_KEY_FILE := $(BATCH_PLATFORM_DATA_DIR)/pii-hmac.key
# The PII tokenizer's key is a secret, never in code: a random one per checkout, kept beside the local lake.
WITH_PII_KEY = BATCH_PLATFORM_PII_KEY="$${BATCH_PLATFORM_PII_KEY:-$$(cat $(PII_KEY_FILE))}"
DEMO_DAYS ?= 25

.PHONY: setup demo ui test test-unit lint typecheck lock clean

$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "uv==$(UV_VERSION)"

# Bytecode compiled at install, as a deployed image has it: every Dagster process (code server, run and step
# workers, the CLI) otherwise compiles its imports from source at each start (about 2 s; docs/benchmarks.md).
$(VENV)/.synced: requirements.lock pyproject.toml $(BIN)/uv
	$(BIN)/uv pip sync --quiet --compile-bytecode --python $(BIN)/python --require-hashes requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $@

# Jars Spark needs beyond pyspark's (batch_platform/spark_jars.py): Iceberg's runtime for Spark SQL over the lake
# always; S3A and the AWS SDK (640 MB) for the tests' production path. Cached outside the checkout, fetched once.
SPARK_JAR_GROUPS ?= --group iceberg
setup: $(VENV)/.synced $(PII_KEY_FILE)
	$(BIN)/batch-platform spark-jars fetch $(SPARK_JAR_GROUPS)
	@command -v java >/dev/null || [ -n "$$JAVA_HOME" ] || { echo "Java 17+ is required for Spark (apt-get install openjdk-17-jre-headless)"; exit 1; }
	mkdir -p "$(DAGSTER_HOME)"
	cp dagster.yaml "$(DAGSTER_HOME)/dagster.yaml"

$(PII_KEY_FILE):
	mkdir -p "$(dir $@)"
	umask 077 && $(PYTHON) -c "import secrets; print(secrets.token_hex(32))" > "$@"

demo: setup
	$(WITH_PII_KEY) $(BIN)/batch-platform demo --days $(DEMO_DAYS)
	$(WITH_PII_KEY) $(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

ui: setup
	$(WITH_PII_KEY) $(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/batch-platform spark-jars fetch --group iceberg --group s3
	$(BIN)/pytest

# The quick tier: no Spark, no PostgreSQL, no Dagster daemon (tiers: tests/conftest.py).
test-unit: setup
	$(BIN)/pytest -m unit -q

# Re-resolve the lock after changing dependencies in pyproject.toml.
lock: $(BIN)/uv
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 --generate-hashes --quiet -o requirements.lock

clean:
	rm -rf $(VENV) .data
