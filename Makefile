# The README's commands. A fresh machine needs only Python 3.11 and make.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
DATA_DIR ?= $(CURDIR)/data
PRESET ?= default
UI_PORT ?= 3000
export RECSYS_DATA_DIR := $(abspath $(DATA_DIR))
# Test workers (pytest-xdist): two, the reference machine's cores; an idle worker takes
# tests from a busy one's queue (worksteal: the suite 5 min 14 s against 5 min 43 s with
# xdist's default split, on 2026-12-05)
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal

.PHONY: install demo test test-fast test-pipeline test-servers test-distributed test-tools ui serve serve-realtime celery-workers bench-serving bench bench-faults bench-detection bench-recommender bench-recommender-device bench-distributed bench-executors lint clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -e '.[dev]'
	touch $@

install: $(BIN)/.installed

## demo: generate the default data set, materialize every asset, print the evaluation
demo: install
	$(BIN)/python -m dagster_project.cli demo --preset $(PRESET)

## test: every tier (unit, pipeline, servers and browser, distributed), as CI runs it; the servers and
## the browser the tests start are installed here, never at run time
test: install test-tools
	$(PYTEST)

## test-fast: the unit tier only (no pipeline, servers or browser), about a minute
test-fast: install
	$(PYTEST) -m "not pipeline and not servers and not distributed"

## test-pipeline: the pipeline tier (the whole graph on the tiny shop, Feast, Dagster runs)
test-pipeline: install
	$(PYTEST) -m "pipeline and not servers and not distributed"

## test-servers: the servers tier (feature server, Redis, Chromium on loopback)
test-servers: install test-tools
	$(PYTEST) -m servers

## test-distributed: the distributed tier (torchrun's DDP, Spark's offline store)
test-distributed: install test-tools
	$(PYTEST) -m distributed

## test-tools: Debian's redis-server, chromium and Java 17, when missing (needs root or sudo)
test-tools:
	bash scripts/install_redis.sh >/dev/null
	bash scripts/install_chromium.sh >/dev/null
	bash scripts/install_java.sh >/dev/null

## ui: the Dagster UI on http://127.0.0.1:$(UI_PORT), over the demo's runs (the daily
## partitions start on the data's first day)
ui: install
	DAGSTER_HOME=$$($(BIN)/python -m dagster_project.cli dagster-home) \
	RECSYS_FIRST_EVENT_DAY=$${RECSYS_FIRST_EVENT_DAY:-$$($(BIN)/python -m dagster_project.cli first-event-day)} \
	$(BIN)/dagster dev -h 127.0.0.1 -p $(UI_PORT) -m dagster_project.definitions

## bench: benchmarks under bench/, figures saved as JSON in bench/results/
bench: install test-tools
	$(BIN)/python -m bench.generator --preset large
	$(BIN)/python -m bench.pipeline --preset $(PRESET)
	$(BIN)/python -m bench.incremental --preset $(PRESET)
	$(BIN)/python -m bench.quality
	$(BIN)/python -m bench.detection
	$(BIN)/python -m bench.detection_adversary
	$(BIN)/python -m bench.feature_serving --data-dir $(DATA_DIR)
	$(BIN)/python -m bench.serving --data-dir $(DATA_DIR)
	$(BIN)/python -m bench.recommender --data-dir $(DATA_DIR)
	$(BIN)/python -m bench.distributed
	$(BIN)/python -m bench.executors --data-dir $(DATA_DIR)
	$(BIN)/python -m bench.faults --data-dir $(DATA_DIR)
	$(BIN)/python -m bench.offline_store --data-dir $(DATA_DIR)
	$(BIN)/python -m bench.shared_storage --data-dir $(DATA_DIR)

## bench-faults: faults and hostile input injected for real, each line pass or fail (JSON)
bench-faults: install
	$(BIN)/python -m bench.faults --data-dir $(DATA_DIR)

## serve: the HTTP feature server on 127.0.0.1:6566 (after make demo)
serve: install
	$(BIN)/python -m dagster_project.feature_server

## serve-realtime: POST /events and POST /recommend on 127.0.0.1:8000 (after make demo);
## WORKERS=n for n uvicorn workers, Ctrl-C stops it (what it landed is published first)
WORKERS ?= 1
serve-realtime: install
	$(BIN)/python -m dagster_project.serving --workers $(WORKERS)

## celery-workers: CELERY_WORKERS=n Celery workers for RECSYS_EXECUTOR=celery (needs
## RECSYS_CELERY_BROKER, e.g. redis://127.0.0.1:6379/0); Ctrl-C stops them
CELERY_WORKERS ?= 2
celery-workers: install
	$(BIN)/recsys celery-workers --count $(CELERY_WORKERS)

## bench-serving: /recommend latency, event-to-visible, intake throughput (after make demo)
bench-serving: install
	$(BIN)/python -m bench.serving --data-dir $(DATA_DIR)

## bench-recommender: every model side by side on MovieLens 100k and the demo's data, and speed
bench-recommender: install
	$(BIN)/python -m bench.recommender --data-dir $(DATA_DIR)

## bench-recommender-device: the model on Amazon Sports on this machine's device (GPU if any)
bench-recommender-device: install
	$(BIN)/python -m bench.recommender_device --device auto

## bench-distributed: data-parallel training (torchrun, DDP) with 1 and 2 processes on Amazon
## Sports, on this machine's device (gloo on CPU, NCCL on GPUs)
bench-distributed: install
	$(BIN)/python -m bench.distributed

## bench-executors: a backfill of the demo's data set in process, multiprocess and on 1 and
## 2 Celery workers (Redis broker on loopback), outputs compared with the serial run's
bench-executors: install test-tools
	$(BIN)/python -m bench.executors --data-dir $(DATA_DIR)

## bench-detection: bot detection per type over bot rates and seeds, 10M-event speed, and
## independently written bots in the Taobao sample and generated shops
bench-detection: install
	$(BIN)/python -m bench.detection
	$(BIN)/python -m bench.detection_adversary

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(RECSYS_DATA_DIR)
