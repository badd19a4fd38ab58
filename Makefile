# Every target installs what it needs: a virtual environment, the Python packages, Kubo, sshd, qemu-img, IPFS
# Cluster and genuine OpenNebula (the last two built once from ../shared/vendor, see scripts/ensure-*).
# The venv holds one_ipfs as an editable install and the checkout itself on its path (testbed, tests and
# benchmarks, which the package does not ship).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup kubo ipfs-cluster system opennebula lint test test-long test-opennebula demo bench bench-quick clean

setup: $(STAMP) kubo ipfs-cluster system opennebula

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -c 'import sys, sysconfig, pathlib; pathlib.Path(sysconfig.get_path("purelib"), "one-ipfs-checkout.pth").write_text(sys.argv[1] + "\n")' "$(CURDIR)"
	touch $(STAMP)

kubo:
	@./scripts/ensure-kubo >/dev/null

ipfs-cluster:
	@./scripts/ensure-ipfs-cluster >/dev/null

system:
	@./scripts/ensure-system-packages

opennebula: $(STAMP)
	@$(PY) -m testbed.genuine

lint: $(STAMP)
	$(VENV)/bin/ruff check src testbed tests benchmarks
	$(VENV)/bin/ruff format --check src testbed tests benchmarks
	$(VENV)/bin/mypy

test: setup lint
	$(PY) -m pytest -m 'not long' --durations=25

test-opennebula: setup
	$(PY) -m pytest -m 'opennebula and not long'

test-long: setup
	$(PY) -m pytest -m long

demo: setup
	$(PY) -m testbed.demo

bench: setup
	$(PY) -m benchmarks

bench-quick: setup
	$(PY) -m benchmarks --quick

clean:
	-$(PY) -m testbed down
	rm -rf $(VENV) .cache
