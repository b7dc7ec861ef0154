# meshplane: the two commands a newcomer needs are `make dev` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Two local control planes, each with its own state folder, ports, logs and
# PIDs: the developer's (make cluster, make dev; kubectl here points at it)
# and the tests' own (make test, and cargo test run by hand), so nothing
# `make dev` leaves in a cluster can decide a test. Both keep running until
# stopped: make cluster-down, make test-cluster-down.
CLUSTER_DIR := $(or $(MESHPLANE_CLUSTER_DIR),$(CURDIR)/target/cluster)
TEST_CLUSTER_DIR := $(or $(MESHPLANE_TEST_CLUSTER_DIR),$(CURDIR)/target/cluster-test)
ifeq ($(abspath $(CLUSTER_DIR)),$(abspath $(TEST_CLUSTER_DIR)))
$(error MESHPLANE_CLUSTER_DIR and MESHPLANE_TEST_CLUSTER_DIR name the same folder, $(CLUSTER_DIR): the tests need a cluster of their own)
endif
export MESHPLANE_CLUSTER_DIR := $(CLUSTER_DIR)
export MESHPLANE_TEST_CLUSTER_DIR := $(TEST_CLUSTER_DIR)
export KUBECONFIG := $(CLUSTER_DIR)/kubeconfig
# Prefixes a command so that it, and every cluster/ script and kubectl it
# runs, acts on the tests' cluster.
ON_TEST_CLUSTER := MESHPLANE_CLUSTER_DIR=$(TEST_CLUSTER_DIR) KUBECONFIG=$(TEST_CLUSTER_DIR)/kubeconfig
KUBE_BIN = $(shell source cluster/lib.sh && echo $$KUBERNETES_BIN)
HELM_BIN = $(shell source cluster/lib.sh && echo $$HELM_BIN)
KUBECTL = $(KUBE_BIN)/kubectl

.PHONY: help
help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

.PHONY: build
build: ## Build the meshplane binary
	cargo build

.PHONY: crds
crds: ## Regenerate crds/ (and the chart's copy) from the Rust types
	cargo run --quiet -- crds > crds/meshplane.yaml
	cp crds/meshplane.yaml charts/meshplane/files/crds.yaml

.PHONY: cluster
cluster: ## Start your local control plane, target/cluster (builds it on first use)
	cluster/up.sh

.PHONY: cluster-down
cluster-down: ## Stop your local control plane and remove target/cluster (not the tests')
	cluster/down.sh
	@if compgen -G '$(TEST_CLUSTER_DIR)/pids/*.pid' >/dev/null; then \
		echo "the tests' control plane in $(TEST_CLUSTER_DIR) still runs; make test-cluster-down stops it"; fi

.PHONY: test-cluster-down
test-cluster-down: ## Stop the tests' control plane and remove target/cluster-test
	$(ON_TEST_CLUSTER) cluster/down.sh

# Starts the cluster of the state folder $(1) unless it runs, then installs
# the CRDs and meshplane's RBAC into it.
define install_into
	MESHPLANE_CLUSTER_DIR=$(1) cluster/up.sh
	$(KUBECTL) --kubeconfig $(1)/kubeconfig apply --server-side --force-conflicts -k deploy/base
	$(KUBECTL) --kubeconfig $(1)/kubeconfig wait --for=condition=Established crd --all --timeout=60s >/dev/null
endef

.PHONY: install
install: ## Start your local control plane and install the CRDs and meshplane's RBAC
	$(call install_into,$(CLUSTER_DIR))

.PHONY: test-install
test-install: ## The same for the tests' control plane (target/cluster-test)
	$(call install_into,$(TEST_CLUSTER_DIR))

.PHONY: dev
dev: install build ## Run meshplane against your local cluster with examples/ applied
	cluster/dev.sh

.PHONY: lint
lint: ## cargo fmt --check and clippy
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --features otel -- -D warnings

.PHONY: unit
unit: ## Unit tests (no cluster)
	cargo test --lib --bins

.PHONY: crds-check
crds-check: ## Fail when crds/ differs from `meshplane crds`
	@cargo run --quiet -- crds | diff -u crds/meshplane.yaml - \
		|| { echo "crds/ is stale: run 'make crds' and commit the result"; exit 1; }
	@diff -u crds/meshplane.yaml charts/meshplane/files/crds.yaml \
		|| { echo "the chart's CRDs are stale: run 'make crds' and commit the result"; exit 1; }
	@echo "crds/ is up to date"

.PHONY: integration
integration: test-install ## Integration tests on the tests' own control plane (target/cluster-test)
	$(ON_TEST_CLUSTER) cargo test --test cluster --test domain --test product --test governance --test deploy --test gitops --test catalog --test browser --test platform -- --test-threads 8 --show-output
	# Timed reactions to hand deletions and edits: on a quieter cluster.
	$(ON_TEST_CLUSTER) cargo test --test drift -- --test-threads 1 --show-output
	# Alone, after the others: it reads the API server's request counters.
	$(ON_TEST_CLUSTER) cargo test --test steady_state -- --test-threads 1 --show-output
	# It kills the shared test operator to prove failover.
	$(ON_TEST_CLUSTER) cargo test --test ha -- --show-output
	# Last and alone: kills operators, restarts the API server and etcd.
	$(ON_TEST_CLUSTER) cargo test --test chaos -- --test-threads 1 --show-output
	@echo "the tests' control plane keeps running in $(TEST_CLUSTER_DIR) for the next run; make test-cluster-down stops it"

.PHONY: bench
bench: ## Benchmarks (see BENCHMARKS.md): catalog search, then scale on fresh clusters
	cargo bench --bench search
	cluster/bench.sh

.PHONY: test
test: lint unit crds-check integration ## Everything CI runs
