# edge-face developer entry points. `make demo` and `make test` are the README's two commands:
# each sets up whatever it needs on a fresh Debian/Ubuntu machine (as root) or a laptop.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# System packages the demo and the tests use (a real broker; systemd-analyze; a headless browser
# for the operator page; an aarch64 cross compiler and qemu, to build and run the matcher's Jetson
# kernel); installed when missing.
DEMO_DEB_PACKAGES := mosquitto mosquitto-clients
# The end-to-end test (tests/test_e2e_fleet.py): a debootstrapped Debian booted by systemd-nspawn,
# configured over SSH by the Ansible playbook. Defined before TEST_DEB_PACKAGES, which := expands
# at once (after it, the list came out empty and a clean machine skipped the e2e).
E2E_DEB_PACKAGES := debootstrap systemd-container openssh-client
TEST_DEB_PACKAGES := $(DEMO_DEB_PACKAGES) systemd chromium \
  gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user $(E2E_DEB_PACKAGES)
DEB_PACKAGES = $(TEST_DEB_PACKAGES)

# TensorRT 10.x API stubs (JetPack 6.1/6.2 ship 10.3) for the type check of the TensorRT backend
# (tests/test_tensorrt_types.py). Kept out of site-packages: the stubs-only 'tensorrt' package
# would otherwise be importable as if TensorRT were installed.
TENSORRT_STUBS := tensorrt-stubs==10.13.0.35.1

.PHONY: setup models bytecode demo test lint bench clean system-test-deps build-deps dist e2e

setup: $(STAMP) models bytecode

# The editable install also compiles the matcher's C library (hatch_build.py); here it must work,
# so a C compiler is installed first when missing (gcc, as root with apt-get).
$(STAMP): pyproject.toml hatch_build.py edge/matching/_int8scan.c edge/matching/_int8scan.h
	@$(MAKE) --no-print-directory build-deps
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	EDGE_FACE_REQUIRE_NATIVE=1 $(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --upgrade \
	  --target $(VENV)/typing-stubs '$(TENSORRT_STUBS)'
	@touch $(STAMP)

# Fetch is a no-op when the verified files are cached; prepare keeps files whose sha256 matches.
models: $(STAMP)
	$(BIN)/edge-face models fetch
	$(BIN)/edge-face models prepare
	@$(BIN)/edge-face models status

# What installing a wheel does: byte-compile the package, so no command compiles its ~60 modules
# (~60 ms) at every start. Cheap when up to date; needed because the install is editable and
# PYTHONDONTWRITEBYTECODE may be set.
bytecode: $(STAMP)
	@$(BIN)/python -m compileall -q edge >/dev/null

# The main job: sample person enrolled with consent, a stranger, a local mosquitto, the daemon
# on a clip made from the portraits, and the MQTT events printed as a subscriber receives them.
# mosquitto is preferred (installed here when we are root); without it the demo runs the amqtt
# library's broker (edge/demo/fallback_broker.py), so a laptop without root still runs it. The
# sbin folders join PATH because Debian installs mosquitto there, off a normal user's PATH.
demo: setup
	@-$(MAKE) --no-print-directory system-test-deps DEB_PACKAGES="$(DEMO_DEB_PACKAGES)" 2>/dev/null || echo "mosquitto unavailable: the demo uses the amqtt library's broker"
	PATH="$$PATH:/usr/sbin:/usr/local/sbin" $(BIN)/python -m edge.demo.run

build-deps:
	@if [ -z "$$CC" ] && ! command -v cc >/dev/null && ! command -v gcc >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing gcc (for the matcher's C library)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcc libc6-dev >/dev/null; \
	  else echo "no C compiler: install one (e.g. sudo apt-get install gcc) or set CC"; exit 1; fi; \
	fi

system-test-deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else echo "missing system packages:$$missing (install them, e.g. sudo apt-get install$$missing)"; exit 1; fi; \
	fi

test: setup system-test-deps
	$(BIN)/ruff check edge tests bench hatch_build.py
	$(BIN)/python -m pytest -q

# The wheel the Ansible role installs (dist/edge_face-<version>-py3-none-<platform>.whl). It
# carries the compiled matcher: build it on the devices' architecture.
dist: $(STAMP)
	EDGE_FACE_REQUIRE_NATIVE=1 $(BIN)/python -m pip wheel --quiet --no-deps --no-build-isolation -w dist .

# Only the end-to-end test (also part of `make test`); see docs/deploy.md.
e2e: setup
	@$(MAKE) --no-print-directory system-test-deps DEB_PACKAGES="$(E2E_DEB_PACKAGES) mosquitto"
	$(BIN)/python -m pytest -q -s tests/test_e2e_fleet.py

lint: $(STAMP)
	$(BIN)/ruff check edge tests bench hatch_build.py

bench: setup
	$(BIN)/python bench/bench_engine.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
