# MarketPulse: the front door. `make help` lists the targets.
#
#   make demo   run the whole system locally (stack + jobs + generator + dashboard)
#   make test   run every test against the real stack (installs what it needs)
#
# Everything installs itself on first use: a Python venv in .venv, JVM jars in .deps (Maven Central),
# PostgreSQL (and Chromium for the browser tests) from Debian's packages. State lives in .stack.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help setup up down status logs check test test-unit lint demo submit-datastream cancel savepoint \
        resume rescale upgrade sql generator dashboard alerts forecaster score bench clean

help:  ## this list
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "error: Python 3.11+ is needed (found " + sys.version.split()[0] + ")")'
	@echo "[setup] Python venv $(VENV): installing the project and its pinned dependencies (first time ~2 min)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check --upgrade pip > $(VENV)/pip.log 2>&1 \
	  && $(PY) -m pip install --disable-pip-version-check -e '.[dev]' >> $(VENV)/pip.log 2>&1 \
	  || { tail -n 30 $(VENV)/pip.log; echo "error: pip install failed; full log in $(VENV)/pip.log"; exit 1; }
	@echo "[setup] Python dependencies installed ($(VENV)/pip.log)"
	@touch $(STAMP)

setup: $(STAMP)  ## install everything that is missing (venv, jars, PostgreSQL); seconds when done
	@$(PY) -m stack setup

up: $(STAMP)  ## start PostgreSQL, Kafka (KRaft) and the Flink cluster; prints the status table
	@$(PY) -m stack up

down: $(STAMP)  ## stop everything `up` and `demo` started, nothing else
	@$(PY) -m stack down

status: $(STAMP)  ## each component's health; each process's pid, uptime, restarts, last exit
	@$(PY) -m stack status

check: $(STAMP)  ## is data flowing? rows per table, newest window, running Flink jobs
	@$(PY) -m stack check

logs: $(STAMP)  ## last lines of every log (make logs C=kafka for one; C=supervisor: restarts)
	@$(PY) -m stack logs $(C)

test: $(STAMP)  ## ruff, then every test layer against the real stack: unit, local Flink, integration, browser
	@echo "[lint] ruff check ." && $(PY) -m ruff check .
	@$(PY) -m stack setup --browser
	@$(PY) -m stack up
	@$(PY) -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP)  ## the pure unit tests only (no stack needed)
	@$(PY) -m pytest tests/unit $(PYTEST_ARGS)

lint: $(STAMP)  ## ruff
	@$(PY) -m ruff check .

demo: $(STAMP)  ## the whole system: stack, both Flink jobs, generator, dashboard (Ctrl-C stops it)
	@$(if $(SOURCE),MARKETPULSE_DEMO_SOURCE=$(SOURCE)) $(if $(SYMBOLS),MARKETPULSE_DEMO_SYMBOLS=$(SYMBOLS)) \
		$(PY) -m stack demo

submit-datastream: $(STAMP)  ## submit the PyFlink DataStream job (detached; recorded, resumes its last state)
	@$(PY) -m stack submit-datastream

cancel: $(STAMP)  ## cancel a job for good (not resubmitted): make cancel JOB=<job id>
	@$(PY) -m stack cancel $(JOB)

savepoint: $(STAMP)  ## stop a job with a savepoint: make savepoint JOB=<job id>
	@$(PY) -m stack stop-job $(JOB)

resume: $(STAMP)  ## resume the DataStream job: make resume SAVEPOINT=<path printed by make savepoint>
	@$(PY) -m stack submit-datastream --savepoint $(SAVEPOINT)

rescale: $(STAMP)  ## savepoint the DataStream job, resume it at PARALLELISM: make rescale JOB=<id> PARALLELISM=2
	@$(PY) -m stack redeploy $(JOB) --parallelism $(PARALLELISM)

upgrade: $(STAMP)  ## savepoint the DataStream job, resume it with the code as it is now: make upgrade JOB=<id>
	@$(PY) -m stack redeploy $(JOB) $(ARGS)

sql: $(STAMP)  ## run a Flink SQL script with sql-client.sh -f: make sql SCRIPT=sql/window_metrics.sql
	@$(PY) -m stack sql $(SCRIPT)

generator: $(STAMP)  ## publish synthetic trades to Kafka (ARGS="--rate 500 --anomaly-rate 0.002")
	@$(PY) -m generator $(ARGS)

dashboard: $(STAMP)  ## the Dash dashboard on :8050, development server (ARGS=--serve: gunicorn, as make demo)
	@$(PY) -m dashboard $(ARGS)

alerts: $(STAMP)  ## run the alert service: anomalies topic -> log/webhook/Slack ([alerts] in conf/pipeline.toml)
	@$(PY) -m alerts

forecaster: $(STAMP)  ## forecasts and their errors ([forecast]); ARGS=--backtest: over the bars already there
	@$(PY) -m forecaster $(ARGS)

score: $(STAMP)  ## detection quality: anomalies vs the generator's ground truth (FROM=/TO= event time, ENGINE=sql)
	@$(PY) -m marketpulse.score $(if $(FROM),--from $(FROM)) $(if $(TO),--to $(TO)) $(if $(ENGINE),--engine $(ENGINE))

# bench/drain.py drains one topic with the plain consumer, the DataStream and the SQL job: the single-engine
# entry points (datastream_drain.py, sql_drain.py, plain_consumer.py) would only repeat parts of it.
bench: $(STAMP)  ## run the benchmarks in bench/ (figures, not asserts)
	@for b in bench/*.py; do case $$b in bench/datastream_drain.py|bench/sql_drain.py|bench/plain_consumer.py) \
		continue;; esac; echo "== $$b"; $(PY) $$b || exit 1; done

clean: down  ## stop the stack and delete its state (.stack); keeps .venv and .deps
	rm -rf .stack
