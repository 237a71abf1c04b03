# vidup: the two commands that matter are `make demo` (the main job) and `make test`.
# Both install what is missing first: Debian packages, the Python virtualenv, the Go-built control plane.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The local cluster's node also needs iptables/conntrack (kube-proxy), iproute2 (links) and
# libseccomp-dev + pkg-config (runc is built with seccomp). The web app's tests drive Debian's
# chromium (Playwright is pointed at /usr/bin/chromium; its own browser downloads cannot work here).
APT_PACKAGES := ffmpeg redis-server docker.io debootstrap iptables conntrack iproute2 libseccomp-dev pkg-config \
	chromium fonts-liberation
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install apt-packages python-env js-clients webapp controlplane node s3server lint test demo clean

install: apt-packages python-env js-clients webapp controlplane node s3server

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

# The web app the ingest serves at / : bundled from ingest/webapp (npm, pinned by its lockfile) into
# the ingest package. The ingest image runs the same build in a build stage.
WEBAPP := ingest/webapp
WEBAPP_OUT := ingest/vidup_ingest/webapp/static
webapp: $(WEBAPP_OUT)/index.html

$(WEBAPP_OUT)/index.html: $(WEBAPP)/package-lock.json $(WEBAPP)/build.mjs $(wildcard $(WEBAPP)/src/*)
	npm ci --prefix $(WEBAPP) --no-audit --no-fund
	npm run --prefix $(WEBAPP) build

# etcd, kube-apiserver, kubectl and helm, built from the Go module proxy once per machine (cached).
controlplane: python-env
	$(BIN)/vidup build

# The local cluster's node (kubelet, kube-proxy, scheduler, controller manager, containerd, runc,
# CNI plugins, CoreDNS, Traefik), built the same way once per machine (cached).
node: controlplane apt-packages
	$(BIN)/vidup build --node

# SeaweedFS, the local S3 server of `vidup up --storage s3` and the S3 tests, built the same way.
s3server: python-env
	$(BIN)/vidup build --s3

lint: python-env
	$(BIN)/ruff check .
	$(BIN)/mypy

test: install lint
	$(BIN)/pytest

demo: apt-packages python-env webapp controlplane
	$(BIN)/python -m vidup.demo

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
