#!/usr/bin/env bash
# `make dev`: meshplane in the foreground against the local control plane,
# as its own ServiceAccount, with examples/ applied once it is up (the
# PostgreSQL engine with its admin Secret, policies and domains first;
# products once their domains' namespaces are Ready).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
kubectl() { "$(bin_path kubectl)" --kubeconfig "$KUBECONFIG_FILE" "$@"; }
operator_kubeconfig=$("$CLUSTER_SRC/operator-kubeconfig.sh")

(
  if [ -f "$POSTGRES_ADMIN_ENV" ]; then
    # The engine's admin login, as a Secret in meshplane's own namespace, and
    # the engine registered at the port the server listens on.
    pg() { sed -n "s/^$1=//p" "$POSTGRES_ADMIN_ENV"; }
    kubectl create secret generic warehouse-admin -n meshplane-system \
      --from-literal=username="$(pg PGUSER)" --from-literal=password="$(pg PGPASSWORD)" \
      --dry-run=client -o yaml | kubectl apply -f - >/dev/null
    sed "s/port: 5432/port: $(pg PGPORT)/" "$REPO_ROOT/examples/platforms.yaml" | kubectl apply -f - >/dev/null
  fi
  kubectl apply -f "$REPO_ROOT/examples/policies.yaml" -f "$REPO_ROOT/examples/domains.yaml" >/dev/null
  if kubectl wait --for=condition=Ready datadomain --all --timeout=180s >/dev/null; then
    kubectl apply -f "$REPO_ROOT/examples/products.yaml" >/dev/null
    log "examples/ applied. In another shell:"
    log "  export KUBECONFIG=$KUBECONFIG_FILE PATH=$KUBERNETES_BIN:\$PATH"
    log "  kubectl get dd; kubectl get dp -A; kubectl describe dp order-events -n dm-orders; kubectl get dataplatforms"
    log "  curl -s 'localhost:8081/api/v1/products?q=order'   # the catalog"
  else
    log "the example domains did not become Ready; see: kubectl describe dd"
  fi
) &

log "meshplane runs in the foreground as its own ServiceAccount; Ctrl-C stops it"
# The catalog without authentication, for the developer at this machine only.
KUBECONFIG=$operator_kubeconfig exec "$REPO_ROOT/target/debug/meshplane" run \
  --metrics-addr 127.0.0.1:8080 --catalog-addr 127.0.0.1:8081 --catalog-auth=false "$@"
