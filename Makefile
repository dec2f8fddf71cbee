# Entry points: `make demo` shows the operator at work, `make test` runs every test.
SHELL := /usr/bin/env bash
CARGO ?= cargo
CLUSTER_DIR ?= $(CURDIR)/.cluster

.PHONY: test lint unit integration control-plane cluster-up cluster-down crds demo image release

# Before the integration tests: the dependency policy, the tools the tests run (helm,
# crane, promtool) and the previous release's binary (the upgrade test).
test: lint deny control-plane tools previous-release
	$(MAKE) integration

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The fast loop: format, lints and the unit tests (no control plane, no simulator process).
unit: lint
	$(CARGO) test --workspace --lib

# $(call with_cluster,COMMAND): COMMAND with VIO_CLUSTER_DIR set to a control plane of its
# own in a temporary directory, stopped when the command ends, also on failure (trap) or
# if this shell is killed (start.sh --watch-pid).
define with_cluster
@set -euo pipefail; dir="$$(mktemp -d -t vio-cluster.XXXXXX)"; \
trap 'tests/control-plane/stop.sh --dir "$$dir" --purge' EXIT; \
tests/control-plane/start.sh --dir "$$dir" --watch-pid $$$$ >/dev/null; \
VIO_CLUSTER_DIR="$$dir" $(1)
endef

# Builds (once, cached outside the repository) etcd, kube-apiserver,
# kube-controller-manager, kubectl and helm from the Kubernetes Go modules (`make demo`
# builds the same without helm).
control-plane:
	tests/control-plane/build.sh

# The dependency policy (deny.toml) with cargo-deny (built once from crates.io, cached
# like the other tools): licences, bans and sources need no network; the advisories
# check runs when the RustSec database can be fetched, and says so when it cannot.
.PHONY: deny
deny:
	@set -euo pipefail; deny="$$(deploy/image/tools.sh cargo-deny | tail -n 1)"; \
	"$$deny" --frozen --log-level error check licenses bans sources; \
	echo "cargo-deny: licenses, bans, sources ok"; \
	if timeout 120 "$$deny" --log-level error fetch db >/dev/null 2>&1; then \
	  "$$deny" --frozen --log-level error check advisories; \
	  echo "cargo-deny: advisories ok"; \
	else \
	  echo "cargo-deny: advisories SKIPPED: the RustSec advisory database (github.com/rustsec/advisory-db) cannot be fetched from here; licenses, bans and sources were checked"; \
	fi

# The previous release's binary and chart (tests/release/previous.sh), built once from
# its commit and cached, for the upgrade test (tests/release_upgrade.rs).
.PHONY: previous-release
previous-release:
	tests/release/previous.sh >/dev/null

# crane (the image test) and promtool (the alert rules' tests), built once from the Go
# module proxy and cached like the control plane, before the tests that use them.
.PHONY: tools
tools:
	deploy/image/tools.sh crane >/dev/null
	deploy/image/tools.sh promtool >/dev/null

# One control plane for the whole run.
integration:
	$(call with_cluster,$(CARGO) test --workspace)

# The operator's image without a container engine: a release build for this host, its
# shared libraries, CA certificates, UID 65532, assembled with crane (built once from the
# Go module proxy) into target/image/ (docker-archive, OCI layout, digest; see
# deploy/image/build.sh). The digest is the same for the same commit.
image:
	$(CARGO) build --release --locked --bin vultr-iam-operator
	deploy/image/build.sh

# Every artifact of the crate's version, reproducibly, into
# target/release-artifacts/<version>/: image (docker-archive and OCI archive), chart
# (helm package, image pinned by digest), plain manifests, SBOM (CycloneDX), the binary,
# SHA256SUMS. See deploy/release/release.sh and README, "Releases".
release:
	deploy/release/release.sh

# A control plane that stays up for manual use and the demo:
#   eval "$$(make -s cluster-up)"   # then kubectl/helm are on PATH, KUBECONFIG is set
cluster-up:
	@tests/control-plane/start.sh --dir "$(CLUSTER_DIR)"

cluster-down:
	@tests/control-plane/stop.sh --dir "$(CLUSTER_DIR)"

# Regenerates crds/ from the Rust types and copies it into the chart (tests fail when
# either is stale); `make manifests` then refreshes deploy/kustomize/base.
crds:
	mkdir -p crds
	$(CARGO) run --quiet -- crd > crds/policyattachments.iam.vultr-operator.io.yaml
	$(MAKE) --no-print-directory chart-crds

# The Vultr simulator on its own: `make sim` serves the demo organization on a free
# loopback port; `make bench-sim` measures its throughput with wrk (rate limit off).
.PHONY: sim bench-sim
sim:
	$(CARGO) run --quiet -p vultr-sim -- --demo

bench-sim:
	tests/vultr-sim/bench.sh

# The operator at work on the local control plane and the simulator (see tests/demo.sh).
demo:
	tests/demo.sh

# Operator benchmark on the real control plane and the simulator (prints figures beside
# the rate-limit bound computed in the same run). BENCH_N (2000), BENCH_P (20) and
# BENCH_USERS (5000) set the size; then everything at once: BENCH_ALL_N (5000) objects
# over BENCH_ALL_P (50) policies, deleted at once, and BENCH_CYCLES (10000) create/delete
# cycles. The two run one after the other. Release build (the first one takes ~10 minutes).
.PHONY: bench
bench: control-plane
	$(call with_cluster,$(CARGO) test --release --test bench -- --ignored --nocapture --test-threads=1)

# The chaos run: two replicas with leader election, the simulator, a driver
# creating/deleting/renaming 240 PolicyAttachments for 5 minutes under every fault,
# then the end-state invariants (lost revocations: 0, ...). It starts its own control
# plane (it restarts kube-apiserver), so it needs none from here. `make test` runs the
# short version (chaos_short). CHAOS_OBJECTS, CHAOS_SECONDS, CHAOS_KILLS and CHAOS_SEED
# change the sizes.
.PHONY: chaos
chaos: control-plane
	$(CARGO) test --test chaos -- --ignored --nocapture chaos_long

# ---- Helm chart and plain manifests (charts/vultr-iam-operator, deploy/) ---------------
# helm and kubectl come from the control-plane build (cached after the first build).
.PHONY: chart-crds chart-dashboards chart-docs manifests helm-lint chart-test
TOOLS_BIN = $(shell tests/control-plane/build.sh | tail -n 1)

# Copies crds/ into the chart, which renders it as a template (tests/chart/ fails
# when the copy differs from crds/). `make crds` runs it.
chart-crds:
	rm -f charts/vultr-iam-operator/files/crds/*.yaml
	cp crds/*.yaml charts/vultr-iam-operator/files/crds/

# Copies deploy/grafana/ (the Grafana dashboard) into the chart, which renders it as a
# ConfigMap with grafanaDashboard.enabled (tests/chart/ fails when the copy differs).
chart-dashboards:
	mkdir -p charts/vultr-iam-operator/files/grafana
	rm -f charts/vultr-iam-operator/files/grafana/*.json
	cp deploy/grafana/*.json charts/vultr-iam-operator/files/grafana/

# Regenerates the chart's values.schema.json and the values table of its README from the
# comments of values.yaml (tests/chart/ fails when they are stale).
chart-docs:
	python3 deploy/chart-docs.py

# Regenerates deploy/kustomize/base from the chart's default render (tests/chart/
# fails when it is stale).
manifests: chart-crds chart-dashboards
	VIO_UPDATE_MANIFESTS=1 $(CARGO) test --quiet --test chart plain_manifests_match_the_chart

helm-lint:
	@bin="$(TOOLS_BIN)"; set -e; \
	"$$bin/helm" lint --strict charts/vultr-iam-operator; \
	"$$bin/helm" lint --strict charts/vultr-iam-operator -f charts/vultr-iam-operator/ci/non-default-values.yaml; \
	"$$bin/helm" lint --strict charts/vultr-iam-operator -f charts/vultr-iam-operator/ci/real-cluster-values.yaml

# The chart's tests alone, on a control plane of their own (needs lua5.4 for the
# Argo CD health check).
chart-test:
	$(call with_cluster,$(CARGO) test --test chart)
