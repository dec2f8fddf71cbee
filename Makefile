# Entry points: `make demo` shows the operator at work, `make test` runs every test.
SHELL := /usr/bin/env bash
CARGO ?= cargo
CLUSTER_DIR ?= $(CURDIR)/.cluster

.PHONY: test lint unit integration control-plane cluster-up cluster-down crds demo

test: lint control-plane
	$(MAKE) integration

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Builds (once, cached outside the repository) etcd, kube-apiserver,
# kube-controller-manager, kubectl and helm from the Kubernetes Go modules.
control-plane:
	tests/control-plane/build.sh

integration:
	$(CARGO) test --workspace
