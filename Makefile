# Two commands set everything up on a fresh machine:
#   make run    install into .venv and run the daemon on the embedded defaults (inbox under ./var)
#   make test   install with the test extras and run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: install install-test tools web-assets run test faults test-all clean

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

# The web page's 3D viewers (npm, pinned in tools/package-lock.json) beside the page, with their licences:
# model-viewer (Apache-2.0) for the .glb, Spark (MIT) on three.js (MIT) for the .splat/.ply.
VENDOR := glimpsed/web/static/vendor
NM := tools/node_modules
$(VENDOR)/.installed: tools/node_modules/.installed
	rm -rf $(VENDOR)
	mkdir -p $(VENDOR)/model-viewer $(VENDOR)/spark $(VENDOR)/three/addons/controls $(VENDOR)/three/addons/postprocessing
	cp $(NM)/@google/model-viewer/dist/model-viewer.min.js $(NM)/@google/model-viewer/LICENSE $(VENDOR)/model-viewer/
	cp $(NM)/@sparkjsdev/spark/dist/spark.module.min.js $(NM)/@sparkjsdev/spark/LICENSE $(VENDOR)/spark/
	cp $(NM)/three/build/three.module.min.js $(NM)/three/build/three.core.min.js $(NM)/three/LICENSE $(VENDOR)/three/
	cp $(NM)/three/examples/jsm/controls/OrbitControls.js $(VENDOR)/three/addons/controls/
	cp $(NM)/three/examples/jsm/postprocessing/Pass.js $(VENDOR)/three/addons/postprocessing/
	touch $@

web-assets: $(VENDOR)/.installed

run: install
	@if command -v npm >/dev/null; then $(MAKE) --no-print-directory web-assets; \
	 else echo "npm not found: the web page runs without its 3D viewers (install npm, then make web-assets)"; fi
	mkdir -p var/inbox var/outbox
	@echo "inbox: $(CURDIR)/var/inbox   outbox: $(CURDIR)/var/outbox"
	$(VENV)/bin/glimpsed run $(ARGS)

test: install-test tools web-assets
	OMP_NUM_THREADS=1 $(PY) -m pytest $(PYTEST_ARGS)

# The slow half of the fault suite (tests/faults, marked slow): the kill -9 matrix, the bad-input corpus,
# the 10,000-file drop, the locked store, full disks. CI runs it after `make test`.
faults: install-test
	OMP_NUM_THREADS=1 $(PY) -m pytest tests/faults -m slow $(PYTEST_ARGS)

test-all: install-test tools
	OMP_NUM_THREADS=1 $(PY) -m pytest -m "not gpu" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache
