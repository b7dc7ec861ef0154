# meshplane: the two commands a newcomer needs are `make dev` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CLUSTER_DIR := target/cluster
export KUBECONFIG := $(CURDIR)/$(CLUSTER_DIR)/kubeconfig
KUBE_BIN = $(shell source cluster/lib.sh && echo $$KUBERNETES_BIN)
HELM_BIN = $(shell source cluster/lib.sh && echo $$HELM_BIN)
KUBECTL = $(KUBE_BIN)/kubectl

.PHONY: help
help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

.PHONY: build
build: ## Build the meshplane binary
	cargo build

.PHONY: crds
crds: ## Regenerate crds/ (and the chart's copy) from the Rust types
	cargo run --quiet -- crds > crds/meshplane.yaml
	cp crds/meshplane.yaml charts/meshplane/files/crds.yaml

.PHONY: cluster
cluster: ## Start the local control plane (builds it on first use)
	cluster/up.sh

.PHONY: cluster-down
cluster-down: ## Stop the local control plane and remove its state
	cluster/down.sh

.PHONY: install
install: cluster ## Install the CRDs and meshplane's RBAC into the local cluster
	$(KUBECTL) apply --server-side --force-conflicts -k deploy/base
	$(KUBECTL) wait --for=condition=Established crd --all --timeout=60s >/dev/null

.PHONY: dev
dev: install build ## Run meshplane against the local cluster with examples/ applied
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
integration: install ## Integration tests against the local control plane
	cargo test --test cluster --test domain --test product --test governance --test deploy --test gitops --test catalog --test browser -- --test-threads 8 --show-output
	# Timed reactions to hand deletions and edits: on a quieter cluster.
	cargo test --test drift -- --test-threads 1 --show-output
	# Alone, after the others: it reads the API server's request counters.
	cargo test --test steady_state -- --test-threads 1 --show-output
	# It kills the shared test operator to prove failover.
	cargo test --test ha -- --show-output
	# Last and alone: kills operators, restarts the API server and etcd.
	cargo test --test chaos -- --test-threads 1 --show-output

.PHONY: bench
bench: ## Benchmarks (see BENCHMARKS.md): catalog search, then scale on fresh clusters
	cargo bench --bench search
	cluster/bench.sh

.PHONY: test
test: lint unit crds-check integration ## Everything CI runs
