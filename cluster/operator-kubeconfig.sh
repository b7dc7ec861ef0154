#!/usr/bin/env bash
# Writes meshplane.kubeconfig in the cluster's state folder (target/cluster, or
# the tests' target/cluster-test when MESHPLANE_CLUSTER_DIR names it): the
# local cluster as meshplane's own ServiceAccount (meshplane-system/meshplane),
# so the operator runs in development and tests with exactly the RBAC it ships
# with, not as admin. Requires the ServiceAccount (deploy/base) to exist.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
[ -f "$KUBECONFIG_FILE" ] || die "the local cluster in $STATE is not running; start it with: MESHPLANE_CLUSTER_DIR=$STATE cluster/up.sh"
kubectl() { "$(bin_path kubectl)" --kubeconfig "$KUBECONFIG_FILE" "$@"; }
token=$(kubectl create token meshplane -n meshplane-system --duration 24h)
server=$(sed -n 's/^ *server: //p' "$KUBECONFIG_FILE" | head -n1)
out="$STATE/meshplane.kubeconfig"
cat >"$out.partial" <<YAML
apiVersion: v1
kind: Config
clusters:
- name: meshplane-local
  cluster:
    server: $server
    certificate-authority: $PKI/ca.crt
users:
- name: meshplane
  user:
    token: $token
contexts:
- name: meshplane-local
  context:
    cluster: meshplane-local
    user: meshplane
    namespace: meshplane-system
current-context: meshplane-local
YAML
mv "$out.partial" "$out"
echo "$out"
