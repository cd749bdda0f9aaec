# Gatehouse: the two commands of the README, plus the fuzzers.
#
#   make run    install what is missing, build, serve on 127.0.0.1:8080 (./gatehouse.db, ./gatehouse.yml)
#   make test   install what is missing (system packages, .venv/), then every test
#   make fuzz   the libFuzzer targets of Fuzz/, FUZZ_SECONDS each (not part of make test)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# Swift lives in /opt/swift on the project's machines; a swift already on PATH wins.
export PATH := $(PATH):/opt/swift/usr/bin

APT_PACKAGES := libcurl4-openssl-dev libsqlite3-dev pkg-config
# What only `make test` needs: Debian's Chromium for the browser tests (Playwright drives it;
# `playwright install` cannot download browsers here), and PostgreSQL for the suite's second
# pass on that store (a throwaway cluster, tests/postgres/cluster.sh; no system service).
TEST_APT_PACKAGES := chromium postgresql
PYTHON ?= python3
VENV := .venv
VENV_PY := $(VENV)/bin/python
VENV_ZENML := .venv-zenml
VENV_AIRFLOW := .venv-airflow
LOGS := .build/test-logs
# Arguments for `make run`, e.g. make run ARGS="--address 127.0.0.1:9090".
ARGS ?=
FUZZ_SECONDS ?= 60
FUZZ_SCRATCH := .build-fuzz
FUZZ_TARGETS := fuzz-json fuzz-intake fuzz-routing fuzz-policy fuzz-markdown fuzz-items fuzz-callbacks fuzz-config

.PHONY: help run test deps test-deps apt-install build build-tests test-swift test-postgres test-python test-browser test-zenml test-airflow test-api venv venv-zenml venv-airflow fuzz fuzz-build clean-venv

help:
	@echo "make run    build and serve on 127.0.0.1:8080 (state in ./gatehouse.db, config ./gatehouse.yml when present)"
	@echo "make test   every test: swift test, then the API tests (schemathesis) against a real server"
	@echo "make fuzz   the libFuzzer targets, FUZZ_SECONDS=$(FUZZ_SECONDS) each"

# System packages the build links against: ask dpkg what is missing, and only then touch apt
# (with sudo when not root). Nothing happens when they are all there.
deps:
	@$(MAKE) --no-print-directory apt-install PACKAGES="$(APT_PACKAGES)"

test-deps:
	@$(MAKE) --no-print-directory apt-install PACKAGES="$(TEST_APT_PACKAGES)"

apt-install:
	@if ! command -v dpkg-query >/dev/null 2>&1; then \
	  echo "make: no dpkg here; make sure these are installed: $(PACKAGES)"; exit 0; fi; \
	missing=""; \
	for p in $(PACKAGES); do \
	  dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  sudo=""; [ "$$(id -u)" -ne 0 ] && sudo="sudo"; \
	  echo "installing:$$missing"; \
	  $$sudo apt-get -o DPkg::Lock::Timeout=300 update -qq; \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends $$missing; \
	fi

build: deps
	swift build --product gatehouse

run: build
	swift run --skip-build gatehouse serve $(ARGS)

# The venv for the Python-driven tests, rebuilt when requirements-test.txt changes.
venv: $(VENV)/.installed

# Reinstalled when the client changes: ZenML imports the flavors from the installed package.
CLIENT_SOURCES := clients/python/pyproject.toml $(wildcard clients/python/src/gatehouse/*.py)

$(VENV)/.installed: requirements-test.txt $(CLIENT_SOURCES)
	@if ! $(PYTHON) -m venv --help >/dev/null 2>&1 || ! $(PYTHON) -c 'import ensurepip' >/dev/null 2>&1; then \
	  sudo=""; [ "$$(id -u)" -ne 0 ] && sudo="sudo"; \
	  echo "installing: python3-venv"; \
	  $$sudo apt-get -o DPkg::Lock::Timeout=300 update -qq; \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq python3-venv; \
	fi
	$(PYTHON) -m venv $(VENV)
	$(VENV_PY) -m pip install -q --disable-pip-version-check -r requirements-test.txt
	@# The Python client installs as a user would install it (its tests import the source).
	$(VENV_PY) -m pip install -q --disable-pip-version-check --no-deps --force-reinstall ./clients/python
	@touch $@

# ZenML in a venv of its own (requirements-zenml.txt), for the alerter flavor's test.
venv-zenml: $(VENV_ZENML)/.installed

$(VENV_ZENML)/.installed: requirements-zenml.txt $(CLIENT_SOURCES) | venv
	$(PYTHON) -m venv $(VENV_ZENML)
	$(VENV_ZENML)/bin/python -m pip install -q --disable-pip-version-check -r requirements-zenml.txt
	$(VENV_ZENML)/bin/python -m pip install -q --disable-pip-version-check --no-deps --force-reinstall ./clients/python
	@touch $@

# Airflow 3 in a venv of its own (requirements-airflow.txt), for the operator's and notifier's test.
venv-airflow: $(VENV_AIRFLOW)/.installed

# After the ZenML venv, not beside it: both build ./clients/python in its own tree.
$(VENV_AIRFLOW)/.installed: requirements-airflow.txt $(CLIENT_SOURCES) | venv venv-zenml
	$(PYTHON) -m venv $(VENV_AIRFLOW)
	$(VENV_AIRFLOW)/bin/python -m pip install -q --disable-pip-version-check -r requirements-airflow.txt
	$(VENV_AIRFLOW)/bin/python -m pip install -q --disable-pip-version-check --no-deps --force-reinstall ./clients/python
	@touch $@

# The venvs install while Swift builds: pip waits mostly on the network and the disk, the
# build on the CPU, so side by side they take little more than the build alone.
test: deps
	@mkdir -p $(LOGS)
	@rm -f $(LOGS)/*.log
	$(MAKE) --no-print-directory -j4 venv venv-zenml venv-airflow build-tests test-deps
	@# Every suite runs even when one before it failed; the summary counts them all.
	@status=0; \
	for suite in test-swift test-postgres test-python test-browser test-zenml test-airflow test-api; do \
	  $(MAKE) --no-print-directory $$suite || status=1; \
	done; \
	$(VENV_PY) tests/summary.py $(LOGS)/*.log || status=1; \
	exit $$status

build-tests: deps
	swift build --build-tests

test-swift:
	@mkdir -p $(LOGS)
	swift test 2>&1 | tee $(LOGS)/swift.log

# The suites that start servers, again on PostgreSQL: a throwaway cluster on a private port,
# a fresh database per test server (GATEHOUSE_TEST_POSTGRES). The Swift server suite, the
# service tests and what only PostgreSQL has (claims, replicas, chaos); the Python client and
# browser tests; schemathesis with fewer examples (its generated cases hit the same handlers
# as the SQLite run; what differs is the store under them).
PG_SCHEMATHESIS_EXAMPLES ?= 5
test-postgres: venv
	@mkdir -p $(LOGS)
	@dir=$$(mktemp -d /tmp/gatehouse-pg.XXXXXX); \
	port=$$($(PYTHON) -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'); \
	trap 'tests/postgres/cluster.sh stop '"$$dir"'; rm -rf '"$$dir" EXIT; \
	url=$$(tests/postgres/cluster.sh start "$$dir" "$$port"); \
	bin="$$(swift build --show-bin-path)/gatehouse"; status=0; \
	GATEHOUSE_TEST_POSTGRES="$$url" swift test --skip-build --filter 'GatehouseServerTests|ServiceTests|PostgresTests|DeliveryClaimTests' 2>&1 | tee $(LOGS)/postgres.log || status=1; \
	GATEHOUSE_TEST_POSTGRES="$$url" GATEHOUSE_BINARY="$$bin" $(VENV_PY) -m pytest clients/python/tests tests/browser --ignore=clients/python/tests/test_zenml.py --ignore=clients/python/tests/test_airflow.py -p no:cacheprovider -s 2>&1 | tee $(LOGS)/postgres-python.log || status=1; \
	GATEHOUSE_TEST_POSTGRES="$$url" $(VENV_PY) tests/api/run_schemathesis.py --binary "$$bin" --examples $(PG_SCHEMATHESIS_EXAMPLES) 2>&1 | tee $(LOGS)/postgres-api.log || status=1; \
	exit $$status

# Python-side checks of what we send (the CloudEvents SDK reads webhooks/cloudevents/), and the
# Python client (clients/python) against the binary `swift test` just built.
test-python:
	@mkdir -p $(LOGS)
	GATEHOUSE_BINARY="$$(swift build --show-bin-path)/gatehouse" $(VENV_PY) -m pytest tests/python clients/python/tests --ignore=clients/python/tests/test_zenml.py --ignore=clients/python/tests/test_airflow.py -p no:cacheprovider -s 2>&1 | tee $(LOGS)/python.log

# The web pages in Debian's Chromium, driven by Playwright, against the built binary.
test-browser:
	@mkdir -p $(LOGS)
	GATEHOUSE_BINARY="$$(swift build --show-bin-path)/gatehouse" $(VENV_PY) -m pytest tests/browser -p no:cacheprovider -s 2>&1 | tee $(LOGS)/browser.log

# The ZenML flavors inside ZenML, and the Airflow operator and notifier inside Airflow, each in its venv.
test-zenml:
	@mkdir -p $(LOGS)
	GATEHOUSE_BINARY="$$(swift build --show-bin-path)/gatehouse" $(VENV_ZENML)/bin/python -m pytest clients/python/tests/test_zenml.py -p no:cacheprovider -p no:logging -s 2>&1 | tee $(LOGS)/zenml.log

test-airflow:
	@mkdir -p $(LOGS)
	GATEHOUSE_BINARY="$$(swift build --show-bin-path)/gatehouse" $(VENV_AIRFLOW)/bin/python -m pytest clients/python/tests/test_airflow.py -p no:cacheprovider -p no:logging -s 2>&1 | tee $(LOGS)/airflow.log

# Starts the built binary itself (it builds nothing) and runs schemathesis against it.
test-api:
	@mkdir -p $(LOGS)
	$(VENV_PY) tests/api/run_schemathesis.py --binary "$$(swift build --show-bin-path)/gatehouse" 2>&1 | tee $(LOGS)/api.log

clean-venv:
	rm -rf $(VENV) $(VENV_ZENML) $(VENV_AIRFLOW)

# libFuzzer targets (Fuzz/ is a package of its own, so none of this slows the main build).
# The sanitizer flags come through a toolset, which applies to the target platform only:
# -Xswiftc would also reach the build-time tool of the EmbedFiles plugin, which then fails to
# link against libFuzzer's main. A target whose one file is not main.swift is already compiled
# as a library (-parse-as-library), so libFuzzer's main drives LLVMFuzzerTestOneInput.
fuzz-build: deps
	cd Fuzz && swift build -c release --scratch-path ../$(FUZZ_SCRATCH) --toolset "$$PWD/fuzz-toolset.json"

fuzz: fuzz-build
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_SCRATCH=$(FUZZ_SCRATCH) Fuzz/run.sh $(FUZZ_TARGETS)
