# Two commands set everything up on a fresh machine:
#   make run    install into .venv and run the daemon on the embedded defaults (inbox under ./var)
#   make test   install with the test extras and run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: install install-test tools run test faults test-all clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first, pinned, so nothing later pulls another build.
$(VENV)/.torch: | $(PY)
	$(PIP) install $(TORCH)
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(PIP) install -e . $(TORCH)
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.torch
	$(PIP) install -e '.[test,ray]' $(TORCH)
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

# Third-party checkers the tests run on our files (Khronos glTF validator, PlayCanvas splat-transform).
tools/node_modules/.installed: tools/package-lock.json
	npm ci --prefix tools --ignore-scripts --no-audit --no-fund
	touch $@

tools: tools/node_modules/.installed

run: install
	mkdir -p var/inbox var/outbox
	@echo "inbox: $(CURDIR)/var/inbox   outbox: $(CURDIR)/var/outbox"
	$(VENV)/bin/glimpsed run $(ARGS)

test: install-test tools
	OMP_NUM_THREADS=1 $(PY) -m pytest $(PYTEST_ARGS)

# The slow half of the fault suite (tests/faults, marked slow): the kill -9 matrix, the bad-input corpus,
# the 10,000-file drop, the locked store, full disks. CI runs it after `make test`.
faults: install-test
	OMP_NUM_THREADS=1 $(PY) -m pytest tests/faults -m slow $(PYTEST_ARGS)

test-all: install-test tools
	OMP_NUM_THREADS=1 $(PY) -m pytest -m "not gpu" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache
