# vidup: the two commands that matter are `make demo` (the main job) and `make test`.
# Both install what is missing first: Debian packages, the Python virtualenv, the Go-built control plane.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := ffmpeg redis-server docker.io debootstrap
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install apt-packages python-env js-clients controlplane lint test demo clean

install: apt-packages python-env js-clients controlplane

apt-packages:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

python-env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# tus-js-client for the real-client tests (Node.js and npm must be installed).
js-clients: tests/ingest/js/node_modules/.installed

tests/ingest/js/node_modules/.installed: tests/ingest/js/package-lock.json
	npm ci --prefix tests/ingest/js --no-audit --no-fund
	touch $@

# etcd, kube-apiserver, kubectl and helm, built from the Go module proxy once per machine (cached).
controlplane: python-env
	$(BIN)/vidup build

lint: python-env
	$(BIN)/ruff check .
	$(BIN)/mypy

test: install lint
	$(BIN)/pytest

demo: install
	$(BIN)/python -m vidup.demo

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
